"""Visual perturbations as augmentation (Vision Matters): pure, seeded image transforms for envs and data pipelines.

Every transform takes and returns RGB uint8 arrays ``[H, W, 3]``, never modifies its inputs, and draws randomness only
from an explicit ``numpy.random.Generator``. Invalid inputs raise a one-line ``ValueError`` naming the argument.

- :func:`distractor_concat`: the image and a distractor side by side (or stacked), the distractor resized to match.
- :func:`mixup`: a dominance-preserving blend, the original always weighted ``>= 0.5``.
- :func:`random_rotation`: a rotation by a uniform angle in ``[-max_degrees, max_degrees]``, canvas size kept.

Example:
    >>> rng = np.random.default_rng(0)
    >>> img = np.zeros((28, 28, 3), np.uint8)
    >>> distractor_concat(img, np.full((14, 14, 3), 255, np.uint8), axis=1).shape
    (28, 56, 3)
    >>> random_rotation(img, 15.0, rng).shape
    (28, 28, 3)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from PIL import Image

FILLS = {"white": (255, 255, 255), "black": (0, 0, 0)}


def check_rgb(image: Any, name: str) -> np.ndarray:
    """``image`` as an RGB uint8 array ``[H, W, 3]``, or a one-line ValueError naming ``name``."""
    array = np.asarray(image) if isinstance(image, np.ndarray) else None
    if array is None or array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3 or 0 in array.shape[:2]:
        got = f"dtype {array.dtype} shape {array.shape}" if array is not None else f"type {type(image).__name__}"
        raise ValueError(f"{name} must be an RGB uint8 array [H, W, 3], got {got}")
    return array


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    if image.shape[:2] == (height, width):
        return image.copy()
    return np.asarray(Image.fromarray(image, "RGB").resize((width, height), Image.BILINEAR))


def distractor_concat(image: np.ndarray, distractor: np.ndarray, axis: int = 1) -> np.ndarray:
    """Concatenate ``image`` (first) with ``distractor`` (second).

    ``axis=1`` puts them side by side (the distractor is resized, aspect ratio kept, to the image's height);
    ``axis=0`` stacks the distractor below (resized to the image's width). Resizing is bilinear; the side being matched
    is exact and the other side is ``max(1, round(...))``. Deterministic.

    Args:
        image: the original ``[H, W, 3]``.
        distractor: an unrelated image ``[h, w, 3]``.
        axis: 0 (vertical) or 1 (horizontal).
    Returns:
        ``[H, W + w', 3]`` (axis 1) or ``[H + h', W, 3]`` (axis 0).
    """
    image = check_rgb(image, "image")
    distractor = check_rgb(distractor, "distractor")
    if isinstance(axis, bool) or axis not in (0, 1):
        raise ValueError(f"axis must be 0 (vertical) or 1 (horizontal), got {axis!r}")
    H, W = image.shape[:2]
    h, w = distractor.shape[:2]
    if axis == 1:
        d = _resize(distractor, H, max(1, round(w * H / h)))
    else:
        d = _resize(distractor, max(1, round(h * W / w)), W)
    return np.concatenate([image, d], axis=axis)


def mixup(image: np.ndarray, other: np.ndarray, alpha: float) -> np.ndarray:
    """Dominance-preserving mixup: ``lam * image + (1 - lam) * other`` with ``lam = max(alpha, 1 - alpha)``.

    The blend is rounded to the nearest integer, exact halves toward ``image`` (so at ``lam = 0.5`` too, every pixel
    is at least as close to the original as to ``other``).

    ``alpha`` is a mixing weight in ``[0, 1]``; folding it to ``lam >= 0.5`` (as MixMatch does) guarantees the original
    keeps the larger weight, so the label of ``image`` stays the right one. ``other`` is resized (bilinear) to the image
    size if needed. Pixelwise the result lies between the two inputs and is at least as close to ``image`` as to
    ``other``. Deterministic: draw ``alpha`` from your own generator (e.g. ``rng.beta(a, a)``).

    Args:
        image: the original ``[H, W, 3]``.
        other: the image mixed in ``[h, w, 3]``.
        alpha: mixing weight in ``[0, 1]``; ``0`` or ``1`` return a copy of ``image``.
    Returns:
        ``[H, W, 3]`` uint8.
    """
    image = check_rgb(image, "image")
    other = check_rgb(other, "other")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating)) or not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be a float in [0, 1], got {alpha!r}")
    lam = max(float(alpha), 1.0 - float(alpha))
    a = image.astype(np.float64)
    delta = (1.0 - lam) * (_resize(other, *image.shape[:2]).astype(np.float64) - a)  # the move away from the image
    step = np.sign(delta) * np.ceil(np.abs(delta) - 0.5)  # nearest integer, exact halves rounded toward the image
    return np.clip(a + step, 0, 255).astype(np.uint8)


def random_rotation(image: np.ndarray, max_degrees: float, rng: np.random.Generator, fill: str = "white") -> np.ndarray:
    """Rotate by an angle drawn uniformly from ``[-max_degrees, max_degrees]`` (one ``rng.uniform`` draw).

    PIL ``Image.rotate`` (counter-clockwise for positive angles, bilinear, about the centre) with ``expand=False``: the
    output keeps the input size, corners rotated out are cropped and uncovered areas are filled with ``fill``
    (``"white"`` = 255, the default, like a page background; or ``"black"`` = 0). An angle of exactly 0 returns an
    identical copy.

    Args:
        image: ``[H, W, 3]``.
        max_degrees: non-negative finite bound on the absolute angle.
        rng: the random generator.
        fill: ``"white"`` or ``"black"``.
    Returns:
        ``[H, W, 3]`` uint8.
    """
    image = check_rgb(image, "image")
    if (
        isinstance(max_degrees, bool)
        or not isinstance(max_degrees, (int, float, np.integer, np.floating))
        or not math.isfinite(float(max_degrees))
        or max_degrees < 0
    ):
        raise ValueError(f"max_degrees must be a finite number >= 0, got {max_degrees!r}")
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if fill not in FILLS:
        raise ValueError(f"fill must be one of {sorted(FILLS)}, got {fill!r}")
    angle = float(rng.uniform(-float(max_degrees), float(max_degrees)))
    if angle == 0.0:
        return image.copy()
    rotated = Image.fromarray(image, "RGB").rotate(angle, resample=Image.BILINEAR, expand=False, fillcolor=FILLS[fill])
    return np.asarray(rotated).copy()
