"""Model-based rewards: a generative judge (a VLM grades or compares answers) and a process reward (per-step scores).

Both are TRL-style rewards ``judge(completions: list[str], **columns) -> list[float]`` in [0, 1]. Columns read:
    question   the question text (else ``prompt``, else TRL's ``prompts``; a conversational prompt: its last message)
    answer     the reference (also ``solution`` / ``ground_truth``); optional for ``score``, required for ``compare``
    images     optional per-row list of RGB uint8 arrays ``[H, W, 3]`` or PIL images (else ``image``: one per row)

A :class:`GenerativeJudge` asks an *engine* ``engine(prompts: list[str], images: list[list]) -> list[str]`` (vLLM,
an HTTP judge, or a local VLM through ``mmrl.policies.vlm.judge.PolicyEngine(policy)``: greedy decoding through the same
policy code as rollouts). A :class:`ProcessRewardJudge` splits the reasoning into steps and aggregates per-step scores
from a ``step_scorer`` (``mmrl.policies.vlm.judge.VLMStepScorer`` is a Math-Shepherd-style scorer on a VLM). This module
holds no model code and imports nothing from ``mmrl``: engines and scorers are plain callables. Model text is only ever
parsed with ``str`` methods and linear regular expressions; unparseable judge output scores the minimum, 0.0.

Judges are not registered on import (they need a model). A training script registers one before it builds the env, so
that YAML ``rewards: {vlm_judge: 0.5, accuracy: 1.0}`` can name it (the env resolves names when it is constructed).

Example (``engine`` is any callable above; see ``mmrl.policies.vlm.judge`` for a local VLM):
    >>> from rewards import GenerativeJudge, register_judge
    >>> judge = GenerativeJudge(engine, mode="score", batch_size=8)
    >>> register_judge("vlm_judge", judge)  # now rewards.get("vlm_judge") / rewards.composite({...}) resolve it
    >>> judge(["<answer>3</answer>"], question=["How many cats?"], answer=["3"], images=[[image]])
    [0.8]
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rewards.columns import GT_COLUMNS, as_text, column, gt_column
from rewards.extract import answer_region, normalize_digits
from rewards.registry import RewardFn, get, names, register

JudgeEngine = Callable[[list[str], list[list[Any]]], list[str]]  # (prompts, images per prompt) -> generated texts
StepScorer = Callable[[str, list[str], list[Any]], list[float]]  # (question, steps, images) -> a score per step

# Qwen-VL's vision special tokens. The same strings as mmrl.policies.vlm.chat.VISION_SPECIAL_TOKENS, written out
# because rewards never depends on the policy code (nor torch); tests/rewards/test_rewards_judges.py checks they match.
VISION_TOKENS = ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>")

# --------------------------------------------------------------------------------------------------------------------
# Columns and text helpers
# --------------------------------------------------------------------------------------------------------------------


def strip_vision_tokens(text: str) -> str:
    """``text`` without vision special-token strings: only real images may put image pads into a judge's prompt."""
    for token in VISION_TOKENS:
        if token in text:
            text = text.replace(token, "")
    return text


def question_column(columns: Mapping[str, Any], n: int) -> list[str]:
    """The question per row: column ``question``, else ``prompt``, else ``prompts`` (TRL), else ``""``."""
    for name in ("question", "prompt", "prompts"):
        if columns.get(name) is not None:
            return [as_text(q) for q in column(columns, name, n, "")]
    return [""] * n


def image_column(columns: Mapping[str, Any], n: int) -> list[list[Any]]:
    """The images per row: column ``images`` (a list per row, or one image), else ``image``; missing -> ``[]``."""
    value = columns.get("images", columns.get("image"))
    if value is None:
        return [[] for _ in range(n)]
    if not isinstance(value, (list, tuple)) or len(value) != n:
        raise ValueError(f"column 'images' must be a list with one entry per completion ({n})")
    return [[] if row is None else list(row) if isinstance(row, (list, tuple)) else [row] for row in value]


def _references(columns: Mapping[str, Any], n: int, required: bool) -> list[Any]:
    """The reference answers (``answer``/``solution``/``ground_truth``); all ``None`` when absent and not required."""
    if required or any(columns.get(name) is not None for name in GT_COLUMNS):
        return gt_column(columns, n)
    return [None] * n


def _reference_text(value: Any) -> str:
    """A reference as prompt text: a list of accepted answers is joined with " / "; none is "(none)"."""
    if value is None:
        return "(none)"
    if isinstance(value, (list, tuple)):
        return " / ".join(map(str, value))
    return str(value)


def _last_tag(text: str, tag: str) -> str | None:
    """Content of the last complete ``<tag>...</tag>`` pair, or ``None``."""
    end = text.rfind(f"</{tag}>")
    start = text.rfind(f"<{tag}>", 0, end) if end >= 0 else -1
    return text[start + len(tag) + 2 : end] if start >= 0 else None


# --------------------------------------------------------------------------------------------------------------------
# Parsing judge output
# --------------------------------------------------------------------------------------------------------------------

_NUM = r"[-+]?[0-9]{1,16}(?:\.[0-9]{1,16})?"  # plain decimals only: no exponents, no nan/inf, always a finite float
_SCORE_VALUE = re.compile(rf"\s*({_NUM})\s*(?:/\s*({_NUM})\s*)?")
_NUM_END = r"(?![0-9]|\.[0-9]|[eE][-+]?[0-9])"  # "Score: 1e1" or a 17-digit numeral is not a score
_SCORE_PHRASE = re.compile(
    rf"\bscore\b[\s*:=]*(?:is[\s*:=]*)?({_NUM}){_NUM_END}(?:\s*/\s*({_NUM}){_NUM_END})?", re.I
)  # "Score: 7", "score is 7/10", "**Score:** 7"
_VERDICT_PHRASE = re.compile(r"\bverdict\b[\s*:=]*([^\n]*)", re.I)
_NON_WORD = re.compile(r"[^\w\s]")


def _last_match(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    """The last match of ``pattern`` in ``text``, or ``None``."""
    last = deque(pattern.finditer(text), maxlen=1)
    return last[0] if last else None


def _normalise(value: str, den: str | None, score_range: tuple[float, float]) -> float:
    """``value`` (optionally written "value / hi") mapped from ``score_range`` to [0, 1]; anything else is 0.0."""
    lo, hi = score_range
    v = float(value)
    if (den is not None and float(den) != hi) or not lo <= v <= hi:
        return 0.0
    return (v - lo) / (hi - lo)


def parse_score(text: str, score_range: tuple[float, float] = (0.0, 10.0)) -> float:
    """A judge's score normalised to [0, 1]: the last ``<score>N</score>``, else the last "Score: N" (also "N/hi").

    A tag whose content is not one plain number, a score outside ``score_range``, exponents, NaN, or no score at all
    give 0.0. Unicode digits count (NFKC + ``normalize_digits``).
    """
    text = normalize_digits(text)
    tagged = _last_tag(text, "score")
    if tagged is not None:
        m = _SCORE_VALUE.fullmatch(tagged)
        return _normalise(m.group(1), m.group(2), score_range) if m else 0.0
    last = _last_match(_SCORE_PHRASE, text)
    return _normalise(last.group(1), last.group(2), score_range) if last else 0.0


DEFAULT_VERDICTS: dict[str, float] = {"same": 1.0, "different": 0.0}


def parse_verdict(text: str, verdicts: Mapping[str, float] = DEFAULT_VERDICTS) -> float:
    """The value of a judge's verdict: the last ``<verdict>...</verdict>``, else the rest of the last "Verdict:" line,
    else the whole text, lowercased without punctuation, must equal a key of ``verdicts``; anything else is 0.0."""
    region = _last_tag(text, "verdict")
    if region is None:
        last = _last_match(_VERDICT_PHRASE, text)
        region = last.group(1) if last else text
    key = " ".join(_NON_WORD.sub(" ", region.lower()).split())
    return float(verdicts.get(key, 0.0))


# --------------------------------------------------------------------------------------------------------------------
# Generative judge
# --------------------------------------------------------------------------------------------------------------------

SCORE_TEMPLATE = (
    "You are grading an answer to a question about the image(s).\n"
    "Question: {question}\n"
    "Reference answer: {reference}\n"
    "Candidate answer: {candidate}\n"
    "Rate how correct the candidate answer is from {lo:g} to {hi:g}. Reply with the score only, as <score>N</score>."
)
COMPARE_TEMPLATE = (
    "You are checking an answer to a question about the image(s).\n"
    "Question: {question}\n"
    "Reference answer: {reference}\n"
    "Candidate answer: {candidate}\n"
    "Does the candidate answer mean the same as the reference answer? "
    "Reply <verdict>same</verdict> or <verdict>different</verdict>."
)


class GenerativeJudge:
    """A generative reward model: an engine reads a judge prompt (question, reference, candidate, images) and replies.

    ``mode="score"``: the reply's score (:func:`parse_score`) normalised from ``score_range`` to [0, 1].
    ``mode="compare"``: the reply's verdict on "candidate vs reference" (:func:`parse_verdict`), 1.0 for ``same``.
    The candidate is the completion's final answer (``candidate="answer"``: :func:`rewards.extract.answer_region`) or
    the whole completion (``candidate="completion"``), cut to its last ``max_chars`` characters. An empty candidate
    scores 0.0 without asking the engine. Range [0, 1].

    Args:
        engine: a judge engine ``engine(prompts, images) -> texts``; for a local VLM,
            ``mmrl.policies.vlm.judge.PolicyEngine(policy, max_new_tokens)``.
        mode: ``"score"`` or ``"compare"``.
        template: the prompt, a ``str.format`` template over question, reference, candidate, lo, hi (default per mode).
        score_range: ``(lo, hi)`` of the judge's scale (``score`` mode).
        verdicts: verdict word -> reward in [0, 1] (``compare`` mode; matched case-insensitively).
        candidate: ``"answer"`` (the extracted final answer) or ``"completion"`` (the whole text).
        batch_size: prompts per engine call.
        max_chars: characters of the candidate shown to the judge (its end).

    Example:
        >>> judge = GenerativeJudge(lambda prompts, images: ["<score>7</score>"] * len(prompts))
        >>> judge(["<answer>3</answer>"], question=["How many?"], answer=["3"])
        [0.7]
    """

    def __init__(
        self,
        engine: JudgeEngine,
        mode: str = "score",
        template: str | None = None,
        score_range: tuple[float, float] = (0.0, 10.0),
        verdicts: Mapping[str, float] = DEFAULT_VERDICTS,
        candidate: str = "answer",
        batch_size: int = 8,
        max_chars: int = 4000,
    ) -> None:
        if mode not in ("score", "compare"):
            raise ValueError(f"mode must be 'score' or 'compare', got {mode!r}")
        if candidate not in ("answer", "completion"):
            raise ValueError(f"candidate must be 'answer' or 'completion', got {candidate!r}")
        lo, hi = (float(v) for v in score_range)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"score_range must be finite with lo < hi, got {score_range}")
        if not all(0.0 <= float(v) <= 1.0 for v in verdicts.values()):
            raise ValueError(f"verdict values must lie in [0, 1], got {dict(verdicts)}")
        if batch_size < 1 or max_chars < 1:
            raise ValueError(f"batch_size and max_chars must be >= 1, got {batch_size}, {max_chars}")
        if hasattr(engine, "conversation") and hasattr(engine, "generate"):  # a VLMPolicy, by duck type
            raise TypeError("engine: a policy is not an engine; pass mmrl.policies.vlm.judge.PolicyEngine(policy)")
        if not callable(engine):
            raise TypeError(f"engine must be a callable engine(prompts, images) -> texts, got {type(engine).__name__}")
        self.engine = engine
        self.mode = mode
        self.template = template or (SCORE_TEMPLATE if mode == "score" else COMPARE_TEMPLATE)
        self.score_range = (lo, hi)
        self.verdicts = {k.lower(): float(v) for k, v in verdicts.items()}
        self.candidate = candidate
        self.batch_size = batch_size
        self.max_chars = max_chars
        self.build_prompt("q", "r", "c")  # a template with unknown fields fails here, not mid-training

    def build_prompt(self, question: str, reference: str, candidate: str) -> str:
        """The judge prompt: ``template`` filled with ``question``, ``reference``, ``candidate``, ``lo`` and ``hi``."""
        lo, hi = self.score_range
        try:
            return self.template.format(question=question, reference=reference, candidate=candidate, lo=lo, hi=hi)
        except (KeyError, IndexError) as exc:
            raise ValueError(
                f"judge template: unknown field {exc} (use question, reference, candidate, lo, hi)"
            ) from None

    def candidate_text(self, completion: Any) -> str:
        """What the judge sees of a completion: its final answer or the whole text, stripped, last ``max_chars``."""
        text = as_text(completion)
        if self.candidate == "answer":
            text = answer_region(text) or ""
        return text.strip()[-self.max_chars :]

    def parse(self, reply: Any) -> float:
        """A reply as a reward in [0, 1]: :func:`parse_score` or :func:`parse_verdict`; a non-string reply is 0.0."""
        if not isinstance(reply, str):
            return 0.0
        return parse_score(reply, self.score_range) if self.mode == "score" else parse_verdict(reply, self.verdicts)

    def __call__(self, completions: list[Any], **columns: Any) -> list[float]:
        """One reward in [0, 1] per completion; the engine is called once per ``batch_size`` non-empty candidates."""
        n = len(completions)
        questions = question_column(columns, n)
        references = _references(columns, n, required=self.mode == "compare")
        images = image_column(columns, n)
        prompts: dict[int, str] = {}
        for i, completion in enumerate(completions):
            candidate = self.candidate_text(completion)
            if candidate:
                prompts[i] = self.build_prompt(questions[i], _reference_text(references[i]), candidate)
        out = [0.0] * n
        todo = list(prompts)
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            replies = self.engine([prompts[i] for i in chunk], [images[i] for i in chunk])
            if len(replies) != len(chunk):
                raise ValueError(f"judge engine returned {len(replies)} replies for {len(chunk)} prompts")
            for i, reply in zip(chunk, replies):
                out[i] = self.parse(reply)
        return out


# --------------------------------------------------------------------------------------------------------------------
# Process reward
# --------------------------------------------------------------------------------------------------------------------

_STEP_MARKER = re.compile(r"^[ \t]*(?:\*\*|#{1,6}[ \t]*)?step[ \t]*[0-9]{1,4}[ \t]*[:.)]", re.I | re.M)
_BLANK_LINE = re.compile(r"\n[ \t\r]*\n")
SPLIT_MODES = ("auto", "steps", "paragraphs", "lines")


def reasoning_text(text: str) -> str:
    """The reasoning of a completion: the first ``<think>`` content (to ``</think>`` or the end), else the text before a
    lone ``</think>`` (templates that open the tag in the prompt), else the whole text."""
    start = text.find("<think>")
    if start >= 0:
        start += len("<think>")
        end = text.find("</think>", start)
        return text[start:end] if end >= 0 else text[start:]
    end = text.find("</think>")
    return text[:end] if end >= 0 else text


def _cut(text: str, starts: list[int]) -> list[str]:
    """``text`` cut at the positions ``starts`` (the text before the first cut is a piece too)."""
    bounds = [0, *starts, len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:])]


def split_steps(text: str, mode: str = "auto", max_steps: int = 64) -> list[str]:
    """Reasoning steps of ``text``, stripped, blanks dropped.

    Modes: ``steps`` cuts before each line starting with a "Step N:" marker (also "Step N." / "Step N)", optionally
    bold or a Markdown heading; text before the first marker is a step too); ``paragraphs`` cuts at blank lines;
    ``lines`` at newlines; ``auto`` uses the first of those that yields at least two steps. Steps beyond ``max_steps``
    are joined (newline-separated) into the last one, so long texts cost a bounded number of step scores.
    """
    if mode not in SPLIT_MODES:
        raise ValueError(f"split mode must be one of {', '.join(SPLIT_MODES)}, got {mode!r}")
    splitters = {
        "steps": lambda t: _cut(t, [m.start() for m in _STEP_MARKER.finditer(t)]),
        "paragraphs": _BLANK_LINE.split,
        "lines": str.splitlines,
    }
    steps: list[str] = []
    for name in ("steps", "paragraphs", "lines") if mode == "auto" else (mode,):
        steps = _clean(splitters[name](text))
        if len(steps) >= 2:
            break
    return _cap(steps, max_steps)


def _clean(pieces: list[str]) -> list[str]:
    """Pieces stripped, blank ones dropped."""
    return [p.strip() for p in pieces if p.strip()]


def _cap(steps: list[str], max_steps: int) -> list[str]:
    """At most ``max_steps`` steps: the ones beyond are joined (newline-separated) into the last."""
    return steps if len(steps) <= max_steps else [*steps[: max_steps - 1], "\n".join(steps[max_steps - 1 :])]


AGGREGATES: dict[str, Callable[[list[float]], float]] = {
    "min": min,  # the chain is as good as its weakest step (Math-Shepherd, Let's Verify Step by Step)
    "mean": lambda s: sum(s) / len(s),
    "last": lambda s: s[-1],
    "product": math.prod,  # probability that every step is correct, treating steps as independent
}


def _unit(value: float) -> float:
    """``value`` if it is a finite number in [0, 1], else the minimum 0.0."""
    v = float(value)
    return v if 0.0 <= v <= 1.0 else 0.0  # NaN fails both comparisons


class ProcessRewardJudge:
    """A process reward: split the reasoning into steps, score every step, aggregate (min / mean / last / product).

    ``step_scorer(question, steps, images) -> list[float]`` gives one score in [0, 1] per step (non-finite or
    out-of-range scores count as 0.0). The reasoning is :func:`reasoning_text`; ``split`` is a :func:`split_steps` mode
    or a function ``text -> list[str]``. A completion without steps scores 0.0. Range [0, 1].

    Example:
        >>> prm = ProcessRewardJudge(lambda question, steps, images: [0.9, 0.5][: len(steps)], aggregate="min")
        >>> prm(["Step 1: 2+2=4\\nStep 2: so 4"], question=["2+2?"])
        [0.5]
    """

    def __init__(
        self,
        step_scorer: StepScorer,
        split: str | Callable[[str], list[str]] = "auto",
        aggregate: str = "min",
        max_steps: int = 64,
    ) -> None:
        if aggregate not in AGGREGATES:
            raise ValueError(f"aggregate must be one of {', '.join(AGGREGATES)}, got {aggregate!r}")
        if isinstance(split, str) and split not in SPLIT_MODES:
            raise ValueError(f"split mode must be one of {', '.join(SPLIT_MODES)}, got {split!r}")
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        self.step_scorer = step_scorer
        self.split = split
        self.aggregate = aggregate
        self.max_steps = max_steps  # steps scored per completion (the rest is joined into the last)

    def steps(self, completion: Any) -> list[str]:
        """The completion's reasoning steps."""
        text = reasoning_text(as_text(completion))
        if callable(self.split):
            return _cap(_clean(self.split(text)), self.max_steps)
        return split_steps(text, self.split, self.max_steps)

    def step_scores(self, completions: list[Any], **columns: Any) -> list[list[float]]:
        """Per-step scores in [0, 1] for every completion (``[]`` when it has no steps), for step-level estimators."""
        n = len(completions)
        questions, images = question_column(columns, n), image_column(columns, n)
        out = []
        for completion, question, imgs in zip(completions, questions, images):
            steps = self.steps(completion)
            scores = list(self.step_scorer(question, steps, imgs)) if steps else []
            if len(scores) != len(steps):
                raise ValueError(f"step_scorer returned {len(scores)} scores for {len(steps)} steps")
            out.append([_unit(s) for s in scores])
        return out

    def __call__(self, completions: list[Any], **columns: Any) -> list[float]:
        """The aggregated step score of every completion, in [0, 1]; 0.0 without steps."""
        agg = AGGREGATES[self.aggregate]
        return [agg(s) if s else 0.0 for s in self.step_scores(completions, **columns)]


# --------------------------------------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------------------------------------


def register_judge(
    name: str, judge: Callable[..., Sequence[float]], bounds: tuple[float, float] = (0.0, 1.0)
) -> RewardFn:
    """Register ``judge`` (any ``judge(completions, **columns) -> list[float]``) as the reward ``name``.

    Values outside ``bounds`` or non-finite become ``bounds[0]`` (the minimum), so the documented range always holds.
    A judge registered earlier under ``name`` is replaced (each run registers its own); a built-in reward is not.
    Returns the registered reward function.
    """
    if name in names() and not getattr(get(name), "is_judge", False):
        raise ValueError(f"judge name '{name}' is taken by a built-in reward; choose another name")
    lo, hi = float(bounds[0]), float(bounds[1])

    def reward(completions: list[Any], **columns: Any) -> list[float]:
        return [v if lo <= v <= hi else lo for v in map(float, judge(completions, **columns))]

    reward.__name__ = name
    reward.__doc__ = f"Model-based reward '{name}' ({type(judge).__name__}). Range [{lo:g}, {hi:g}]."
    reward.is_judge = True  # type: ignore[attr-defined]
    return register(name, (lo, hi), replace=True)(reward)
