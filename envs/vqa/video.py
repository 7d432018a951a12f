"""Video questions: decoding video files into sampled frames, and a seeded synthetic video-QA stream of moving shapes.

Observations carry frames, never files: ``obs["videos"]`` is a tuple of RGB uint8 arrays ``[T, H, W, 3]`` and
``obs["video_fps"]`` the rate each video's frames were sampled at, as 0-d float64 arrays (values of a ``Box``):
Qwen2.5-VL spaces a video's time positions by it (:mod:`mmrl.policies.vlm.video`). Only envs read video files, so
decoding and frame sampling live here: :func:`decode_video` reads a path or encoded bytes with PyAV (OpenCV when PyAV
cannot), and :func:`sample_indices` picks the frames for a target ``fps`` and a frame cap, evenly over the clip
(transformers' ``sample_frames`` rule).

:class:`SyntheticVideoVQAEnv` renders short clips of the shapes of :mod:`envs.vqa.render` and asks one question:

- ``direction``: "Which way does the {kind} move?": one shape moves by a constant step per frame; answers left/right
  (level 1) or left/right/up/down (levels 2-3).
- ``order``: "Does the {a} appear before or after the {b}?": each appears at a different frame and stays; answers
  before/after.
- ``count``: "How many shapes appear?" (level 1) / "How many {kind}s appear?" (levels 2-3, among distractors of other
  kinds): each shape is shown during a run of frames, and from two shapes on no single frame shows all of them, so the
  answer needs the whole clip; answers "1".."max_count".
- ``mixed``: one of the three, uniformly, per episode.

Difficulty (shape sides are fractions of the frame's shorter side): level 1: sides 0.22-0.30, the 4 primaries, no
distractors; level 2: sides 0.15-0.22, 6 colours, distractors (static shapes of the kinds not asked about) 0-1
(count: 0-2); level 3: sides 0.10-0.16, 6 colours shade-jittered by up to +-15, distractors 1-2 (count: 1-3).
Plainer clips for tiny models, as in the image env: ``kinds`` (direction and count) and ``colors`` restrict what is
drawn, and ``layout: grid`` puts each shape, a moving one with its whole path, inside its own 28-px cell (the receptive
field of one visual token), so that a motion is seen within one token of each temporal patch.

Seeding and splits as in :class:`envs.vqa.synthetic.SyntheticVQAEnv`: ``reset(seed=s)`` gives the same clip and
question; every clip belongs to the train or eval split by one bit of the SHA-256 of its frames, and the sampler redraws
until it belongs to the configured ``split``, so no clip is in both streams.

Example:
    >>> env = SyntheticVideoVQAEnv(task="direction", rewards={"accuracy": 1.0})
    >>> obs, info = env.reset(seed=0)
    >>> obs["videos"][0].shape, float(obs["video_fps"][0]), info["answer_choices"]
    ((4, 56, 56, 3), 2.0, ['left', 'right'])
    >>> env.step(info["solution"])[4]["success"]
    True
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding

from envs.vqa.base import Episode, VQAEnv, image_hw, question_prompt, reference_solution
from envs.vqa.render import (
    GRID_CELL,
    KINDS,
    MAX_JITTER,
    PALETTE,
    Shape,
    draw_scene,
    jitter_rgb,
    min_side,
    palette_for,
    place_boxes,
    place_in_grid,
)
from mmrl.config import ConfigError, from_dict

TASKS: tuple[str, ...] = ("direction", "order", "count")
SPLITS: tuple[str, ...] = ("train", "eval")
HINTS: dict[str, str] = {"direction": "direction", "order": "order", "count": "N"}  # {hint}: what goes in <answer>
DIRECTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}  # (dx, dy)
MAX_FPS = 1000.0  # upper bound of the video_fps space


# ------------------------------------------------------------------------------------------------------- decoding
def sample_indices(num_frames: int, native_fps: float, fps: float | None, max_frames: int) -> np.ndarray:
    """Indices of the frames kept from a clip of ``num_frames`` at ``native_fps``: ``n = round(duration * fps)`` (all
    frames when ``fps`` is None), clamped to ``[1, min(max_frames, num_frames)]``, at ``floor(k * num_frames / n)``."""
    n = num_frames if fps is None else round(num_frames / native_fps * fps)
    n = min(max(n, 1), max_frames, num_frames)
    return np.floor(np.arange(n) * (num_frames / n)).astype(np.int64)  # [n], increasing


def decode_video(source: str | bytes, fps: float | None = 2.0, max_frames: int = 32) -> tuple[np.ndarray, float]:
    """The frames of a video file (path) or its encoded bytes sampled by :func:`sample_indices`: ``(frames [T, H, W,
    3] uint8, sampled_fps)`` with ``sampled_fps = native_fps * T / num_frames``. PyAV decodes; OpenCV is the fallback.
    Any failure is a ValueError with a one-line reason."""
    try:
        frames, native = _decode_av(source)
    except Exception as av_error:  # PyAV raises its own error types (and ImportError when absent)
        try:
            frames, native = _decode_cv2(source)
        except Exception:
            raise ValueError(f"cannot decode video: {_first_line(av_error)}") from None
    if not frames:
        raise ValueError("cannot decode video: no frames")
    keep = sample_indices(len(frames), native, fps, max_frames)
    video = np.stack([frames[i] for i in keep])  # [T, H, W, 3]
    return video, native * len(keep) / len(frames)


def _decode_av(source: str | bytes) -> tuple[list[np.ndarray], float]:
    """Every frame as RGB uint8 ``[H, W, 3]`` and the stream's average rate, with PyAV."""
    import io

    import av

    with av.open(io.BytesIO(source) if isinstance(source, bytes) else source) as container:
        stream = container.streams.video[0]
        rate = float(stream.average_rate) if stream.average_rate else 0.0
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    if not rate > 0:
        raise ValueError("the video has no frame rate")
    return frames, rate


def _decode_cv2(source: str | bytes) -> tuple[list[np.ndarray], float]:
    """Every frame as RGB uint8 ``[H, W, 3]`` and the container's rate, with OpenCV (bytes go through a temp file)."""
    import cv2

    path, tmp = source, None
    if isinstance(source, bytes):
        fd, tmp = tempfile.mkstemp(suffix=".video")
        with os.fdopen(fd, "wb") as f:
            f.write(source)
        path = tmp
    try:
        cap = cv2.VideoCapture(path)
        rate, frames = float(cap.get(cv2.CAP_PROP_FPS)), []
        ok, frame = cap.read()
        while ok:
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            ok, frame = cap.read()
        cap.release()
    finally:
        if tmp is not None:
            os.unlink(tmp)
    if not frames or not rate > 0:
        raise ValueError("OpenCV read no frames")
    return frames, rate


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def video_spaces(frame_shape: tuple[int, int, int, int] | None) -> dict[str, spaces.Space[Any]]:
    """The ``videos`` and ``video_fps`` observation spaces: clips of ``frame_shape`` ``(T, H, W, 3)`` (None: any)."""
    clip = spaces.Box(0, 255, frame_shape, np.uint8) if frame_shape is not None else RGBVideo()
    return {"videos": spaces.Sequence(clip), "video_fps": spaces.Sequence(spaces.Box(0.0, MAX_FPS, (), np.float64))}


class RGBVideo(spaces.Space[np.ndarray]):
    """An RGB uint8 clip ``[T, H, W, 3]`` of any length and frame size (dataset videos)."""

    def __init__(self, seed: int | np.random.Generator | None = None) -> None:
        super().__init__(shape=None, dtype=np.uint8, seed=seed)

    @property
    def is_np_flattenable(self) -> bool:
        return False

    def sample(self, mask: Any = None, probability: Any = None) -> np.ndarray:
        """A random-noise clip of 1-4 frames of sides 1-32 (``mask``/``probability`` are not supported)."""
        t, h, w = (int(v) for v in self.np_random.integers(1, [5, 33, 33]))
        return self.np_random.integers(0, 256, size=(t, h, w, 3), dtype=np.uint8)

    def contains(self, x: Any) -> bool:
        return isinstance(x, np.ndarray) and x.dtype == np.uint8 and x.ndim == 4 and x.shape[3] == 3 and x.size > 0

    def __repr__(self) -> str:
        return "RGBVideo()"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RGBVideo)


# --------------------------------------------------------------------------------------------------- synthetic env
@dataclass
class SyntheticVideoVQAConfig:
    task: str = "direction"  # direction | order | count | mixed (uniform over the three per episode)
    difficulty: int = 1  # 1-3: smaller shapes, more distractors and colours, four directions (module docstring)
    image_size: int | list[int] = 56  # frame side or [height, width]; 56 px = 4 visual tokens per temporal patch
    num_frames: int = 4  # frames per clip (2-16); Qwen merges frame pairs: 4 frames = 2 temporal patches
    fps: float = 2.0  # the rate the frames stand for (obs["video_fps"]); time positions are spaced by it
    max_count: int = 4  # count answers are "1".."max_count" (1-8)
    kinds: list[str] | None = None  # direction and count only: shape kinds drawn (None = circle, square, triangle)
    colors: list[str] | None = None  # colours drawn (None = the difficulty's palette)
    layout: str = "random"  # random | grid: each shape and its whole path in its own 28-px cell (one visual token)
    split: str = "train"  # train | eval: clips are split by a hash of their frames, so the two streams never share one
    seed: int | None = None  # seeds the env's generator at construction (reset(seed=...) reseeds); None = fresh entropy
    prompt_template: str = "{question} Answer with <answer>{hint}</answer>."  # {question} {hint} {choices}
    rewards: dict[str, float] = field(default_factory=lambda: {"accuracy": 1.0})  # reward name -> weight (rewards.get)
    defer_rewards: bool = False  # step() returns reward 0 and the reward inputs in info["reward_columns"]
    max_action_length: int = 1024  # action_space max length in characters (longer text is still accepted by step)
    require_tags: bool = True  # answers count only inside <answer></answer> (the prompt asks for them); a reward column
    render_mode: str | None = "rgb_array"  # rgb_array (render() returns the clip's frames side by side) | null


@dataclass(frozen=True)
class _Level:
    size_frac: tuple[float, float]  # shape side as a fraction of the frame's shorter side
    distractors: dict[str, tuple[int, int]]  # task -> inclusive range of static distractor shapes
    jitter: int  # per-channel shade jitter of each shape's colour
    directions: tuple[str, ...]  # the direction task's answers
    count_one_kind: bool  # count asks about one kind among distractors (else all shapes)


FOUR = tuple(DIRECTIONS)
LEVELS: dict[int, _Level] = {
    1: _Level((0.22, 0.30), {"direction": (0, 0), "order": (0, 0), "count": (0, 0)}, 0, ("left", "right"), False),
    2: _Level((0.15, 0.22), {"direction": (0, 1), "order": (0, 1), "count": (0, 2)}, 0, FOUR, True),
    3: _Level((0.10, 0.16), {"direction": (1, 2), "order": (1, 2), "count": (1, 3)}, MAX_JITTER, FOUR, True),
}


@dataclass
class _Clip:
    task: str
    tracks: list[list[Shape | None]]  # per shape, its drawing in each frame (None: not shown)
    question: str
    answer: str
    choices: list[str]
    thought: str  # the few words inside <think></think> of the reference solution


class SyntheticVideoVQAEnv(VQAEnv):
    """Rendered moving-shape clips with a question (direction / order / count), seeded and unlimited. See the module
    docstring. Observation ``{"text", "images": (), "videos": (frames [T, H, W, 3],), "video_fps": (fps,)}``."""

    def __init__(self, config: SyntheticVideoVQAConfig | None = None, **kwargs: Any) -> None:
        if config is not None and kwargs:
            raise ConfigError("pass either a SyntheticVideoVQAConfig or keyword arguments, not both")
        self.config = config if config is not None else from_dict(SyntheticVideoVQAConfig, kwargs)
        cfg = self.config
        if cfg.task not in (*TASKS, "mixed"):
            raise ConfigError(f"task: unknown task '{cfg.task}' (known: {', '.join(TASKS)}, mixed)")
        if cfg.difficulty not in LEVELS:
            raise ConfigError(f"difficulty: expected 1, 2 or 3, got {cfg.difficulty}")
        if not (isinstance(cfg.num_frames, int) and 2 <= cfg.num_frames <= 16):
            raise ConfigError(f"num_frames: expected an integer in 2-16, got {cfg.num_frames!r}")
        if not (isinstance(cfg.fps, (int, float)) and 0 < cfg.fps <= MAX_FPS):
            raise ConfigError(f"fps: expected a number in (0, {MAX_FPS:g}], got {cfg.fps!r}")
        if not 1 <= cfg.max_count <= 8:
            raise ConfigError(f"max_count: expected 1-8, got {cfg.max_count}")
        if cfg.split not in SPLITS:
            raise ConfigError(f"split: expected train or eval, got '{cfg.split}'")
        self.height, self.width = image_hw(cfg.image_size)
        self.level = LEVELS[cfg.difficulty]
        kinds_ok = cfg.task in ("direction", "count") and cfg.kinds and not set(cfg.kinds) - set(KINDS)
        if cfg.kinds is not None and not kinds_ok:
            raise ConfigError(f"kinds: only the direction and count tasks restrict kinds, to a subset of {list(KINDS)}")
        if cfg.colors is not None and (not cfg.colors or set(cfg.colors) - set(PALETTE)):
            raise ConfigError(f"colors: expected a non-empty subset of {list(PALETTE)}, got {cfg.colors}")
        self.kinds = list(cfg.kinds or KINDS)
        self.colors = list(cfg.colors or palette_for(cfg.difficulty))
        if cfg.layout not in ("random", "grid"):
            raise ConfigError(f"layout: expected random or grid, got '{cfg.layout}'")
        cells = (self.height // GRID_CELL) * (self.width // GRID_CELL)
        tasks = TASKS if cfg.task == "mixed" else (cfg.task,)
        targets = {"direction": 1, "order": 2, "count": cfg.max_count}  # shapes asked about, distractors added below
        needed = max(targets[t] + self.level.distractors[t][1] for t in tasks)
        if cfg.layout == "grid" and cells < needed:
            raise ConfigError(f"layout: grid has {cells} cells of {GRID_CELL} px, too few for {needed} shapes")
        prompts = [self._format(*q) for q in self._all_questions()]  # also validates prompt_template
        super().__init__(cfg.rewards, cfg.render_mode, cfg.max_action_length, cfg.require_tags, None, cfg.defer_rewards)
        image = spaces.Box(0, 255, (self.height, self.width, 3), np.uint8)  # no images: the space of an empty tuple
        self.observation_space = spaces.Dict(
            {
                "text": self._text_space(prompts),
                "images": spaces.Sequence(image),
                **video_spaces((cfg.num_frames, self.height, self.width, 3)),
            }
        )
        self._video: np.ndarray | None = None
        if cfg.seed is not None:
            self._np_random, self._np_random_seed = seeding.np_random(cfg.seed)

    # --------------------------------------------------------------------------------------------------- gymnasium
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Draw a new clip and question (``options={"task": "order"}`` picks the task of this episode). T-GRPO's
        shuffled frames are the trainer's (:mod:`mmrl.trainer.temporal`), for any env with videos."""
        super().reset(seed=seed)
        options = dict(options or {})
        task = options.pop("task", None)
        if options:
            raise ValueError(f"reset(options=...): unknown keys {sorted(options)} (known: task)")
        if task is None:
            task = self.config.task if self.config.task != "mixed" else TASKS[int(self.np_random.integers(len(TASKS)))]
        if task not in TASKS:
            raise ValueError(f"reset(options=...): unknown task '{task}' (known: {', '.join(TASKS)})")
        clip, video = self._draw(task)
        objects = [
            {"kind": next(s for s in track if s).kind, "color": next(s for s in track if s).color,
             "boxes": [list(s.box) if s else None for s in track]}
            for track in clip.tracks
        ]  # fmt: skip
        episode = Episode(
            text=self._format(clip.question, HINTS[task], clip.choices),
            images=[],
            answer=clip.answer,
            answer_choices=clip.choices,
            solution=reference_solution(clip.answer, clip.thought),
            columns={"task": task, "question": clip.question, "answer_choices": list(clip.choices)},
            info={"task": task, "question": clip.question, "objects": objects},
        )
        self._video = video
        obs, info = self._begin(episode, None)  # type: ignore[arg-type]  # no augmentations: no context used
        obs.update(videos=(video.copy(),), video_fps=(np.asarray(self.config.fps, np.float64),))  # 0-d: a Box value
        return obs, info

    def step(self, action: str) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        """Score ``action`` as :meth:`VQAEnv.step` does; the terminal observation has no video."""
        obs, reward, terminated, truncated, info = super().step(action)
        obs.update(videos=(), video_fps=())
        return obs, reward, terminated, truncated, info

    def render(self) -> np.ndarray | None:
        """The current clip's frames side by side, RGB uint8 ``[H, T * W, 3]``; None when render_mode is None."""
        if self.render_mode is None:
            gym.logger.warn(f"{type(self).__name__}.render() called with render_mode=None")
            return None
        if self._video is None:
            raise gym.error.ResetNeeded(f"{type(self).__name__}.render() called before reset()")
        return np.concatenate(list(self._video), axis=1)

    # ------------------------------------------------------------------------------------------------------ prompts
    def _format(self, question: str, hint: str, choices: list[str]) -> str:
        return question_prompt(self.config.prompt_template, question, hint, choices)

    def _all_questions(self) -> list[tuple[str, str, list[str]]]:
        """Every (question, hint, choices) this config can ask, to size the observation's Text space."""
        counts = self._count_choices()
        out = [("How many shapes appear?", HINTS["count"], counts)]
        for kind in KINDS:
            out.append((f"Which way does the {kind} move?", HINTS["direction"], list(self.level.directions)))
            out.append((f"How many {kind}s appear?", HINTS["count"], counts))
            for other in KINDS:
                if other != kind:
                    out.append((f"Does the {kind} appear before or after the {other}?", HINTS["order"],
                                ["before", "after"]))  # fmt: skip
        return out

    def _count_choices(self) -> list[str]:
        return [str(n) for n in range(1, self.config.max_count + 1)]

    # ------------------------------------------------------------------------------------------------------- clips
    def _draw(self, task: str) -> tuple[_Clip, np.ndarray]:
        """A clip of ``task`` that belongs to this env's split, and its frames ``[T, H, W, 3]``."""
        while True:  # redraw until the clip falls in this env's split (about 2 draws on average)
            clip = self._sample(task)
            video = np.stack([draw_scene([s for s in frame if s], self.height, self.width)
                              for frame in zip(*clip.tracks)])  # fmt: skip
            split = "eval" if hashlib.sha256(video.tobytes()).digest()[0] & 1 else "train"
            if split == self.config.split:
                return clip, video

    def _sample(self, task: str) -> _Clip:
        """Draw one clip of ``task`` from the env's generator: kinds, colours, a non-overlapping layout, then timing."""
        rng, T = self.np_random, self.config.num_frames
        pick = lambda seq: seq[int(rng.integers(len(seq)))]  # noqa: E731
        lo, hi = self.level.distractors[task]
        n_distract = int(rng.integers(lo, hi + 1))

        if task == "direction":
            target = pick(self.kinds)
            others = [k for k in self.kinds if k != target] or [target]  # static: only the target moves anyway
            kinds = [target] + [pick(others) for _ in range(n_distract)]
            direction = pick(self.level.directions)
            sides = self._sides(len(kinds))
            if self.config.layout == "grid":  # the whole path in one cell (place_in_grid keeps a 2-px margin)
                sides[0] = min(sides[0], GRID_CELL - 4 - (T - 1))
            step = self._step(sides[0])
            travel = step * (T - 1)
            # the target's box sweeps a square region of side (side + travel); it moves along a line inside it
            boxes = self._layout([sides[0] + travel] + sides[1:])
            x0, y0, x1, _ = boxes[0]
            region = x1 - x0 + 1  # side + travel, unless a crowded layout shrank it: then shrink the step, the side
            if region < sides[0] + travel:
                step = max(1, min(step, (region - 3) // (T - 1)))
                travel = step * (T - 1)
                sides[0] = region - travel
            dx, dy = DIRECTIONS[direction]
            off = int(rng.integers(0, travel + 1))  # the line's place across the motion
            sx = x0 + (travel if dx < 0 else 0) if dx else x0 + off
            sy = y0 + (travel if dy < 0 else 0) if dy else y0 + off
            moving = self._shape(target, sides[0], (sx, sy))
            track = [_moved(moving, dx * step * t, dy * step * t) for t in range(T)]
            still = [self._shape(k, s, b[:2]) for k, s, b in zip(kinds[1:], sides[1:], boxes[1:])]
            question = f"Which way does the {target} move?"
            return _Clip(task, [track, *[[s] * T for s in still]], question, direction, list(self.level.directions),
                         f"The {target} moves {direction}.")  # fmt: skip

        if task == "order":
            a, b = (str(k) for k in rng.permutation(np.array(KINDS))[:2])
            kinds = [a, b] + [next(k for k in KINDS if k not in (a, b))] * n_distract
            sides = self._sides(len(kinds))
            boxes = self._layout(sides)
            shapes = [self._shape(k, s, box[:2]) for k, s, box in zip(kinds, sides, boxes)]
            first_a, first_b = (int(f) for f in rng.choice(T, size=2, replace=False))  # frames they appear at
            tracks = [[s if t >= first else None for t in range(T)] for s, first in zip(shapes, (first_a, first_b))]
            tracks += [[s] * T for s in shapes[2:]]
            answer = "before" if first_a < first_b else "after"
            return _Clip(task, tracks, f"Does the {a} appear before or after the {b}?", answer, ["before", "after"],
                         f"The {a} appears {answer} the {b}.")  # fmt: skip

        # count
        n = int(rng.integers(1, self.config.max_count + 1))
        if self.level.count_one_kind and len(self.kinds) > 1:
            target = pick(self.kinds)
            kinds = [target] * n + [pick([k for k in self.kinds if k != target]) for _ in range(n_distract)]
            question, noun = f"How many {target}s appear?", target
        else:
            kinds = [pick(self.kinds) for _ in range(n)]
            question, noun = "How many shapes appear?", "shape"
        sides = self._sides(len(kinds))
        boxes = self._layout(sides)
        shapes = [self._shape(k, s, box[:2]) for k, s, box in zip(kinds, sides, boxes)]
        while True:  # shown runs of frames; from two targets on, no frame shows them all
            runs = [sorted(int(v) for v in rng.choice(T + 1, size=2, replace=False)) for _ in shapes]
            shown = np.array([[start <= t < stop for t in range(T)] for start, stop in runs])  # [shapes, T]
            if n == 1 or not shown[:n].all(axis=0).any():
                break
        tracks = [[s if shown[i, t] else None for t in range(T)] for i, s in enumerate(shapes)]
        thought = f"I count {n} {noun}{'s' if n != 1 else ''} over the frames."
        return _Clip("count", tracks, question, str(n), self._count_choices(), thought)

    def _sides(self, n: int) -> list[int]:
        short = min(self.height, self.width)
        lo, hi = (max(min_side(self.height, self.width), math.floor(f * short)) for f in self.level.size_frac)
        return [int(s) for s in self.np_random.integers(lo, max(lo, hi) + 1, size=n)]

    def _step(self, side: int) -> int:
        """Pixels the moving shape travels per frame: visible (>= 2 px, about a quarter of its side), and its whole
        path within half the frame's shorter side (grid layout: within its cell)."""
        frames = self.config.num_frames - 1
        if self.config.layout == "grid":
            hi = max(1, (GRID_CELL - 4 - side) // frames)
        else:
            hi = max(2, (min(self.height, self.width) // 2) // frames)
        return int(self.np_random.integers(min(hi, max(2, side // 4)), hi + 1))

    def _layout(self, sides: list[int]) -> list[tuple[int, int, int, int]]:
        """Non-overlapping square boxes of ``sides``; the whole set is shrunk by 15% after each failed placement."""
        place = place_in_grid if self.config.layout == "grid" else place_boxes
        for _ in range(100):
            boxes = place(self.np_random, sides, self.height, self.width)
            if boxes is not None:
                return boxes
            sides = [max(2, int(s * 0.85)) for s in sides]
        raise RuntimeError(f"could not lay out {len(sides)} shapes in a {self.height}x{self.width} frame; "
                           "lower max_count or num_frames, or enlarge image_size")  # fmt: skip

    def _shape(self, kind: str, side: int, corner: tuple[int, int]) -> Shape:
        color = self.colors[int(self.np_random.integers(len(self.colors)))]
        x, y = corner
        return Shape(kind, color, jitter_rgb(self.np_random, PALETTE[color], self.level.jitter),
                     (x, y, x + side - 1, y + side - 1))  # fmt: skip


def _moved(shape: Shape, dx: int, dy: int) -> Shape:
    x0, y0, x1, y1 = shape.box
    return Shape(shape.kind, shape.color, shape.rgb, (x0 + dx, y0 + dy, x1 + dx, y1 + dy))
