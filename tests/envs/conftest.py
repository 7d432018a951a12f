"""Stand-in reward functions for the env tests, registered under test-only names.

The real ``accuracy`` and ``format`` rewards live in ``rewards/``; these stand-ins keep the env tests independent of
them (and of the env's own answer parser).
"""

from __future__ import annotations

import re
from typing import Any

import pytest

import rewards

_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_FORMAT = re.compile(r"\s*<think>.*?</think>\s*<answer>.*?</answer>\s*", re.DOTALL)
SEEN_COLUMNS: list[dict[str, Any]] = []  # what test_columns was called with, most recent last


def _exact(completions: list[str], answer: list[str], **_: Any) -> list[float]:
    out = []
    for text, truth in zip(completions, answer):
        found = _ANSWER.findall(text) if isinstance(text, str) else []
        out.append(1.0 if found and found[-1].strip().lower() == str(truth).strip().lower() else 0.0)
    return out


def _format(completions: list[str], **_: Any) -> list[float]:
    return [1.0 if isinstance(t, str) and _FORMAT.fullmatch(t) else 0.0 for t in completions]


def _columns(completions: list[str], **columns: Any) -> list[float]:
    SEEN_COLUMNS.append(columns)
    return [0.0] * len(completions)


@pytest.fixture
def seen_columns(test_rewards: dict[str, float]) -> list[dict[str, Any]]:
    """The columns the ``test_columns`` reward received, one dict per call (cleared for each test)."""
    SEEN_COLUMNS.clear()
    return SEEN_COLUMNS


@pytest.fixture(scope="session")
def test_rewards() -> dict[str, float]:
    """Register the stand-ins once; return the reward weights the env tests use."""
    for name, fn in (("test_exact", _exact), ("test_format", _format), ("test_columns", _columns)):
        if name not in rewards.names():
            rewards.register(name)(fn)
    return {"test_exact": 1.0, "test_format": 0.5}
