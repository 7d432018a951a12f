"""Rollout samples: a few of a training step's trajectories written to disk for the viewer (:mod:`mmrl.viz.viewer`).

``write_rollouts`` stores the first ``max_samples`` trajectories of a batch (whole GRPO groups when they fit) under
``run_dir/rollouts/step_{step:06d}/``:

* ``samples.jsonl``: one JSON object per trajectory (fields below), written atomically;
* ``images/<hash>.png``: every distinct observation image once, named by a hash of its pixels and shape.

One line of ``samples.jsonl``::

    {"step": 25, "index": 3, "group": 1, "env_index": 0, "return": 1.0, "success": true, "ended": true,
     "advantage": 0.71,                            # the trajectory's: the float given, or the mean of its turns'
     "answer": "[10, 20, 30, 40]",                 # info["answer"] (ground truth) when the env gives one
     "turns": [{"text": "...", "images": [{"file": "images/3fa2...png", "size": [W, H]}],
                "arrays": {"state": {"shape": [8], "values": [...]}},   # numeric observations (MLP envs)
                "action": "<answer>click(3, 4)</answer>",               # model text, or an action array as a list
                "reward": 1.0, "reward_parts": {"hit": 1.0}, "advantage": 0.71,
                "terminated": true, "truncated": false,
                "frame": {"coordinate_convention": "qwen2_5_vl", "image_size": [W, H], "min_pixels": ..., ...},
                "target": [x1, y1, x2, y2],                             # ground-truth box / point, original pixels
                "info": {"parsed_answer": "...", ...}}]}                # the step's other short scalar info

Non-finite numbers are written as ``null`` (the file stays strict JSON). ``advantages`` (one entry per trajectory of
the batch, aligned with ``trajectories``) takes either a float, the trajectory's advantage given to all its turns
(per-sequence estimators: GRPO, RLOO...), or a list with one float per turn (the mean over that turn's trained
positions; ``None`` for a turn with none). :func:`batch_advantages` derives exactly that from the trainer's ``Batch``.

Example:
    >>> path = write_rollouts(run_dir, 25, trajectories, batch_advantages(batch, trajectories), max_samples=16)
    >>> (path / "samples.jsonl").exists()
    True
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import struct
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmrl.types import Batch, Step, Trajectory
from rewards.extract import BOX_KEYS, POINT_KEYS, coords_of, json_values

logger = logging.getLogger(__name__)

ROLLOUTS_DIR = "rollouts"
SAMPLES_FILE = "samples.jsonl"
IMAGES_DIR = "images"
FRAME_KEYS = ("coordinate_convention", "image_size", "min_pixels", "max_pixels")  # rewards.coords.frame_from_row's
TARGET_KEYS = ("bbox", "target_box", "gt_box")  # info keys holding a ground-truth box in original pixels
SKIPPED_INFO = {"reward_columns", "reward_parts", "episode", "final_info", "final_observation", "elements", "answer"}
MAX_ARRAY_VALUES = 64  # numbers kept per observation/action array (the shape is always kept)
MAX_INFO_TEXT = 500  # characters kept of a string info value
PNG_ZLIB_LEVEL = 1  # zlib level 1: 720p GUI screenshots compress to ~35 kB in ~6 ms (level 6: ~25 kB in ~10 ms)
PNG_COLOR_TYPE = {1: 0, 3: 2, 4: 6}  # channels -> PNG colour type (grey, RGB, RGBA)
Advantage = float | Sequence[float | None] | None


def step_dir(run_dir: str | Path, step: int) -> Path:
    """``run_dir/rollouts/step_{step:06d}``."""
    return Path(run_dir) / ROLLOUTS_DIR / f"step_{step:06d}"


def write_rollouts(
    run_dir: str | Path,
    step: int,
    trajectories: Sequence[Trajectory],
    advantages: Sequence[Advantage] | None = None,
    max_samples: int = 16,
) -> Path:
    """Write a sample of ``trajectories`` (module docstring) and return its directory.

    ``advantages``: ``None``, or one entry per trajectory: a float (the trajectory's) or a list of one float per turn.
    """
    if advantages is not None and len(advantages) != len(trajectories):
        raise ValueError(f"write_rollouts: {len(advantages)} advantages for {len(trajectories)} trajectories")
    out = step_dir(run_dir, step)
    (out / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    written: set[str] = set()  # image files of this call (the directory may hold some from an earlier try)
    lines = []
    for i in sample_indices(trajectories, max_samples):
        adv = None if advantages is None else advantages[i]
        record = trajectory_record(trajectories[i], adv, out, written)
        lines.append(json.dumps({"step": step, "index": i, **record}, allow_nan=False))
    tmp = out / (SAMPLES_FILE + ".tmp")
    tmp.write_text("".join(line + "\n" for line in lines))
    tmp.replace(out / SAMPLES_FILE)  # atomic: the viewer never reads half a file
    return out


def sample_indices(trajectories: Sequence[Trajectory], max_samples: int) -> list[int]:
    """Indices of the first whole groups (by first appearance) that fit in ``max_samples``; the first
    ``max_samples`` trajectories when not even the first group fits."""
    groups: dict[int, list[int]] = {}
    for i, t in enumerate(trajectories):
        groups.setdefault(t.group_id, []).append(i)
    chosen: list[int] = []
    for members in groups.values():
        if len(chosen) + len(members) > max_samples:
            break
        chosen += members
    return sorted(chosen) if chosen else list(range(min(max_samples, len(trajectories))))


def trajectory_record(traj: Trajectory, advantage: Advantage, out: Path, written: set[str]) -> dict[str, Any]:
    """The JSON-ready record of one trajectory (images saved under ``out``)."""
    per_turn = _turn_advantages(advantage, len(traj.steps))
    turns = [turn_record(s, a, traj.info, out, written) for s, a in zip(traj.steps, per_turn)]
    known = [a for a in per_turn if a is not None]
    if isinstance(advantage, (int, float)):
        traj_adv = _finite(advantage)
    else:
        traj_adv = _finite(sum(known) / len(known)) if known else None
    answer = next((s.info["answer"] for s in reversed(traj.steps) if "answer" in s.info), traj.info.get("answer"))
    return {
        "group": int(traj.group_id),
        "env_index": int(traj.env_index),
        "return": _finite(traj.reward),
        "success": bool(traj.info["success"]) if "success" in traj.info else None,
        "ended": traj.ended,
        "advantage": traj_adv,
        "answer": _jsonable(answer),
        "turns": turns,
    }


def turn_record(step: Step, advantage: float | None, traj_info: Mapping[str, Any], out: Path,
                written: set[str]) -> dict[str, Any]:  # fmt: skip
    """One turn: what the policy saw (text, images, arrays), what it did and what it earned."""
    text, images, arrays = _observation(step.observation, out, written)
    columns = step.info.get("reward_columns") or {}
    # the completion's coordinate convention: the reward columns' first, then the step's info, then the episode's
    frame = {k: _jsonable(src[k]) for src in (traj_info, step.info, columns) for k in FRAME_KEYS if k in src}
    info = {k: short for k, v in step.info.items() if k not in SKIPPED_INFO and (short := _short(v)) is not None}
    action = step.action if isinstance(step.action, str) else _array(step.action)
    return {
        "text": text,
        "images": images,
        "arrays": arrays,
        "action": action,
        "reward": _finite(step.reward),
        "reward_parts": {str(k): _finite(v) for k, v in (step.info.get("reward_parts") or {}).items()},
        "advantage": _finite(advantage),
        "terminated": bool(step.terminated),
        "truncated": bool(step.truncated),
        "frame": frame,
        "target": ground_truth_location(step.info),
        "info": info,
    }


def ground_truth_location(info: Mapping[str, Any]) -> list[float] | None:
    """The ground-truth box ``[x1, y1, x2, y2]`` or point ``[x, y]`` in original pixels, else ``None``: an info box
    (``TARGET_KEYS``), else the reward columns' / info's ``answer`` when it is coordinates (a list, its JSON text, or a
    GUI action dict with a location key)."""
    columns = info.get("reward_columns") or {}
    candidates = [info[k] for k in TARGET_KEYS if k in info]
    candidates += [src["answer"] for src in (columns, info) if "answer" in src]
    for value in candidates:
        if isinstance(value, str):
            found = json_values(value, max_values=2)
            value = found[0] if len(found) == 1 else None
        if isinstance(value, Mapping):
            value = next((value[k] for k in BOX_KEYS + POINT_KEYS if k in value), None)
        coords = coords_of(value)
        if coords is not None and all(math.isfinite(v) for v in coords):
            return [float(v) for v in coords]
    return None


def batch_advantages(batch: Batch, trajectories: Sequence[Trajectory]) -> list[list[float | None]]:
    """Per trajectory, one advantage per turn from the trainer's batch (rows aligned with ``trajectories`` as the
    family's ``collate`` built them): the mean of ``batch.advantages`` over the turn's trained positions.

    ============================  ====================================================================================
    ``advantages [B]``            the row's value for every turn of the row (with ``episode_ids``, rows are turns)
    ``advantages [B, L]``         per turn ``k``: mean over positions with ``mask`` and ``step_ids == k`` (VLM tokens of
                                  turn k, an MLP's step k); without ``step_ids``, the row's masked mean for every turn
    ============================  ====================================================================================
    """
    import torch

    adv = batch.advantages.detach().float().cpu()  # [B] or [B, L]
    mask = batch.mask.detach().float().cpu()  # [B, L]
    windowed = batch.episode_ids is not None  # rows are turns, in time order within their episode
    episodes = batch.episode_ids.tolist() if windowed else list(range(mask.shape[0]))  # [B] the row's trajectory
    out: list[list[float | None]] = [[None] * len(t.steps) for t in trajectories]
    rows_seen = [0] * len(trajectories)
    for b, e in enumerate(episodes):
        n_turns = len(trajectories[e].steps)
        held = [rows_seen[e]] if windowed else range(n_turns)  # the turns row b trains
        rows_seen[e] += 1
        if adv.dim() == 1:
            per_turn: list[float | None] = [float(adv[b])] * n_turns
        elif batch.step_ids is None:
            count = float(mask[b].sum())
            per_turn = [float((adv[b] * mask[b]).sum()) / count if count else None] * n_turns
        else:
            ids = batch.step_ids[b].detach().cpu()  # [L] the turn of each trained position, -1 elsewhere
            keep = (ids >= 0) & (mask[b] > 0)  # [L]
            sums = torch.zeros(n_turns).index_add_(0, ids[keep], adv[b][keep])  # [n_turns]
            counts = torch.zeros(n_turns).index_add_(0, ids[keep], torch.ones(int(keep.sum())))  # [n_turns]
            per_turn = [s / c if c else None for s, c in zip(sums.tolist(), counts.tolist())]
        for k in held:
            out[e][k] = per_turn[k]
    return out


# ---------------------------------------------------------------------------------------------------------- helpers
def _turn_advantages(advantage: Advantage, n_turns: int) -> list[float | None]:
    if advantage is None:
        return [None] * n_turns
    if isinstance(advantage, (int, float)):
        return [float(advantage)] * n_turns
    values = [None if a is None else float(a) for a in advantage]
    if len(values) != n_turns:
        raise ValueError(f"write_rollouts: {len(values)} turn advantages for a trajectory of {n_turns} turns")
    return values


def _observation(obs: Any, out: Path, written: set[str]) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    """``(text, images, arrays)`` of an observation: an env's obs dict (text, images, video, state, rgb...), an array
    (MLP envs) or text."""
    if isinstance(obs, str):
        return obs, [], {}
    if not isinstance(obs, Mapping):
        return "", [], {"obs": _array(obs)}
    texts, images, arrays = [], [], {}
    for key, value in obs.items():
        if isinstance(value, str):
            texts.append(value if key == "text" else f"[{key}] {value}")
        elif key == "images":
            images += [im for im in (_save_image(v, out, written) for v in value) if im is not None]
        elif key == "video":
            arrays["video"] = {"shape": [len(value)], "values": []}  # frames are not stored, only counted
        elif _is_image(value):
            images += [im for im in [_save_image(value, out, written)] if im is not None]
        else:
            arrays[str(key)] = _array(value)
    return "\n".join(texts), images, arrays


def _is_image(value: Any) -> bool:
    shape = getattr(value, "shape", None)
    return getattr(value, "dtype", None) == np.uint8 and shape is not None and len(shape) == 3 and shape[-1] in (3, 4)


def _save_image(image: Any, out: Path, written: set[str]) -> dict[str, Any] | None:
    """Save an RGB(A)/grey uint8 image once per distinct pixels; ``{"file", "size": [W, H]}``, or None if not one."""
    arr = np.asarray(image)
    channels = arr.shape[2] if arr.ndim == 3 else 1
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3) or channels not in PNG_COLOR_TYPE or min(arr.shape[:2]) == 0:
        logger.debug("rollouts: observation image of shape %s and dtype %s not stored", arr.shape, arr.dtype)
        return None
    arr = np.ascontiguousarray(arr)
    # content addressing, not security: SHA-1 runs on the CPU's SHA extensions, twice as fast as BLAKE2 here
    digest = hashlib.sha1(repr(arr.shape).encode(), usedforsecurity=False)
    digest.update(arr.data)  # the pixels, no copy
    name = f"{IMAGES_DIR}/{digest.hexdigest()[:20]}.png"
    if name not in written:
        path = out / name
        if not path.exists():
            path.write_bytes(encode_png(arr))
        written.add(name)
    return {"file": name, "size": [int(arr.shape[1]), int(arr.shape[0])]}


def encode_png(image: np.ndarray) -> bytes:
    """A uint8 ``[H, W]``, ``[H, W, 1|3|4]`` image as PNG bytes: every row with filter type 0 (none), zlib level
    ``PNG_ZLIB_LEVEL``.

    Performance: PIL's PNG writer picks a filter per row adaptively, which doubles the encoding time (13 ms vs 6 ms of
    CPU for a 720x1280 screenshot) for files of about the same size; the trainer writes its samples inline.
    """
    arr = image[..., None] if image.ndim == 2 else image  # [H, W, C]
    h, w, c = arr.shape
    rows = np.zeros((h, 1 + w * c), np.uint8)  # [H, 1 + W*C]: a filter-type byte (0) before each row
    rows[:, 1:] = arr.reshape(h, w * c)  # [H, W, C] -> [H, W*C]

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 8, PNG_COLOR_TYPE[c], 0, 0, 0)  # 8 bits, no interlacing
    idat = zlib.compress(rows, PNG_ZLIB_LEVEL)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _array(value: Any) -> dict[str, Any]:
    """A numeric array (or nested list) as ``{"shape", "values"}``: the first ``MAX_ARRAY_VALUES`` flat values."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return {"shape": [], "values": [], "text": str(value)[:MAX_INFO_TEXT]}
    flat = arr.reshape(-1)[:MAX_ARRAY_VALUES]  # [min(N, MAX_ARRAY_VALUES)]
    return {"shape": list(arr.shape), "values": [_finite(round(float(v), 5)) for v in flat]}


def _finite(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _short(value: Any) -> Any:
    """A short scalar info value as JSON (a string cut at ``MAX_INFO_TEXT``); anything else None (left out)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return _finite(value)
    if isinstance(value, str):
        return value[:MAX_INFO_TEXT]
    return None


def _jsonable(value: Any) -> Any:
    """``value`` as strict JSON data: containers recursively, numpy scalars/arrays as numbers/lists, non-finite
    numbers as None, anything else as its (cut) string."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        return int(value) if isinstance(value, (int, np.integer)) else _finite(value)
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value)[:MAX_INFO_TEXT]
