"""Shaping rewards: non-positive penalties added on top of a task reward.

Lengths are measured in characters unless a ``length`` column gives token counts (then ``max_length`` and
``cache_length`` must be in tokens too). TRL's ``completion_ids`` is deliberately not used, so the unit never changes
silently between the CLI and a trainer.

Example:
    >>> overlong(["x" * 900], max_length=[1000], cache_length=[200])
    [-0.5]
"""

from __future__ import annotations

import math
from typing import Any

from rewards.columns import as_float, as_text, column
from rewards.registry import register

DEFAULT_MAX_LENGTH = 4096  # characters (or tokens with a `length` column)
DEFAULT_CACHE_LENGTH = 1024  # DAPO's soft-punishment window; DAPO used 4096 of 20480 tokens
DEFAULT_NGRAM = 3


def _lengths(completions: list[Any], columns: dict[str, Any]) -> list[float]:
    n = len(completions)
    given = column(columns, "length", n)
    return [len(as_text(c)) if g is None else max(0.0, as_float(g, "length", 0.0)) for c, g in zip(completions, given)]


def _length_options(columns: dict[str, Any], n: int) -> tuple[list[float], list[float]]:
    max_len = [as_float(v, "max_length", DEFAULT_MAX_LENGTH) for v in column(columns, "max_length", n)]
    if any(m <= 0 for m in max_len):
        raise ValueError("column 'max_length': must be positive")
    cache = [as_float(v, "cache_length", DEFAULT_CACHE_LENGTH) for v in column(columns, "cache_length", n)]
    return max_len, cache


def overlong_penalty(length: float, max_length: float, cache_length: float) -> float:
    """DAPO soft overlong punishment, in [-1, 0]: 0 up to ``max_length - cache_length``, then linear down to -1 at
    ``max_length``, and -1 beyond. ``cache_length`` is clipped to ``[0, max_length]``; 0 means a hard step at the limit."""
    cache = min(max(cache_length, 0.0), max_length)
    start = max_length - cache
    if length <= start:
        return 0.0
    if length > max_length or cache == 0:
        return -1.0
    return (start - length) / cache


@register("overlong", bounds=(-1.0, 0.0))
def overlong(completions: list[Any], **columns: Any) -> list[float]:
    """DAPO overlong shaping over the last ``cache_length`` units before ``max_length`` (columns; defaults 4096 and
    1024). Length in characters, or the ``length`` column's token counts. Range [-1, 0]."""
    n = len(completions)
    max_len, cache = _length_options(columns, n)
    return [overlong_penalty(L, m, c) for L, m, c in zip(_lengths(completions, columns), max_len, cache)]


@register("length_penalty", bounds=(-1.0, 0.0))
def length_penalty(completions: list[Any], **columns: Any) -> list[float]:
    """Linear penalty for length beyond ``target_length``: ``-min(1, max(0, L - target) / (max_length - target))``.

    Columns ``max_length`` (default 4096) and ``target_length`` (default 0, i.e. every unit costs), length as for
    ``overlong``. A target at or above ``max_length`` makes the penalty a step at ``max_length``. Range [-1, 0].
    """
    n = len(completions)
    max_len, _ = _length_options(columns, n)
    target = [as_float(v, "target_length", 0.0) for v in column(columns, "target_length", n)]
    out = []
    for L, m, t in zip(_lengths(completions, columns), max_len, target):
        t = max(t, 0.0)
        if L <= t:
            out.append(0.0)
        elif m <= t:
            out.append(-1.0 if L > m else 0.0)
        else:
            out.append(-min(1.0, (L - t) / (m - t)))
    return out


def repetition_fraction(text: str, n: int = DEFAULT_NGRAM) -> float:
    """Fraction of repeated word n-grams, ``1 - unique / total``, in [0, 1); 0 with fewer than ``n`` words.

    Words are whitespace-separated tokens (lowercased); linear time and memory.
    """
    words = text.lower().split()
    total = len(words) - n + 1
    if total <= 0:
        return 0.0
    unique = len({tuple(words[i : i + n]) for i in range(total)})
    return 1.0 - unique / total


@register("repetition_penalty", bounds=(-1.0, 0.0))
def repetition_penalty(completions: list[Any], **columns: Any) -> list[float]:
    """Minus the fraction of repeated word n-grams (``ngram_size`` column, default 3): 0 for no repetition, near -1
    for a loop. Range [-1, 0]."""
    n = len(completions)
    sizes = [as_float(v, "ngram_size", DEFAULT_NGRAM) for v in column(columns, "ngram_size", n)]
    out = []
    for c, k in zip(completions, sizes):
        if k < 1 or k != math.floor(k):
            raise ValueError(f"column 'ngram_size': expected a positive integer, got {k}")
        out.append(-repetition_fraction(as_text(c), int(k)))
    return out
