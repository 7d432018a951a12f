"""Per-row reward routing by ``data_source`` (verl style) and an adapter for verl ``compute_score`` functions.

Example:
    >>> fn = routed({"geo": {"iou": 1.0}, "math": {"accuracy": 1.0, "format": 0.5}})
    >>> total, parts = fn(["<answer>4</answer>"], answer=["4"], data_source=["math"])
    >>> total
    [1.0]
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

from rewards.columns import as_text, column
from rewards.registry import get

logger = logging.getLogger(__name__)

RoutedFn = Callable[..., tuple[list[float], dict[str, list[float]]]]


def _subset(columns: Mapping[str, Any], n: int, idx: list[int]) -> dict[str, Any]:
    """The columns restricted to rows ``idx`` (aligned lists are indexed; other values, e.g. trainer_state, pass)."""
    out: dict[str, Any] = {}
    for name, value in columns.items():
        if isinstance(value, (list, tuple)) and len(value) == n:
            out[name] = [value[i] for i in idx]
        else:
            out[name] = value
    return out


def routed(table: Mapping[str, Mapping[str, float]], default: Mapping[str, float] | None = None) -> RoutedFn:
    """A composite whose weights are chosen per row from the ``data_source`` column.

    ``table`` maps a data source to ``{reward_name: weight}``; rows whose source is missing from ``table`` (or that
    have no ``data_source``) use ``default``, and without a default they are a one-line ``ValueError``. Each reward is
    called once, on just the rows routed to it.

    Returns ``fn(completions, **columns) -> (total, parts)`` like ``registry.composite``; ``parts[name]`` holds the
    unweighted values, NaN on rows the reward was not applied to (log them with a NaN-aware mean). Non-finite component
    values count as 0 in ``total``.
    """
    routes = {str(k): dict(v) for k, v in table.items()}
    fallback = dict(default) if default is not None else None
    names = {name for w in [*routes.values(), fallback or {}] for name in w}
    fns = {name: get(name) for name in sorted(names)}  # unknown names fail here, at construction

    def fn(completions: list[Any], **columns: Any) -> tuple[list[float], dict[str, list[float]]]:
        n = len(completions)
        sources = column(columns, "data_source", n)
        weights: list[dict[str, float]] = []
        for i, src in enumerate(sources):
            w = routes.get(str(src)) if src is not None else None
            if w is None:
                if fallback is None:
                    raise ValueError(f"column 'data_source': no reward route for {src!r} (row {i}) and no default")
                w = fallback
            weights.append(w)
        total = [0.0] * n
        parts: dict[str, list[float]] = {}
        for name, reward in fns.items():
            idx = [i for i in range(n) if name in weights[i]]
            if not idx:
                continue
            values = reward([completions[i] for i in idx], **_subset(columns, n, idx))
            part = [math.nan] * n
            for i, v in zip(idx, values):
                v = float(v)
                part[i] = v
                total[i] += weights[i][name] * (v if math.isfinite(v) else 0.0)
            parts[name] = part
        return total, parts

    return fn


def from_compute_score(
    compute_score: Callable[..., Any], ground_truth_column: str | None = None
) -> Callable[..., list[float]]:
    """Wrap a verl ``compute_score(data_source, solution_str, ground_truth, extra_info) -> float | dict`` as a TRL-style
    reward ``fn(completions, **columns) -> list[float]``.

    Per row it passes ``data_source`` (column, default ``""``), the completion text, the ground truth (the
    ``ground_truth_column`` if given, else ``ground_truth``, else ``answer``) and ``extra_info`` (column, default
    ``None``) as keyword arguments. A dict result contributes its ``"score"``. Anything that goes wrong inside the
    user's function (an exception, a missing ``"score"``, a non-number or non-finite score) scores 0.0 and is logged
    once per wrapped function with ``logging`` (later failures go to debug level).
    """
    warned = False

    def _fail(msg: str) -> float:
        nonlocal warned
        (logger.debug if warned else logger.warning)(
            "compute_score %s: %s (scored 0.0)", getattr(compute_score, "__name__", "?"), msg
        )
        warned = True
        return 0.0

    def fn(completions: list[Any], **columns: Any) -> list[float]:
        n = len(completions)
        gt_name = ground_truth_column or ("ground_truth" if columns.get("ground_truth") is not None else "answer")
        gts = column(columns, gt_name, n)
        sources = column(columns, "data_source", n, "")
        extras = column(columns, "extra_info", n)
        out = []
        for comp, gt, src, extra in zip(completions, gts, sources, extras):
            try:
                result = compute_score(data_source=src, solution_str=as_text(comp), ground_truth=gt, extra_info=extra)
            except Exception as exc:  # the user's code: never let it kill a training step
                out.append(_fail(f"raised {type(exc).__name__}: {exc}"))
                continue
            if isinstance(result, Mapping):
                if "score" not in result:
                    out.append(_fail("returned a dict without 'score'"))
                    continue
                result = result["score"]
            try:
                value = float(result)
            except (TypeError, ValueError):
                out.append(_fail(f"returned a non-number {result!r:.80}"))
                continue
            out.append(value if math.isfinite(value) else _fail(f"returned {value}"))
        return out

    fn.__name__ = getattr(compute_score, "__name__", "compute_score")
    fn.__doc__ = (
        f"verl compute_score adapter around {fn.__name__}. Range: that of the wrapped function (0.0 on failure)."
    )
    return fn
