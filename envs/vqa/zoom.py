"""A visual zoom tool ("thinking with images", MGPO / DeepEyes style): the model may ask for an enlarged crop of the
image before it answers, on a synthetic task where the answer is unreadable without one.

The task: a large image (``image_size``, default 224 x 224) holds one tiny filled shape (a circle, square or triangle,
``mark_size`` of the shorter side: 20-28 px by default) inside one cell of a ``grid`` x ``grid`` grid; the question is
"What shape is the small mark?". Shown to a Qwen-style model at a low resolution (its ``max_pixels``, e.g. 56 x 56)
the mark is a 5-7 px coloured blob whose kind the tiny model cannot tell; the crop of its cell, enlarged to
``zoom_size`` (default: the image's size), shows it ``grid`` times larger. With ``cue`` every cell holds a mark and
the question names the one asked about, "What shape is the small mark in row 2, column 3 of the 4 x 4 grid?": the
tool is then needed to read, not to find (``configs/zoom.yaml``: a 4 x 4 grid, marks 4 times larger in a crop).

Each turn the model either answers, ``<answer>circle</answer>`` (the episode ends, scored as in the VQA envs:
``rewards.composite`` in ``step``, or with ``defer_rewards`` a reward of 0 and ``info["reward_columns"]`` for the
trainer's batched reward stage, exactly as :meth:`envs.vqa.base.VQAEnv.step`), or zooms:

==================================  =================================================================================
``zoom(x1, y1, x2, y2)``            a box in the model's ``coordinate_convention`` on the ORIGINAL image (whatever
                                    crop it saw last), mapped to pixels with :class:`rewards.Frame`; inside
                                    ``<answer>...</answer>`` or alone; numbers as in :mod:`envs.gui.actions`
``{"bbox_2d": [x1, y1, x2, y2]}``   the same box as JSON (any key of ``rewards.extract.BOX_KEYS``)
==================================  =================================================================================

A zoom returns the crop of the original image (the box clipped to the image, its edges rounded outwards to whole
pixels), scaled with its aspect ratio kept to fit ``zoom_size`` and centred on a grey canvas (``PAD``), as the next
observation's image, with a short text. A zoom that does not parse, an empty box (``x2 <= x1`` or ``y2 <= y1``), a box
wholly outside the image, a zoom past ``max_zooms``, and (with ``require_tags``) text that is neither a zoom nor a
complete ``<answer>...</answer>`` return a one-line ``Error: ...`` text and no image: the episode goes on. The env
truncates the episode after ``max_steps`` actions (reward 0: nothing was answered). ``tool: false`` is the baseline:
one turn, the same question without the zoom instruction; any text is the final answer.

``tool_bonus`` (DeepEyes' conditional tool reward) is added to the answer's reward when it is correct after at least
one zoom. Only the env can add it (a zoom-free answer and its reward columns look the same to a reward function), so
it needs the env to score the answer itself (``defer_rewards`` false; in a trainer: ``rewards: {}`` and the rewards in
the env's kwargs).

Seeding and splits as :class:`envs.vqa.synthetic.SyntheticVQAEnv`: ``reset(seed=s)`` repeats the scene; ``split``
(train | eval) keeps scenes disjoint by one bit of a content hash. ``info["solution"]`` at reset and after every step
that does not end the episode is the next action to imitate (a multi-turn warm-up follows them through the episode):

==========  =======================================================================================================
``oracle``  the oracle's: the zoom on the mark's cell while zooms are left, then the answer
``locate``  the oracle's zoom, then a random answer: teaches where to zoom, not what the mark is
``random``  formats only: with zooms left, half the time a zoom on a random cell, else a random answer
==========  =======================================================================================================

Example:
    >>> env = ZoomVQAEnv(seed=0)
    >>> obs, info = env.reset()
    >>> obs, reward, terminated, truncated, info = env.step(oracle_action(env))  # the zoom
    >>> obs["images"][0].shape, terminated
    ((224, 224, 3), False)
    >>> env.step(oracle_action(env))[4]["success"]  # the answer
    True
"""

from __future__ import annotations

import hashlib
import math
import re
import string
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from PIL import Image

from envs.gui.actions import _NUM
from envs.gui.grounding import check_frame_options, convention_text, policy_frame
from envs.vqa.base import Episode, RGBImage, VQAEnv, _copy, image_hw
from envs.vqa.render import KINDS, PALETTE, Shape, draw_scene
from mmrl.config import ConfigError, from_dict
from rewards.extract import BOX_KEYS, answer_span, coords_of, json_values, tagged_region

QUESTION = "What shape is the small mark?"
SOLUTIONS = ("oracle", "locate", "random")  # what info["solution"] holds (module docstring)
PAD = (128, 128, 128)  # canvas around a crop whose aspect ratio differs from zoom_size's (the scenes are white)
RESAMPLE = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
            "bicubic": Image.Resampling.BICUBIC}  # fmt: skip
PRINTABLE = frozenset(string.printable)
_ZOOM_NAME = re.compile(r"\s*zoom\s*\(", re.I)
_FOUR_NUMBERS = re.compile(rf"\s*{_NUM}\s*,\s*{_NUM}\s*,\s*{_NUM}\s*,\s*{_NUM}\s*\)\s*")


@dataclass
class ZoomVQAConfig:
    tool: bool = True  # False: the no-tool baseline (one turn, same question, no zoom)
    image_size: int | list[int] = 224  # side or [height, width] of the scene (>= 32)
    grid: int = 2  # the mark sits inside one cell of a grid x grid grid; oracle and random warm-up zooms are cells
    cue: bool = False  # every cell holds a mark and the question names the mark's cell ("in row 2, column 3")
    mark_size: list[float] = field(default_factory=lambda: [0.09, 0.125])  # mark side, fraction of the shorter side
    zoom_size: int | list[int] | None = None  # side or [height, width] a crop is enlarged to; None = image_size
    resample: str = "bicubic"  # nearest | bilinear | bicubic: how a crop is scaled
    max_zooms: int = 1  # zooms allowed per episode (a zoom past them is an error turn)
    max_steps: int = 3  # actions before the env truncates the episode (tool on; off: always one)
    coordinate_convention: str = "pixel"  # the policy's: pixel | qwen2_5_vl | qwen2_vl | qwen3_vl | normalized
    min_pixels: int | None = None  # qwen2_5_vl: the image processor's min_pixels (None: rewards.coords' default)
    max_pixels: int | None = None  # qwen2_5_vl: the image processor's max_pixels (None: rewards.coords' default)
    split: str = "train"  # train | eval: scenes are split by a content hash, so the two streams never share one
    seed: int | None = None  # seeds the env's generator at construction (reset(seed=...) reseeds); None = fresh entropy
    solution: str = "oracle"  # info["solution"]: oracle | locate (oracle zoom, random answer) | random (formats only)
    rewards: dict[str, float] = field(default_factory=lambda: {"accuracy": 1.0})  # reward name -> weight (rewards.get)
    defer_rewards: bool = False  # the answer step returns reward 0 and info["reward_columns"] (the trainer scores it)
    tool_bonus: float = 0.0  # added to a correct answer's reward after a zoom (DeepEyes' tool reward); env-scored
    max_action_length: int = 256  # action_space max length in characters (longer text is still accepted by step)
    require_tags: bool = True  # answers count only inside <answer></answer>; without tags a non-zoom text is an error
    render_mode: str | None = "rgb_array"  # rgb_array (render() returns the last image shown) | null


class ZoomError(ValueError):
    """The model's zoom is not a usable box; the message is one short line (shown to the model)."""


def parse_zoom(text: str) -> tuple[float, float, float, float] | None:
    """The box of a zoom call ``zoom(x1, y1, x2, y2)`` or JSON ``{"bbox_2d": [...]}`` (``text``: the answer region),
    ``None`` when ``text`` is not a zoom call at all, :class:`ZoomError` when it is one that does not parse."""
    name = _ZOOM_NAME.match(text)
    if name is not None:
        m = _FOUR_NUMBERS.fullmatch(text, name.end())
        if m is None:
            raise ZoomError("expected zoom(x1, y1, x2, y2) with four numbers")
        box = tuple(float(v) for v in m.groups())
    elif text.lstrip().startswith("{"):
        objs = [v for v in json_values(text) if isinstance(v, dict) and any(k in v for k in BOX_KEYS)]
        if not objs:
            return None
        found = coords_of(next(objs[0][k] for k in BOX_KEYS if k in objs[0]))
        if found is None or len(found) != 4:
            raise ZoomError('expected {"bbox_2d": [x1, y1, x2, y2]} with four numbers')
        box = tuple(float(v) for v in found)
    else:
        return None
    if not all(math.isfinite(v) for v in box):
        raise ZoomError("box numbers must be finite")
    return box  # type: ignore[return-value]


def crop_box(box: tuple[float, ...], width: int, height: int) -> tuple[int, int, int, int]:
    """Pixel ``box`` -> the whole-pixel crop ``(left, top, right, bottom)`` (right/bottom exclusive) that covers it,
    clipped to the image; :class:`ZoomError` when it is empty or outside."""
    x1, y1, x2, y2 = box
    if x2 <= x1 or y2 <= y1:
        raise ZoomError("empty box: need x1 < x2 and y1 < y2")
    left, top = max(0, math.floor(x1)), max(0, math.floor(y1))
    right, bottom = min(width, math.ceil(x2)), min(height, math.ceil(y2))
    if right <= left or bottom <= top:
        raise ZoomError("the box is outside the image")
    return left, top, right, bottom


def enlarge(image: np.ndarray, crop: tuple[int, int, int, int], size: tuple[int, int], resample: str) -> np.ndarray:
    """``image[top:bottom, left:right]`` scaled, aspect ratio kept, to fit ``size`` ``(height, width)`` and centred on
    a :data:`PAD` canvas: RGB uint8 ``[height, width, 3]``."""
    left, top, right, bottom = crop
    h, w = size
    cw, ch = right - left, bottom - top
    scale = min(w / cw, h / ch)
    nw, nh = max(1, min(w, round(cw * scale))), max(1, min(h, round(ch * scale)))
    part = Image.fromarray(image[top:bottom, left:right]).resize((nw, nh), RESAMPLE[resample])
    canvas = Image.new("RGB", (w, h), PAD)
    canvas.paste(part, ((w - nw) // 2, (h - nh) // 2))
    return np.asarray(canvas, dtype=np.uint8).copy()  # [h, w, 3], writable


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.3g}"


class ZoomVQAEnv(VQAEnv):
    """Tiny-mark questions with an optional zoom tool (module docstring). Observations ``{"text", "images"}``."""

    def __init__(self, config: ZoomVQAConfig | None = None, **kwargs: Any) -> None:
        if config is not None and kwargs:
            raise ConfigError("pass either a ZoomVQAConfig or keyword arguments, not both")
        self.config = config if config is not None else from_dict(ZoomVQAConfig, kwargs)
        cfg = self.config
        self.height, self.width = image_hw(cfg.image_size)
        if min(self.height, self.width) < 32:
            raise ConfigError(f"image_size: sides must be >= 32, got {cfg.image_size!r}")
        self.zoom_hw = image_hw(cfg.zoom_size) if cfg.zoom_size is not None else (self.height, self.width)
        if not 1 <= cfg.grid <= 8:
            raise ConfigError(f"grid: expected 1-8 cells per side, got {cfg.grid}")
        short = min(self.height, self.width)
        fracs = cfg.mark_size if isinstance(cfg.mark_size, list) and len(cfg.mark_size) == 2 else [0.0, 0.0]
        self.mark_px = (math.floor(fracs[0] * short), math.floor(fracs[1] * short))  # inclusive range of mark sides
        cell = short // cfg.grid
        if not 4 <= self.mark_px[0] <= self.mark_px[1] <= cell - 4:
            raise ConfigError(f"mark_size: expected [lo, hi] fractions giving 4 px <= sides <= the cell side - 4 "
                              f"({cell - 4} px), got {cfg.mark_size!r}")  # fmt: skip
        if cfg.resample not in RESAMPLE:
            raise ConfigError(f"resample: expected one of {', '.join(RESAMPLE)}, got '{cfg.resample}'")
        if cfg.max_zooms < 0 or cfg.max_steps < 1:
            raise ConfigError(f"max_zooms / max_steps: need max_zooms >= 0 and max_steps >= 1, got {cfg.max_zooms} "
                              f"/ {cfg.max_steps}")  # fmt: skip
        check_frame_options(cfg)
        if cfg.split not in ("train", "eval"):
            raise ConfigError(f"split: expected train or eval, got '{cfg.split}'")
        if cfg.solution not in SOLUTIONS:
            raise ConfigError(f"solution: expected one of {', '.join(SOLUTIONS)}, got '{cfg.solution}'")
        if cfg.tool_bonus and cfg.defer_rewards:
            raise ConfigError("tool_bonus: the env adds it to the reward it computes itself; with defer_rewards (a "
                              "trainer's `rewards:` section) give the rewards in env.kwargs.rewards and set `rewards: {}`")  # fmt: skip
        super().__init__(cfg.rewards, cfg.render_mode, cfg.max_action_length, cfg.require_tags, None,
                         cfg.defer_rewards)  # fmt: skip
        self.frame = policy_frame(cfg.coordinate_convention, self.width, self.height, cfg.min_pixels, cfg.max_pixels)
        image_space = (spaces.Box(0, 255, (self.height, self.width, 3), np.uint8) if self.zoom_hw == (self.height, self.width)
                       else RGBImage(shapes=[(self.height, self.width), self.zoom_hw]))  # fmt: skip
        self.observation_space = spaces.Dict(
            {
                "text": spaces.Text(max_length=1000, min_length=0, charset=PRINTABLE),
                "images": spaces.Sequence(image_space),
            }
        )
        if cfg.seed is not None:
            self._np_random, self._np_random_seed = seeding.np_random(cfg.seed)
        self.mark: Shape | None = None
        self.zooms = 0  # zooms done this episode
        self.steps = 0  # actions taken this episode
        self._shown = np.zeros((self.height, self.width, 3), np.uint8)  # the last image shown (render)

    # ------------------------------------------------------------------------------------------------------ geometry
    def cell_box(self, index: int) -> tuple[int, int, int, int]:
        """Cell ``index`` (row-major) of the grid as a pixel box ``(x1, y1, x2, y2)`` (edges; the last cells take the
        remainder of a side that the grid does not divide)."""
        g = self.config.grid
        r, c = divmod(index, g)
        xs = [round(k * self.width / g) for k in range(g + 1)]
        ys = [round(k * self.height / g) for k in range(g + 1)]
        return xs[c], ys[r], xs[c + 1], ys[r + 1]

    def zoom_text(self, box: tuple[float, ...]) -> str:
        """``zoom(x1, y1, x2, y2)`` naming pixel ``box`` in the policy's convention: integers when they map back within
        a pixel of every edge (what a Qwen model writes), else 3 decimals."""
        coords = self.frame.from_pixels(box)
        shown = tuple(float(round(v)) for v in coords)
        if any(abs(a - b) > 1.0 for a, b in zip(self.frame.to_pixels(shown), box)):
            shown = tuple(round(v, 3) for v in coords)
        return "zoom({})".format(", ".join(_num(v) for v in shown))

    def _question(self, index: int) -> str:
        """:data:`QUESTION`, with ``cue`` naming cell ``index`` (rows and columns counted from 1, top left)."""
        if not self.config.cue:
            return QUESTION
        r, c = divmod(index, self.config.grid)
        return f"{QUESTION[:-1]} in row {r + 1}, column {c + 1} of the {self.config.grid} x {self.config.grid} grid?"

    def _prompt(self, question: str) -> str:
        answer = "Answer <answer>shape</answer>: circle, square or triangle."
        if not self.config.tool:
            return f"{question} {answer}"
        return f"{question} {answer} Or first zoom(x1, y1, x2, y2), x, y in {convention_text(self.frame)}."

    # ------------------------------------------------------------------------------------------------------- scenes
    def _sample(self) -> tuple[Shape, int]:
        """The mark (kind, colour, box) and the index of its cell, every draw from ``np_random``."""
        index = int(self.np_random.integers(self.config.grid**2))
        return self._mark_in(index), index

    def _mark_in(self, index: int) -> Shape:
        """A mark of random kind, colour and side at a random place inside cell ``index``."""
        rng = self.np_random
        x1, y1, x2, y2 = self.cell_box(index)
        side = int(rng.integers(self.mark_px[0], self.mark_px[1] + 1))
        x0 = int(rng.integers(x1 + 2, x2 - side - 1))  # 2 px from the cell's edges
        y0 = int(rng.integers(y1 + 2, y2 - side - 1))
        kind = KINDS[int(rng.integers(len(KINDS)))]
        color = list(PALETTE)[int(rng.integers(len(PALETTE)))]
        return Shape(kind, color, PALETTE[color], (x0, y0, x0 + side - 1, y0 + side - 1))

    def _split_of(self, mark: Shape) -> str:
        key = repr((self.height, self.width, self.config.grid, mark.kind, mark.color, mark.box))
        return "eval" if hashlib.sha256(key.encode()).digest()[0] & 1 else "train"

    def _solution(self) -> str:
        """The next action to imitate (``info["solution"]``, module docstring); random draws come after the scene's."""
        cfg, rng = self.config, self.np_random
        zoom_left = cfg.tool and self.zooms < cfg.max_zooms
        if cfg.solution == "oracle" or (cfg.solution == "locate" and zoom_left):
            return oracle_action(self)
        if cfg.solution == "random" and zoom_left and rng.random() < 0.5:
            return self.zoom_text(self.cell_box(int(rng.integers(cfg.grid**2))))
        return f"<answer>{KINDS[int(rng.integers(len(KINDS)))]}</answer>"

    # --------------------------------------------------------------------------------------------------- gymnasium
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """A new scene; the first observation is the question, the answer format and (tool on) the zoom call."""
        gym.Env.reset(self, seed=seed)
        if options:
            raise ValueError(f"reset(options=...): unknown keys {sorted(options)} (none are known)")
        while True:  # redraw until the scene falls in this env's split (about 2 draws)
            mark, index = self._sample()
            if self._split_of(mark) == self.config.split:
                break
        others = [self._mark_in(i) for i in range(self.config.grid**2) if i != index] if self.config.cue else []
        self.mark, self.zooms, self.steps = mark, 0, 0
        solution = self._solution()
        image = draw_scene([mark, *others], self.height, self.width)
        self._shown = image
        question = self._question(index)
        episode = Episode(
            text=self._prompt(question),
            images=[image],
            answer=mark.kind,
            answer_choices=list(KINDS),
            solution=solution,
            columns={"answer_choices": list(KINDS)},
            info={
                "question": question,
                "mark": {"kind": mark.kind, "color": mark.color, "box": list(mark.box)},
                "cell": list(self.cell_box(index)),
                "zooms": 0,
            },  # fmt: skip
        )
        return self._begin(episode, None)  # type: ignore[arg-type]  # no augmentations: no context needed

    def step(self, action: str) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        """Answer (ends the episode: :meth:`VQAEnv.step`, plus ``zooms``) or zoom / error (the episode goes on:
        reward 0, ``info``: ``success`` False, ``zooms``, ``zoom_box`` (pixel crop or None), ``error`` (the one-line
        message or None)); truncated after ``max_steps`` actions."""
        if self._episode is None or self._done or not self.config.tool:
            return self._answer(action)  # raises ResetNeeded when there is no episode
        if isinstance(action, bytes):
            action = action.decode("utf-8", errors="replace")
        if not isinstance(action, str):
            raise TypeError(f"{type(self).__name__}.step() takes the model's text (str), got {type(action).__name__}")
        region = tagged_region(action)
        try:
            box = parse_zoom(region) if region is not None else None
            if box is None:
                if answer_span(action) is not None or not self.require_tags:
                    return self._answer(action)
                raise ZoomError("expected <answer>shape</answer> or zoom(x1, y1, x2, y2)")
            if self.zooms >= self.config.max_zooms:
                raise ZoomError("no zooms left; answer with <answer>shape</answer>")
            crop = crop_box(self.frame.to_pixels(box), self.width, self.height)
        except ZoomError as e:
            crop, text, images = None, f"Error: {e}.", ()
        else:
            self.zooms += 1
            self._shown = enlarge(self._episode.images[0], crop, self.zoom_hw, self.config.resample)
            left = self.config.max_zooms - self.zooms
            then = f"Zoom again ({left} left) or answer." if left else "Now answer."
            text, images = f"Zoomed to {self.zoom_text(crop)[4:]}. {then}", (self._shown.copy(),)
        self.steps += 1
        truncated = self.steps >= self.config.max_steps
        self._done = truncated
        info = {"answer": self._episode.answer, "success": False,
                "zoom_box": list(crop) if crop is not None else None, "error": text[7:-1] if crop is None else None,
                **_copy(self._episode.info), "zooms": self.zooms}  # fmt: skip
        if not truncated:  # the next action to imitate: a multi-turn warm-up follows these through the episode
            info["solution"] = self._solution()
        return {"text": text, "images": images}, 0.0, False, truncated, info

    def _answer(self, action: str) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        """The final answer, scored by :meth:`VQAEnv.step`; ``zooms`` in its info, and with ``tool_bonus`` the bonus
        in the reward and in ``reward_parts["tool_bonus"]`` (0 unless correct after a zoom)."""
        obs, reward, terminated, truncated, info = super().step(action)
        info["zooms"] = self.zooms
        if self.config.tool_bonus:
            bonus = self.config.tool_bonus if info["success"] and self.zooms else 0.0
            info["reward_parts"]["tool_bonus"] = bonus
            reward += bonus
        return obs, reward, terminated, truncated, info

    def render(self) -> np.ndarray | None:
        """The last image shown (the scene, or the last crop), RGB uint8; None when render_mode is None."""
        if self.render_mode is None:
            gym.logger.warn("ZoomVQAEnv.render() called with render_mode=None")
            return None
        if self._episode is None:
            raise gym.error.ResetNeeded("ZoomVQAEnv.render() called before reset()")
        return self._shown.copy()


def oracle_action(env: ZoomVQAEnv) -> str:
    """The next action of a policy that knows the scene: the zoom on the mark's cell while zooms are left (tool on),
    then the answer."""
    if env.mark is None:
        raise gym.error.ResetNeeded("oracle_action() called before reset()")
    if env.config.tool and env.zooms < env.config.max_zooms:
        cells = [env.cell_box(i) for i in range(env.config.grid**2)]
        x0, y0, x1, y1 = env.mark.box
        cell = next(c for c in cells if c[0] <= x0 and x1 < c[2] and c[1] <= y0 and y1 < c[3])
        return env.zoom_text(cell)
    return f"<answer>{env.mark.kind}</answer>"
