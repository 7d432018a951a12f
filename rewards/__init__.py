"""Perception-aware reward functions, TRL-style: ``fn(completions: list[str], **columns) -> list[float]``.

A reward never raises on malformed model text: it returns its minimum. Importing ``rewards`` registers every reward;
``RANGES`` holds each one's documented ``(lo, hi)``.

Example:
    >>> import rewards
    >>> rewards.get("iou")(['{"bbox_2d": [0, 0, 10, 10]}'], answer=[[0, 0, 10, 20]])
    [0.5]
"""

from rewards import accuracy, format, grounding, gui, shaping  # noqa: F401  (import registers the rewards)
from rewards.coords import CONVENTIONS, Frame, smart_resize
from rewards.perception import temporal_contrast_bonus
from rewards.registry import RANGES, composite, get, names, register
from rewards.routing import from_compute_score, routed

__all__ = [
    "CONVENTIONS",
    "RANGES",
    "Frame",
    "composite",
    "from_compute_score",
    "get",
    "names",
    "register",
    "routed",
    "smart_resize",
    "temporal_contrast_bonus",
]
