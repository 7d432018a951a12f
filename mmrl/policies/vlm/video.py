"""Qwen2.5-VL video inputs built on CPU without torchvision (transformers' video processor needs it).

A video observation is its sampled frames, RGB uint8 ``[T, H, W, 3]``, and the rate they were sampled at (``fps``,
frames per second of the *sampled* frames). Decoding a file and choosing the frames (a target fps and a frame cap) is
the env's job (:mod:`envs.vqa.video`): only envs read video files, and observations carry frames. Here the frames become
what the model takes, by the rule of ``Qwen2VLVideoProcessor`` (REFERENCE.md "Video inputs for Qwen-family VLMs"):

- pad to a multiple of the temporal patch (2) by repeating the last frame;
- resize every frame with the image processor's smart_resize rule (sides multiples of ``patch * merge`` = 28, pixel
  count within the configured range), rescale and normalise exactly as the image processor does (each frame goes through it);
- patchify with temporal patch 2: ``grid_t = T / 2``, ``grid_h = H' / 14``, ``grid_w = W' / 14``, one row of
  ``C * 2 * 14 * 14`` values per (temporal patch, 14x14 patch), rows in the merger's 2x2 block order;
- ``second_per_grid_t = temporal_patch / fps``: the seconds one temporal patch spans, passed to the model as
  ``second_per_grid_ts``; the model gives temporal patch ``i`` the time position
  ``start + floor(i * second_per_grid_t * tokens_per_second)``.

Example:
    >>> video = process_video(image_processor, frames, fps=2.0)  # frames: uint8 [4, 56, 56, 3]
    >>> video.grid_thw.tolist(), video.second_per_grid_t, video.num_tokens // 4
    ([2, 4, 4], 1.0, 8)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

DEFAULT_FPS = 2.0  # the rate a video observation without ``video_fps`` is taken to be sampled at (qwen-vl-utils' FPS)


@dataclass
class VideoInput:
    """One processed video: patch rows, its (t, h, w) grid in patches and the seconds one temporal patch spans."""

    pixel_values: torch.Tensor  # [grid_t * grid_h * grid_w, C * temporal_patch * patch * patch]
    grid_thw: torch.Tensor  # [3] long
    second_per_grid_t: float  # temporal_patch / fps: Qwen2.5-VL's second_per_grid_ts entry for this video
    fps: float  # rate of the sampled frames (frame k is at k / fps seconds)

    @property
    def num_tokens(self) -> int:
        """Vision-tower patches; the LLM sees ``num_tokens / merge_size**2`` after the 2x2 patch merger."""
        return int(self.grid_thw.prod())

    def timestamps(self) -> list[float]:
        """Seconds of the first frame of each temporal patch: ``i * second_per_grid_t``, ``[grid_t]``."""
        return [i * self.second_per_grid_t for i in range(int(self.grid_thw[0]))]


def check_frames(frames: Any) -> np.ndarray:
    """``frames`` as an RGB uint8 array ``[T, H, W, 3]`` with ``T >= 1``, or a one-line ValueError."""
    array = np.asarray(frames)
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[0] < 1 or array.shape[3] != 3:
        raise ValueError(f"videos must be RGB uint8 frame arrays [T, H, W, 3], got dtype {array.dtype} "
                         f"shape {array.shape}")  # fmt: skip
    return array


def process_video(
    image_processor: Any,
    frames: Any,
    fps: float = DEFAULT_FPS,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
) -> VideoInput:
    """Pad, resize, normalise and patchify ``frames`` (uint8 ``[T, H, W, 3]``, sampled at ``fps``) as Qwen's video
    processor does; the per-frame pixel range is ``[min_pixels, max_pixels]`` (None: the image processor's)."""
    array = check_frames(frames)
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"video fps must be a finite number > 0, got {fps!r}")
    tp = int(image_processor.temporal_patch_size)
    if pad := -len(array) % tp:  # an odd count: repeat the last frame (as the video processor does)
        array = np.concatenate([array, np.repeat(array[-1:], pad, axis=0)])  # [T + pad, H, W, 3]
    size = image_processor.size
    size = {
        "shortest_edge": min_pixels if min_pixels is not None else size["shortest_edge"],
        "longest_edge": max_pixels if max_pixels is not None else size["longest_edge"],
    }
    # Each frame through the image processor: the same resize, rescale and normalisation as an image. It returns every
    # frame as a still, its patches repeated over the temporal patch; the first copy is the frame.
    out = image_processor(images=[Image.fromarray(f, "RGB") for f in array], size=size, return_tensors="pt")
    grids = out["image_grid_thw"]  # [T, 3], rows (1, grid_h, grid_w), all equal (one frame size)
    _, gh, gw = (int(v) for v in grids[0])
    p = int(image_processor.patch_size)
    T = len(array)
    still = out["pixel_values"].reshape(T, gh * gw, 3, tp, p, p)[:, :, :, 0]  # [T, gh*gw, C, p, p]
    pairs = still.reshape(T // tp, tp, gh * gw, 3, p, p)  # [grid_t, tp, gh*gw, C, p, p]
    rows = pairs.permute(0, 2, 3, 1, 4, 5).reshape(T // tp * gh * gw, 3 * tp * p * p)  # [grid_t*gh*gw, C*tp*p*p]
    grid = torch.tensor([T // tp, gh, gw], dtype=torch.long)
    return VideoInput(pixel_values=rows.contiguous(), grid_thw=grid, second_per_grid_t=tp / float(fps), fps=float(fps))
