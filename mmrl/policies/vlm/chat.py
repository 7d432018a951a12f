"""Multimodal chat prompts for Qwen-family VLMs without the processor class.

transformers' ``Qwen2_5_VLProcessor`` needs torchvision (absent on CPU here), so mmrl does what it does by hand: render the
chat template, process images with the image processor (videos frame by frame, :mod:`mmrl.policies.vlm.video`), and
expand each ``<|image_pad|>`` / ``<|video_pad|>`` to ``grid_t * grid_h * grid_w / merge_size**2`` copies before
tokenizing. With a real checkpoint on a GPU machine the ids are identical to ``AutoProcessor``'s.

A :class:`Conversation` builds a multi-turn episode incrementally: each user turn yields only the *new* token ids (so a
trajectory is the concatenation of its turns) and the images and videos it introduced, aligned with their pad runs: one
list of :class:`VisionInput` and :class:`~mmrl.policies.vlm.video.VideoInput` in the order their pads stand in the text
(the model takes the images in image-pad order and the videos in video-pad order, each from its own list).

Example:
    >>> enc = PromptEncoder(tokenizer, image_processor)
    >>> conv = Conversation(enc)
    >>> ids, vision = conv.add_user("How many shapes?", [image])
    >>> conv.add_assistant(generated_ids)
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from mmrl.policies.vlm.video import DEFAULT_FPS, VideoInput, process_video
from mmrl.types import IMAGE_MARKER, VIDEO_MARKER

IMAGE_PAD = "<|image_pad|>"
VIDEO_PAD = "<|video_pad|>"
_PADS = re.compile(f"({re.escape(IMAGE_PAD)}|{re.escape(VIDEO_PAD)})")
# Tokens the policy must never generate: pads would desynchronise images and tokens.
VISION_SPECIAL_TOKENS = ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>")


@dataclass
class VisionInput:
    """One processed image: patch rows and its (t, h, w) grid in patches."""

    pixel_values: torch.Tensor  # [grid_t * grid_h * grid_w, C * temporal_patch * patch * patch]
    grid_thw: torch.Tensor  # [3] long

    @property
    def num_tokens(self) -> int:
        """LLM tokens this image takes after the 2x2 (merge_size**2) patch merger."""
        return int(self.grid_thw.prod())


def to_pil(image: Any) -> Image.Image:
    """An RGB PIL image from a PIL image or an RGB uint8 array [H, W, 3]."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"images must be RGB uint8 arrays [H, W, 3], got dtype {array.dtype} shape {array.shape}")
    return Image.fromarray(array, "RGB")


class PromptEncoder:
    """Tokenizer + image processor: renders chat messages and expands image and video pads as Qwen's processor does."""

    def __init__(self, tokenizer: Any, image_processor: Any) -> None:
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.merge_size = int(getattr(image_processor, "merge_size", 2))
        self.image_pad_id = tokenizer.convert_tokens_to_ids(IMAGE_PAD)
        self.video_pad_id = tokenizer.convert_tokens_to_ids(VIDEO_PAD)
        self.video_min_pixels: int | None = None  # per-frame pixel range of videos (None: the image processor's)
        self.video_max_pixels: int | None = None
        self.eos_ids = {tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.eos_token_id}

    def process_image(self, image: Any) -> VisionInput:
        """Resize (smart_resize), normalise and patchify one image."""
        out = self.image_processor(images=[to_pil(image)], return_tensors="pt")
        return VisionInput(pixel_values=out["pixel_values"], grid_thw=out["image_grid_thw"][0].long())

    def process_video(self, frames: Any, fps: float = DEFAULT_FPS) -> VideoInput:
        """Pad to an even frame count, resize, normalise and patchify one video (``[T, H, W, 3]`` at ``fps``)."""
        return process_video(self.image_processor, frames, fps, self.video_min_pixels, self.video_max_pixels)

    def num_image_tokens(self, vision: VisionInput | VideoInput) -> int:
        """``grid_t * grid_h * grid_w / merge_size**2``: the pad tokens one image (or video) expands to."""
        return vision.num_tokens // self.merge_size**2

    def expand_image_pads(self, text: str, vision: list[VisionInput | VideoInput]) -> str:
        """Replace the i-th pad of ``text`` (``<|image_pad|>`` or ``<|video_pad|>``, in text order) with
        ``num_image_tokens(vision[i])`` copies; ``vision[i]`` must be an image at an image pad, a video at a video
        pad."""
        parts = _PADS.split(text)  # text, pad, text, pad, ..., text
        pads = parts[1::2]
        if len(pads) != len(vision):
            n_img, n_vid = pads.count(IMAGE_PAD), pads.count(VIDEO_PAD)
            raise ValueError(f"prompt has {n_img} image and {n_vid} video placeholders but {len(vision)} images and "
                             f"videos were given")  # fmt: skip
        out = [parts[0]]
        for pad, v, part in zip(pads, vision, parts[2::2]):
            if (pad == VIDEO_PAD) != isinstance(v, VideoInput):
                kind = "a video" if isinstance(v, VideoInput) else "an image"
                raise ValueError(f"prompt has {pad} where {kind} was given: images and videos are out of order")
            out.append(pad * self.num_image_tokens(v))
            out.append(part)
        return "".join(out)

    def render(self, messages: list[dict[str, Any]], add_generation_prompt: bool) -> str:
        """The chat template applied to ``messages`` as text (image pads not yet expanded)."""
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def encode(self, text: str, vision: list[VisionInput | VideoInput]) -> list[int]:
        """Token ids of ``text`` after image- and video-pad expansion (no special tokens added)."""
        return self.tokenizer(self.expand_image_pads(text, vision), add_special_tokens=False)["input_ids"]

    def decode(self, ids: list[int]) -> str:
        """Model text of generated ids, special tokens (EOS) dropped."""
        return self.tokenizer.decode(ids, skip_special_tokens=True)


def user_message(text: str, num_images: int, num_videos: int = 0) -> dict[str, Any]:
    """A user message: each image where an :data:`IMAGE_MARKER` stands in ``text`` when there are exactly
    ``num_images`` of them, otherwise the ``num_images`` image slots before the whole text (Qwen's order; a text
    whose markers do not match is kept as is). Videos likewise, by :data:`VIDEO_MARKER`; slots not placed by markers
    come first, videos before images. Empty text pieces (markers side by side or at an end) are left out."""
    counts = (("image", IMAGE_MARKER, num_images), ("video", VIDEO_MARKER, num_videos))
    placed = {kind for kind, marker, n in counts if n and text.count(marker) == n}  # kinds that stand at their markers
    content: list[dict[str, Any]] = [{"type": "video"}] * (num_videos * ("video" not in placed))
    content += [{"type": "image"}] * (num_images * ("image" not in placed))
    if not placed:
        return {"role": "user", "content": content + [{"type": "text", "text": text}]}
    marker_kind = {IMAGE_MARKER: "image", VIDEO_MARKER: "video"}
    split = "(" + "|".join(re.escape(m) for m, kind in marker_kind.items() if kind in placed) + ")"
    for piece in re.split(split, text):  # text, marker, text, ...: a marker of a kind not placed stays in the text
        kind = marker_kind.get(piece)
        if kind in placed:
            content.append({"type": kind})
        elif piece:
            content.append({"type": "text", "text": piece})
    return {"role": "user", "content": content}


HISTORY_PLACEHOLDER = "[earlier image omitted]"  # what replaces an image that left the history window (a few tokens)


@dataclass
class Segment:
    """One message of a :class:`Conversation` as tokens: what it added to the prompt, and (user turns) the same message
    with its first ``d`` images replaced by :data:`HISTORY_PLACEHOLDER`, tokenized once when first needed."""

    index: int  # position of the message in Conversation.messages
    start: int  # length of Conversation.consumed before this message (its template text begins there)
    ids: list[int]  # the message's tokens as first added (images expanded; a response's ids as generated)
    vision: list[VisionInput | VideoInput]  # its processed images and videos, in pad order ([] for responses)
    variants: dict[int, list[int]] = field(default_factory=dict)  # d images dropped -> the message's tokens


@dataclass
class Conversation:
    """Incremental multi-turn prompt building: each turn returns only the new ids, so turns concatenate exactly.

    The rendered template of all messages so far must extend the text consumed so far; templates that rewrite history
    (e.g. drop earlier reasoning) are rejected with a clear error rather than silently misaligned.

    A history window (:meth:`context` with ``window=k``) keeps the last ``k`` images of the episode (a video counts as
    one) and replaces older ones by :data:`HISTORY_PLACEHOLDER`: each message's windowed form is rendered and tokenized
    once, the first time an image of it leaves the window, and its kept images are the ones processed when the message
    arrived (an image or video is processed once per episode, whatever the window). The chat template must render each
    message independently of the others' content (Qwen's does); the tokens of a windowed context then equal those of
    the windowed messages rendered from scratch (``tests/policies/test_multiturn.py``).
    """

    encoder: PromptEncoder
    system: str | None = None  # optional system prompt
    messages: list[dict[str, Any]] = field(default_factory=list)
    consumed: str = ""  # template text already turned into ids
    ids: list[int] = field(default_factory=list)  # all ids so far
    vision: list[VisionInput | VideoInput] = field(default_factory=list)  # all images and videos so far, in pad order
    segments: list[Segment] = field(default_factory=list)  # the messages after the system prompt, as tokens

    def __post_init__(self) -> None:
        if self.system is not None:
            self.messages.append({"role": "system", "content": self.system})

    def fork(self) -> Conversation:
        """An independent copy to continue differently (the processed images are shared: they are never modified)."""
        twin = copy.copy(self)
        twin.messages = [dict(m) for m in self.messages]
        twin.ids, twin.vision = list(self.ids), list(self.vision)
        twin.segments = [dataclasses.replace(s, variants=dict(s.variants)) for s in self.segments]
        return twin

    def add_user(
        self, text: str, images: Sequence[Any], videos: Sequence[Any] = (), video_fps: Sequence[float] = ()
    ) -> tuple[list[int], list[VisionInput | VideoInput]]:
        """Append a user turn; return ``(new_ids, new_vision)`` ending with the assistant generation prompt.

        ``videos`` are frame arrays ``[T, H, W, 3]``, ``video_fps[i]`` the rate video ``i``'s frames were sampled at
        (:data:`~mmrl.policies.vlm.video.DEFAULT_FPS` where absent); each is processed once, here."""
        message = user_message(text, len(images), len(videos))
        fps = [float(f) for f in video_fps] + [DEFAULT_FPS] * (len(videos) - len(video_fps))
        pending = {"image": iter(images), "video": iter(zip(videos, fps))}
        new_vision: list[VisionInput | VideoInput] = []
        for part in message["content"]:  # processed in slot order: the order of the pads in the text
            if part["type"] == "image":
                new_vision.append(self.encoder.process_image(next(pending["image"])))
            elif part["type"] == "video":
                new_vision.append(self.encoder.process_video(*next(pending["video"])))
        self.messages.append(message)
        full = self.encoder.render(self.messages, add_generation_prompt=True)
        if not full.startswith(self.consumed):
            raise ValueError("the chat template rewrites earlier turns; multi-turn prompts cannot be built incrementally")
        new_ids = self.encoder.encode(full[len(self.consumed) :], new_vision)
        self.segments.append(Segment(len(self.messages) - 1, len(self.consumed), new_ids, new_vision))
        self.consumed = full
        self.ids += new_ids
        self.vision += new_vision
        return new_ids, new_vision

    def add_assistant(self, response_ids: list[int]) -> None:
        """Append the generated response (ids as generated, never re-tokenized)."""
        closed = bool(response_ids) and response_ids[-1] in self.encoder.eos_ids
        body = list(response_ids[:-1] if closed else response_ids)
        content = self.encoder.tokenizer.decode(body, skip_special_tokens=False)
        self.messages.append({"role": "assistant", "content": content})
        text = content + ("<|im_end|>" if closed else "")
        # The template closes an assistant turn with "<|im_end|>\n". A response cut by the length limit never emitted its
        # end token, so the next rendered user segment simply starts with it: nothing to patch here.
        self.segments.append(Segment(len(self.messages) - 1, len(self.consumed), list(response_ids), []))
        self.consumed += text
        self.ids += list(response_ids)

    def context(self, window: int | None = None) -> tuple[list[int], list[VisionInput | VideoInput]]:
        """The prompt so far, ``(ids, vision)``: all of it (``window`` None), or with only the last ``window`` images
        kept, older ones replaced by :data:`HISTORY_PLACEHOLDER` (the newest message's images always stay)."""
        if window is None or len(self.vision) <= window:
            return list(self.ids), list(self.vision)
        ids: list[int] = []
        vision: list[VisionInput | VideoInput] = []
        keep = window
        dropped: list[int] = []  # images dropped from each segment, newest first
        for seg in reversed(self.segments):
            n = len(seg.vision)
            kept = n if seg is self.segments[-1] else min(n, keep)  # the turn being answered keeps its images
            keep = max(keep - n, 0)
            dropped.append(n - kept)
        for seg, d in zip(self.segments, reversed(dropped)):
            ids += seg.ids if d == 0 else self._variant(seg, d)
            vision += seg.vision[d:]
        return ids, vision

    def _variant(self, seg: Segment, d: int) -> list[int]:
        """``seg``'s user message with its first ``d`` images replaced by the placeholder, as tokens (cached)."""
        if d not in seg.variants:
            message = self.messages[seg.index]
            parts = list(message["content"])
            image_slots = [i for i, p in enumerate(parts) if p.get("type") in ("image", "video")]
            for i in image_slots[:d]:
                parts[i] = {"type": "text", "text": HISTORY_PLACEHOLDER}
            # rendered as add_user rendered it: with the assistant generation prompt that followed the message
            rendered = self.encoder.render(self.messages[: seg.index] + [{**message, "content": parts}], True)
            if not rendered.startswith(self.consumed[: seg.start]):
                raise ValueError("the chat template renders a message differently after a change to an earlier one; "
                                 "history windows need a template that renders messages independently")  # fmt: skip
            seg.variants[d] = self.encoder.encode(rendered[seg.start :], seg.vision[d:])
        return seg.variants[d]
