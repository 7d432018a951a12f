"""Hand-worked cases for rewards.extract, including adversarial 100 kB inputs."""

from __future__ import annotations

import math
import random
import re
import time
import unicodedata

import pytest

from rewards import extract as ex


@pytest.mark.parametrize(
    "text, want",
    [
        ("<answer>4</answer>", "4"),
        ("<answer>1</answer> then <answer>2</answer>", "2"),
        ("<answer>no close", None),
        ("no open</answer>", None),
        ("plain", None),
        ("<answer></answer>", ""),
    ],
)
def test_answer_span(text: str, want: str | None) -> None:
    assert ex.answer_span(text) == want


@pytest.mark.parametrize(
    "text, want",
    [
        (r"so \boxed{4}", "4"),
        (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"\boxed{a{b{c}}d} and \boxed{2}", "2"),
        (r"\boxed{1} then \boxed{unbalanced", "1"),
        (r"\fbox{7}", "7"),
        (r"\boxed 5 done", "5"),
        ("nothing", None),
        (r"\boxed{", None),
    ],
)
def test_boxed(text: str, want: str | None) -> None:
    assert ex.boxed(text) == want


@pytest.mark.parametrize(
    "text, require, want",
    [
        ("<think>x</think><answer>\\boxed{4}</answer>", False, "4"),
        ("<think>3</think><answer>5</answer> 3", False, "5"),  # text outside the tags never counts
        ("<answer>5", False, None),  # a tag without its partner
        ("the answer is 7.\nbye", False, "7."),
        ("Answer: B", False, "B"),
        ("just 9", False, "just 9"),
        ("just 9", True, None),  # tags required
        (r"\boxed{9}", True, None),
    ],
)
def test_answer_region(text: str, require: bool, want: str | None) -> None:
    assert ex.answer_region(text, require) == want


@pytest.mark.parametrize(
    "text, want",
    [
        ("B", "B"),
        ("(B)", "B"),
        ("[C]", "C"),
        ("D.", "D"),
        ("B) a cat", "B"),
        ("(B) a cat", "B"),
        ("B. A dog sits", "B"),
        ("Answer: C", "C"),
        ("The answer is (E).", "E"),
        ("**B**", "B"),
        ("A or B or C", None),
        ("A, B", None),
        ("(A) or (B)", None),
        ("B. cat (C) dog", None),
        ("answer is A or B", None),
        ("A/B", None),
        ("", None),
        ("F", None),  # not a valid option
        ("I think D", "D"),
        ("A dog and so B", None),
    ],
)
def test_option_letter(text: str, want: str | None) -> None:
    assert ex.option_letter(text) == want


def test_option_letter_extended_set() -> None:
    assert ex.option_letter("G", "ABCDEFG") == "G"


@pytest.mark.parametrize(
    "text, want",
    [
        ("3", [3.0]),
        ("1,234.5 and -7", [1234.5, -7.0]),
        ("3/4", [0.75]),
        (r"\frac{3}{4}", [0.75]),
        (r"\dfrac{-1}{2}", [-0.5]),
        ("１２", [12.0]),  # full-width digits
        ("٣٤", [34.0]),  # Arabic-Indic digits
        ("३", [3.0]),  # Devanagari
        ("−5", [-5.0]),  # Unicode minus
        ("1e3", [1000.0]),
        ("1e9999", []),  # overflow -> inf -> rejected
        ("NaN inf infinity", []),
        ("x2 H2O", []),
        ("1/0", []),
        (".5", [0.5]),
        ("3-5", [3.0, 5.0]),
    ],
)
def test_numbers(text: str, want: list[float]) -> None:
    assert ex.numbers(text) == want


@pytest.mark.parametrize(
    "text, want",
    [
        ("3", 3.0),
        (" -1,234.5 ", -1234.5),
        ("$3/4$", 0.75),
        ("50%", 50.0),
        ("3.", 3.0),
        ("3 apples", None),
        ("", None),
        ("nan", None),
    ],
)
def test_parse_number(text: str, want: float | None) -> None:
    assert ex.parse_number(text) == want


def test_single_number_and_count() -> None:
    assert ex.single_number("3 or 4") is None
    assert ex.single_number("there are 3, so 3") == 3.0
    assert ex.single_number("") is None
    assert ex.single_count("three") == 3
    assert ex.single_count("3 or four") is None
    assert ex.single_count("2.5") is None
    assert ex.single_count("-1") is None


@pytest.mark.parametrize(
    "text, want",
    [
        ('{"bbox_2d": [10, 20, 30, 40]}', [(10, 20, 30, 40)]),
        ('[{"bbox_2d": [1,2,3,4], "label": "a"}, {"bbox_2d": [5,6,7,8]}]', [(1, 2, 3, 4), (5, 6, 7, 8)]),
        ('{"point_2d": [5, 6]}', [(5, 6)]),
        ("[1, 2, 3, 4]", [(1, 2, 3, 4)]),
        ("[1.5, 2]", [(1.5, 2)]),
        ("click (100, 200)", [(100, 200)]),
        ("(1,2),(3,4)", [(1, 2, 3, 4)]),
        ("(1, 2, 3, 4)", [(1, 2, 3, 4)]),
        ("<|box_start|>(1,2),(3,4)<|box_end|>", [(1, 2, 3, 4)]),
        ("<|box_start|>(7,8)<|box_end|>", [(7, 8)]),
        ("{'point': [1, 2]}", [(1, 2)]),
        ('```json\n{"bbox_2d": [1, 2, 3, 4]}\n```', [(1, 2, 3, 4)]),
        ('{"bbox_2d": ["1", "2", "3", "4"]}', [(1, 2, 3, 4)]),
        ("[１, ２]", [(1, 2)]),
        ("no shapes", []),
        ("[true, false]", []),
    ],
)
def test_shapes(text: str, want: list[tuple[float, ...]]) -> None:
    assert [s.coords for s in ex.shapes(text)] == [tuple(float(v) for v in w) for w in want]


def test_shapes_nan_and_confidence() -> None:
    (s,) = ex.shapes('{"bbox_2d": [NaN, 1, 2, 3]}')
    assert math.isnan(s.coords[0])
    (s,) = ex.shapes('{"bbox_2d": [0, 1, 2, 3], "confidence": 0.7, "label": "cat"}')
    assert s.confidence == 0.7 and s.label == "cat"
    (s,) = ex.shapes('{"bbox_2d": [0, 1, 2, 3], "confidence": "high"}')
    assert math.isnan(s.confidence)


def test_single_shape_rejects_spray_but_allows_duplicates() -> None:
    assert ex.single_shape("[1,2,3,4] [5,6,7,8]") is None
    assert ex.single_shape("[1,2,3,4] again [1,2,3,4]").coords == (1, 2, 3, 4)
    assert ex.single_shape(" ".join(f"[{i},{i}]" for i in range(200))) is None


def test_parse_action() -> None:
    assert ex.parse_action('<answer>{"action": "click", "point": [1, 2]}</answer>') == {
        "action": "click",
        "point": [1, 2],
    }
    assert ex.parse_action("[{'action': 'type', 'input_text': 'hi'}]") == {"action": "type", "input_text": "hi"}
    assert ex.parse_action('{"action": "click"} {"action": "type"}') is None  # two actions
    assert ex.parse_action('{"act": "click"}') is None
    assert ex.parse_action('{"action": ""}') is None
    assert ex.parse_action('{"action": 3}') is None
    assert ex.parse_action('{"action": "back"}', require_tags=True) is None


def test_normalize_digits() -> None:
    assert ex.normalize_digits("abc") == "abc"
    assert ex.normalize_digits("１２３") == "123"
    assert ex.normalize_digits("٣") == "3"
    assert ex.normalize_digits("½") == "1/2"


ADVERSARIAL = [
    "<answer>" * 12_500,
    "</answer>" * 11_000,
    "\\boxed{" * 14_000,
    "{" * 100_000,
    "[" * 100_000,
    '{"a": "' + "x" * 100_000,
    "[1," * 33_000,
    "(1, " * 25_000,
    "(" + " " * 100_000,
    "1" * 100_000,
    "1," * 50_000,
    "1 " + " " * 100_000 + "/",
    "A or " * 20_000,
    "<think>" + "a" * 100_000,
    "<|box_start|>(" * 7_000,
    "\\frac{" * 16_000,
    "a" * 100_000,
    "answer is " * 10_000,
]


@pytest.mark.parametrize("i", range(len(ADVERSARIAL)))
def test_100kb_adversarial_inputs_finish_fast(i: int) -> None:
    text = ADVERSARIAL[i]
    assert len(text) >= 90_000
    t0 = time.perf_counter()
    ex.answer_region(text)
    ex.option_letter(text)
    ex.numbers(text)
    ex.single_count(text)
    ex.shapes(text)
    ex.parse_action(text)
    ex.boxed(text)
    assert time.perf_counter() - t0 < 2.0  # generous bound on a slow CI core; typically a few ms


# ---------------------------------------------------------------------------------------------------------------------
# The linear rewrites (see test_rewards_hostile_timing.py) read exactly what the super-linear originals read: the old
# patterns are kept here verbatim and compared on random strings over the characters they care about.
# ---------------------------------------------------------------------------------------------------------------------

_OLD_NUM = r"(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d{1,4})?"
OLD_PHRASE_LETTER = re.compile(r"answer\s*(?:is)?\s*[:：]?\s*\(?([A-Z])\)?(?![A-Za-z0-9])", re.I)
OLD_PREFIX = re.compile(r"^(?:the\s+)?(?:final\s+)?(?:correct\s+)?(?:answer|option|choice)\s*(?:is)?\s*[:：]?\s*", re.I)
OLD_FULL_NUMBER = re.compile(rf"\$?\s*([-+]?)({_OLD_NUM})(?:\s*/\s*({_OLD_NUM}))?\s*%?\s*\$?\.?")
OLD_LATEX_FRAC = re.compile(r"\\[dt]?frac\{\s*(-?)\s*(\d{1,30}(?:\.\d{1,30})?)\s*\}\{\s*(\d{1,30}(?:\.\d{1,30})?)\s*\}")


def _random_texts(pieces: list[str], n: int = 20_000, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 12))) for _ in range(n)]


def test_phrase_and_prefix_patterns_match_the_old_ones() -> None:
    pieces = ["answer", "Answer", " ", "  ", "\t", "\n", "is", "IS", ":", "：", "(", ")", "B", "b", "i", "s", "1", "x",
              "the", "final", "correct", "option", "choice"]  # fmt: skip
    for t in _random_texts(pieces):
        old = [(m.span(), m.group(1)) for m in OLD_PHRASE_LETTER.finditer(t)]
        assert [(m.span(), m.group(1)) for m in ex._PHRASE_LETTER.finditer(t)] == old, t
        assert ex._PREFIX.sub("", t, count=1) == OLD_PREFIX.sub("", t, count=1), t


def test_number_patterns_match_the_old_ones() -> None:
    pieces = ["\\frac{", "\\dfrac{", "}{", "}", "{", " ", "  ", "-", "+", "1", "23", ",", ",000", ".", ".5", "e3", "/",
              "%", "$", "x"]  # fmt: skip
    for t in _random_texts(pieces):
        old, new = OLD_FULL_NUMBER.fullmatch(t), ex._FULL_NUMBER.fullmatch(t)
        assert (old and old.groups()) == (new and new.groups()), t
        old_fracs = [(m.span(), m.group(1), m.group(2), m.group(3)) for m in OLD_LATEX_FRAC.finditer(t)]
        new_fracs = [(m.span(), m.group(1) or "", m.group(2), m.group(3)) for m in ex._LATEX_FRAC.finditer(t)]
        assert new_fracs == old_fracs, t


def _closing_brace_reference(text: str, j: int) -> int:
    depth = 0
    for k in range(j, len(text)):
        depth += {"{": 1, "}": -1}.get(text[k], 0)
        if depth == 0:
            return k
    return -1


def _boxed_reference(text: str) -> str | None:
    """The pre-rewrite ``boxed``: each of the last 8 occurrences matched its braces separately."""
    pos = len(text)
    for _ in range(8):
        i = max(text.rfind("\\boxed", 0, pos), text.rfind("\\fbox", 0, pos))
        if i < 0:
            return None
        j = i + (6 if text.startswith("\\boxed", i) else 5)
        if j < len(text) and text[j] == "{":
            k = _closing_brace_reference(text, j)
            if k >= 0:
                return text[j + 1 : k]
        elif j < len(text) and text[j] == " ":
            m = re.match(r" +([^\s$]{1,64})", text[j : j + 80])
            if m:
                return m.group(1)
        pos = i
    return None


def test_closing_braces_and_boxed_match_a_brace_by_brace_scan() -> None:
    rng = random.Random(0)
    for _ in range(20_000):
        t = "".join(rng.choice("{{}}ab ") for _ in range(rng.randint(0, 40)))
        opens = rng.sample([i for i, c in enumerate(t) if c == "{"], k=min(8, t.count("{")))
        want = {j: k for j in opens if (k := _closing_brace_reference(t, j)) >= 0}
        assert ex._closing_braces(t, opens) == want, (t, opens)
    for t in _random_texts(["\\boxed", "\\fbox", "{", "}", "{}", " ", "5", "a", "$"], n=20_000, seed=1):
        assert ex.boxed(t) == _boxed_reference(t), t


def test_normalize_digits_matches_per_digit_mapping() -> None:
    rng = random.Random(0)
    alphabet = "0123456789 a.,-" + "".join(
        chr(c) for c in (0x663, 0x967, 0xFF13, 0x1D7D1, 0x2212, 0xBD, 0x4E09, 0x0E53)
    )
    for _ in range(5_000):
        t = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 20)))
        want = re.sub(r"(?![0-9])\d", lambda m: str(unicodedata.decimal(m.group())), unicodedata.normalize("NFKC", t))
        for ch, ascii_ch in (("\u2212", "-"), ("\u2013", "-"), ("\u2044", "/"), ("\u2215", "/"), ("\u00a0", " ")):
            want = want.replace(ch, ascii_ch)
        assert ex.normalize_digits(t) == want, t
