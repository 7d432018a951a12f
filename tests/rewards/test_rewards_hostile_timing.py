"""Hostile text cannot stall a reward: every shipped reward and parser answers within ``BUDGET_S`` on ~100 kB inputs
built to trigger super-linear work (backtracking regexes, repeated brace matching, repeated JSON decoding).

DESIGN.md keeps speed targets out of timed tests; this budget is not one. It is a complexity guard: a linear parser
takes milliseconds on these inputs, a quadratic or cubic one seconds to minutes. Before the rewrite, ``mcq`` on
"x answer" + 4,000 spaces + "1" took 271 s, ``accuracy`` on ``\\frac{`` + 50,000 spaces 20 s, the box rewards on
"[" x 255 + a 100 kB list 0.5 s (``detection`` 1.2 s), the answer-reading rewards on 8 ``\\boxed{`` + 100k ``{``
0.13 s: 9 of the inputs below failed this budget (7 reward tests, 9 parser tests).

Budget: 100 ms per call, the best of up to ``TRIES`` runs; a run over 10x the budget is not noise and is not retried.
The issue suggested 50 ms. The slowest calls here now take ~25 ms unloaded (ROUGE-L over 350 kB of ``\\boxed{``) and
``math`` spends ~40-50 ms inside math_verify on 200 characters of "1.1.1...", so 50 ms fails on a loaded 2-core
machine (other test processes halve the speed for seconds at a time, which retries do not escape).
Judges are not registered on import; their parsers (``parse_score``, ``parse_verdict``, ``split_steps``) are timed
with the other parsers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import pytest

import rewards
from rewards import accuracy, extract, format, judges, shaping
from rewards.registry import RANGES

BUDGET_S = 0.1  # per call, best of TRIES (see the module docstring)
TRIES = 3

SP = " "
HOSTILE: dict[str, str] = {
    # "answer is" phrases with long whitespace runs: the option-letter pattern was cubic in the run length
    "x answer + 4k spaces + 1": "x answer" + SP * 4_000 + "1",
    "x answer + 50k spaces + 1": "x answer" + SP * 50_000 + "1",
    "The answer is + 4k spaces + x": "The answer is" + SP * 4_000 + "x",
    "The answer is + 50k spaces + x": "The answer is" + SP * 50_000 + "x",
    "answer: + 4k spaces + ?": "answer:" + SP * 4_000 + "?",
    "answer: + 50k spaces + ?": "answer:" + SP * 50_000 + "?",
    "answer + spaces + is + spaces + : + 1": "x answer" + SP * 1_500 + "is" + SP * 1_500 + ":" + SP * 1_000 + "1",
    "tagged x answer + 4k spaces + 1": "<answer>x answer" + SP * 4_000 + "1</answer>",
    "answer is, repeated": "answer is " * 10_000,
    # \frac{: the fraction pattern was quadratic in the whitespace run
    "frac + 50k spaces": "\\frac{" + SP * 50_000,
    "frac + spaces + minus + spaces": "\\frac{" + SP * 25_000 + "-" + SP * 25_000 + "x",
    "frac{1}{, repeated": "\\frac{1}{" * 10_000,
    # braces: \boxed tried from the end, each try matched braces to the end of the text
    "boxed nested 50k deep": "\\boxed{" * 50_000,
    "boxed + 50k unclosed braces": "\\boxed{" + "{" * 50_000,
    "8 boxed + 100k unclosed braces": "\\boxed{" * 8 + "{" * 100_000,
    "boxed + 50k brace pairs": "\\boxed{" + "{}" * 50_000,
    # function applications: sympy's equality check on them took seconds
    "sin nested 3 deep": "\\boxed{\\sin(\\sin(\\sin(x)))}",
    "exp nested 4 deep": "<answer>\\exp(\\exp(\\exp(\\exp(x))))</answer>",
    "plain sin nested 8 deep": "The answer is " + "sin(" * 8 + "x" + ")" * 8,
    # brackets and JSON: every [ or { is a JSON decoding attempt
    "50k [": "[" * 50_000,
    "50k {": "{" * 50_000,
    "255 [ + flat list": "[" * 255 + "1," * 50_000,
    "bbox_2d opening, repeated": '{"bbox_2d": [' * 8_000,
    "unclosed bbox objects": '{"bbox_2d": [1, 2, 3, 4]' * 4_000,
    "single-quoted action opening, repeated": "{'action': " * 10_000,
    # numbers
    "100k digits": "1" * 100_000,
    "100k-digit decimal": "9" * 50_000 + "." + "9" * 50_000,
    "1. repeated": "1." * 50_000,
    "1, repeated": "1," * 50_000,
    "thousands groups": "1" + ",000" * 25_000,
    "number + 50k spaces + x": "3" + SP * 50_000 + "x",
    "number + spaces + / + spaces + x": "3" + SP * 25_000 + "/" + SP * 25_000 + "x",
    "100k Arabic-Indic digits": "\u0663" * 100_000,
    # tags
    "<answer> x 10k": "<answer>" * 10_000,
    "</answer> x 10k": "</answer>" * 10_000,
    "<think> x 10k": "<think>" * 10_000,
    "<think> x 10k + answer": "<think>" * 10_000 + "</think><answer>3</answer>",
    "think/answer with space runs":
        "<think>" + SP * 50_000 + "</think>" + SP * 50_000 + "<answer>3</answer>" + SP * 50_000 + "x",
    # hedges and coordinates
    "A or B or, repeated": "A or B or " * 10_000,
    "( + 50k spaces": "(" + SP * 50_000 + "x",
    "(1 + spaces + , + spaces": "(1" + SP * 25_000 + "," + SP * 25_000 + "x",
    "box_start, repeated": "<|box_start|>(" * 7_000,
    "100k spaces": SP * 100_000,
    "100k newlines": "\n" * 100_000,
    # judge-output phrases
    "score + 50k spaces": "score" + SP * 50_000 + "x",
    "Step lines": ("Step 1" + SP * 50 + "\n") * 2_000,
}  # fmt: skip

BOX = [100, 100, 300, 300]
# Ground truths of the kind each reward needs (from its tests); the NO_GROUND_TRUTH ones get "3" and ignore it.
GROUND_TRUTHS: dict[str, list[Any]] = {
    "accuracy": ["3", "B", "\\frac{1}{2}", "eiffel tower"],  # numeric, mcq, math and exact dispatch
    "exact": ["eiffel tower"],
    "numeric": ["3"],
    "mcq": ["B"],
    "math": ["\\frac{1}{2}"],
    "f1": ["the cat"],
    "rouge_l": ["the cat"],
    "counting": ["3"],
    "hit": [BOX, [200, 200]],
    "iou": [BOX],
    "iou2": [BOX],
    "box_size": [BOX],
    "gaussian_point": [BOX],
    "gaussian_coverage": [BOX],
    "detection": [[BOX, [0, 0, 50, 50]]],
    "action_match": [{"action": "click", "bbox": BOX}, {"action": "type", "text": "hello"}],
}
NO_GROUND_TRUTH = {"format", "format_answer", "format_boxed", "format_json_action", "overlong", "length_penalty",
                   "repetition_penalty"}  # fmt: skip


def shipped_rewards() -> list[str]:
    """The rewards the ``rewards`` package registers (not judges, not stand-ins registered by other tests)."""
    return [
        n
        for n in rewards.names()
        if rewards.get(n).__module__.startswith("rewards.") and not getattr(rewards.get(n), "is_judge", False)
    ]


def calls() -> list[tuple[str, Callable[[str], list[float]]]]:
    """``(label, fn(text) -> values)`` for every shipped reward and each of its ground truths."""
    out = []
    for name in shipped_rewards():
        fn = rewards.get(name)
        for gt in GROUND_TRUTHS.get(name, ["3"]):
            label = f"{name}[{gt!r:.20}]"
            out.append((label, lambda t, fn=fn, gt=gt: fn([t], answer=[gt], image_size=[[640, 480]])))
    return out


PARSERS: dict[str, Callable[[str], Any]] = {
    "answer_region": extract.answer_region,
    "boxed": extract.boxed,
    "option_letter": extract.option_letter,
    "numbers": extract.numbers,
    "parse_number": extract.parse_number,
    "single_count": extract.single_count,
    "shapes": extract.shapes,
    "json_values": extract.json_values,
    "parse_action": extract.parse_action,
    "normalize_digits": extract.normalize_digits,
    "normalize_answer": accuracy.normalize_answer,
    "think_answer_ok": format.think_answer_ok,
    "repetition_fraction": shaping.repetition_fraction,
    "parse_score": judges.parse_score,
    "parse_verdict": judges.parse_verdict,
    "split_steps": judges.split_steps,
    "reasoning_text": judges.reasoning_text,
}


def best_time(fn: Callable[[], Any]) -> tuple[Any, float]:
    """``(first result, best wall time in seconds)`` over up to ``TRIES`` runs; stops once under budget or far over."""
    result, best = None, math.inf
    for i in range(TRIES):
        t0 = time.perf_counter()
        value = fn()
        dt = time.perf_counter() - t0
        result = value if i == 0 else result
        best = min(best, dt)
        if best < BUDGET_S or dt > 10 * BUDGET_S:
            break
    return result, best


@pytest.fixture(scope="module", autouse=True)
def _warm() -> None:
    """One benign call per reward first: the first ``math`` call imports math_verify and sympy (about a second)."""
    for _, fn in calls():
        fn("<think>x</think><answer>3</answer>")


def test_every_shipped_reward_has_ground_truth_here() -> None:
    missing = set(shipped_rewards()) - set(GROUND_TRUTHS) - NO_GROUND_TRUTH
    assert not missing, f"add ground truths for {sorted(missing)} to GROUND_TRUTHS (or NO_GROUND_TRUTH)"


@pytest.mark.parametrize("case", list(HOSTILE))
def test_rewards_answer_hostile_text_within_budget(case: str) -> None:
    text = HOSTILE[case]
    slow, bad = [], []
    for label, fn in calls():
        values, seconds = best_time(lambda fn=fn: fn(text))
        name = label.split("[", 1)[0]
        lo, hi = RANGES[name]
        if not (len(values) == 1 and isinstance(values[0], float) and math.isfinite(values[0])):
            bad.append(f"{label}: {values!r}")
        elif not lo <= values[0] <= hi:
            bad.append(f"{label}: {values[0]} outside [{lo}, {hi}]")
        if seconds >= BUDGET_S:
            slow.append(f"{label}: {seconds * 1000:.0f} ms")
    assert not bad, f"{case}: values not finite or outside RANGES: {bad}"
    assert not slow, f"{case} ({len(text):,} chars): over {BUDGET_S * 1000:.0f} ms: {slow}"


@pytest.mark.parametrize("case", list(HOSTILE))
def test_parsers_answer_hostile_text_within_budget(case: str) -> None:
    text = HOSTILE[case]
    slow = []
    for name, parser in PARSERS.items():
        _, seconds = best_time(lambda parser=parser: parser(text))
        if seconds >= BUDGET_S:
            slow.append(f"{name}: {seconds * 1000:.0f} ms")
    assert not slow, f"{case} ({len(text):,} chars): over {BUDGET_S * 1000:.0f} ms: {slow}"
