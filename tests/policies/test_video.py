"""Video inputs: patch rows, grids and pad counts from Qwen's video-processor rule written out here (loops, not views);
multimodal RoPE time positions derived from the frame timestamps (REFERENCE.md); behaviour log-probs equal the
learner's recompute with videos in the prompt."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from mmrl.policies.vlm import SamplingParams
from mmrl.policies.vlm.chat import IMAGE_PAD, VIDEO_MARKER, VIDEO_PAD, PromptEncoder, user_message
from mmrl.policies.vlm.video import VideoInput, process_video
from mmrl.types import IMAGE_MARKER, Step, Trajectory

MEAN = np.array([0.48145466, 0.4578275, 0.40821073])  # OpenAI CLIP's, Qwen's image_mean / image_std
STD = np.array([0.26862954, 0.26130258, 0.27577711])


@pytest.fixture(scope="module")
def image_processor():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=112 * 112)


def frames(rng: np.random.Generator, t: int, h: int, w: int) -> np.ndarray:
    return rng.integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def resized_side_pair(h: int, w: int, lo: int, hi: int, factor: int = 28) -> tuple[int, int]:
    """REFERENCE.md's smart_resize: sides rounded to multiples of 28, scaled (floor / ceil to 28) into [lo, hi] pixels."""
    rh, rw = factor * round(h / factor), factor * round(w / factor)
    if rh * rw > hi:
        s = math.sqrt(h * w / hi)
        rh, rw = max(factor, factor * math.floor(h / s / factor)), max(factor, factor * math.floor(w / s / factor))
    elif rh * rw < lo:
        s = math.sqrt(lo / (h * w))
        rh, rw = factor * math.ceil(h * s / factor), factor * math.ceil(w * s / factor)
    return rh, rw


def reference_rows(video: np.ndarray, lo: int, hi: int, patch: int = 14, tp: int = 2, merge: int = 2):
    """Qwen's video patch rows by explicit loops: pad by repeating the last frame, resize (PIL bicubic), normalise, then
    one row per (temporal patch t, merged block (bh, bw), cell (mh, mw)), its values ordered (channel, frame in the
    temporal patch, y, x). Returns ``(rows [N, C*tp*patch*patch], (grid_t, grid_h, grid_w))``."""
    video = list(video) + [video[-1]] * (-len(video) % tp)
    h, w = resized_side_pair(video[0].shape[0], video[0].shape[1], lo, hi)
    norm = []
    for f in video:
        img = Image.fromarray(f).resize((w, h), Image.Resampling.BICUBIC) if f.shape[:2] != (h, w) else f
        x = (np.asarray(img, dtype=np.float64) / 255.0 - MEAN) / STD  # [h, w, 3]
        norm.append(x.transpose(2, 0, 1))  # [3, h, w]
    gt, gh, gw = len(video) // tp, h // patch, w // patch
    rows = []
    for t in range(gt):
        for bh in range(gh // merge):
            for bw in range(gw // merge):
                for mh in range(merge):
                    for mw in range(merge):
                        y, x = (bh * merge + mh) * patch, (bw * merge + mw) * patch
                        group = norm[t * tp : (t + 1) * tp]  # the frames of temporal patch t
                        cube = [[f[c, y : y + patch, x : x + patch] for f in group] for c in range(3)]
                        rows.append(np.asarray(cube).reshape(-1))  # (c, k, y, x) order
    return np.stack(rows), (gt, gh, gw)


# ----------------------------------------------------------------------------------------------- the video rows
@pytest.mark.parametrize("shape", [(5, 56, 84), (4, 60, 90), (3, 130, 70), (1, 40, 40)])
def test_rows_and_grid_follow_the_video_processor_rule(image_processor, shape):
    rng = np.random.default_rng(sum(shape))
    video = frames(rng, *shape)
    out = process_video(image_processor, video, fps=4.0)
    ref, grid = reference_rows(video, 56 * 56, 112 * 112)
    assert out.grid_thw.tolist() == list(grid) and out.grid_thw[0] == math.ceil(shape[0] / 2)
    assert out.pixel_values.shape == ref.shape == (math.prod(grid), 3 * 2 * 14 * 14)
    np.testing.assert_allclose(out.pixel_values.numpy(), ref, atol=1e-5)
    assert out.second_per_grid_t == 0.5 and out.timestamps() == [0.5 * i for i in range(grid[0])]


def test_a_still_video_is_the_image(image_processor):
    """The image processor repeats a still over the temporal patch: two equal frames give the very same rows."""
    image = frames(np.random.default_rng(3), 1, 70, 100)[0]
    video = process_video(image_processor, np.stack([image, image]), fps=2.0)
    still = image_processor(images=[Image.fromarray(image)], return_tensors="pt")
    assert video.grid_thw.tolist() == still["image_grid_thw"][0].tolist()
    assert torch.equal(video.pixel_values, still["pixel_values"])


def test_equal_to_transformers_video_processor(image_processor):
    """Against ``Qwen2VLVideoProcessor`` itself (it needs torchvision, absent on CPU here: skipped there)."""
    pytest.importorskip("torchvision", reason="torchvision is not installed: Qwen2VLVideoProcessor cannot be built")
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    video = frames(np.random.default_rng(5), 5, 56, 84)  # sides already multiples of 28: no resampling differences
    proc = Qwen2VLVideoProcessor(min_pixels=56 * 56, max_pixels=112 * 112)
    ref = proc(videos=[video], return_tensors="pt", cap_pixels_per_frame=False)
    out = process_video(image_processor, video, fps=2.0)
    assert out.grid_thw.tolist() == ref["video_grid_thw"][0].tolist()
    torch.testing.assert_close(out.pixel_values, ref["pixel_values_videos"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "bad, fps, match",
    [
        (np.zeros((4, 8, 8, 3), np.float32), 2.0, "uint8"),
        (np.zeros((8, 8, 3), np.uint8), 2.0, r"\[T, H, W, 3\]"),
        (np.zeros((0, 8, 8, 3), np.uint8), 2.0, r"\[T, H, W, 3\]"),
        (np.zeros((2, 28, 28, 3), np.uint8), 0.0, "fps"),
        (np.zeros((2, 28, 28, 3), np.uint8), float("nan"), "fps"),
    ],
)
def test_bad_videos_are_one_line_errors(image_processor, bad, fps, match):
    with pytest.raises(ValueError, match=match) as e:
        process_video(image_processor, bad, fps=fps)
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------------------------------------- prompts and pads
def test_video_markers_and_slot_order():
    assert user_message("Q?", 1, 1)["content"] == [{"type": "video"}, {"type": "image"}, {"type": "text", "text": "Q?"}]
    text = f"See {VIDEO_MARKER} and {IMAGE_MARKER}."
    assert user_message(text, 1, 1)["content"] == [
        {"type": "text", "text": "See "}, {"type": "video"}, {"type": "text", "text": " and "}, {"type": "image"},
        {"type": "text", "text": "."},
    ]  # fmt: skip
    # two image markers for one image: the image goes first, the video still stands at its marker
    text = f"{IMAGE_MARKER}{IMAGE_MARKER} then {VIDEO_MARKER}"
    assert user_message(text, 1, 1)["content"] == [
        {"type": "image"}, {"type": "text", "text": f"{IMAGE_MARKER}{IMAGE_MARKER} then "}, {"type": "video"},
    ]  # fmt: skip
    assert user_message(text, 2, 0) == user_message(text, 2)  # no video: the image-only message


def test_video_pads_expand_to_the_grid_count(tiny_policy):
    """Pads per video = ceil(T / 2) * (H' / 14) * (W' / 14) / 4, in one run between vision_start and vision_end where
    the marker stood; the image keeps its own run."""
    encoder: PromptEncoder = tiny_policy.encoder
    encoder.video_min_pixels, encoder.video_max_pixels = 56 * 56, 112 * 112
    try:
        rng = np.random.default_rng(0)
        video, image = frames(rng, 5, 60, 90), frames(rng, 1, 56, 56)[0]
        conv = tiny_policy.conversation()
        ids, vision = conv.add_user(f"Watch {VIDEO_MARKER} then look at {IMAGE_MARKER}.", [image], [video], [2.0])
    finally:
        encoder.video_min_pixels = encoder.video_max_pixels = None
    h, w = resized_side_pair(60, 90, 56 * 56, 112 * 112)
    expected = math.ceil(5 / 2) * (h // 14) * (w // 14) // 4
    assert [type(v) for v in vision][0] is VideoInput and len(vision) == 2
    text = tiny_policy.tokenizer.decode(ids)
    run = "<|vision_start|>" + VIDEO_PAD * expected + "<|vision_end|>"
    assert f"Watch {run} then look at <|vision_start|>{IMAGE_PAD * 4}<|vision_end|>." in text
    assert ids.count(encoder.video_pad_id) == expected and ids.count(encoder.image_pad_id) == 4


# -------------------------------------------------------------------------------------- multimodal RoPE in time
def reference_positions(ids, vision, image_pad, video_pad, merge, tokens_per_second):
    """Multimodal RoPE positions ``[3, T]`` from REFERENCE.md, independently of transformers. Text advances all axes by
    1. A vision run of ``h/merge x w/merge`` cells per temporal patch gets height ``start + row`` and width
    ``start + col``; its time is ``start`` for an image, and for temporal patch ``i`` of a video
    ``start + floor(timestamp_i * tokens_per_second)``, ``timestamp_i`` the time of its first frame (frame ``2i`` at
    ``2i / fps`` seconds). Text after a run resumes at ``start + max(h, w) / merge``: transformers' rule, equal to the
    Qwen release's ``max(position) + 1`` for images but not for videos whose time positions pass the spatial ones."""
    pos, out, i, items = 0, [], 0, iter(vision)
    while i < len(ids):
        if ids[i] not in (image_pad, video_pad):
            out.append((pos, pos, pos))
            pos, i = pos + 1, i + 1
            continue
        v = next(items)
        t, h, w = (int(x) for x in v.grid_thw)
        h, w = h // merge, w // merge
        if ids[i] == video_pad:
            times = [math.floor(2 * k / v.fps * tokens_per_second) for k in range(t)]  # frame 2k's timestamp
        else:
            times = [0] * t
        out.extend((pos + times[k], pos + r, pos + c) for k in range(t) for r in range(h) for c in range(w))
        pos, i = pos + max(h, w), i + t * h * w
    return torch.tensor(out).T


def _video_trajectories(policy, params, turns=2):
    """Episodes with videos of several frame counts and rates (and an image in one), sampled through ``act`` in one
    left-padded batch per turn."""
    rng = np.random.default_rng(7)
    first = [
        {"text": "Which way does it move?", "videos": (frames(rng, 4, 56, 56),), "video_fps": (1.0,)},
        {"text": f"Count in {VIDEO_MARKER}.", "videos": (frames(rng, 7, 56, 56),), "video_fps": (16.0,)},
        {"text": f"{IMAGE_MARKER} or {VIDEO_MARKER}?", "images": (frames(rng, 1, 56, 56)[0],),
         "videos": (frames(rng, 6, 56, 56),), "video_fps": (2.0,)},
        {"text": "No video here.", "images": (frames(rng, 1, 56, 56)[0],)},
    ]  # fmt: skip
    trajs = [Trajectory(steps=[], group_id=0) for _ in first]
    obs, states = first, [None] * len(first)
    for _ in range(turns):
        actions = policy.act(obs, params, states)
        for o, traj, a in zip(obs, trajs, actions):
            traj.steps.append(Step(o, a.env_action, a.logp, a.record))
        states = [a.state for a in actions]
        obs = [{"text": "Sure?", "videos": (frames(rng, 2, 56, 56),), "video_fps": (4.0,)}] * len(first)
    return trajs


def test_video_tokens_get_time_positions_from_their_timestamps(tiny_policy):
    """The policy's forward equals the model run with the hand-computed positions, and differs from the positions of
    Qwen2-VL's rule (temporal index, no timestamps)."""
    trajs = _video_trajectories(tiny_policy, SamplingParams(max_new_tokens=3), turns=1)
    inputs = tiny_policy.collate(trajs).model_inputs
    ids, att = inputs["input_ids"], inputs["attention_mask"]
    assert (ids == tiny_policy.encoder.video_pad_id).any()
    tps = tiny_policy.model.config.vision_config.tokens_per_second
    enc = tiny_policy.encoder
    B, T = ids.shape
    positions, index_rule = torch.zeros(2, 3, B, T, dtype=torch.long)
    for b in range(B):
        n = int(att[b].sum())
        for out, rate in ((positions, tps), (index_rule, None)):
            vision = inputs["vision"][b]
            if rate is None:  # time = temporal index: each video as if at fps = 2 / tokens_per_second
                vision = [VideoInput(v.pixel_values, v.grid_thw, 1.0, 2.0) if isinstance(v, VideoInput) else v
                          for v in vision]  # fmt: skip
            out[:, b, :n] = reference_positions(ids[b, :n].tolist(), vision, enc.image_pad_id, enc.video_pad_id,
                                                enc.merge_size, 1 if rate is None else rate)  # fmt: skip
    assert not torch.equal(positions, index_rule)  # the timestamps moved some positions
    logits, _ = tiny_policy.forward_logits(inputs)
    kwargs = tiny_policy._vision_kwargs(inputs["vision"], ids)
    kwargs.pop("mm_token_type_ids")
    with torch.no_grad():
        ref = tiny_policy.model(input_ids=ids, attention_mask=att, position_ids=positions, **kwargs).logits[:, :-1]
        idx = tiny_policy.model(input_ids=ids, attention_mask=att, position_ids=index_rule, **kwargs).logits[:, :-1]
    valid = att[:, 1:].bool()
    keep = [v for v in range(ref.shape[-1]) if v not in tiny_policy.suppress_ids]
    ours = logits.detach()[..., keep]
    assert torch.allclose(ours[valid], ref[..., keep][valid], atol=1e-5)
    assert not torch.allclose(ours[valid], idx[..., keep][valid], atol=1e-3)


def test_generation_logprobs_match_recompute_with_videos(tiny_policy):
    trajs = _video_trajectories(tiny_policy, SamplingParams(temperature=1.0, max_new_tokens=8))
    batch = tiny_policy.collate(trajs)
    logp, m, _ = tiny_policy.log_prob(batch)
    assert int(m.sum()) > 0 and logp.requires_grad
    assert float(((logp.detach() - batch.old_logp) * m).abs().max()) < 1e-4
    assert float((batch.old_logp * m).min()) < -1e-3  # real log-probs, not zeros
    tiny_policy.model.zero_grad()
    (logp * m).sum().backward()
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for n, p in tiny_policy.model.named_parameters()
               if "visual" in n)  # fmt: skip
    tiny_policy.model.zero_grad()
