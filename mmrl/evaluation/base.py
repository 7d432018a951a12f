"""The shapes every benchmark adapter shares: :class:`Item`, :class:`Outcome`, :class:`Benchmark`, and the helpers
adapters judge with (one reward call, the option a text commits to, breakdown labels).

Unparsable means no single answer of the kind the benchmark needs could be read: no answer at all, or a hedge between
several ("A or B", "3 or 4", two boxes), or a point where a box is needed. It counts as wrong and is reported as a count.

Example:
    >>> chosen_option("<answer>(C)</answer>", ["3", "4", "5"]), chosen_option("the answer is 4", ["3", "4", "5"])
    (2, 1)
    >>> chosen_option("A or B", ["3", "4", "5"]) is None
    True
"""

from __future__ import annotations

import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import rewards
from mmrl.config import ConfigError
from mmrl.evaluation.files import norm_id, prediction_text
from rewards.extract import answer_region, option_letter

UNKNOWN = "unknown"  # breakdown label of an item that lacks the key


class Outcome(str, Enum):
    """How one prediction was judged (a missing prediction is the report's business)."""

    CORRECT = "correct"
    WRONG = "wrong"
    UNPARSABLE = "unparsable"


@dataclass(frozen=True)
class Item:
    """One benchmark item, reduced to what offline scoring needs."""

    id: str  # the benchmark's own item id, as a string
    answer: Any  # ground truth in the adapter's terms (an option index, a number string, a box x1, y1, x2, y2, ...)
    groups: dict[str, tuple[str, ...]]  # breakdown key -> the item's labels (several for multi-label keys)
    info: dict[str, Any] = field(default_factory=dict)  # what judging needs besides the answer (choices, precision...)


Judge = Callable[[Item, Mapping[str, Any]], Outcome]


@dataclass(frozen=True)
class Benchmark:
    """A registered adapter: how to read the public file and judge one prediction row."""

    name: str  # registry name (``--benchmark NAME``)
    source: str  # the public file(s) and schema read
    read: Callable[[Path], list[Item]]  # data file (or release directory) -> items, in file order
    judge: Judge  # (item, prediction row) -> Outcome; never raises on model text
    breakdowns: tuple[str, ...]  # the keys of ``Item.groups`` the report is split by, in order
    id_keys: tuple[str, ...] = ()  # the benchmark's own id keys a prediction row may use instead of ``id``
    metric: str = "accuracy"  # what the headline number is


# --------------------------------------------------------------------------------------------------------------------
# Shared helpers: ids, labels, reward calls
# --------------------------------------------------------------------------------------------------------------------


def bad_item(path: Path, where: Any, message: str) -> ConfigError:
    return ConfigError(f"{path}: item {where}: {message}")


def item_id_of(path: Path, row: Mapping[str, Any], key: str, index: int) -> str:
    item_id = norm_id(row.get(key))
    if item_id is None:
        raise bad_item(path, f"#{index}", f"missing or unusable id '{key}': {row.get(key)!r:.80}")
    return item_id


def labels_of(value: Any) -> tuple[str, ...]:
    """Breakdown labels of one value: a list gives one label per element; missing or empty gives ``UNKNOWN``."""
    values = value if isinstance(value, (list, tuple)) else [value]
    out = tuple(str(v).strip() for v in values if v is not None and str(v).strip())
    return out or (UNKNOWN,)


def make_groups(**values: Any) -> dict[str, tuple[str, ...]]:
    return {key: labels_of(value) for key, value in values.items()}


def reward_score(reward: str, text: str, answer: Any, **columns: Any) -> float:
    """One call of a registered reward on one completion; ``None`` columns are left out."""
    cols = {k: [v] for k, v in columns.items() if v is not None}
    return rewards.get(reward)([text], answer=[answer], **cols)[0]


def outcome(ok: bool) -> Outcome:
    return Outcome.CORRECT if ok else Outcome.WRONG


def region_of(text: str) -> str | None:
    region = answer_region(text)
    return region if region is not None and region.strip() else None


def chosen_option(text: str, choices: Sequence[str]) -> int | None:
    """The index of the one option ``text`` commits to, else ``None`` (no answer, or a hedge).

    An option letter (``B``, ``(B)``, ``the answer is B``; letters up to the number of choices) wins; otherwise the
    answer must match exactly one choice's text with the ``accuracy`` reward (a number within 1e-6, LaTeX by
    math_verify, else normalised exact match).
    """
    region = region_of(text)
    if region is None:
        return None
    letters = string.ascii_uppercase[: len(choices)]
    letter = option_letter(region, letters)
    if letter is not None:
        return letters.index(letter)
    hits = [i for i, c in enumerate(choices) if c.strip() and reward_score("accuracy", text, c) == 1.0]
    return hits[0] if len(hits) == 1 else None


def judge_choice(item: Item, pred: Mapping[str, Any]) -> Outcome:
    """Multiple choice: ``item.answer`` is the index of the right option in ``item.info["choices"]``."""
    text = prediction_text(pred)
    index = chosen_option(text, item.info["choices"]) if text is not None else None
    return Outcome.UNPARSABLE if index is None else outcome(index == item.answer)


def choice_index(path: Path, item_id: str, answer: Any, choices: list[str]) -> int:
    """The index of a ground-truth option letter (``"B"``) among ``choices``."""
    letters = string.ascii_uppercase[: len(choices)]
    letter = str(answer).strip().strip("()").upper() if answer is not None else ""
    if len(letter) != 1 or letter not in letters:
        raise bad_item(path, item_id, f"answer {answer!r:.40} is not one of the option letters {letters!r}")
    return letters.index(letter)
