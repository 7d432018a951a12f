"""Procedurally rendered visual questions about simple shapes: an unlimited, seeded VQA stream for tiny-VLM RL.

Each episode draws a scene of filled circles, squares and triangles (see :mod:`envs.vqa.render`) and asks one question:

- ``count``: "How many shapes are there?" (level 1) or "How many circles are there?" (levels 2-3, among distractors of
  other kinds); answers "1".."max_count".
- ``color``: "What colour is the square?" (exactly one square; distractors are other kinds); answers are palette names.
- ``position``: "Is the circle left or right of the square?" / "... above or below ..."; the two shapes' boxes never
  overlap along the asked axis, so the answer is unambiguous; distractors are of the third kind.
- ``mixed``: one of the three, uniformly, per episode.

Difficulty (what each level changes; shape sides are fractions of the image's shorter side, at least 7 px):

- level 1: sides 0.22-0.32; the 4 primaries (red, green, blue, yellow), exact; distractors: count 0, color 0-1,
  position 0; count asks "How many shapes are there?".
- level 2: sides 0.15-0.24; 6 colours (+ orange, purple), exact; distractors: count 0-2, color 1-2, position 0-1; count
  asks about one kind among distractors of the other kinds.
- level 3: sides 0.10-0.16; 6 colours, each shade-jittered by up to +-15 per channel, and colour distractors take a
  confusable neighbour of the target's colour (red~orange, blue~purple, ...) half the time; distractors: count 1-3,
  color 2-4, position 1-3; count as in level 2.

Seeding: ``reset(seed=s)`` reseeds the env's generator and draws the scene from it, so the same seed (and config)
gives the same image bytes and question; ``reset()`` continues the generator. Train/eval disjointness: every scene is
assigned to a split by one bit of the SHA-256 of its content (image size, shapes' kinds, RGB and boxes); the sampler
redraws until the scene belongs to the configured ``split``. So no image ever appears in both streams, whatever seeds
either side uses (stronger than disjoint seed ranges, which could still collide on identical scenes).

Augmentation (``augment``, see :mod:`envs.transforms`): the other image of a mixup or distractor is another scene drawn
from the env's generator for the same task and split (so no eval scene reaches a training image). Only augmentations
that keep the task's answer are accepted (:data:`TASK_AUGMENTS`, ``mixed``: what all three allow; others are a
ConfigError naming the entry):

- ``rotation``: count and color, not position (it can swap left/right and above/below). The angle bound shrinks per
  scene to :func:`rotation_limit`, so every shape stays whole (the rotation crops the corners, and shapes can sit 1 px
  from the border); the fill must be white, the background (black corners would read as shapes); at most one rotation,
  before any distractor (rotating the concatenation would swing the distractor into the scene).
- ``mixup``: count and position, not color (a faint shape under the one asked about shifts its hue: a blue square
  over a faint green one turns teal). The prompt then says to answer about the stronger picture, and ``min_weight``
  must be at least :data:`MIXUP_MIN_WEIGHT`: every pixel of the scene's shapes then stays darker than any pixel of the
  faint scene, so the shapes keep their exact silhouettes (kind, number, place) under one threshold.
- ``distractor``: every task. The scene's pixels stay unchanged, beside (axis 1) or above (axis 0) the other scene, and
  the prompt says to answer about the left (top) picture. The image is then ``[H, 2W]`` (``[2H, W]``): the observation
  space admits exactly the sizes the configured distractors can make.

Example:
    >>> env = SyntheticVQAEnv(task="count", image_size=56, rewards={"accuracy": 1.0})
    >>> obs, info = env.reset(seed=0)
    >>> obs["text"], obs["images"][0].shape, info["answer_choices"]
    ('How many shapes are there? Answer with <answer>N</answer>.', (56, 56, 3), ['1', '2', '3', '4'])
    >>> obs, reward, terminated, truncated, info = env.step(info["solution"])
    >>> info["success"], terminated
    (True, True)
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from itertools import permutations
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding

from envs.transforms import AugmentContext, Mixup, Rotation
from envs.vqa.base import Episode, VQAEnv, image_hw, question_prompt, reference_solution
from envs.vqa.render import (
    GRID_CELL,
    KINDS,
    MAX_JITTER,
    PALETTE,
    SIMILAR,
    Shape,
    draw_scene,
    jitter_rgb,
    min_side,
    palette_for,
    place_boxes,
    place_in_grid,
)
from mmrl.config import ConfigError, from_dict

TASKS: tuple[str, ...] = ("count", "color", "position")
SPLITS: tuple[str, ...] = ("train", "eval")
# {hint} per task in the prompt template: a placeholder showing what goes inside <answer></answer>.
HINTS: dict[str, str] = {"count": "N", "color": "colour", "position": "direction"}
# Augmentations that keep each task's answer (why: the module docstring).
TASK_AUGMENTS: dict[str, frozenset[str]] = {
    "count": frozenset({"rotation", "mixup", "distractor"}),
    "color": frozenset({"rotation", "distractor"}),
    "position": frozenset({"mixup", "distractor"}),
}
# Lowest mixup weight of the scene: above 255 / 435 = 0.586, a shape pixel (darkest channel <= 60 + jitter 15 = 75)
# mixed with white stays darker than white mixed with anything: w * 75 + (1 - w) * 255 < w * 255.
MIXUP_MIN_WEIGHT = 0.6


@dataclass
class SyntheticVQAConfig:
    task: str = "count"  # count | color | position | mixed (uniform over the three per episode)
    difficulty: int = 1  # 1-3: smaller shapes, more distractors, more and similar colours (table in the module doc)
    image_size: int | list[int] = 56  # side or [height, width]; 56 px = 4x4 Qwen 14-px patches = 4 tokens (2x2 merge)
    kinds: list[str] | None = None  # count task only: shape kinds drawn (None = circle, square, triangle); one kind = a plainer scene
    colors: list[str] | None = None  # colours drawn (None = the difficulty's palette); also the colour task's answer choices
    layout: str = "random"  # random | grid: at most one shape per 28-px cell, the receptive field of one Qwen visual token
    max_count: int = 4  # count answers are "1".."max_count" (1-12)
    split: str = "train"  # train | eval: scenes are split by a content hash, so the two streams never share an image
    seed: int | None = None  # seeds the env's generator at construction (reset(seed=...) reseeds); None = fresh entropy
    prompt_template: str = "{question} Answer with <answer>{hint}</answer>."  # {question} {hint} {choices}; see HINTS
    rewards: dict[str, float] = field(default_factory=lambda: {"accuracy": 1.0})  # reward name -> weight (rewards.get)
    defer_rewards: bool = False  # step() returns reward 0 and the reward inputs in info["reward_columns"] (a trainer scores whole batches)
    max_action_length: int = 1024  # action_space max length in characters (longer text is still accepted by step)
    require_tags: bool = True  # answers count only inside <answer></answer> (the prompt asks for them); a reward column
    render_mode: str | None = "rgb_array"  # rgb_array (render() returns the current image) | null
    augment: list[dict[str, Any]] = field(default_factory=list)  # [{name, p, ...}] applied at reset, in order


@dataclass(frozen=True)
class _Level:
    size_frac: tuple[float, float]  # shape side as a fraction of the image's shorter side
    distractors: dict[str, tuple[int, int]]  # task -> inclusive range of distractor shapes
    jitter: int  # per-channel shade jitter of each shape's colour
    similar_colors: bool  # colour distractors take a confusable neighbour of the target colour half of the time
    count_one_kind: bool  # count asks about one kind among distractors (else all shapes)


LEVELS: dict[int, _Level] = {
    1: _Level((0.22, 0.32), {"count": (0, 0), "color": (0, 1), "position": (0, 0)}, 0, False, False),
    2: _Level((0.15, 0.24), {"count": (0, 2), "color": (1, 2), "position": (0, 1)}, 0, False, True),
    3: _Level((0.10, 0.16), {"count": (1, 3), "color": (2, 4), "position": (1, 3)}, MAX_JITTER, True, True),
}


@dataclass
class _Question:
    task: str
    shapes: list[Shape]
    question: str
    answer: str
    choices: list[str]
    thought: str  # the few words inside <think></think> of the reference solution


def scene_split(shapes: list[Shape], height: int, width: int) -> str:
    """The split ("train" or "eval") a scene belongs to: one bit of the SHA-256 of its canonical content."""
    key = repr((height, width, sorted((s.kind, s.color, s.rgb, s.box) for s in shapes)))
    return "eval" if hashlib.sha256(key.encode()).digest()[0] & 1 else "train"


def rotation_limit(
    boxes: list[tuple[int, int, int, int]], height: int, width: int, max_degrees: float = 180.0, step: float = 0.1
) -> float:
    """The largest angle (``max_degrees`` or a multiple of ``step`` degrees below it) such that rotating the image about
    its centre by any angle in ``[-limit, limit]`` keeps every inclusive box ``(x0, y0, x1, y1)`` 1 px inside the image.

    ``random_rotation`` keeps the canvas and crops what leaves it, and layouts put shapes 1 px from the border: bounding
    the angle per scene keeps every shape whole (scenes of central shapes rotate further than crowded ones).
    """
    corners = np.array([(x, y) for x0, y0, x1, y1 in boxes for x in (x0, x1 + 1) for y in (y0, y1 + 1)], float)
    corners -= (width / 2.0, height / 2.0)  # [4n, 2] relative to the centre of rotation
    degrees = np.minimum(np.arange(1, math.ceil(max_degrees / step) + 1) * step, max_degrees)  # [A]: step, ..., max
    rad = np.radians(degrees)[:, None]  # [A, 1]
    inside = np.ones(len(degrees), bool)  # [A]
    for sign in (1.0, -1.0):
        x = corners[:, 0] * np.cos(rad) - sign * corners[:, 1] * np.sin(rad)  # [A, 4n]
        y = sign * corners[:, 0] * np.sin(rad) + corners[:, 1] * np.cos(rad)
        inside &= ((np.abs(x) <= width / 2.0 - 1) & (np.abs(y) <= height / 2.0 - 1)).all(axis=1)
    outside = np.flatnonzero(~inside)
    if outside.size == 0:
        return float(max_degrees)
    return float(degrees[outside[0] - 1]) if outside[0] > 0 else 0.0


class SyntheticVQAEnv(VQAEnv):
    """Rendered simple-shape questions (count / color / position), seeded and unlimited. See the module docstring.

    Example:
        >>> env = SyntheticVQAEnv(task="mixed", difficulty=2, image_size=[56, 84], seed=0)
        >>> obs, info = env.reset()
        >>> sorted(info)
        ['answer', 'answer_choices', 'objects', 'question', 'solution', 'task']
    """

    def __init__(self, config: SyntheticVQAConfig | None = None, **kwargs: Any) -> None:
        if config is not None and kwargs:
            raise ConfigError("pass either a SyntheticVQAConfig or keyword arguments, not both")
        self.config = config if config is not None else from_dict(SyntheticVQAConfig, kwargs)
        cfg = self.config
        if cfg.task not in (*TASKS, "mixed"):
            raise ConfigError(f"task: unknown task '{cfg.task}' (known: {', '.join(TASKS)}, mixed)")
        if cfg.difficulty not in LEVELS:
            raise ConfigError(f"difficulty: expected 1, 2 or 3, got {cfg.difficulty}")
        if not 1 <= cfg.max_count <= 12:
            raise ConfigError(f"max_count: expected 1-12, got {cfg.max_count}")
        if cfg.split not in SPLITS:
            raise ConfigError(f"split: expected train or eval, got '{cfg.split}'")
        self.height, self.width = image_hw(cfg.image_size)
        self.level = LEVELS[cfg.difficulty]
        if cfg.kinds is not None and (cfg.task != "count" or not cfg.kinds or set(cfg.kinds) - set(KINDS)):
            raise ConfigError(f"kinds: only the count task restricts kinds, to a non-empty subset of {list(KINDS)}")
        if cfg.colors is not None and (not cfg.colors or set(cfg.colors) - set(PALETTE)):
            raise ConfigError(f"colors: expected a non-empty subset of {list(PALETTE)}, got {cfg.colors}")
        self.kinds = list(cfg.kinds or KINDS)
        self.colors = list(cfg.colors or palette_for(cfg.difficulty))
        if cfg.layout not in ("random", "grid"):
            raise ConfigError(f"layout: expected random or grid, got '{cfg.layout}'")
        cells = (self.height // GRID_CELL) * (self.width // GRID_CELL)
        most = {"count": cfg.max_count, "color": 1, "position": 2}  # target shapes per task, distractors added below
        needed = max(most[t] + self.level.distractors[t][1] for t in TASKS)
        if cfg.layout == "grid" and cells < needed:
            raise ConfigError(f"layout: grid has {cells} cells of {GRID_CELL} px, too few for max_count={cfg.max_count}")
        prompts = [self._format(*q) for q in self._all_questions()]  # also validates prompt_template
        super().__init__(cfg.rewards, cfg.render_mode, cfg.max_action_length, cfg.require_tags, cfg.augment,
                         cfg.defer_rewards)
        self._check_augment()
        self.observation_space = spaces.Dict(
            {
                "text": self._text_space(prompts),
                "images": spaces.Sequence(self._image_space((self.height, self.width))),
            }
        )
        if cfg.seed is not None:
            self._np_random, self._np_random_seed = seeding.np_random(cfg.seed)

    # --------------------------------------------------------------------------------------------------- gymnasium
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Draw a new scene and question (``options={"task": "color"}`` picks the task of this episode)."""
        super().reset(seed=seed)
        options = dict(options or {})
        task = options.pop("task", None)
        if options:
            raise ValueError(f"reset(options=...): unknown keys {sorted(options)} (known: task)")
        if task is None:
            task = self.config.task if self.config.task != "mixed" else TASKS[int(self.np_random.integers(len(TASKS)))]
        if task not in TASKS:
            raise ValueError(f"reset(options=...): unknown task '{task}' (known: {', '.join(TASKS)})")
        refused = [aug.name for aug in self.augment if aug.name not in TASK_AUGMENTS[task]]
        if refused:
            raise ValueError(f"reset(options=...): task '{task}' does not allow the augmentation '{refused[0]}'")
        q, image = self._draw(task)
        objects = [{"kind": s.kind, "color": s.color, "box": list(s.box)} for s in q.shapes]
        episode = Episode(
            text=self._format(q.question, HINTS[task], q.choices),
            images=[image],
            answer=q.answer,
            answer_choices=q.choices,
            solution=reference_solution(q.answer, q.thought),
            columns={"task": task, "question": q.question, "answer_choices": list(q.choices)},
            info={"task": task, "question": q.question, "objects": objects},
        )
        rotation = next((aug for aug in self.augment if isinstance(aug, Rotation) and aug.p > 0), None)  # at most one
        boxes = [s.box for s in q.shapes]
        limit = math.inf if rotation is None else rotation_limit(boxes, self.height, self.width, rotation.max_degrees)
        return self._begin(episode, AugmentContext(draw_image=lambda: self._draw(task)[1], max_degrees=limit))

    def _draw(self, task: str) -> tuple[_Question, np.ndarray]:
        """A question of ``task`` whose scene belongs to this env's split, and the scene's image ``[H, W, 3]``."""
        while True:  # redraw until the scene falls in this env's split (about 2 draws on average)
            q = self._sample(task)
            if scene_split(q.shapes, self.height, self.width) == self.config.split:
                return q, draw_scene(q.shapes, self.height, self.width)

    def _check_augment(self) -> None:
        """Refuse augmentations that can change an answer of this config's task(s) (rules in the module docstring)."""
        tasks = TASKS if self.config.task == "mixed" else (self.config.task,)
        names = [aug.name for aug in self.augment]
        for i, aug in enumerate(self.augment):
            where = f"augment[{i}]"
            refused = [t for t in tasks if aug.name not in TASK_AUGMENTS[t]]
            if refused:
                allowed = ", ".join(sorted(TASK_AUGMENTS[refused[0]]))
                raise ConfigError(
                    f"{where}.name: {aug.name} can change the answer of the {refused[0]} task (allowed: {allowed})"
                )
            if isinstance(aug, Rotation) and aug.fill != "white":
                raise ConfigError(f"{where}.fill: the scenes' background is white; other corners would read as shapes")
            if isinstance(aug, Rotation) and "rotation" in names[:i]:
                raise ConfigError(f"{where}.name: at most one rotation (a second could turn shapes out of the image)")
            if isinstance(aug, Rotation) and "distractor" in names[:i]:
                raise ConfigError(f"{where}.name: rotation must come before distractor, or it swings it into the scene")
            if isinstance(aug, Mixup) and aug.min_weight < MIXUP_MIN_WEIGHT:
                raise ConfigError(
                    f"{where}.min_weight: at least {MIXUP_MIN_WEIGHT} here, so the scene's shapes stay the darkest "
                    f"pixels, got {aug.min_weight}"
                )

    # ------------------------------------------------------------------------------------------------------ prompts
    def _format(self, question: str, hint: str, choices: list[str]) -> str:
        return question_prompt(self.config.prompt_template, question, hint, choices)

    def _all_questions(self) -> list[tuple[str, str, list[str]]]:
        """Every (question, hint, choices) this config can ask, to size the observation's Text space."""
        out = [("How many shapes are there?", HINTS["count"], self._count_choices())]
        for kind in KINDS:
            out.append((f"How many {kind}s are there?", HINTS["count"], self._count_choices()))
            out.append((f"What colour is the {kind}?", HINTS["color"], self.colors))
        for a, b in permutations(KINDS, 2):
            out.append((f"Is the {a} left or right of the {b}?", HINTS["position"], ["left", "right"]))
            out.append((f"Is the {a} above or below the {b}?", HINTS["position"], ["above", "below"]))
        return out

    def _count_choices(self) -> list[str]:
        return [str(n) for n in range(1, self.config.max_count + 1)]

    # ------------------------------------------------------------------------------------------------------- scenes
    def _sample(self, task: str) -> _Question:
        """Draw one question of ``task`` from the env's generator (kinds, colours, then a non-overlapping layout)."""
        rng = self.np_random
        lo, hi = self.level.distractors[task]
        n_distract = int(rng.integers(lo, hi + 1))
        others = lambda *used: [k for k in KINDS if k not in used]  # noqa: E731
        colors = self.colors
        pick = lambda seq: seq[int(rng.integers(len(seq)))]  # noqa: E731

        if task == "count":
            n = int(rng.integers(1, self.config.max_count + 1))
            if self.level.count_one_kind and len(self.kinds) > 1:
                target = pick(self.kinds)
                kinds = [target] * n + [pick([k for k in self.kinds if k != target]) for _ in range(n_distract)]
                question, thought = f"How many {target}s are there?", f"I count {n} {target}{'s' if n != 1 else ''}."
            else:
                kinds = [pick(self.kinds) for _ in range(n)]
                question, thought = "How many shapes are there?", f"I count {n} shape{'s' if n != 1 else ''}."
            names = [pick(colors) for _ in kinds]
            boxes = self._layout(len(kinds))
            return _Question(task, self._shapes(kinds, names, boxes), question, str(n), self._count_choices(), thought)

        if task == "color":
            target, color = pick(KINDS), pick(colors)
            kinds = [target] + [pick(others(target)) for _ in range(n_distract)]
            names = [color]
            for _ in range(n_distract):
                similar = [c for c in SIMILAR[color] if c in colors]
                use_similar = self.level.similar_colors and similar and rng.random() < 0.5
                names.append(pick(similar) if use_similar else pick(colors))
            boxes = self._layout(len(kinds))
            shapes = self._shapes(kinds, names, boxes)
            return _Question(task, shapes, f"What colour is the {target}?", color, colors, f"The {target} is {color}.")

        # position
        a, b = (str(k) for k in rng.permutation(np.array(KINDS))[:2])
        horizontal = bool(rng.random() < 0.5)
        kinds = [a, b] + [others(a, b)[0]] * n_distract
        names = [pick(colors) for _ in kinds]
        axis = 0 if horizontal else 1  # x or y in (x0, y0, x1, y1)

        def apart(boxes: list[tuple[int, int, int, int]]) -> bool:  # a's and b's boxes do not overlap along the axis
            return boxes[0][axis + 2] < boxes[1][axis] or boxes[1][axis + 2] < boxes[0][axis]

        boxes = self._layout(len(kinds), accept=apart)
        first = boxes[0][axis] < boxes[1][axis]  # a is left of / above b
        if horizontal:
            answer, choices = ("left" if first else "right"), ["left", "right"]
            question, thought = f"Is the {a} left or right of the {b}?", f"The {a} is {answer} of the {b}."
        else:
            answer, choices = ("above" if first else "below"), ["above", "below"]
            question, thought = f"Is the {a} above or below the {b}?", f"The {a} is {answer} the {b}."
        return _Question(task, self._shapes(kinds, names, boxes), question, answer, choices, thought)

    def _shapes(self, kinds: list[str], names: list[str], boxes: list[tuple[int, int, int, int]]) -> list[Shape]:
        rng = self.np_random
        jitter = self.level.jitter
        return [Shape(k, c, jitter_rgb(rng, PALETTE[c], jitter), box) for k, c, box in zip(kinds, names, boxes)]

    def _layout(self, n: int, accept: Any = None) -> list[tuple[int, int, int, int]]:
        """``n`` non-overlapping boxes with level-sized sides; shrinks sides by 15% after each failed placement."""
        rng = self.np_random
        short = min(self.height, self.width)
        floor = min_side(self.height, self.width)
        lo, hi = (max(floor, math.floor(f * short)) for f in self.level.size_frac)
        sides = [int(s) for s in rng.integers(lo, max(lo, hi) + 1, size=n)]
        for _ in range(100):
            place = place_in_grid if self.config.layout == "grid" else place_boxes
            boxes = place(rng, sides, self.height, self.width)
            if boxes is None:
                sides = [max(floor, int(s * 0.85)) for s in sides]
            elif accept is None or accept(boxes):
                return boxes
        raise RuntimeError(
            f"could not lay out {n} shapes in a {self.height}x{self.width} image; lower max_count or enlarge image_size"
        )
