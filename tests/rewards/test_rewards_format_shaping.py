"""Format rewards, shaping penalties and the temporal contrast bonus."""

from __future__ import annotations

import math
import time

import pytest

import rewards
from rewards.perception import temporal_contrast_bonus


@pytest.mark.parametrize(
    "text, want",
    [
        ("<think>x</think><answer>4</answer>", 1.0),
        ("  <think>\nmulti\nline\n</think>\n\n<answer>\n4\n</answer>\n", 1.0),
        ("<think></think><answer>4</answer>", 1.0),  # empty thinking is allowed
        ("<think>x</think><answer> </answer>", 0.0),  # blank answer is not
        ("<answer>4</answer>", 0.0),
        ("<think>x</think>", 0.0),
        ("<think>x</think><answer>4</answer> trailing", 0.0),
        ("lead <think>x</think><answer>4</answer>", 0.0),
        ("<think>x</think><answer>4</answer><answer>5</answer>", 0.0),  # exactly one of each
        ("<think>a<think>b</think><answer>4</answer>", 0.0),
        ("<answer>4</answer><think>x</think>", 0.0),
        ("<think>x</think>text<answer>4</answer>", 0.0),
        ("", 0.0),
    ],
)
def test_format(text: str, want: float) -> None:
    assert rewards.get("format")([text]) == [want]


@pytest.mark.parametrize(
    "text, want",
    [
        ("<answer>4</answer>", 1.0),
        (" <answer>4</answer> ", 1.0),
        ("<think>x</think><answer>4</answer>", 0.0),
        ("<answer></answer>", 0.0),
        ("4", 0.0),
    ],
)
def test_format_answer(text: str, want: float) -> None:
    assert rewards.get("format_answer")([text]) == [want]


@pytest.mark.parametrize(
    "text, want",
    [
        (r"so \boxed{4}", 1.0),
        (r"\boxed{\frac{1}{2}}", 1.0),
        (r"\boxed{}", 0.0),
        (r"\boxed{4", 0.0),
        (r"\boxed{4} and \boxed{5}", 0.0),
        ("4", 0.0),
    ],
)
def test_format_boxed(text: str, want: float) -> None:
    assert rewards.get("format_boxed")([text]) == [want]


def test_format_on_100kb_completions_is_fast() -> None:
    texts = [
        "<think>" + "x" * 100_000 + "</think><answer>4</answer>",
        "</think>" * 12_000,
        "<think>" + "</answer>" * 11_000,
    ]
    t0 = time.perf_counter()
    assert rewards.get("format")(texts) == [1.0, 0.0, 0.0]
    assert time.perf_counter() - t0 < 1.0


def test_overlong_hand_worked() -> None:
    fn = rewards.get("overlong")
    comps = ["x" * n for n in (0, 800, 900, 1000, 1001)]
    assert fn(comps, max_length=[1000] * 5, cache_length=[200] * 5) == [0.0, 0.0, -0.5, -1.0, -1.0]
    # token counts from the `length` column override characters
    assert fn(["short"], length=[900], max_length=[1000], cache_length=[200]) == [-0.5]
    assert fn(["x" * 5000]) == [-1.0]  # defaults 4096 / 1024
    assert fn(["x" * 3584]) == [-0.5]
    assert fn(["x" * 1001], max_length=[1000], cache_length=[0]) == [-1.0]
    with pytest.raises(ValueError, match="max_length"):
        fn(["x"], max_length=[0])


def test_length_penalty_hand_worked() -> None:
    fn = rewards.get("length_penalty")
    assert fn(["x" * 50, "x" * 100, "x" * 200], max_length=[100] * 3) == [-0.5, -1.0, -1.0]
    assert fn(["x" * 75], max_length=[100], target_length=[50]) == [-0.5]
    assert fn(["x" * 40], max_length=[100], target_length=[50]) == [0.0]
    assert fn(["x" * 150], max_length=[100], target_length=[200]) == [0.0]


def test_repetition_penalty_hand_worked() -> None:
    fn = rewards.get("repetition_penalty")
    # "a b c a b c": 3-grams abc bca cab abc -> 3 unique of 4 -> -0.25
    assert fn(["a b c a b c"]) == [pytest.approx(-0.25)]
    assert fn(["one two three four"]) == [0.0]
    assert fn(["too short"]) == [0.0]
    assert fn([""]) == [0.0]
    assert fn(["go " * 1000])[0] == pytest.approx(-(1 - 1 / 998))
    assert fn(["a a b"], ngram_size=[1]) == [pytest.approx(-1 / 3)]
    with pytest.raises(ValueError, match="ngram_size"):
        fn(["a"], ngram_size=[0])


def test_shaping_on_100kb() -> None:
    text = "word " * 20_000
    t0 = time.perf_counter()
    for name in ("overlong", "length_penalty", "repetition_penalty"):
        (v,) = rewards.get(name)([text])
        assert -1.0 <= v <= 0.0
    assert time.perf_counter() - t0 < 1.0


def test_temporal_contrast_bonus() -> None:
    # Video-R1: bonus when acc(ordered) >= 0.8 acc(shuffled), only to correct ordered responses
    assert temporal_contrast_bonus([True, False, True], 0.67, 0.5) == [0.3, 0.0, 0.3]
    assert temporal_contrast_bonus([True, False], 0.5, 0.625) == [0.3, 0.0]  # 0.5 >= 0.8 * 0.625 (boundary)
    assert temporal_contrast_bonus([True, True], 0.3, 0.9) == [0.0, 0.0]
    assert temporal_contrast_bonus([True], 1.0, 0.0, bonus=0.5) == [0.5]
    assert temporal_contrast_bonus([True], math.nan, 0.1) == [0.0]
    assert temporal_contrast_bonus([], 1.0, 1.0) == []
