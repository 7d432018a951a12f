"""Checkpoints: the policy as its family saves it (a VLM: a normal Hugging Face directory, loadable by ``load_policy``)
plus the trainer state (optimizer, RNG states, step) so that a resumed run continues exactly where it stopped.

Layout: ``<run_dir>/checkpoints/step_000040/{config.json, model.safetensors, tokenizer..., trainer_state.pt}``.
"""

from __future__ import annotations

import logging
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run_dir: Path, step: int, policy: Any, optimizer: torch.optim.Optimizer, extra: dict[str, Any],
                    keep: int = 2) -> Path:  # fmt: skip
    """Write checkpoint ``step`` and delete all but the ``keep`` most recent ones."""
    root = Path(run_dir) / "checkpoints"
    path = root / f"step_{step:06d}"
    tmp = root / f".tmp_step_{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    policy.save(tmp)
    torch.save({"step": step, "optimizer": optimizer.state_dict(), "rng": rng_state(), **extra}, tmp / "trainer_state.pt")
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)  # a crash mid-save never leaves a half-written step_* directory
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    logger.info("saved checkpoint %s", path)
    return path


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.exists():
        return []
    return sorted(p for p in root.glob("step_*") if (p / "trainer_state.pt").exists())


def latest_checkpoint(run_dir: Path) -> Path | None:
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1] if ckpts else None


def load_trainer_state(path: Path) -> dict[str, Any]:
    """The trainer state of checkpoint ``path`` (optimizer, RNG, step and extras)."""
    return torch.load(Path(path) / "trainer_state.pt", map_location="cpu", weights_only=False)
