"""The tiny offline checkpoint, its tokenizer, and image-pad expansion against Qwen's token-count formula."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mmrl.models import load_policy
from mmrl.models.tiny import SPECIAL_TOKENS


def smart_resize_reference(h: int, w: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen2-VL's resize rule restated from its paper/code comments: sides to multiples of `factor`, area in range."""
    hb, wb = round(h / factor) * factor, round(w / factor) * factor
    if hb * wb > max_pixels:
        beta = math.sqrt(h * w / max_pixels)
        hb, wb = math.floor(h / beta / factor) * factor, math.floor(w / beta / factor) * factor
    elif hb * wb < min_pixels:
        beta = math.sqrt(min_pixels / (h * w))
        hb, wb = math.ceil(h * beta / factor) * factor, math.ceil(w * beta / factor) * factor
    return hb, wb


def test_checkpoint_is_a_normal_hf_directory(tiny_model_path):
    for name in ("config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json"):
        assert (tiny_model_path / name).exists(), name


def test_tokenizer_special_tokens_are_single_ids_and_text_round_trips(tiny_policy):
    tok = tiny_policy.tokenizer
    for t in SPECIAL_TOKENS:
        ids = tok(t, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and tok.convert_ids_to_tokens(ids[0]) == t
    text = "How many shapes are there? <think>I count 3.</think>\n<answer>3</answer> ünïcødé 🙂"
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text


def test_chat_template_matches_qwen_layout(tiny_policy):
    text = tiny_policy.encoder.render(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi"}]}], add_generation_prompt=True
    )
    assert text == "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Hi<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.parametrize("hw", [(56, 56), (100, 37), (224, 160), (30, 300), (500, 500)])
def test_image_pad_expansion_follows_the_formula(tiny_model_path, hw):
    min_px, max_px = 28 * 28 * 4, 28 * 28 * 64
    policy = load_policy(tiny_model_path, device="cpu", min_pixels=min_px, max_pixels=max_px)
    image = np.random.default_rng(0).integers(0, 256, (*hw, 3), dtype=np.uint8)
    conv = policy.conversation()
    ids, vision = conv.add_user("Count.", [image, image[: hw[0] // 2 + 1]])
    pad = policy.encoder.image_pad_id
    vs = policy.tokenizer.convert_tokens_to_ids("<|vision_start|>")
    ve = policy.tokenizer.convert_tokens_to_ids("<|vision_end|>")
    runs = []  # lengths of the pad runs between vision_start and vision_end
    for i, t in enumerate(ids):
        if t == vs:
            j = i + 1
            while ids[j] == pad:
                j += 1
            assert ids[j] == ve
            runs.append(j - i - 1)
    expected = []
    for h, w in (hw, (hw[0] // 2 + 1, hw[1])):
        hb, wb = smart_resize_reference(h, w, 28, min_px, max_px)
        grid_t, grid_h, grid_w = 1, hb // 14, wb // 14
        expected.append(grid_t * grid_h * grid_w // 2**2)
    assert runs == expected
    assert ids.count(pad) == sum(expected)
    for v, n in zip(vision, expected):
        assert v.pixel_values.shape[0] == v.num_tokens == 4 * n  # patches = tokens * merge_size**2


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.path"):
        load_policy(tmp_path / "nope")


def qwen_processor(model_path):
    """transformers' own ``Qwen2_5_VLProcessor`` on the checkpoint, without its video processor: the class check for
    that argument needs torchvision (absent on CPU); everything else is the library's code (pad expansion, template)."""
    from transformers import AutoImageProcessor, AutoTokenizer, Qwen2_5_VLProcessor

    class ImageOnlyProcessor(Qwen2_5_VLProcessor):
        def check_argument_for_proper_class(self, argument_name, argument):
            if argument_name == "video_processor" and argument is None:
                return None
            return super().check_argument_for_proper_class(argument_name, argument)

    tok = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
    image_processor = AutoImageProcessor.from_pretrained(model_path, local_files_only=True)
    return ImageOnlyProcessor(image_processor=image_processor, tokenizer=tok, video_processor=None,
                              chat_template=tok.chat_template)  # fmt: skip


@pytest.mark.parametrize("hw", [(56, 56), (100, 37), (224, 160), (30, 300)])
def test_prompt_ids_and_token_types_equal_transformers_processor(tiny_model_path, tiny_policy, hw):
    """mmrl's prompt encoder gives the ids, pixel values, grids and token types of transformers' Qwen2.5-VL processor."""
    from PIL import Image

    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (*hw, 3), dtype=np.uint8), rng.integers(0, 256, (hw[1], hw[0], 3), dtype=np.uint8)]
    conv = tiny_policy.conversation()
    conv.add_user("How many shapes are there?", images)
    processor = qwen_processor(tiny_model_path)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "image"},
                                             {"type": "text", "text": "How many shapes are there?"}]}]  # fmt: skip
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ref = processor(text=[text], images=[Image.fromarray(i) for i in images], return_tensors="pt",
                    return_mm_token_type_ids=True)  # fmt: skip
    assert conv.ids == ref["input_ids"][0].tolist()
    torch.testing.assert_close(torch.cat([v.pixel_values for v in conv.vision]), ref["pixel_values"])
    assert torch.stack([v.grid_thw for v in conv.vision]).tolist() == ref["image_grid_thw"].tolist()
    ids = torch.tensor([conv.ids])
    kwargs = tiny_policy._vision_kwargs([conv.vision], ids)
    assert kwargs["mm_token_type_ids"].tolist() == ref["mm_token_type_ids"].tolist()
