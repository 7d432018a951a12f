"""Offline tiny Qwen2.5-VL: a byte-level BPE tokenizer trained on a shipped corpus, Qwen's image processor and a randomly
initialised ``Qwen2_5_VLForConditionalGeneration``, saved as a normal checkpoint directory.

The result loads through :func:`mmrl.models.load_policy` exactly like a real checkpoint, so tests and the quickstart run the
production code path with no download.

Example:
    >>> from mmrl.models.tiny import build_tiny_qwen2_5_vl
    >>> path = build_tiny_qwen2_5_vl("runs/tiny-qwen2_5_vl")
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parents[2] / "assets"
CORPUS = ASSETS / "tokenizer_corpus.txt"

# Qwen2.5-VL's special tokens, in Qwen's order (ids differ from the real vocabulary; names are what the code relies on).
SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>",
]  # fmt: skip

# Qwen2.5-VL's chat template, restated: images and videos inside a user turn become vision_start, one pad, vision_end
# (the pad is expanded to the image's token count when the prompt is encoded).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or 'image' in part %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' or 'video' in part %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in part %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class TinyPreset:
    """Sizes of one tiny model; ``head_dim / 2`` must equal ``sum(mrope_section)``."""

    vocab_size: int  # BPE vocabulary target (specials included)
    hidden: int  # text hidden size
    layers: int  # text decoder layers
    heads: int  # attention heads (head_dim = hidden / heads)
    kv_heads: int  # key/value heads (grouped-query attention)
    intermediate: int  # text MLP width
    mrope_section: tuple[int, int, int]  # Qwen's multimodal RoPE split of head_dim/2 over (t, h, w)
    vision_hidden: int  # vision tower width
    vision_depth: int  # vision blocks
    vision_heads: int  # vision attention heads
    vision_intermediate: int  # vision MLP width
    image_pixels: int  # default min = max pixels of the image processor (56*56 gives 4 visual tokens)


PRESETS: dict[str, TinyPreset] = {
    # ~1M parameters: the quickstart and most tests.
    "default": TinyPreset(512, 128, 4, 4, 2, 256, (4, 6, 6), 64, 2, 2, 128, 56 * 56),
}


TOKENS_PER_SECOND = 2  # video M-RoPE: temporal positions per second of video, the released Qwen2.5-VL checkpoints' value

def train_tokenizer(vocab_size: int, corpus: Path = CORPUS):
    """A byte-level BPE tokenizer trained on ``corpus`` with Qwen's special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte is encodable: no unknown tokens
        show_progress=False,
    )
    tok.train([str(corpus)], trainer)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS[3:],
        clean_up_tokenization_spaces=False,  # decode(encode(text)) == text, as Qwen's tokenizer
    )
    hf_tok.chat_template = CHAT_TEMPLATE
    hf_tok.padding_side = "left"  # generation pads on the left
    return hf_tok


def build_tiny_qwen2_5_vl(path: str | Path, preset: str = "default", seed: int = 0, overwrite: bool = False) -> Path:
    """Build (or reuse) a tiny random Qwen2.5-VL checkpoint directory at ``path`` and return it.

    An existing checkpoint built with the same preset and seed is reused unless ``overwrite``.
    """
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    if preset not in PRESETS:
        raise KeyError(f"unknown tiny preset '{preset}' (known: {', '.join(PRESETS)})")
    path = Path(path)
    stamp = {"builder": "mmrl.models.tiny", "preset": preset, "seed": seed, "tokens_per_second": TOKENS_PER_SECOND}
    stamp_file = path / "mmrl_tiny.json"
    if not overwrite and stamp_file.exists() and json.loads(stamp_file.read_text()) == stamp:
        return path
    p = PRESETS[preset]
    tokenizer = train_tokenizer(p.vocab_size)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=p.hidden,
            intermediate_size=p.intermediate,
            num_hidden_layers=p.layers,
            num_attention_heads=p.heads,
            num_key_value_heads=p.kv_heads,
            max_position_embeddings=4096,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": list(p.mrope_section)},
            bos_token_id=ids["<|endoftext|>"],
            eos_token_id=ids["<|im_end|>"],
            pad_token_id=ids["<|endoftext|>"],
        ),
        vision_config=dict(
            depth=p.vision_depth,
            hidden_size=p.vision_hidden,
            intermediate_size=p.vision_intermediate,
            num_heads=p.vision_heads,
            out_hidden_size=p.hidden,
            fullatt_block_indexes=[p.vision_depth - 1],
            tokens_per_second=TOKENS_PER_SECOND,
            window_size=112,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    image_processor = Qwen2VLImageProcessorPil(min_pixels=p.image_pixels, max_pixels=p.image_pixels)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    image_processor.save_pretrained(path)
    stamp_file.write_text(json.dumps(stamp))
    n = sum(t.numel() for t in model.parameters())
    logger.info("built tiny Qwen2.5-VL (%s, %.2fM parameters) at %s", preset, n / 1e6, path)
    return path
