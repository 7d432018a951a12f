"""Perception-aware reward functions, TRL-style: ``fn(completions: list[str], **columns) -> list[float]``.

A reward never raises on malformed model text: it returns its minimum. Importing ``rewards`` registers every reward;
``RANGES`` holds each one's documented ``(lo, hi)``. ``__all__`` is the public API other packages (``envs``, ``mmrl``)
import from ``rewards`` instead of reaching into its submodules. Importing ``rewards`` stays light: no torch, no
transformers, nothing from ``mmrl.policies`` (model judges plug in as callables, see :mod:`rewards.judges`).

Example:
    >>> import rewards
    >>> rewards.get("iou")(['{"bbox_2d": [0, 0, 10, 10]}'], answer=[[0, 0, 10, 20]])
    [0.5]
"""

from rewards import accuracy, format, grounding, gui, shaping  # noqa: F401  (import registers the rewards)
from rewards.coords import CONVENTIONS, Frame, smart_resize
from rewards.extract import answer_span
from rewards.judges import (
    VISION_TOKENS,
    GenerativeJudge,
    JudgeEngine,
    ProcessRewardJudge,
    StepScorer,
    register_judge,
    strip_vision_tokens,
)
from rewards.perception import temporal_contrast_bonus
from rewards.registry import RANGES, composite, get, names, register
from rewards.routing import from_compute_score, routed

__all__ = [
    "CONVENTIONS",
    "RANGES",
    "VISION_TOKENS",
    "Frame",
    "GenerativeJudge",
    "JudgeEngine",
    "ProcessRewardJudge",
    "StepScorer",
    "answer_span",
    "composite",
    "from_compute_score",
    "get",
    "names",
    "register",
    "register_judge",
    "routed",
    "smart_resize",
    "strip_vision_tokens",
    "temporal_contrast_bonus",
]
