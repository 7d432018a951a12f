"""Load a local Hugging Face image-text-to-text checkpoint (Qwen2.5-VL first; Qwen2-VL, Qwen3-VL through the same code).

Nothing is fetched from a hub: ``path`` must be a local directory (``local_files_only=True``). The image processor is
loaded with ``AutoImageProcessor``; where torchvision is missing transformers falls back to the PIL implementation, which
mmrl uses with its own image-pad expansion (see :mod:`mmrl.policies.vlm.chat`).

Example:
    >>> policy = load_policy("/models/Qwen2.5-VL-3B-Instruct", dtype="bfloat16", device="cuda")
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch

from mmrl.policies.vlm import VLMPolicy

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(name: str) -> torch.dtype:
    """``"bfloat16"`` -> ``torch.bfloat16``; an unknown name is a one-line error."""
    if name not in _DTYPES:
        raise ValueError(f"model.dtype: unknown dtype '{name}' (use one of {', '.join(_DTYPES)})")
    return _DTYPES[name]


def resolve_device(name: str) -> torch.device:
    """``"auto"`` is CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_policy(
    path: str | Path,
    dtype: str = "float32",
    device: str = "auto",
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    temperature: float = 1.0,
) -> VLMPolicy:
    """Load model, tokenizer and image processor from the local checkpoint directory ``path`` as a :class:`VLMPolicy`."""
    from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

    path = Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(
            f"model.path: no Hugging Face checkpoint at '{path}' (expected config.json; mmrl never downloads weights)"
        )
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=resolve_dtype(dtype), local_files_only=True)
    model.to(resolve_device(device))
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torchvision.*")  # the PIL fallback is the intended CPU path
        image_processor = AutoImageProcessor.from_pretrained(path, local_files_only=True)
    if min_pixels is not None or max_pixels is not None:
        # Qwen's processors keep the pixel range as size = {shortest_edge: min_pixels, longest_edge: max_pixels}.
        size = image_processor.size
        image_processor.size = {
            "shortest_edge": min_pixels if min_pixels is not None else size["shortest_edge"],
            "longest_edge": max_pixels if max_pixels is not None else size["longest_edge"],
        }
    n = sum(p.numel() for p in model.parameters())
    logger.info("loaded %s (%s, %.2fM parameters) on %s", path, type(model).__name__, n / 1e6, model.device)
    return VLMPolicy(model, tokenizer, image_processor, temperature=temperature)
