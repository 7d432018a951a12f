"""Coordinate conventions: the ONE place where a completion's coordinates are mapped to original-image pixels and back.

Ground truth is always stored in original-image pixels. The optional ``coordinate_convention`` column names the
convention the *completion* uses:

==============  =======================================================================================================
``pixel``       original-image pixels (default; no ``image_size`` needed)
``qwen2_5_vl``  absolute pixels in the ``smart_resize``-d image (Qwen2.5-VL): ``x_orig = x * W / W_resized``;
                ``min_pixels`` / ``max_pixels`` columns (defaults ``56*56`` and ``28*28*1280``)
``qwen2_vl``    normalised to [0, 1000) (Qwen2-VL): ``x_orig = x / 1000 * W``
``qwen3_vl``    normalised to [0, 1000) (Qwen3-VL), same mapping as ``qwen2_vl``
``normalized``  normalised to [0, 1]: ``x_orig = x * W``
==============  =======================================================================================================

Every convention except ``pixel`` needs the image size ``[W, H]`` (original pixels): the ``image_size`` column, else the
size of the row's first image in the ``images`` column (what the envs pass); its absence is a one-line
``ValueError`` naming the column (a dataset/config bug, not model text). Coordinates are flat sequences
``(x, y)`` or ``(x1, y1, x2, y2)``: even indices are x, odd indices are y.

Example:
    >>> frame = Frame("qwen2_vl", (640.0, 480.0))
    >>> frame.to_pixels((500.0, 500.0))
    (320.0, 240.0)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

CONVENTIONS = ("pixel", "qwen2_5_vl", "qwen2_vl", "qwen3_vl", "normalized")
DEFAULT_MIN_PIXELS = 56 * 56  # Qwen2.5-VL image processor default
DEFAULT_MAX_PIXELS = 28 * 28 * 1280  # Qwen2.5-VL image processor default (= 14*14*4*1280)
QWEN_FACTOR = 28  # patch size 14 x spatial merge 2


def smart_resize(
    height: int,
    width: int,
    factor: int = QWEN_FACTOR,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[int, int]:
    """Qwen2/2.5-VL's resize rule ``(height, width) -> (h_bar, w_bar)``: both sides multiples of ``factor``, pixel count
    within ``[min_pixels, max_pixels]``, aspect ratio kept as closely as possible.

    Same arithmetic as ``transformers.models.qwen2_vl.image_processing_pil_qwen2_vl.smart_resize`` (tested for equality);
    reimplemented so rewards do not depend on a transformers internal. An aspect ratio over 200 is a ``ValueError``.
    """
    if min(height, width) <= 0:
        raise ValueError(f"column 'image_size': sides must be positive, got {width}x{height}")
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"column 'image_size': absolute aspect ratio must be smaller than 200, got {width}x{height}")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def parse_image_size(value: Any) -> tuple[float, float] | None:
    """The ``image_size`` column value ``[W, H]`` as floats (``None`` stays ``None``); anything else names the column."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        value = (value.get("width"), value.get("height"))
    try:
        w, h = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"column 'image_size': expected [W, H], got {value!r:.80}") from None
    if not (math.isfinite(w) and math.isfinite(h) and w > 0 and h > 0):
        raise ValueError(f"column 'image_size': expected positive finite [W, H], got {value!r:.80}")
    return w, h


@dataclass(frozen=True)
class Frame:
    """How one row's completion coordinates relate to original-image pixels.

    ``convention`` is one of ``CONVENTIONS``; ``image_size`` is the original ``(W, H)`` (``None`` only for ``pixel``).
    """

    convention: str = "pixel"
    image_size: tuple[float, float] | None = None
    min_pixels: int = DEFAULT_MIN_PIXELS
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        if self.convention not in CONVENTIONS:
            raise ValueError(
                f"column 'coordinate_convention': unknown '{self.convention}' (known: {', '.join(CONVENTIONS)})"
            )
        if self.convention != "pixel" and self.image_size is None:
            raise ValueError(f"column 'image_size' is required for coordinate_convention '{self.convention}'")

    def scale(self) -> tuple[float, float]:
        """``(sx, sy)`` with ``x_orig = x * sx`` and ``y_orig = y * sy``."""
        if self.convention == "pixel":
            return 1.0, 1.0
        w, h = self.image_size  # type: ignore[misc]
        if self.convention == "qwen2_5_vl":
            h_r, w_r = smart_resize(round(h), round(w), QWEN_FACTOR, self.min_pixels, self.max_pixels)
            return w / w_r, h / h_r
        if self.convention in ("qwen2_vl", "qwen3_vl"):
            return w / 1000.0, h / 1000.0
        return w, h  # normalized

    def to_pixels(self, coords: Sequence[float]) -> tuple[float, ...]:
        """Completion coordinates -> original-image pixels (x at even, y at odd indices)."""
        sx, sy = self.scale()
        return tuple(float(v) * (sx if i % 2 == 0 else sy) for i, v in enumerate(coords))

    def columns(self) -> dict[str, Any]:
        """The frame as the columns :func:`frame_from_row` reads back (what an env passes to rewards, infos, viewers)."""
        size = None if self.image_size is None else [float(v) for v in self.image_size]
        return {"coordinate_convention": self.convention, "image_size": size, "min_pixels": self.min_pixels,
                "max_pixels": self.max_pixels}  # fmt: skip

    def from_pixels(self, coords: Sequence[float]) -> tuple[float, ...]:
        """Original-image pixels -> this convention (what an env shows the policy); inverse of ``to_pixels``."""
        sx, sy = self.scale()
        return tuple(float(v) / (sx if i % 2 == 0 else sy) for i, v in enumerate(coords))


def image_size_of(images: Any) -> tuple[float, float] | None:
    """``(W, H)`` of the first image of an ``images`` column entry (arrays ``[H, W, C]`` or PIL images), else None."""
    first = images[0] if isinstance(images, (list, tuple)) and images else images
    shape = getattr(first, "shape", None)
    if shape is not None and len(shape) == 3 and shape[0] > 0 and shape[1] > 0:
        return float(shape[1]), float(shape[0])
    size = getattr(first, "size", None)  # PIL: (W, H)
    if isinstance(size, tuple) and len(size) == 2 and size[0] > 0 and size[1] > 0:
        return float(size[0]), float(size[1])
    return None


def frame_from_row(row: Mapping[str, Any]) -> Frame:
    """The ``Frame`` for one row of columns: ``coordinate_convention``, ``image_size`` (else the first image's size from
    ``images``), ``min_pixels``, ``max_pixels``."""
    convention = row.get("coordinate_convention") or "pixel"
    if not isinstance(convention, str):
        raise ValueError(f"column 'coordinate_convention': expected a string, got {convention!r:.80}")
    min_pixels = row.get("min_pixels")
    max_pixels = row.get("max_pixels")
    return Frame(
        convention.strip().lower(),
        parse_image_size(row.get("image_size")) or image_size_of(row.get("images")),
        DEFAULT_MIN_PIXELS if min_pixels is None else int(min_pixels),
        DEFAULT_MAX_PIXELS if max_pixels is None else int(max_pixels),
    )
