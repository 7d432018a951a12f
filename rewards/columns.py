"""Reading TRL-style inputs: completions (plain or conversational) and dataset columns aligned with them.

TRL calls a reward as ``fn(completions, **columns)`` where every dataset column is a list aligned with ``completions``
(plus a few extras such as ``prompts``, ``completion_ids`` and ``trainer_state``). Everything here is shared by every
reward module so that column handling lives in one place.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

# Ground-truth column names, in the order they are looked up.
GT_COLUMNS = ("answer", "solution", "ground_truth")


def as_text(completion: Any) -> str:
    """The completion's text: a plain string, or the last message's content of a conversational completion.

    Conversational completions look like ``[{"role": "assistant", "content": "..."}]`` where ``content`` may itself be a
    list of parts (``{"type": "text", "text": "..."}``). Anything else (``None``, numbers) becomes ``""`` so that rewards
    return their minimum instead of raising.
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        return as_text(completion.get("content"))
    if isinstance(completion, (list, tuple)) and completion:
        last = completion[-1]
        if isinstance(last, Mapping) and "type" in last and "content" not in last:  # list of content parts
            return "".join(str(p.get("text", "")) for p in completion if isinstance(p, Mapping))
        return as_text(last)
    return ""


def _as_list(value: Any) -> Any:
    tolist = getattr(value, "tolist", None)  # numpy arrays / torch tensors from a dataset formatted as arrays
    if callable(tolist) and not isinstance(value, (str, bytes)):
        value = tolist()
    return value


def column(columns: Mapping[str, Any], name: str, n: int, default: Any = None) -> list[Any]:
    """Column ``name`` as a list of ``n`` values: missing -> ``[default] * n``; a scalar is broadcast to every row.

    A list whose length differs from ``n`` is a dataset bug and raises a one-line ``ValueError`` naming the column.
    Row values that are ``None`` are replaced by ``default``.
    """
    if name not in columns or columns[name] is None:
        return [default] * n
    value = _as_list(columns[name])
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"column '{name}' has {len(value)} values for {n} completions")
        return [default if v is None else _as_list(v) for v in value]
    return [value] * n


def rows(columns: Mapping[str, Any], n: int, names: Sequence[str]) -> list[dict[str, Any]]:
    """Per-row dicts holding the columns ``names`` (missing -> ``None``), for rewards that read several columns."""
    cols = {name: column(columns, name, n) for name in names}
    return [{name: cols[name][i] for name in names} for i in range(n)]


def gt_column(columns: Mapping[str, Any], n: int) -> list[Any]:
    """The ground-truth column (``answer``, else ``solution``, else ``ground_truth``); none of them is a ValueError."""
    for name in GT_COLUMNS:
        if columns.get(name) is not None:
            return column(columns, name, n)
    raise ValueError(f"missing ground-truth column (one of: {', '.join(GT_COLUMNS)})")


def load_json_gt(value: Any, name: str = "answer") -> Any:
    """A ground-truth value that may be stored as a JSON string (``"[1, 2, 3, 4]"``); bad JSON names the column."""
    if isinstance(value, (bytes, bytearray)):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise ValueError(f"column '{name}': ground truth {value[:80]!r} is not valid JSON") from None
    return value


def gt_numbers(value: Any, sizes: Sequence[int], name: str = "answer") -> tuple[float, ...]:
    """A flat ground-truth coordinate list with one of the lengths in ``sizes``, all finite, else a one-line error."""
    value = _as_list(value)
    if not isinstance(value, (list, tuple)) or len(value) not in sizes:
        raise ValueError(
            f"column '{name}': expected a list of {' or '.join(map(str, sizes))} numbers, got {value!r:.80}"
        )
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"column '{name}': non-numeric coordinate in {value!r:.80}") from None
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"column '{name}': non-finite coordinate in {value!r:.80}")
    return out


def as_float(value: Any, name: str, default: float) -> float:
    """A numeric per-row option (``max_length``, ``rel_tol``...), ``default`` when ``None``; a bad value names the column."""
    if value is None:
        return default
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"column '{name}': expected a number, got {value!r:.80}") from None
    if not math.isfinite(out):
        raise ValueError(f"column '{name}': expected a finite number, got {value!r:.80}")
    return out


def finite_or(value: float, minimum: float) -> float:
    """``value`` if finite, else ``minimum`` (the last line of defence: a reward is always finite)."""
    return value if math.isfinite(value) else minimum


def as_bool(value: Any, name: str, default: bool = False) -> bool:
    """A boolean per-row option (``require_tags``): bools, 0/1 and "true"/"false" strings; anything else names the column."""
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    raise ValueError(f"column '{name}': expected a boolean, got {value!r:.80}")
