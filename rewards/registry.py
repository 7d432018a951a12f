"""The reward registry: TRL-style callables ``fn(completions: list[str], **columns) -> list[float]`` by name.

Example:
    >>> import rewards
    >>> rewards.get("accuracy")(["<answer>3</answer>"], answer=["3"])
    [1.0]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

RewardFn = Callable[..., list[float]]

_REGISTRY: dict[str, RewardFn] = {}

# name -> (lo, hi): the documented range of every registered reward (tests assert every value lies inside it).
RANGES: dict[str, tuple[float, float]] = {}


def register(
    name: str, bounds: tuple[float, float] | None = None, replace: bool = False
) -> Callable[[RewardFn], RewardFn]:
    """Decorator registering ``fn`` under ``name`` with its documented range ``bounds = (lo, hi)`` (kept in ``RANGES``).

    A second function under the same name is an error unless ``replace`` (model judges, re-registered per run).
    """

    if bounds is not None and not (math.isfinite(bounds[0]) and math.isfinite(bounds[1]) and bounds[0] <= bounds[1]):
        raise ValueError(f"reward '{name}': bounds must be finite with lo <= hi, got {bounds}")

    def deco(fn: RewardFn) -> RewardFn:
        if name in _REGISTRY and _REGISTRY[name] is not fn and not replace:
            raise ValueError(f"reward '{name}' is already registered")
        _REGISTRY[name] = fn
        if bounds is not None:
            RANGES[name] = (float(bounds[0]), float(bounds[1]))
        return fn

    return deco


def get(name: str) -> RewardFn:
    """The reward function registered as ``name``; an unknown name is a one-line error listing the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown reward '{name}' (known: {', '.join(sorted(_REGISTRY))})") from None


def names() -> list[str]:
    """All registered reward names, sorted."""
    return sorted(_REGISTRY)


def composite(weights: dict[str, float]) -> Callable[..., tuple[list[float], dict[str, list[float]]]]:
    """A weighted sum of registered rewards, as declared in YAML (``{name: weight}``).

    Returns a function ``fn(completions, **columns) -> (total, parts)`` where ``parts`` maps each name to its unweighted
    values, so trainers can log per-reward mean/std. Non-finite values from a component count as 0.
    """
    fns = {name: get(name) for name in weights}

    def total_fn(completions: list[str], **columns: Any) -> tuple[list[float], dict[str, list[float]]]:
        parts = {name: [float(v) for v in fn(completions, **columns)] for name, fn in fns.items()}
        total = [0.0] * len(completions)
        for name, values in parts.items():
            for i, v in enumerate(values):
                total[i] += weights[name] * (v if math.isfinite(v) else 0.0)
        return total, parts

    return total_fn
