"""``<image>`` markers in a user turn's text put each image where it stands; a text without them is encoded as before.

The expected token ids are built by hand from the chat template's rule (``<|vision_start|>``, the image's pads,
``<|vision_end|>`` where the image stands) and tokenized piece by piece, not through ``user_message``.
"""

from __future__ import annotations

import numpy as np
import pytest

from mmrl.policies.vlm.chat import IMAGE_PAD, PromptEncoder, user_message

START, END = "<|vision_start|>", "<|vision_end|>"


@pytest.fixture(scope="module")
def encoder() -> PromptEncoder:
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from mmrl.models.tiny import PRESETS, train_tokenizer

    pixels = PRESETS["default"].image_pixels
    return PromptEncoder(train_tokenizer(512), Qwen2VLImageProcessorPil(min_pixels=pixels, max_pixels=4 * pixels))


def images(*shapes: tuple[int, int]) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in shapes]


def encode_turn(encoder: PromptEncoder, text: str, imgs: list[np.ndarray]) -> list[int]:
    """What a Conversation's first user turn encodes to: the rendered template with each image's pads expanded."""
    vision = [encoder.process_image(img) for img in imgs]
    return encoder.encode(encoder.render([user_message(text, len(imgs))], add_generation_prompt=True), vision)


def by_hand(encoder: PromptEncoder, pieces: list[str | np.ndarray]) -> list[int]:
    """The ids of a user turn whose content is ``pieces`` in order (text, or an image: its pad run), built by hand."""
    tok = encoder.tokenizer
    text = ["<|im_start|>user\n"]
    for piece in pieces:
        if isinstance(piece, str):
            text.append(piece)
        else:  # grid (t, h, w) in patches, then the 2x2 merge: one pad per merged patch
            t, h, w = (
                int(v) for v in encoder.image_processor(images=[piece], return_tensors="pt")["image_grid_thw"][0]
            )
            text.append(START + IMAGE_PAD * (t * h * w // 4) + END)
    text.append("<|im_end|>\n<|im_start|>assistant\n")
    return tok("".join(text), add_special_tokens=False)["input_ids"]


def pad_runs(ids: list[int], pad: int) -> list[tuple[int, int]]:
    """``(start, length)`` of each run of ``pad`` in ``ids``."""
    runs: list[tuple[int, int]] = []
    for i, tid in enumerate(ids):
        if tid == pad and (i == 0 or ids[i - 1] != pad):
            runs.append((i, 0))
        if tid == pad:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
    return runs


def test_markers_put_each_image_where_it_stands(encoder):
    a, b = images((56, 56), (56, 112))  # different sizes: different pad counts, so the order is visible
    ids = encode_turn(encoder, "Compare <image> with <image>. Which is bigger?", [a, b])
    assert ids == by_hand(encoder, ["Compare ", a, " with ", b, ". Which is bigger?"])
    runs = pad_runs(ids, encoder.image_pad_id)
    assert len(runs) == 2 and runs[0][1] != runs[1][1]
    tok = encoder.tokenizer
    assert tok.decode(ids[: runs[0][0]]).endswith("Compare " + START)  # first run where the first marker stood
    between = tok.decode(ids[runs[0][0] + runs[0][1] : runs[1][0]])
    assert between == END + " with " + START
    assert tok.decode(ids[runs[1][0] + runs[1][1] :]).startswith(END + ". Which is bigger?")
    assert "<image>" not in tok.decode(ids)


def test_text_without_markers_is_encoded_as_before(encoder):
    a, b = images((56, 56), (84, 56))
    text = "How many shapes are there?"
    before = {"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": text}]}
    vision = [encoder.process_image(img) for img in (a, b)]
    expected = encoder.encode(encoder.render([before], add_generation_prompt=True), vision)  # today's message
    assert encode_turn(encoder, text, [a, b]) == expected == by_hand(encoder, [a, b, text])
    assert encode_turn(encoder, text, []) == by_hand(encoder, [text])  # text only


def test_a_leading_marker_gives_the_ids_of_images_first(encoder):
    (a,) = images((56, 56))
    assert encode_turn(encoder, "<image>What colour?", [a]) == encode_turn(encoder, "What colour?", [a])
    assert encode_turn(encoder, "What colour?<image>", [a]) == by_hand(encoder, ["What colour?", a])


def test_markers_that_do_not_match_the_images_leave_the_text_as_is(encoder):
    a, b = images((56, 56), (56, 56))
    text = "A literal <image> tag, and two pictures."
    assert encode_turn(encoder, text, [a, b]) == by_hand(encoder, [a, b, text])
    assert user_message(text, 0) == {"role": "user", "content": [{"type": "text", "text": text}]}
    assert user_message("<image><image>", 2)["content"] == [{"type": "image"}, {"type": "image"}]
