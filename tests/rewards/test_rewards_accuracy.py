"""Hand-worked cases for the accuracy family, including the known reward hacks."""

from __future__ import annotations

import threading

import pytest

import rewards
from rewards import accuracy as acc


def score(name: str, completion: str, answer: object, **cols: object) -> float:
    return rewards.get(name)([completion], answer=[answer], **{k: [v] for k, v in cols.items()})[0]


@pytest.mark.parametrize(
    "completion, answer, want",
    [
        ("<answer>3</answer>", "3", 1.0),
        ("<think>2+1</think><answer>3</answer>", 3, 1.0),  # numeric gt cell
        ("<answer>3.0</answer>", "3", 1.0),
        ("<answer>1,000</answer>", "1000", 1.0),
        ("<answer>0.5</answer>", "1/2", 1.0),
        ("<answer>３</answer>", "3", 1.0),  # unicode digits
        ("<answer>4</answer>", "3", 0.0),
        ("<answer>(B)</answer>", "B", 1.0),
        ("<answer>A or B or C</answer>", "B", 0.0),  # hedge
        ("<answer>\\boxed{\\frac{1}{2}}</answer>", "\\frac{1}{2}", 1.0),
        ("<answer>0.5</answer>", "\\frac{1}{2}", 1.0),
        ("<answer>\\sqrt{2}/2</answer>", "\\frac{\\sqrt{2}}{2}", 1.0),
        ("<answer>The Eiffel Tower</answer>", "eiffel tower", 1.0),
        ("<answer>Eiffel</answer>", "eiffel tower", 0.0),
        ("<answer></answer>", "eiffel tower", 0.0),  # empty answer never matches
        ("<answer>   </answer>", "3", 0.0),
        ("", "3", 0.0),
        ("<answer>tower</answer>", ["eiffel tower", "tower"], 1.0),  # any of several answers
    ],
)
def test_accuracy_dispatch(completion: str, answer: object, want: float) -> None:
    assert score("accuracy", completion, answer) == want


def test_empty_answer_never_substring_matches() -> None:
    # "" is a substring of everything: a naive `pred in gt` would pay for saying nothing.
    for name in ("accuracy", "exact", "f1", "rouge_l"):
        assert score(name, "<answer></answer>", "cat") == 0.0
        assert score(name, "<think>cat</think><answer> </answer>", "cat") == 0.0


def test_answer_outside_tags() -> None:
    # With tags present only their content counts; with require_tags an untagged answer scores 0.
    assert score("accuracy", "<answer>4</answer> actually 3", "3") == 0.0
    assert score("accuracy", "the answer is 3", "3") == 1.0
    assert score("accuracy", "the answer is 3", "3", require_tags=True) == 0.0
    assert score("accuracy", "<answer>3</answer>", "3", require_tags="true") == 1.0
    assert score("accuracy", "<answer>3", "3") == 0.0  # unclosed tag


def test_exact() -> None:
    assert score("exact", "<answer>The  Cat.</answer>", "cat") == 1.0
    assert score("exact", "<answer>a cat sat</answer>", "cat") == 0.0


@pytest.mark.parametrize(
    "completion, answer, want",
    [
        ("<answer>3 or 4</answer>", "3", 0.0),
        ("<answer>3, 4, 5</answer>", "4", 0.0),
        ("<answer>There are 3, so 3.</answer>", "3", 1.0),
        ("<answer>-2.5</answer>", "-2.5", 1.0),
        ("<answer>nan</answer>", "3", 0.0),
        ("<answer>inf</answer>", "3", 0.0),
        ("<answer>1e999</answer>", "3", 0.0),
        ("<answer>٣</answer>", "3", 1.0),
        ("<answer>\\boxed{12}</answer>", "12", 1.0),
    ],
)
def test_numeric(completion: str, answer: str, want: float) -> None:
    assert score("numeric", completion, answer) == want


def test_numeric_tolerance_columns() -> None:
    assert score("numeric", "<answer>3.1</answer>", "3") == 0.0
    assert score("numeric", "<answer>3.1</answer>", "3", rel_tol=0.05) == 1.0
    assert score("numeric", "<answer>3.1</answer>", "3", abs_tol=0.2) == 1.0


def test_numeric_bad_ground_truth_is_one_line_error() -> None:
    with pytest.raises(ValueError, match="column 'answer'"):
        score("numeric", "<answer>3</answer>", "three")


@pytest.mark.parametrize(
    "completion, answer, want",
    [
        ("<answer>B</answer>", "B", 1.0),
        ("<answer>(b)</answer>", "B", 0.0),  # lower-case is not an option letter
        ("<answer>B. a red car</answer>", "(B)", 1.0),
        ("The answer is (C).", "C", 1.0),
        ("<answer>A or B or C</answer>", "B", 0.0),
        ("<answer>A, B</answer>", "A", 0.0),
        ("<answer>(A) (B)</answer>", "A", 0.0),
        ("<answer>G</answer>", "G", 1.0),  # letters extend to the gt letter
        ("<answer></answer>", "A", 0.0),
    ],
)
def test_mcq(completion: str, answer: str, want: float) -> None:
    assert score("mcq", completion, answer) == want


@pytest.mark.parametrize(
    "completion, answer, want",
    [
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}", 1.0),
        ("<answer>$x^2+1$</answer>", "1+x^2", 1.0),
        ("<answer>1 or 2</answer>", "2", 0.0),  # hedge
        ("<answer>\\frac{1}{3}</answer>", "\\frac{1}{2}", 0.0),
        ("<answer>" + "{" * 50 + "</answer>", "\\frac{1}{2}", 0.0),  # too deep: rejected before sympy
        ("<answer>" + "x^" * 20 + "x</answer>", "x", 0.0),  # caret tower
        ("<answer>\\text{Monday}</answer>", "\\text{Monday}", 1.0),
    ],
)
def test_math(completion: str, answer: str, want: float) -> None:
    assert score("math", completion, answer) == want


def test_math_outside_main_thread() -> None:
    # math_verify's signal.alarm timeout raises outside the main thread; our wrapper must still answer.
    out: list[list[float]] = []
    t = threading.Thread(
        target=lambda: out.append(rewards.get("math")(["\\boxed{0.5}", "\\boxed{2}"], answer=["\\frac{1}{2}"] * 2))
    )
    t.start()
    t.join(30)
    assert out == [[1.0, 0.0]]


def test_math_equal_abandons_slow_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setattr(acc, "_math_verify", lambda g, p, t: time.sleep(5) or True)
    out: list[bool | None] = []
    t = threading.Thread(target=lambda: out.append(acc.math_equal("1", "1", timeout=1)))
    t0 = time.perf_counter()
    t.start()
    t.join(10)
    assert out == [False] and time.perf_counter() - t0 < 4


def test_f1_and_rouge_hand_worked() -> None:
    # pred "the cat sat on mat" -> tokens [cat, sat, on, mat]; gt "a cat on the mat" -> [cat, on, mat]
    # common 3: P = 3/4, R = 1 -> F1 = 6/7. LCS = [cat, on, mat] = 3 -> ROUGE-L F = 6/7 too.
    assert score("f1", "<answer>the cat sat on mat</answer>", "a cat on the mat") == pytest.approx(6 / 7)
    assert score("rouge_l", "<answer>the cat sat on mat</answer>", "a cat on the mat") == pytest.approx(6 / 7)
    # order matters for ROUGE-L only: pred [mat, on, cat] vs gt [cat, on, mat]: F1 = 1, LCS = 1 -> 1/3
    assert score("f1", "<answer>mat on cat</answer>", "cat on mat") == 1.0
    assert score("rouge_l", "<answer>mat on cat</answer>", "cat on mat") == pytest.approx(1 / 3)
    assert score("f1", "<answer>合计12元</answer>", "合计 12 元") == 1.0  # CJK characters are tokens


def _lcs_dp(a: list[str], b: list[str]) -> int:
    dp = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            dp[i][j] = dp[i - 1][j - 1] + 1 if a[i - 1] == b[j - 1] else max(dp[i - 1][j], dp[i][j - 1])
    return dp[-1][-1]


def test_bit_parallel_lcs_matches_dynamic_programming() -> None:
    import random

    rng = random.Random(0)
    for _ in range(300):
        a = [rng.choice("abcd") for _ in range(rng.randint(0, 30))]
        b = [rng.choice("abcde") for _ in range(rng.randint(0, 30))]
        assert acc.lcs_length(a, b) == _lcs_dp(a, b)


@pytest.mark.parametrize(
    "completion, answer, want",
    [
        ("<answer>3</answer>", "3", 1.0),
        ("<answer>three</answer>", "3", 1.0),
        ("<answer>There are three cats.</answer>", 3, 1.0),
        ("<answer>3 or 4</answer>", "3", 0.0),
        ("<answer>three or four</answer>", "3", 0.0),
        ("<answer>2.5</answer>", "3", 0.0),
        ("<answer>zero</answer>", "0", 1.0),
    ],
)
def test_counting(completion: str, answer: object, want: float) -> None:
    assert score("counting", completion, answer) == want


def test_counting_rejects_non_integer_ground_truth() -> None:
    with pytest.raises(ValueError, match="column 'answer'"):
        score("counting", "<answer>3</answer>", "2.5")


def test_missing_ground_truth_column() -> None:
    with pytest.raises(ValueError, match="ground-truth column"):
        rewards.get("accuracy")(["<answer>3</answer>"])


def test_conversational_completions_and_solution_column() -> None:
    comp = [{"role": "assistant", "content": "<answer>3</answer>"}]
    assert rewards.get("accuracy")([comp], solution=["3"]) == [1.0]
    parts = [{"role": "assistant", "content": [{"type": "text", "text": "<answer>3</answer>"}]}]
    assert rewards.get("accuracy")([parts], answer=["3"]) == [1.0]
    assert rewards.get("accuracy")([None], answer=["3"]) == [0.0]


def test_column_length_mismatch_names_column() -> None:
    with pytest.raises(ValueError, match="column 'answer'"):
        rewards.get("accuracy")(["a", "b"], answer=["3"])


def test_ground_truth_stored_with_answer_tags() -> None:
    # R1-V style datasets keep the solution as "<answer> 3 </answer>"
    assert rewards.get("accuracy")(["<answer>3</answer>"], solution=["<answer> 3 </answer>"]) == [1.0]


def test_negative_tolerance_names_column() -> None:
    with pytest.raises(ValueError, match="column 'rel_tol'"):
        score("numeric", "<answer>3</answer>", "3", rel_tol=-1)


def test_normalize_answer_matches_per_character_punctuation_removal() -> None:
    # normalize_answer replaces a run of punctuation with one space; the original replaced each character
    import random
    import re

    def reference(text: str) -> str:
        text = re.sub(r"[^\w\s]|_", " ", acc.normalize_digits(text).lower())
        return " ".join(re.sub(r"\b(?:a|an|the)\b", " ", text).split())

    rng = random.Random(0)
    alphabet = ["a", "an", "the", "The", "cat", "_", ".", ",", "'", "-", "!", " ", "\n", "\t", "\u00a0", "12", "\u0663",
                "\u5408", "\u3002", "\u00e9", "(", ")", "$", "{", "}"]  # fmt: skip
    for _ in range(20_000):
        t = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 15)))
        assert acc.normalize_answer(t) == reference(t), t
