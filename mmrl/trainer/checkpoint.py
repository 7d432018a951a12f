"""Checkpoints: the policy as its family saves it (a VLM: a normal Hugging Face directory, loadable by ``load_policy``)
plus the trainer state (optimizer, RNG states, step) so that a resumed run continues exactly where it stopped.

Layout: ``<run_dir>/checkpoints/step_000040/{config.json, model.safetensors, tokenizer..., trainer_state.pt}``.

Safety: ``trainer_state.pt`` holds only tensors and plain Python values (the numpy RNG state is stored as a tensor),
and it is read with ``torch.load(weights_only=True)``: PyTorch's restricted unpickler, which builds tensors, numbers,
strings and containers and refuses any other object, so a crafted file in a shared run directory cannot run code.
Writes are atomic (a temporary directory renamed into place). A checkpoint that cannot be read (truncated, deleted
files, refused by the unpickler) is skipped with a one-line warning by :func:`load_latest`, which falls back to the
previous one.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from mmrl.config import ConfigError

logger = logging.getLogger(__name__)
STATE_FILE = "trainer_state.pt"
T = TypeVar("T")


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states, as tensors and plain values only."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)}}  # fmt: skip
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_as_tuples(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(value: Any) -> Any:
    """Python's RNG state with its nested tuples (a container round trip may hand back lists)."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def save_checkpoint(run_dir: Path, step: int, policy: Any, optimizer: torch.optim.Optimizer, extra: dict[str, Any],
                    keep: int = 2) -> Path:  # fmt: skip
    """Write checkpoint ``step`` and delete all but the ``keep`` most recent ones."""
    root = Path(run_dir) / "checkpoints"
    path = root / f"step_{step:06d}"
    tmp = root / f".tmp_step_{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    policy.save(tmp)
    torch.save({"step": step, "optimizer": optimizer.state_dict(), "rng": rng_state(), **extra}, tmp / STATE_FILE)
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
    return sorted(p for p in root.glob("step_*") if (p / STATE_FILE).exists())


def latest_checkpoint(run_dir: Path) -> Path | None:
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1] if ckpts else None


def load_trainer_state(path: Path) -> dict[str, Any]:
    """The trainer state of checkpoint ``path`` (optimizer, RNG, step and extras), read without running any code."""
    return torch.load(Path(path) / STATE_FILE, map_location="cpu", weights_only=True)


def load_latest(run_dir: Path, load: Callable[[Path], T]) -> tuple[Path, T] | None:
    """``(checkpoint, load(checkpoint))`` for the newest checkpoint that ``load`` reads without an error; each one that
    fails is a one-line warning and the previous one is tried. None when the run has no readable checkpoint."""
    for path in reversed(list_checkpoints(run_dir)):
        try:
            return path, load(path)
        except Exception as e:  # a truncated file, a deleted shard, a refused pickle: all mean "not this one"
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            logger.warning("checkpoint %s is unreadable (%s: %s); trying the previous one", path.name,
                           type(e).__name__, first[:200])  # fmt: skip
    return None


# Config keys a resumed run may change: how long it runs and how often it reports, not what it learns.
RESUMABLE_KEYS = frozenset({"threads", "train.resume", "train.overwrite", "train.steps", "train.eval_every",
                            "train.save_every", "train.log_every", "train.keep_checkpoints", "train.max_bad_steps",
                            "train.max_bad_rows", "train.rollouts_every", "train.rollouts_samples"})
RUN_FILES = ("checkpoints", "reference", "tensorboard", "metrics.jsonl", "summary.json", "curves.png", "config.json",
             "rollouts", "viewer.html")


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        out.update(_flat(value, name + ".") if isinstance(value, dict) and value else {name: value})
    return out


def claim_run_dir(run_dir: Path, config: dict[str, Any], resume: bool, overwrite: bool) -> None:
    """Make ``run_dir`` this run's, before anything is written there.

    A directory that already holds a run is refused unless the run resumes it with the same config (only the keys in
    :data:`RESUMABLE_KEYS` may differ) or ``overwrite`` clears it. Refusals are one-line
    :class:`~mmrl.config.ConfigError` naming the key to change.
    """
    run_dir = Path(run_dir)
    held = [name for name in RUN_FILES if (run_dir / name).exists()]
    if not held:
        return
    if overwrite:
        for name in held:
            target = run_dir / name
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        logger.info("train.overwrite: cleared the previous run in %s", run_dir)
        return
    if not resume:
        raise ConfigError(f"name: {run_dir} already holds a run; train.resume=true continues it, "
                          "train.overwrite=true starts it again, or choose another name")  # fmt: skip
    saved_file = run_dir / "config.json"
    if not saved_file.exists():
        raise ConfigError(f"train.resume: {run_dir} has no config.json to check the run against; "
                          "train.overwrite=true starts it again")  # fmt: skip
    try:
        saved = _flat(json.loads(saved_file.read_text()))
    except ValueError:
        raise ConfigError(f"train.resume: {saved_file} is unreadable; train.overwrite=true starts the run again") from None
    now = _flat(json.loads(json.dumps(config)))  # as config.json holds it (tuples as lists)
    for key in sorted(set(saved) | set(now)):
        if key not in RESUMABLE_KEYS and saved.get(key) != now.get(key):
            raise ConfigError(f"{key}: the run in {run_dir} was started with {saved.get(key)!r}, this config has "
                              f"{now.get(key)!r}; resume with the same config, or use another name or "
                              "train.overwrite=true")  # fmt: skip
