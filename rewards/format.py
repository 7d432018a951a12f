"""Format rewards: does the completion follow the required output structure? Each is 1.0 or 0.0.

Tags are counted with ``str.count`` before any regex runs, so the DOTALL full-match regexes only ever see texts with
exactly one of each tag and stay linear on 100 kB completions.

Example:
    >>> format_reward(["<think>2+2=4</think> <answer>4</answer>", "<answer>4</answer>"])
    [1.0, 0.0]
"""

from __future__ import annotations

import re
from typing import Any

from rewards.columns import as_text
from rewards.extract import boxed, parse_action
from rewards.registry import register

_THINK_ANSWER = re.compile(r"\s*<think>.*?</think>\s*<answer>(.*?)</answer>\s*", re.S)
_ANSWER_ONLY = re.compile(r"\s*<answer>(.*?)</answer>\s*", re.S)
_TAGS = ("<think>", "</think>", "<answer>", "</answer>")


def _tag_counts(text: str) -> tuple[int, ...]:
    return tuple(text.count(t) for t in _TAGS)


def think_answer_ok(text: str) -> bool:
    """``^\\s*<think>.*?</think>\\s*<answer>.*?</answer>\\s*$`` (DOTALL), exactly one of each tag, non-blank answer."""
    if _tag_counts(text) != (1, 1, 1, 1):
        return False
    m = _THINK_ANSWER.fullmatch(text)
    return bool(m and m.group(1).strip())


def answer_only_ok(text: str) -> bool:
    """``^\\s*<answer>.*?</answer>\\s*$`` (DOTALL), exactly one answer tag pair, no think tags, non-blank answer."""
    if _tag_counts(text) != (0, 0, 1, 1):
        return False
    m = _ANSWER_ONLY.fullmatch(text)
    return bool(m and m.group(1).strip())


@register("format", bounds=(0.0, 1.0))
def format_reward(completions: list[Any], **columns: Any) -> list[float]:
    """1.0 if the completion is exactly ``<think>...</think> <answer>...</answer>`` (full match, DOTALL, one of each
    tag, whitespace around allowed), else 0.0. A blank answer scores 0 (a format reward must not pay for saying
    nothing). Range [0, 1]."""
    return [1.0 if think_answer_ok(as_text(c)) else 0.0 for c in completions]


@register("format_answer", bounds=(0.0, 1.0))
def format_answer(completions: list[Any], **columns: Any) -> list[float]:
    """1.0 if the completion is exactly ``<answer>...</answer>`` (full match, one pair, non-blank), else 0.0.
    Range [0, 1]."""
    return [1.0 if answer_only_ok(as_text(c)) else 0.0 for c in completions]


@register("format_boxed", bounds=(0.0, 1.0))
def format_boxed(completions: list[Any], **columns: Any) -> list[float]:
    """1.0 if the completion has exactly one ``\\boxed`` and it is balanced (``\\boxed{...}``, nested braces allowed)
    with non-blank content, else 0.0. Range [0, 1]."""
    out = []
    for c in completions:
        text = as_text(c)
        content = boxed(text) if text.count("\\boxed") == 1 else None
        out.append(1.0 if content is not None and content.strip() and "\\boxed{" in text else 0.0)
    return out


@register("format_json_action", bounds=(0.0, 1.0))
def format_json_action(completions: list[Any], **columns: Any) -> list[float]:
    """1.0 if the answer region (``<answer>`` content, else the whole text) holds exactly one JSON object with a
    non-empty string ``"action"`` key (a one-element list of it counts), else 0.0. Range [0, 1]."""
    return [1.0 if parse_action(as_text(c)) is not None else 0.0 for c in completions]
