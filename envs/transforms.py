"""Visual perturbations as augmentation (Vision Matters): pure, seeded image transforms for envs and data pipelines.

Every transform takes and returns RGB uint8 arrays ``[H, W, 3]``, never modifies its inputs, and draws randomness only
from an explicit ``numpy.random.Generator``. Invalid inputs raise a one-line ``ValueError`` naming the argument.

- :func:`distractor_concat`: the image and a distractor side by side (or stacked), the distractor resized to match.
- :func:`mixup`: a dominance-preserving blend, the original always weighted ``>= 0.5``.
- :func:`random_rotation`: a rotation by a uniform angle in ``[-max_degrees, max_degrees]``, canvas size kept.

The same transforms as env config options: :data:`AUGMENTATIONS` maps the names of a VQA env's ``augment`` entries
(``{name: rotation, p: 0.5, max_degrees: 15}``) to :class:`Augmentation` dataclasses, and :func:`parse_augment` checks a
list of entries. The env lends each episode an :class:`AugmentContext`: its own images for mixup and distractors, and
the largest rotation that keeps the answer in view.

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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from mmrl.config import ConfigError, from_dict, suggest

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
    d = _resize(distractor, *_fitted_hw(image.shape[:2], distractor.shape[:2], axis))
    return np.concatenate([image, d], axis=axis)


def _fitted_hw(image_hw: tuple[int, int], distractor_hw: tuple[int, int], axis: int) -> tuple[int, int]:
    """``(height, width)`` the distractor is resized to: the image's height (axis 1) or width (axis 0), aspect kept."""
    (H, W), (h, w) = image_hw, distractor_hw
    return (H, max(1, round(w * H / h))) if axis == 1 else (max(1, round(h * W / w)), W)


def concat_hw(image_hw: tuple[int, int], distractor_hw: tuple[int, int], axis: int) -> tuple[int, int]:
    """``(height, width)`` of ``distractor_concat`` of images of these sizes (to size observation spaces)."""
    dh, dw = _fitted_hw(image_hw, distractor_hw, axis)
    return (image_hw[0], image_hw[1] + dw) if axis == 1 else (image_hw[0] + dh, image_hw[1])


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


# ------------------------------------------------------------------------------------------- augmentations (env config)
@dataclass(frozen=True)
class AugmentContext:
    """What an env lends the augmentations of one episode."""

    draw_image: Callable[[], np.ndarray]  # another image of the env (a new scene, another row's image) [h, w, 3]
    max_degrees: float = math.inf  # largest rotation that keeps the episode's answer in view (inf: no bound)


@dataclass
class Augmentation:
    """One entry of a VQA env's ``augment`` list: a transform applied to an episode's images with probability ``p``.

    Subclasses add the transform's parameters as fields, set :attr:`name` and implement :meth:`apply`.
    """

    p: float = 1.0  # probability that an episode gets this augmentation (one rng draw per episode when 0 < p < 1)

    name: ClassVar[str]  # the entry's ``name`` in configs (the key in AUGMENTATIONS)
    uses_other_image: ClassVar[bool] = False  # whether apply() asks the context for another image of the env

    def check(self, where: str) -> None:
        """Raise a one-line :class:`ConfigError` naming ``{where}.{field}`` for an out-of-range parameter."""
        if not 0.0 <= self.p <= 1.0:
            raise ConfigError(f"{where}.p: expected a probability in [0, 1], got {self.p}")

    def applies(self, rng: np.random.Generator) -> bool:
        """Whether this episode gets the augmentation (``p`` of 0 or 1 draws nothing, so ``p: 0`` is inert)."""
        return self.p >= 1.0 or (self.p > 0.0 and rng.random() < self.p)

    def apply(self, image: np.ndarray, rng: np.random.Generator, context: AugmentContext) -> np.ndarray:
        """The augmented copy of ``image`` ``[H, W, 3]``; all randomness from ``rng``."""
        raise NotImplementedError

    def note(self) -> str:
        """The sentence put before the question when applied ("{image}": "the image" or "each image"), or ""."""
        return ""

    def output_hw(self, image_hw: tuple[int, int], other_hw: tuple[int, int]) -> tuple[int, int]:
        """The size of the result for an image of ``image_hw`` when the env's other images are of ``other_hw``."""
        return image_hw


@dataclass
class Rotation(Augmentation):
    """:func:`random_rotation` by a uniform angle within ``max_degrees`` and the env's ``context.max_degrees``."""

    max_degrees: float = 15.0  # bound on the absolute angle in degrees, 0-180 (the env may lower it per episode)
    fill: str = "white"  # colour of the corners the rotation uncovers: white | black

    name: ClassVar[str] = "rotation"

    def check(self, where: str) -> None:
        super().check(where)
        if not 0.0 <= self.max_degrees <= 180.0:
            raise ConfigError(f"{where}.max_degrees: expected degrees in [0, 180], got {self.max_degrees}")
        if self.fill not in FILLS:
            raise ConfigError(f"{where}.fill: expected one of {', '.join(FILLS)}, got '{self.fill}'")

    def apply(self, image: np.ndarray, rng: np.random.Generator, context: AugmentContext) -> np.ndarray:
        return random_rotation(image, min(self.max_degrees, context.max_degrees), rng, self.fill)


@dataclass
class Mixup(Augmentation):
    """:func:`mixup` with another env image (drawn first), the original weighted ``U(min_weight, max_weight)``."""

    min_weight: float = 0.6  # lowest weight of the original; > 0.5 keeps it the stronger picture (0.5 would be a tie)
    max_weight: float = 0.9  # highest weight of the original, <= 1

    name: ClassVar[str] = "mixup"
    uses_other_image: ClassVar[bool] = True

    def check(self, where: str) -> None:
        super().check(where)
        if not 0.5 < self.min_weight <= 1.0:
            raise ConfigError(
                f"{where}.min_weight: expected a weight in (0.5, 1] (the original must dominate), got {self.min_weight}"
            )
        if not self.min_weight <= self.max_weight <= 1.0:
            raise ConfigError(f"{where}.max_weight: expected a weight in [min_weight, 1], got {self.max_weight}")

    def apply(self, image: np.ndarray, rng: np.random.Generator, context: AugmentContext) -> np.ndarray:
        other = context.draw_image()
        return mixup(image, other, float(rng.uniform(self.min_weight, self.max_weight)))

    def note(self) -> str:
        return "A faint unrelated picture is blended into {image}; answer about the stronger picture."


@dataclass
class Distractor(Augmentation):
    """:func:`distractor_concat` of another image of the env to the right of (axis 1) or below (axis 0) the original."""

    axis: int = 1  # 1: the distractor on the right (resized to the image's height); 0: below (to its width)

    name: ClassVar[str] = "distractor"
    uses_other_image: ClassVar[bool] = True

    def check(self, where: str) -> None:
        super().check(where)
        if self.axis not in (0, 1):
            raise ConfigError(f"{where}.axis: expected 1 (right) or 0 (below), got {self.axis}")

    def apply(self, image: np.ndarray, rng: np.random.Generator, context: AugmentContext) -> np.ndarray:
        return distractor_concat(image, context.draw_image(), self.axis)

    def note(self) -> str:
        if self.axis == 1:
            return "An unrelated picture is appended to the right of {image}; answer about the left picture."
        return "An unrelated picture is appended below {image}; answer about the top picture."

    def output_hw(self, image_hw: tuple[int, int], other_hw: tuple[int, int]) -> tuple[int, int]:
        return concat_hw(image_hw, other_hw, self.axis)


AUGMENTATIONS: dict[str, type[Augmentation]] = {cls.name: cls for cls in (Rotation, Mixup, Distractor)}


def parse_augment(entries: list[dict[str, Any]], field: str = "augment") -> list[Augmentation]:
    """Build the :class:`Augmentation` of each ``{name, p, ...params}`` entry, in order.

    Raises:
        ConfigError: one line naming ``{field}[i]`` and the offending key: an unknown ``name`` (with a close match), an
            unknown or mistyped parameter, or a value out of range.
    """
    out = []
    for i, entry in enumerate(entries):
        where = f"{field}[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: expected a mapping like {{name: rotation, p: 0.5}}, got {entry!r}")
        params = dict(entry)
        name = params.pop("name", None)
        if name is None:
            raise ConfigError(f"{where}.name: missing (known: {', '.join(AUGMENTATIONS)})")
        if not isinstance(name, str) or name not in AUGMENTATIONS:
            raise ConfigError(f"{where}.name: unknown augmentation '{name}'{suggest(str(name), list(AUGMENTATIONS))}")
        augmentation = from_dict(AUGMENTATIONS[name], params, prefix=where)
        augmentation.check(where)
        out.append(augmentation)
    return out
