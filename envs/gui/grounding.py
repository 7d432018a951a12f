"""GUI grounding: "Click the 'Save' button" on a screenshot; the model answers a point or a box in its coordinate
convention, scored against the target's box in original pixels by the grounding rewards (``hit``, ``iou``,
``box_size``, ``gaussian_point``, ``gaussian_coverage``, ``format``...). Success is ``hit``.

Two sources, one row format (instruction, screenshot, target box ``[x1, y1, x2, y2]`` in original pixels,
``data_type`` text | icon, ``platform``):

- ``source: synthetic``: screens drawn by :mod:`envs.gui.screens` (seeded, unlimited, ``difficulty`` 1-3), the target
  drawn uniformly among the screen's elements. Screens are split into ``train`` / ``eval`` by one bit of the SHA-256 of
  their content (as the synthetic VQA scenes), so the two streams never share a screen.
- ``source: file``: ScreenSpot's public annotation format, a JSON list (``screenspot_mobile.json``) or JSONL of rows
  ``{"img_filename", "instruction", "bbox", "data_type", "data_source"}`` (ScreenSpot-Pro: ``ui_type``, ``platform``).
  ``bbox_format`` says how ``bbox`` is written, explicitly, because the releases differ:

  ===================  ==========================================================================================
  ``xywh``             ``[left, top, width, height]`` in pixels: ScreenSpot v1 and v2 (SeeClick / OS-Copilot JSON)
  ``xyxy``             ``[x1, y1, x2, y2]`` in pixels: ScreenSpot-Pro
  ``xyxy_normalized``  ``[x1, y1, x2, y2]`` in [0, 1]: the Hugging Face parquet mirrors (rootsautomation, HongxinLi)
  ===================  ==========================================================================================

  ``img_filename`` is relative to ``image_dir`` (default: the annotation file's directory); a path that leaves that
  directory (absolute, or through ``..`` or a link) is refused with a one-line :class:`DatasetError`, as is any bad row
  (naming the file, row/line and field). An image that does not decode at reset is skipped (counted in
  ``info["bad_rows"]``). ``reset(seed=s)`` shows the row at position ``s`` of the (optionally shuffled) order.

The prompt names the convention: ``pixel`` (original pixels, W x H given), ``qwen2_5_vl`` (pixels of the smart_resize-d
image, whose size is given; ``min_pixels``/``max_pixels`` must be the processor's), ``qwen2_vl``/``qwen3_vl`` (0-1000),
``normalized`` (0-1). All conversion goes through :class:`rewards.Frame`; the reward columns carry the convention,
``image_size`` ``[W, H]`` and the pixel range, so the rewards map the answer back exactly as the oracle's
``info["solution"]`` was mapped forward.

Example:
    >>> env = GuiGroundingEnv(image_size=[120, 160], coordinate_convention="qwen2_vl", seed=0)
    >>> obs, info = env.reset()
    >>> env.step(info["solution"])[4]["success"]
    True
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from PIL import Image

import rewards
from envs.gui.screens import (
    BODY_KINDS,
    BUTTON_LABELS,
    CHECKBOX_LABELS,
    FIELD_LABELS,
    ICONS,
    LOOK_ALIKES,
    MENU_ITEMS,
    MENU_LABELS,
    Element,
    Screen,
    generate_screen,
    instruction,
)
from envs.gui.screens import LEVELS as SCREEN_LEVELS
from envs.vqa.base import Episode, VQAEnv, image_hw
from envs.vqa.dataset import DatasetError, _read_records, _reason
from mmrl.config import ConfigError, from_dict

logger = logging.getLogger(__name__)

SOURCES = ("synthetic", "file")
BBOX_FORMATS = ("xywh", "xyxy", "xyxy_normalized")
ANSWER_TYPES = ("point", "box")
SOLUTIONS = ("oracle", "random")
# how the prompt names each convention's coordinates ({w} x {h}: the size the coordinates refer to)
CONVENTION_TEXT = {
    "pixel": "pixels of the {w}x{h} image",
    "qwen2_5_vl": "pixels of the {w}x{h} image",
    "qwen2_vl": "0-1000 (relative)",
    "qwen3_vl": "0-1000 (relative)",
    "normalized": "0-1 (relative)",
}
ANSWER_FORMAT = {"point": "click(x, y)", "box": '{"bbox_2d": [x1, y1, x2, y2]}'}


@dataclass
class GuiGroundingConfig:
    source: str = "synthetic"  # synthetic (screens drawn by envs.gui.screens) | file (ScreenSpot-format annotations)
    path: str = ""  # file: the ScreenSpot JSON list / JSONL of rows
    image_dir: str | None = None  # file: where img_filename paths start (None: the annotation file's directory)
    bbox_format: str = "xywh"  # file: xywh (ScreenSpot v1/v2) | xyxy (ScreenSpot-Pro) | xyxy_normalized (HF mirrors)
    max_rows: int | None = None  # file: keep the first max_rows rows (None = all)
    shuffle: bool = False  # file: visit rows in a permutation seeded by seed (a fresh one each pass)
    difficulty: int = 1  # synthetic: 1-3 (envs.gui.screens: element count, size, clutter)
    image_size: int | list[int] = field(default_factory=lambda: [112, 112])  # synthetic: side or [height, width]
    split: str = "train"  # synthetic: train | eval, disjoint by a content hash of the screen
    answer_type: str = "point"  # point: <answer>click(x, y)</answer> | box: <answer>{"bbox_2d": [...]}</answer>
    coordinate_convention: str = "pixel"  # the policy's: pixel | qwen2_5_vl | qwen2_vl | qwen3_vl | normalized
    min_pixels: int | None = None  # qwen2_5_vl: the image processor's min_pixels (None: rewards.coords' default)
    max_pixels: int | None = None  # qwen2_5_vl: the image processor's max_pixels (None: rewards.coords' default)
    seed: int | None = None  # seeds the env's generator (synthetic) or the shuffle (file); None = fresh entropy / 0
    solution: str = "oracle"  # info["solution"]: oracle (the target) | random (a random place: a format-only warm-up)
    prompt_template: str = "{instruction}. Answer with <answer>{format}</answer>, coordinates in {convention}."
    rewards: dict[str, float] = field(default_factory=lambda: {"hit": 1.0, "format_answer": 0.1})  # name -> weight
    defer_rewards: bool = False  # step() returns reward 0 and the reward inputs in info["reward_columns"]
    max_action_length: int = 256  # action_space max length in characters (longer text is still accepted by step)
    require_tags: bool = True  # the answer counts only inside <answer></answer> (the prompt asks for them)
    render_mode: str | None = "rgb_array"  # rgb_array (render() returns the screenshot) | null


@dataclass(frozen=True)
class GroundingRow:
    """One grounding target, whichever the source."""

    instruction: str  # "Click the 'Save' button"
    box: tuple[float, float, float, float]  # [x1, y1, x2, y2] original pixels
    data_type: str  # text | icon
    platform: str  # synthetic, or the file's platform / data_source
    loc: str = ""  # file: "row N" / "line N"


# --------------------------------------------------------------------------------------------------------- file rows
@dataclass(frozen=True)
class _FileRow:
    loc: str  # "row N" (JSON list, 0-based) or "line N" (JSONL, 1-based)
    image: str  # resolved path, inside the image directory
    instruction: str
    bbox: tuple[float, float, float, float]  # as written (bbox_format)
    data_type: str
    platform: str


def _field(record: dict[str, Any], keys: tuple[str, ...]) -> Any:
    return next((record[k] for k in keys if record.get(k) is not None), None)


def _parse_file_row(path: Path, loc: str, record: Any, root: Path, bbox_format: str) -> _FileRow:
    where = f"{path}, {loc}"
    if not isinstance(record, dict):
        raise DatasetError(f"{where}: expected a JSON object, got {type(record).__name__}")
    name = record.get("img_filename")
    if not isinstance(name, str) or not name.strip():
        raise DatasetError(f"{where}: field 'img_filename' must be a non-empty path, got {name!r:.80}")
    image = (root / name).resolve()
    if Path(name).is_absolute() or not image.is_relative_to(root):
        raise DatasetError(f"{where}: field 'img_filename': {name!r:.80} leaves the image directory {root}")
    if not image.is_file():
        raise DatasetError(f"{where}: field 'img_filename': image file not found: {image}")
    text = _field(record, ("instruction", "question", "prompt"))
    if not isinstance(text, str) or not text.strip():
        raise DatasetError(f"{where}: field 'instruction' must be non-blank text, got {text!r:.80}")
    bbox = record.get("bbox")
    ok = isinstance(bbox, (list, tuple)) and len(bbox) == 4
    ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bbox)
    if not ok:
        raise DatasetError(f"{where}: field 'bbox' must be 4 finite numbers ({bbox_format}), got {bbox!r:.80}")
    a, b, c, d = (float(v) for v in bbox)
    sized = c > 0 and d > 0 if bbox_format == "xywh" else c > a and d > b
    if not sized or (bbox_format == "xyxy_normalized" and not (0 <= a and 0 <= b and c <= 1 and d <= 1)):
        raise DatasetError(f"{where}: field 'bbox': {list(bbox)} is not a non-empty {bbox_format} box")
    data_type = str(_field(record, ("data_type", "ui_type")) or "text")
    platform = str(_field(record, ("platform", "data_source")) or "")
    return _FileRow(loc, str(image), text.strip(), (a, b, c, d), data_type, platform)


@functools.lru_cache(maxsize=8)
def _load_rows(path: Path, root: Path, bbox_format: str, max_rows: int | None, _stamp: tuple[int, int]) -> tuple[_FileRow, ...]:  # fmt: skip
    """The validated rows of ``path``, parsed once per process per file version (``_stamp``: mtime in ns, size)."""
    rows = tuple(_parse_file_row(path, loc, rec, root, bbox_format) for loc, rec in _read_records(path, max_rows))
    if not rows:
        raise DatasetError(f"{path}: no rows")
    return rows


def pixel_box(bbox: tuple[float, float, float, float], bbox_format: str, width: int, height: int) -> tuple[float, ...]:
    """A file's ``bbox`` (``bbox_format``) as ``[x1, y1, x2, y2]`` in pixels of a ``width`` x ``height`` image."""
    a, b, c, d = bbox
    if bbox_format == "xywh":
        return a, b, a + c, b + d
    if bbox_format == "xyxy_normalized":
        return a * width, b * height, c * width, d * height
    return a, b, c, d


def check_frame_options(cfg: Any) -> None:
    """One-line :class:`ConfigError` for an env config's policy-frame options: ``coordinate_convention`` (one of
    ``rewards.CONVENTIONS``), ``min_pixels`` / ``max_pixels`` (an integer >= one 28x28 patch, or None)."""
    if cfg.coordinate_convention not in rewards.CONVENTIONS:
        known = ", ".join(rewards.CONVENTIONS)
        raise ConfigError(f"coordinate_convention: unknown '{cfg.coordinate_convention}' (known: {known})")
    for name in ("min_pixels", "max_pixels"):
        value = getattr(cfg, name)
        if value is not None and (not isinstance(value, int) or value < 28 * 28):
            raise ConfigError(f"{name}: expected an integer >= 784 (one 28x28 patch) or null, got {value!r}")


def policy_frame(convention: str, width: int, height: int, min_pixels: int | None = None,
                 max_pixels: int | None = None) -> rewards.Frame:  # fmt: skip
    """The :class:`rewards.Frame` of a policy using ``convention`` on a ``width`` x ``height`` screenshot (the pixel
    range only for ``qwen2_5_vl``; None keeps rewards.coords' defaults)."""
    pixels = {k: v for k, v in (("min_pixels", min_pixels), ("max_pixels", max_pixels)) if v is not None}
    return rewards.Frame(convention, (float(width), float(height)), **pixels)


def convention_text(frame: rewards.Frame) -> str:
    """How a prompt names ``frame``'s coordinates: "pixels of the 308x252 image", "0-1000 (relative)"."""
    w, h = (round(v) for v in frame.from_pixels(frame.image_size))  # type: ignore[arg-type]
    return CONVENTION_TEXT[frame.convention].format(w=w, h=h)


def point_in(frame: rewards.Frame, box: tuple[float, ...]) -> tuple[float, float]:
    """The centre of ``box`` (original pixels) in ``frame``'s convention: rounded to integers when those still map back
    inside the box (what a Qwen model writes), else to :func:`decimals` places."""
    cx, cy = frame.from_pixels(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2))
    x, y = float(round(cx)), float(round(cy))
    bx, by = frame.to_pixels((x, y))
    if box[0] <= bx <= box[2] and box[1] <= by <= box[3]:
        return x, y
    return round(cx, decimals(frame)), round(cy, decimals(frame))


def decimals(frame: rewards.Frame) -> int:
    """Decimal places an oracle writes in ``frame``'s convention when integers are too coarse (0-1: 3, else 2)."""
    return 3 if frame.convention == "normalized" else 2


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


def screen_split(screen: Screen, height: int, width: int) -> str:
    """The split ("train" or "eval") a screen belongs to: one bit of the SHA-256 of its canonical content."""
    key = repr((height, width, [(e.kind, e.label, e.box, e.checked) for e in screen.elements], screen.chrome))
    return "eval" if hashlib.sha256(key.encode()).digest()[0] & 1 else "train"


class GuiGroundingEnv(VQAEnv):
    """Single-turn GUI grounding on synthetic screens or ScreenSpot-format files. See the module docstring."""

    success_reward = "hit"  # success: the click (or the box's centre) lands in the target

    def __init__(self, config: GuiGroundingConfig | None = None, **kwargs: Any) -> None:
        if config is not None and kwargs:
            raise ConfigError("pass either a GuiGroundingConfig or keyword arguments, not both")
        self.config = config if config is not None else from_dict(GuiGroundingConfig, kwargs)
        cfg = self.config
        if cfg.source not in SOURCES:
            raise ConfigError(f"source: expected synthetic or file, got '{cfg.source}'")
        if cfg.solution not in SOLUTIONS:
            raise ConfigError(f"solution: expected oracle or random, got '{cfg.solution}'")
        if cfg.answer_type not in ANSWER_TYPES:
            raise ConfigError(f"answer_type: expected point or box, got '{cfg.answer_type}'")
        check_frame_options(cfg)
        try:
            cfg.prompt_template.format(instruction="", format="", convention="")
        except (KeyError, IndexError, ValueError) as e:
            raise ConfigError(f"prompt_template: bad placeholder {e} (use {{instruction}}, {{format}}, "
                              "{convention}; double other braces)") from None  # fmt: skip
        super().__init__(cfg.rewards, cfg.render_mode, cfg.max_action_length, cfg.require_tags, None,
                         cfg.defer_rewards)  # fmt: skip
        self.rows: tuple[_FileRow, ...] = ()
        if cfg.source == "synthetic":
            if cfg.difficulty not in SCREEN_LEVELS:
                raise ConfigError(f"difficulty: expected 1, 2 or 3, got {cfg.difficulty}")
            if cfg.split not in ("train", "eval"):
                raise ConfigError(f"split: expected train or eval, got '{cfg.split}'")
            self.height, self.width = image_hw(cfg.image_size)
            if min(self.height, self.width) < 48:
                raise ConfigError(f"image_size: screens need sides >= 48 px, got {cfg.image_size}")
            instructions = [instruction(Element(k, lab, (0, 0, 1, 1))) for k, lab in _all_targets()]
            sizes = [(self.width, self.height)]
            image_space: spaces.Space[np.ndarray] = spaces.Box(0, 255, (self.height, self.width, 3), np.uint8)
        else:
            self.rows = self._load(cfg)
            instructions = [r.instruction for r in self.rows]
            sizes = [(10_000, 10_000)]  # widest numbers a prompt can show
            image_space = self._image_space(None)
        prompts = [self._prompt(i, w, h) for i in instructions for w, h in sizes]
        self.observation_space = spaces.Dict(
            {"text": self._text_space(prompts), "images": spaces.Sequence(image_space)}
        )
        self._np_random, self._np_random_seed = seeding.np_random(cfg.seed)
        self._position = 0  # file: the next position in the visiting order
        self._bad_rows: set[int] = set()  # file: rows whose image did not decode

    # ------------------------------------------------------------------------------------------------------ helpers
    def frame(self, width: int, height: int) -> rewards.Frame:
        """The policy's coordinate frame for a ``width`` x ``height`` screenshot."""
        cfg = self.config
        return policy_frame(cfg.coordinate_convention, width, height, cfg.min_pixels, cfg.max_pixels)

    def _prompt(self, text: str, width: int, height: int) -> str:
        fmt = ANSWER_FORMAT[self.config.answer_type]
        convention = convention_text(self.frame(width, height))
        return self.config.prompt_template.format(instruction=text.rstrip("."), format=fmt, convention=convention)

    def oracle(self, box: tuple[float, ...], width: int, height: int) -> str:
        """The answer text (inside the tags) naming ``box`` in the policy's convention: ``click(x, y)`` at its centre
        (see :func:`point_in`), or the box to :func:`decimals` places."""
        frame = self.frame(width, height)
        if self.config.answer_type == "point":
            return "click({}, {})".format(*(_num(v) for v in point_in(frame, box)))
        return '{{"bbox_2d": [{}]}}'.format(", ".join(_num(round(v, decimals(frame))) for v in frame.from_pixels(box)))

    def _load(self, cfg: GuiGroundingConfig) -> tuple[_FileRow, ...]:
        if not cfg.path:
            raise ConfigError("path: the ScreenSpot annotation file (JSON list or JSONL) is required with source: file")
        if cfg.bbox_format not in BBOX_FORMATS:
            raise ConfigError(f"bbox_format: expected one of {', '.join(BBOX_FORMATS)}, got '{cfg.bbox_format}'")
        if cfg.max_rows is not None and cfg.max_rows < 1:
            raise ConfigError(f"max_rows: must be >= 1 or null, got {cfg.max_rows}")
        path = Path(cfg.path)
        if not path.is_file():
            raise DatasetError(f"{path}: annotation file not found")
        root = Path(cfg.image_dir) if cfg.image_dir is not None else path.parent
        if not root.is_dir():
            raise ConfigError(f"image_dir: not a directory: {root}")
        stat = path.stat()
        return _load_rows(
            path.resolve(), root.resolve(), cfg.bbox_format, cfg.max_rows, (stat.st_mtime_ns, stat.st_size)
        )

    # --------------------------------------------------------------------------------------------------- gymnasium
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """A new screenshot and target (``seed``: synthetic reseeds the generator, file jumps to that position)."""
        if options:
            raise ValueError(f"reset(options=...): unknown keys {sorted(options)} (none are known)")
        super().reset(seed=seed)
        if self.config.source == "synthetic":
            image, row, extra = self._synthetic()
        else:
            if seed is not None:  # the file order is positional: a seed names a position
                self._position = int(seed)
            image, row, extra = self._file_row()
        h, w = image.shape[:2]
        frame = self.frame(w, h)
        columns: dict[str, Any] = {**frame.columns(), "image_size": [w, h], "data_type": row.data_type,
                                   "platform": row.platform}  # fmt: skip
        episode = Episode(
            text=self._prompt(row.instruction, w, h),
            images=[image],
            answer=json.dumps([round(v, 3) for v in row.box]),
            answer_choices=None,
            solution=f"<answer>{self.oracle(self._reference_box(row.box, w, h), w, h)}</answer>",
            columns=columns,
            info={
                "instruction": row.instruction,
                "bbox": list(row.box),
                "image_size": [w, h],
                "data_type": row.data_type,
                "platform": row.platform,
                **extra,
            },
        )
        return self._begin(episode, None)  # type: ignore[arg-type]  # no augmentations: no context needed

    def _reference_box(self, box: tuple[float, ...], width: int, height: int) -> tuple[float, ...]:
        """What ``info["solution"]`` names: the target, or with ``solution: random`` a random box in the image."""
        if self.config.solution == "oracle":
            return box
        xs = np.sort(self.np_random.uniform(0, width, 2))
        ys = np.sort(self.np_random.uniform(0, height, 2))
        return float(xs[0]), float(ys[0]), float(xs[1]), float(ys[1])

    def _synthetic(self) -> tuple[np.ndarray, GroundingRow, dict[str, Any]]:
        level = self.config.difficulty
        while True:  # redraw until the screen has an element and belongs to this split (about 2 draws)
            screen = generate_screen(self.np_random, self.width, self.height, level)
            if screen.elements and screen_split(screen, self.height, self.width) == self.config.split:
                break
        target = screen.elements[int(self.np_random.integers(len(screen.elements)))]
        row = GroundingRow(instruction(target), tuple(float(v) for v in target.box), target.data_type, "synthetic")  # type: ignore[arg-type]
        elements = [{"kind": e.kind, "label": e.label, "box": list(e.box)} for e in screen.elements]
        return screen.image, row, {"target": {"kind": target.kind, "label": target.label}, "elements": elements}

    def _file_row(self) -> tuple[np.ndarray, GroundingRow, dict[str, Any]]:
        n = len(self.rows)
        for _ in range(n):
            epoch, k = divmod(self._position, n)
            index = int(np.random.default_rng([self.config.seed or 0, epoch]).permutation(n)[k]) if self.config.shuffle else k  # fmt: skip
            self._position += 1
            row = self.rows[index]
            try:
                with Image.open(row.image) as img:
                    image = np.asarray(img.convert("RGB"), dtype=np.uint8).copy()  # [H, W, 3]
            except Exception as e:  # PIL raises several types for unreadable images
                if index not in self._bad_rows:
                    logger.warning("%s, %s: skipped, cannot read image %s: %s", self.config.path, row.loc, row.image,
                                   _reason(e))  # fmt: skip
                self._bad_rows.add(index)
                continue
            h, w = image.shape[:2]
            box = pixel_box(row.bbox, self.config.bbox_format, w, h)
            grounding = GroundingRow(row.instruction, box, row.data_type, row.platform, row.loc)  # type: ignore[arg-type]
            return image, grounding, {"row_index": index, "bad_rows": len(self._bad_rows)}
        raise DatasetError(f"{self.config.path}: no row's image decodes ({n} tried)")


def _all_targets() -> list[tuple[str, str]]:
    """Every (kind, label) a synthetic screen can ask about (sizes the observation's Text space)."""
    labels = {"button": BUTTON_LABELS + tuple(LOOK_ALIKES.values()), "text_field": FIELD_LABELS,
              "checkbox": CHECKBOX_LABELS, "icon": ICONS}  # fmt: skip
    out = [(k, lab) for k in BODY_KINDS for lab in labels[k]]
    return out + [("menu", m) for m in MENU_LABELS] + [("menu_item", m) for m in MENU_ITEMS]
