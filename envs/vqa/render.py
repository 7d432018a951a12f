"""Drawing and laying out the simple-shape scenes of :class:`envs.vqa.synthetic.SyntheticVQAEnv`.

Shapes are filled, axis-aligned and drawn without anti-aliasing, so every shape is one solid run of a single colour on a
plain white background: its pixels can be counted, coloured and located exactly (the tests do so with
``cv2.connectedComponents``). Layouts keep at least :data:`GAP` background pixels between shape boxes and
:data:`MARGIN` between a box and the image border, so shapes never touch each other or leave the image.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> boxes = place_boxes(rng, sizes=[12, 10], height=56, width=56)
    >>> shapes = [Shape("circle", "red", PALETTE["red"], boxes[0]), Shape("square", "blue", PALETTE["blue"], boxes[1])]
    >>> draw_scene(shapes, height=56, width=56).shape
    (56, 56, 3)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

KINDS: tuple[str, ...] = ("circle", "square", "triangle")
BACKGROUND: tuple[int, int, int] = (255, 255, 255)  # plain white; no palette colour (even jittered) reaches it

# Colour name -> nominal RGB. Names are the answers of the colour task; keep them one word (the tiny tokenizer's vocab).
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 90, 220),
    "yellow": (235, 200, 30),
    "orange": (245, 140, 20),
    "purple": (150, 60, 200),
}
# Confusable neighbours, used for distractor colours at difficulty 3 ("similar colours").
SIMILAR: dict[str, tuple[str, ...]] = {
    "red": ("orange", "purple"),
    "orange": ("red", "yellow"),
    "yellow": ("orange", "green"),
    "green": ("yellow", "blue"),
    "blue": ("purple", "green"),
    "purple": ("blue", "red"),
}
# Largest per-channel shade jitter that keeps every jittered colour nearest to its own palette entry (worst pair:
# yellow/orange, 61.6 apart; a +-15 jitter moves a colour at most 15 * (10 + 60 + 10) / 61.6 = 19.5 < 30.8 along it).
MAX_JITTER = 15

GAP = 2  # background pixels kept between any two shape boxes (so shapes are separate 8-connected components)
MARGIN = 1  # background pixels kept between a shape box and the image border


@dataclass(frozen=True)
class Shape:
    """One filled shape: its kind, colour name, exact RGB and inclusive pixel box ``(x0, y0, x1, y1)``."""

    kind: str  # circle | square | triangle
    color: str  # palette name (the colour task's answer)
    rgb: tuple[int, int, int]  # drawn colour (the palette entry, possibly shade-jittered)
    box: tuple[int, int, int, int]  # inclusive bounding box (x0, y0, x1, y1) in pixels

    @property
    def center(self) -> tuple[float, float]:
        """Box centre ``(x, y)`` in pixels."""
        x0, y0, x1, y1 = self.box
        return (x0 + x1) / 2.0, (y0 + y1) / 2.0


def palette_for(difficulty: int) -> list[str]:
    """Colour names in play at ``difficulty``: the 4 well-separated primaries at level 1, all 6 from level 2."""
    names = list(PALETTE)
    return names[:4] if difficulty <= 1 else names


def jitter_rgb(rng: np.random.Generator, rgb: tuple[int, int, int], amount: int) -> tuple[int, int, int]:
    """``rgb`` with each channel moved by a uniform integer in ``[-amount, amount]`` (``amount <= MAX_JITTER``)."""
    if amount <= 0:
        return rgb
    delta = rng.integers(-amount, amount + 1, size=3)
    return tuple(int(np.clip(c + d, 0, 254)) for c, d in zip(rgb, delta))  # type: ignore[return-value]


def nearest_color(rgb: Sequence[float]) -> str:
    """The palette name nearest (Euclidean RGB) to ``rgb``."""
    return min(PALETTE, key=lambda name: sum((float(a) - b) ** 2 for a, b in zip(rgb, PALETTE[name])))


def _separated(a: tuple[int, int, int, int], b: tuple[int, int, int, int], gap: int) -> bool:
    """Whether inclusive boxes ``a`` and ``b`` have at least ``gap`` background pixels between them on some axis."""
    return a[2] + gap < b[0] or b[2] + gap < a[0] or a[3] + gap < b[1] or b[3] + gap < a[1]


def place_boxes(
    rng: np.random.Generator,
    sizes: Sequence[int],
    height: int,
    width: int,
    gap: int = GAP,
    tries_per_box: int = 200,
) -> list[tuple[int, int, int, int]] | None:
    """Place square boxes of the given side lengths uniformly at random, pairwise ``gap`` apart and inside the image.

    Returns the inclusive boxes ``(x0, y0, x1, y1)`` in the order of ``sizes``, or None when some box found no free spot
    in ``tries_per_box`` draws (the caller shrinks the sizes and tries again). Deterministic given ``rng``.
    """
    boxes: list[tuple[int, int, int, int]] = []
    for side in sizes:
        hi_x, hi_y = width - MARGIN - side, height - MARGIN - side  # largest valid x0 / y0
        if hi_x < MARGIN or hi_y < MARGIN:
            return None
        for _ in range(tries_per_box):
            x0 = int(rng.integers(MARGIN, hi_x + 1))
            y0 = int(rng.integers(MARGIN, hi_y + 1))
            box = (x0, y0, x0 + side - 1, y0 + side - 1)
            if all(_separated(box, other, gap) for other in boxes):
                boxes.append(box)
                break
        else:
            return None
    return boxes


GRID_CELL = 28  # px: one Qwen2.5-VL visual token covers 2x2 patches of 14 px


def place_in_grid(
    rng: np.random.Generator, sizes: Sequence[int], height: int, width: int, cell: int = GRID_CELL
) -> list[tuple[int, int, int, int]] | None:
    """Place square boxes in distinct ``cell``-px grid cells, each jittered inside its cell with a 2-px margin.

    Sides are capped at ``cell - 4``. Returns None when there are fewer cells than boxes. Deterministic given ``rng``.
    """
    rows, cols = height // cell, width // cell
    if len(sizes) > rows * cols:
        return None
    boxes = []
    for idx, side in zip(rng.permutation(rows * cols)[: len(sizes)], sizes):
        side = min(int(side), cell - 4)
        r, c = divmod(int(idx), cols)
        x0 = c * cell + int(rng.integers(2, cell - side - 1))  # [2, cell - side - 2] keeps a 2-px margin
        y0 = r * cell + int(rng.integers(2, cell - side - 1))
        boxes.append((x0, y0, x0 + side - 1, y0 + side - 1))
    return boxes


def draw_scene(
    shapes: Sequence[Shape], height: int, width: int, background: tuple[int, int, int] = BACKGROUND
) -> np.ndarray:
    """Render ``shapes`` filled, without anti-aliasing, on a plain background: RGB uint8 ``[height, width, 3]``."""
    image = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(image)
    for shape in shapes:
        x0, y0, x1, y1 = shape.box
        if shape.kind == "circle":
            draw.ellipse((x0, y0, x1, y1), fill=shape.rgb)
        elif shape.kind == "square":
            draw.rectangle((x0, y0, x1, y1), fill=shape.rgb)
        elif shape.kind == "triangle":  # isosceles, apex up, base on the box bottom
            draw.polygon([(x0, y1), (x1, y1), ((x0 + x1) // 2, y0)], fill=shape.rgb)
        else:
            raise ValueError(f"unknown shape kind '{shape.kind}' (known: {', '.join(KINDS)})")
    return np.asarray(image, dtype=np.uint8).copy()  # [H, W, 3], writable


def min_side(height: int, width: int) -> int:
    """The smallest box side (px) drawn at this image size: 7 px from 56 px images up (below 7 px a circle reads as a
    diamond), down to 5 px for the smallest images so that layouts still fit."""
    return max(5, min(7, math.ceil(min(height, width) / 8)))
