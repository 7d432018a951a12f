"""What every single-turn visual-QA env shares: the step (parse the answer, score it with ``rewards``), render, spaces.

Image placeholder: an observation's ``text`` may hold ``<image>`` (mmrl's image placeholder) exactly ``len(images)``
times; the i-th image stands where the i-th ``<image>`` stands (:func:`mmrl.policies.vlm.chat.user_message` splits on
it). Text without ``<image>`` shows its images first (Qwen's order); text whose count differs from the images is kept
as is, images first.

A subclass builds an :class:`Episode` in ``reset`` and hands it to :meth:`VQAEnv._begin`, which applies the configured
augmentations (``augment``, see :mod:`envs.transforms`); ``step`` does the rest.

Example:
    >>> env.step("<think>two and one</think><answer> 3 </answer>")[4]["success"]  # doctest: +SKIP
    True
"""

from __future__ import annotations

import dataclasses
import string
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

import rewards
from envs.transforms import Augmentation, AugmentContext, parse_augment
from mmrl.config import ConfigError
from rewards import answer_span

ACTION_CHARSET = frozenset(string.printable)  # what action_space.sample() draws from; step accepts any str


def image_hw(image_size: int | list[int]) -> tuple[int, int]:
    """``(height, width)`` from a config's ``image_size`` (a side, or ``[height, width]``); each must be >= 16."""
    hw = [image_size, image_size] if isinstance(image_size, int) else list(image_size)
    if len(hw) != 2 or min(hw) < 16:
        raise ConfigError(f"image_size: expected a side or [height, width], each >= 16, got {image_size!r}")
    return int(hw[0]), int(hw[1])


def text_space(texts: list[str], extra_max: int = 0) -> spaces.Text:
    """A ``Text`` space admitting every string in ``texts`` (charset: printable ASCII plus their characters), or ''."""
    charset = frozenset(string.printable).union(*(set(t) for t in texts))
    return spaces.Text(max_length=max([len(t) for t in texts] + [1]) + extra_max, min_length=0, charset=charset)


class RGBImage(spaces.Space[np.ndarray]):
    """An RGB uint8 image ``[H, W, 3]`` of any height and width (datasets whose images are not resized to one size), or
    of one of a few sizes (``shapes``: a fixed image size widened by distractor augmentations).

    Example:
        >>> RGBImage().contains(np.zeros((5, 7, 3), np.uint8))
        True
        >>> RGBImage(shapes=[(56, 56), (56, 112)]).contains(np.zeros((56, 84, 3), np.uint8))
        False
    """

    def __init__(
        self,
        max_sample_side: int = 64,
        seed: int | np.random.Generator | None = None,
        shapes: Iterable[tuple[int, int]] | None = None,
    ) -> None:
        self.max_sample_side = max_sample_side  # sample() draws sides in [1, max_sample_side] when shapes is None
        self.shapes = None if shapes is None else tuple(sorted({(int(h), int(w)) for h, w in shapes}))  # (H, W) allowed
        super().__init__(shape=None, dtype=np.uint8, seed=seed)

    @property
    def is_np_flattenable(self) -> bool:
        return False

    def sample(self, mask: Any = None, probability: Any = None) -> np.ndarray:
        """A random-noise image of a random allowed size (``mask``/``probability`` are not supported)."""
        if self.shapes is not None:
            h, w = self.shapes[int(self.np_random.integers(len(self.shapes)))]
        else:
            h, w = (int(v) for v in self.np_random.integers(1, self.max_sample_side + 1, size=2))
        return self.np_random.integers(0, 256, size=(h, w, 3), dtype=np.uint8)

    def contains(self, x: Any) -> bool:
        return (
            isinstance(x, np.ndarray)
            and x.dtype == np.uint8
            and x.ndim == 3
            and x.shape[0] > 0
            and x.shape[1] > 0
            and x.shape[2] == 3
            and (self.shapes is None or x.shape[:2] in self.shapes)
        )

    def __repr__(self) -> str:
        return "RGBImage()" if self.shapes is None else f"RGBImage(shapes={list(self.shapes)})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RGBImage) and self.shapes == other.shapes


@dataclass
class Episode:
    """One question: what the model sees, the ground truth, and what the rewards and info get."""

    text: str  # user-turn text (question + format instruction)
    images: list[np.ndarray]  # RGB uint8 [H, W, 3]
    answer: str  # ground truth
    answer_choices: list[str] | None  # finite answer vocabulary, None when open-ended
    solution: str  # reference completion in the expected format
    columns: dict[str, Any] = field(default_factory=dict)  # extra reward-function columns (one value each)
    info: dict[str, Any] = field(default_factory=dict)  # extra info keys (reset and step)


def question_prompt(template: str, question: str, hint: str, choices: list[str]) -> str:
    """A synthetic env's ``prompt_template`` filled with ``{question}``, ``{hint}`` and ``{choices}`` (comma-joined); a
    template with another placeholder is a one-line :class:`ConfigError`."""
    try:
        return template.format(question=question, hint=hint, choices=", ".join(choices))
    except (KeyError, IndexError, ValueError) as e:
        raise ConfigError(
            f"prompt_template: bad placeholder {e} (use {{question}}, {{hint}}, {{choices}}; double other braces)"
        ) from None


def reference_solution(answer: str, thought: str) -> str:
    """``<think>{thought}</think><answer>{answer}</answer>``: the completion format the ``format`` reward expects."""
    return f"<think>{thought}</think><answer>{answer}</answer>"


class VQAEnv(gym.Env[dict[str, Any], str]):
    """Base of the single-turn VQA envs: the action is the model's raw text, scored by ``rewards.composite``.

    ``reset`` returns ``{"text", "images"}`` (images as a tuple: Gymnasium's ``Sequence`` space holds tuples); ``step``
    terminates the episode and returns an empty observation. ``step`` before ``reset`` or after termination raises
    ``gymnasium.error.ResetNeeded``.

    Augmentations (``augment``: a list of :data:`envs.transforms.AUGMENTATIONS` entries) apply at reset, in list order,
    to copies of the episode's images, with all randomness from ``np_random`` (so ``reset(seed=s)`` repeats them); the
    names applied are in ``info["augment"]`` (a key present only when ``augment`` is not empty), and mixup and
    distractor put a sentence before the question saying which picture it is about.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 1}
    success_reward = "accuracy"  # the reward whose full score is info["success"] (a grounding env: "hit")

    def __init__(
        self,
        reward_weights: dict[str, float],
        render_mode: str | None,
        max_action_length: int,
        require_tags: bool = True,
        augment: list[dict[str, Any]] | None = None,
        defer_rewards: bool = False,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ConfigError(f"render_mode: '{render_mode}' is not supported (use 'rgb_array' or null)")
        if not reward_weights:
            raise ConfigError("rewards: give at least one reward name -> weight")
        if max_action_length < 1:
            raise ConfigError(f"max_action_length: must be >= 1, got {max_action_length}")
        self.render_mode = render_mode
        self.require_tags = require_tags
        self.defer_rewards = defer_rewards
        self.reward_weights = dict(reward_weights)
        self._reward_fn = rewards.composite(self.reward_weights)  # unknown reward names fail here, at construction
        self.augment: list[Augmentation] = parse_augment(augment or [])
        self.action_space = spaces.Text(max_length=max_action_length, min_length=0, charset=ACTION_CHARSET)
        self._episode: Episode | None = None
        self._done = True

    # -------------------------------------------------------------------------------------------------------- spaces
    def _text_space(self, texts: list[str]) -> spaces.Text:
        """A ``Text`` space admitting each of ``texts``, also behind every note the configured augmentations can add."""
        notes = [a.note().format(image="each image") for a in self.augment if a.p > 0 and a.note()]
        notes = " ".join(dict.fromkeys(notes))  # each distinct note once, as _augmented writes them
        return text_space([f"{notes} {t}" for t in texts] if notes else texts)

    def _image_space(self, image_hw: tuple[int, int] | None) -> spaces.Space[np.ndarray]:
        """The space of one observation image: a ``Box`` of ``image_hw`` (any size when None), widened to the sizes
        the configured augmentations can make (their other images have the env's image size too)."""
        if image_hw is None:
            return RGBImage()
        shapes = {image_hw}
        for aug in self.augment:
            if aug.p > 0.0:
                grown = {aug.output_hw(hw, image_hw) for hw in shapes}
                shapes = grown if aug.p >= 1.0 else shapes | grown
        return spaces.Box(0, 255, (*image_hw, 3), np.uint8) if shapes == {image_hw} else RGBImage(shapes=shapes)

    # ------------------------------------------------------------------------------------------------------ episode
    def _begin(self, episode: Episode, context: AugmentContext) -> tuple[dict[str, Any], dict[str, Any]]:
        """Start ``episode`` (augmented with the help of ``context``): return the reset ``(obs, info)`` with fresh
        copies (callers may keep them)."""
        if self.augment:
            episode = self._augmented(episode, context)
        self._episode = episode
        self._done = False
        obs = {"text": episode.text, "images": tuple(img.copy() for img in episode.images)}
        info = {
            "answer": episode.answer,
            "answer_choices": list(episode.answer_choices) if episode.answer_choices is not None else None,
            "solution": episode.solution,
            **_copy(episode.info),
        }
        return obs, info

    def _augmented(self, episode: Episode, context: AugmentContext) -> Episode:
        """``episode`` with the augmentations applied in order to new copies of its images (an episode without images
        draws nothing), their notes before its text and their names in ``info["augment"]``."""
        images, applied, notes = list(episode.images), [], []
        for aug in self.augment:
            if not images or not aug.applies(self.np_random):
                continue
            images = [aug.apply(image, self.np_random, context) for image in images]
            applied.append(aug.name)
            if aug.note() and aug.note() not in notes:
                notes.append(aug.note())
        subject = "the image" if len(images) == 1 else "each image"
        text = " ".join([note.format(image=subject) for note in notes] + [episode.text])
        return dataclasses.replace(episode, text=text, images=images, info={**episode.info, "augment": applied})

    def step(self, action: str) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        """Score ``action`` (the model's raw text) and end the episode.

        Returns ``(obs, reward, terminated=True, truncated=False, info)``; ``obs`` is ``{"text": "", "images": ()}``
        (no next turn); ``info`` has ``answer``, ``parsed_answer``, ``success``, ``reward_parts`` and the reset extras.
        Malformed text is scored by the reward functions (their minimum); it never raises. With ``defer_rewards`` the
        reward functions are not called: the reward is 0, ``reward_parts`` is absent and ``info["reward_columns"]``
        holds the columns they would have been given (a trainer scores a whole rollout batch in one call each).
        """
        if self._episode is None:
            raise gym.error.ResetNeeded(f"{type(self).__name__}.step() called before reset()")
        if self._done:
            raise gym.error.ResetNeeded(f"{type(self).__name__}.step() called after the episode ended; call reset()")
        if isinstance(action, bytes):
            action = action.decode("utf-8", errors="replace")
        if not isinstance(action, str):
            raise TypeError(f"{type(self).__name__}.step() takes the model's text (str), got {type(action).__name__}")
        ep = self._episode
        # what the rewards see: the ground truth, and for model judges the question and the images the policy saw
        columns = {"answer": [ep.answer], "require_tags": [self.require_tags], "question": [ep.text],
                   "images": [list(ep.images)], **{k: [v] for k, v in ep.columns.items()}}  # fmt: skip
        span = answer_span(action)
        self._done = True
        info = {
            "answer": ep.answer,
            "parsed_answer": span.strip() if span is not None else None,
            # success is the verdict of one reward (accuracy unless a subclass says): one definition of "correct"
            "success": rewards.get(self.success_reward)([action], **columns)[0] >= 1.0,
            **_copy(ep.info),
        }
        if self.defer_rewards:
            info["reward_columns"] = {k: v[0] for k, v in columns.items()}
            return {"text": "", "images": ()}, 0.0, True, False, info
        total, parts = self._reward_fn([action], **columns)
        info["reward_parts"] = {name: float(values[0]) for name, values in parts.items()}
        return {"text": "", "images": ()}, float(total[0]), True, False, info

    def render(self) -> np.ndarray | None:
        """The current episode's (first) image, RGB uint8 ``[H, W, 3]``; None when render_mode is None."""
        if self.render_mode is None:
            gym.logger.warn(f"{type(self).__name__}.render() called with render_mode=None")
            return None
        if self._episode is None:
            raise gym.error.ResetNeeded(f"{type(self).__name__}.render() called before reset()")
        if not self._episode.images:
            return np.zeros((1, 1, 3), dtype=np.uint8)
        return self._episode.images[0].copy()


def _copy(value: Any) -> Any:
    """A deep copy of plain info data (dicts, lists, arrays), so returned infos never share mutable objects."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_copy(v) for v in value)
    if isinstance(value, np.ndarray):
        return value.copy()
    return value
