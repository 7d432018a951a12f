"""Accuracy rewards: numeric, multiple choice, math (math_verify), exact match, token F1, ROUGE-L, counting.

Columns:
    answer        ground truth (also read from ``solution`` / ``ground_truth``); a list means "any of these".
    require_tags  optional bool: the answer must sit inside ``<answer>...</answer>`` (text outside never counts anyway
                  when the completion has tags; with ``require_tags`` an untagged completion scores 0).
    rel_tol, abs_tol  optional tolerances for ``numeric`` (defaults 1e-6 and 1e-9).

Where the answer is read from is ``rewards.extract.answer_region``: the last ``<answer>`` content (its ``\\boxed{}`` if
any), else the last ``\\boxed{}``, else the line after "answer is", else the whole text. Defences: an empty answer scores
0 (nothing is ever substring-matched), hedges with several letters/numbers ("A or B or C", "3 or 4") score 0 for
mcq/numeric/counting, and ``math`` rejects answers containing the word "or".

Example:
    >>> accuracy(["<answer>(B)</answer>", "<answer>A or B</answer>"], answer=["B", "B"])
    [1.0, 0.0]
"""

from __future__ import annotations

import logging
import math
import re
import string
import threading
from collections import Counter
from functools import lru_cache
from typing import Any

from rewards.columns import as_bool, as_float, as_text, column, gt_column
from rewards.extract import (
    answer_region,
    answer_span,
    normalize_digits,
    option_letter,
    parse_number,
    single_count,
    single_number,
)
from rewards.registry import register

logger = logging.getLogger(__name__)

MATH_TIMEOUT_S = 5  # math_verify parse/verify budget per call (whole seconds: signal.alarm granularity)
# sympy is slow on pathological input (0.8 s for 300 letters, a timeout for 100 nested brackets or a ^ tower), so the
# region handed to math_verify is cut to its last 200 characters and rejected (scored 0) when it nests brackets deeper
# than 10, holds more than 8 carets, or more than 40 letters outside LaTeX command names (sympy multiplies each one).
# Real final answers (\frac{\sqrt{3}}{2}, pmatrix, intervals, \text{Monday}) fit easily. Function applications cost
# sympy most (\sin(\sin(\sin(x))) took 0.6-2.5 s against "1", \exp 4 deep 0.8 s), so an answer with more than 2 of
# them (\sin, \log, \exp... with or without the backslash) is scored 0 without asking; \sin(\cos(x)) passes.
# What still passes costs ~3-150 ms in math_verify.
MAX_MATH_CHARS = 200
MAX_MATH_DEPTH = 10
MAX_MATH_CARETS = 8
MAX_MATH_LETTERS = 40
MAX_MATH_FUNCTIONS = 2
_FUNCTION = re.compile(r"(?<![A-Za-z])\\?(?:arc)?(?:sin|cos|tan|sec|csc|cot)h?(?![A-Za-z])"
                       r"|(?<![A-Za-z])\\?(?:log|ln|lg|exp)(?![A-Za-z])")  # fmt: skip
_LATEX_COMMAND = re.compile(r"\\[A-Za-z]+")
# Short answers whose exact integer value sympy sets out to compute, scored 0 without asking it: a numeric power inside
# a braced exponent (9^{9^9}, x^{10^{10}}), an exponent of 5+ digits (10^{999999999}), a factorial of a factorial
# ((10!)!) or of a 6+ digit number (1000000!), a binomial of a 6+ digit number. Each example here ran into the full
# MATH_TIMEOUT_S (and scored 0 then too); smaller ones of the same kinds take 0.1-0.8 s. e^{x^2}, x^{2023}, 5! pass.
# The alternatives start with distinct characters and no two stars meet, so the search is linear.
_HUGE_INTEGER = re.compile(
    r"\^\s*\{[^{}^a-zA-Z\\]*\^"  # a power with a numeric base inside a braced exponent
    r"|\^\s*(?:\{\s*)?(?:[-+]\s*)?\d{5}"  # an exponent of 5+ digits
    r"|!\s*\)\s*!|\d{6}\s*!"  # a factorial of a factorial, of a 6+ digit number
    r"|\\binom\s*\{\s*\d{6}"  # a binomial of a 6+ digit number
)
MAX_TOKENS = 10_000  # f1/rouge_l compare at most the first 10k tokens of each side
DEFAULT_REL_TOL, DEFAULT_ABS_TOL = 1e-6, 1e-9
_LATEX_HINT = re.compile(r"\\|\^|_\{|\$|[{}]|\bsqrt\b|\bpi\b")
_HEDGE = re.compile(r"\bor\b", re.I)

# --------------------------------------------------------------------------------------------------------------------
# Text normalisation and token metrics (shared with rewards.gui)
# --------------------------------------------------------------------------------------------------------------------

_PUNCT = re.compile(r"[^\w\s]+|_+")  # a run becomes one space (the spaces are collapsed anyway): one match per run
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af"
_TOKEN = re.compile(rf"[{_CJK}]|[^\s{_CJK}]+")


def normalize_answer(text: str) -> str:
    """SQuAD-style normalisation: NFKC + ASCII digits, lowercase, punctuation and articles removed, spaces collapsed."""
    text = _PUNCT.sub(" ", normalize_digits(text).lower())
    return " ".join(_ARTICLES.sub(" ", text).split())


def tokens(text: str) -> list[str]:
    """Normalised tokens: whitespace-separated words, CJK characters one token each (first ``MAX_TOKENS``)."""
    out = []
    for m in _TOKEN.finditer(normalize_answer(text)):
        out.append(m.group())
        if len(out) >= MAX_TOKENS:
            break
    return out


def token_f1(pred: str, gt: str) -> float:
    """Bag-of-tokens F1 between two strings after ``normalize_answer``, in [0, 1]; an empty side gives 0."""
    p, g = tokens(pred), tokens(gt)
    common = sum((Counter(p) & Counter(g)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


def lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence, bit-parallel (Allison-Dix / Hyyro): O(len(b) * len(a) / 64)."""
    if not a or not b:
        return 0
    masks: dict[str, int] = {}
    for i, tok in enumerate(a):
        masks[tok] = masks.get(tok, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full
    for tok in b:
        u = v & masks.get(tok, 0)
        v = ((v + u) | (v - u)) & full
    return len(a) - bin(v).count("1")


def rouge_l_f(pred: str, gt: str) -> float:
    """ROUGE-L F-measure (beta = 1, i.e. the harmonic mean of LCS precision and recall) over ``tokens``, in [0, 1]."""
    p, g = tokens(pred), tokens(gt)
    lcs = lcs_length(p, g)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(p), lcs / len(g)
    return 2 * precision * recall / (precision + recall)


# --------------------------------------------------------------------------------------------------------------------
# math_verify with a timeout that also works outside the main thread
# --------------------------------------------------------------------------------------------------------------------


def _wrap_latex(s: str) -> str:
    return s if ("$" in s or "\\(" in s or "\\[" in s or "\\boxed" in s) else f"${s}$"


@lru_cache(maxsize=4096)
def _parse_gold(gold: str, timeout: int | None) -> tuple[Any, ...]:
    import math_verify

    return tuple(math_verify.parse(_wrap_latex(gold), parsing_timeout=timeout))


def _math_verify(gold: str, pred: str, timeout: int | None) -> bool | None:
    """True/False from math_verify, ``None`` when the gold answer cannot be parsed; never raises."""
    try:
        import math_verify

        g = _parse_gold(gold, timeout)
        if not g:
            return None
        p = math_verify.parse(_wrap_latex(pred), parsing_timeout=timeout)
        return bool(p) and bool(math_verify.verify(list(g), p, timeout_seconds=timeout))
    except Exception as exc:  # math_verify/sympy failures on model text are a wrong answer, not an error
        logger.debug("math_verify failed: %s", exc)
        return False


def math_equal(gold: str, pred: str, timeout: int = MATH_TIMEOUT_S) -> bool | None:
    """Whether ``pred`` equals ``gold`` mathematically (math_verify), with a timeout safe in any thread.

    math_verify times out with ``signal.alarm``, which only works in the main thread. Elsewhere (trainer reward
    workers, data loaders) the check runs with math_verify's timeouts disabled in a daemon thread that is abandoned
    after ``timeout`` seconds (counted as wrong). Returns ``None`` when the gold answer itself does not parse.
    """
    if threading.current_thread() is threading.main_thread():
        return _math_verify(gold, pred, timeout)
    result: list[bool | None] = []
    worker = threading.Thread(target=lambda: result.append(_math_verify(gold, pred, None)), daemon=True)
    worker.start()
    worker.join(timeout)
    if not result:
        logger.warning("math_verify timed out after %ss (scored as wrong)", timeout)
        return False
    return result[0]


# --------------------------------------------------------------------------------------------------------------------
# Ground truth helpers
# --------------------------------------------------------------------------------------------------------------------


def _alternatives(gt: Any, name: str = "answer") -> list[str]:
    """A ground-truth cell as a non-empty list of non-empty strings (a list cell means "any of these").

    A ground truth stored with answer tags (R1-V style ``"<answer> 3 </answer>"``) is reduced to the tag content.
    """
    values = gt if isinstance(gt, (list, tuple)) else [gt]
    out = [str(v) for v in values if v is not None and not isinstance(v, (list, dict))]
    out = [span if (span := answer_span(v)) is not None else v for v in out]
    if not out or any(not v.strip() for v in out):
        raise ValueError(f"column '{name}': empty or non-text ground truth {gt!r:.80}")
    return out


def _gt_letter(gt: str) -> str | None:
    m = re.fullmatch(r"\s*\(?([A-Za-z])\)?\.?\s*", gt)
    return m.group(1).upper() if m else None


def _regions(completions: list[Any], columns: dict[str, Any]) -> list[str | None]:
    """The answer region of every completion (``None`` when there is none, or it is blank)."""
    req = column(columns, "require_tags", len(completions))
    out = []
    for comp, r in zip(completions, req):
        region = answer_region(as_text(comp), as_bool(r, "require_tags"))
        out.append(region if region is not None and region.strip() else None)
    return out


def _score_exact(region: str, gt: str) -> float:
    pred = normalize_answer(region)
    return 1.0 if pred and pred == normalize_answer(gt) else 0.0


def _score_numeric(region: str, gt: str, rel_tol: float = DEFAULT_REL_TOL, abs_tol: float = DEFAULT_ABS_TOL) -> float:
    g = parse_number(gt)
    if g is None:
        raise ValueError(f"column 'answer': {gt!r:.80} is not a number")
    p = single_number(region)
    return 1.0 if p is not None and math.isclose(p, g, rel_tol=rel_tol, abs_tol=abs_tol) else 0.0


def _score_mcq(region: str, gt: str) -> float:
    letter = _gt_letter(gt) or option_letter(gt, string.ascii_uppercase)
    if letter is None:
        raise ValueError(f"column 'answer': {gt!r:.80} is not an option letter")
    letters = string.ascii_uppercase[: max(5, string.ascii_uppercase.index(letter) + 1)]
    return 1.0 if option_letter(region, letters) == letter else 0.0


def math_input_ok(text: str) -> bool:
    """Whether ``text`` is small and shallow enough to hand to math_verify (``MAX_MATH_*``, ``_HUGE_INTEGER``)."""
    if text.count("^") > MAX_MATH_CARETS or _HUGE_INTEGER.search(text):
        return False
    if sum(ch.isalpha() for ch in _LATEX_COMMAND.sub("", text)) > MAX_MATH_LETTERS:
        return False
    if len(_FUNCTION.findall(text)) > MAX_MATH_FUNCTIONS:
        return False
    depth = deepest = 0
    for ch in text:
        if ch in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in ")]}":
            depth -= 1
    return deepest <= MAX_MATH_DEPTH


def _score_math(region: str, gt: str) -> float:
    region = region[-MAX_MATH_CHARS:]
    if _HEDGE.search(region) or not math_input_ok(region):
        return 0.0
    ok = math_equal(gt, region)
    if ok is None:  # gold not parseable by math_verify: fall back to normalised exact match
        return _score_exact(region, gt)
    return 1.0 if ok else 0.0


def _dispatch(region: str, gt: str) -> float:
    if parse_number(gt) is not None:
        return _score_numeric(region, gt)
    if re.fullmatch(r"\s*\(?[A-Z]\)?\.?\s*", gt):  # an uppercase option letter
        return _score_mcq(region, gt)
    if _LATEX_HINT.search(gt):
        return _score_math(region, gt)
    return _score_exact(region, gt)


def _best(completions: list[Any], columns: dict[str, Any], score: Any) -> list[float]:
    """max over ground-truth alternatives of ``score(region, gt)``; no answer region -> 0."""
    gts = gt_column(columns, len(completions))
    out = []
    for region, gt in zip(_regions(completions, columns), gts):
        alts = _alternatives(gt)
        out.append(0.0 if region is None else max(score(region, g) for g in alts))
    return out


# --------------------------------------------------------------------------------------------------------------------
# Rewards
# --------------------------------------------------------------------------------------------------------------------


@register("accuracy", bounds=(0.0, 1.0))
def accuracy(completions: list[Any], **columns: Any) -> list[float]:
    """1.0 if the answer is correct, else 0.0. Range [0, 1]. Dispatches on the ground truth: a number -> ``numeric``,
    a single letter -> ``mcq``, LaTeX-looking (``\\frac``, ``^``, ``$``, braces) -> ``math``, else ``exact``."""
    return _best(completions, columns, _dispatch)


@register("exact", bounds=(0.0, 1.0))
def exact(completions: list[Any], **columns: Any) -> list[float]:
    """1.0 if the normalised answer equals the normalised ground truth (SQuAD normalisation), else 0.0. Range [0, 1]."""
    return _best(completions, columns, _score_exact)


@register("numeric", bounds=(0.0, 1.0))
def numeric(completions: list[Any], **columns: Any) -> list[float]:
    """1.0 if the answer's single number is close to the ground truth (``math.isclose`` with the optional ``rel_tol`` /
    ``abs_tol`` columns, defaults 1e-6 / 1e-9), else 0.0. Several distinct numbers score 0. Range [0, 1]."""
    n = len(completions)
    rel = [as_float(v, "rel_tol", DEFAULT_REL_TOL) for v in column(columns, "rel_tol", n)]
    abs_ = [as_float(v, "abs_tol", DEFAULT_ABS_TOL) for v in column(columns, "abs_tol", n)]
    for name, tols in (("rel_tol", rel), ("abs_tol", abs_)):
        if any(t < 0 for t in tols):
            raise ValueError(f"column '{name}': tolerances must be non-negative")
    out = []
    for i, (region, gt) in enumerate(zip(_regions(completions, columns), gt_column(columns, n))):
        alts = _alternatives(gt)
        out.append(0.0 if region is None else max(_score_numeric(region, g, rel[i], abs_[i]) for g in alts))
    return out


@register("mcq", bounds=(0.0, 1.0))
def mcq(completions: list[Any], **columns: Any) -> list[float]:
    """1.0 if the answer commits to exactly the ground-truth option letter (``B``, ``(B)``, ``B. text``, "answer is B"),
    else 0.0; hedges such as "A or B" score 0. Valid letters are A-E, or up to the gt letter if later. Range [0, 1]."""
    return _best(completions, columns, _score_mcq)


@register("math", bounds=(0.0, 1.0))
def math_reward(completions: list[Any], **columns: Any) -> list[float]:
    """1.0 if math_verify judges the answer equal to the LaTeX ground truth, else 0.0 (timeouts count as wrong;
    answers containing the word "or" are hedges and score 0; an unparseable gold falls back to ``exact``). Range [0, 1]."""
    return _best(completions, columns, _score_math)


@register("f1", bounds=(0.0, 1.0))
def f1(completions: list[Any], **columns: Any) -> list[float]:
    """Token F1 between the normalised answer and ground truth (free-form / OCR answers), max over alternatives.
    Range [0, 1]."""
    return _best(completions, columns, token_f1)


@register("rouge_l", bounds=(0.0, 1.0))
def rouge_l(completions: list[Any], **columns: Any) -> list[float]:
    """ROUGE-L F (beta = 1) between the normalised answer and ground truth, max over alternatives. Range [0, 1]."""
    return _best(completions, columns, rouge_l_f)


def _score_count(region: str, gt: str) -> float:
    g = parse_number(gt)
    if g is None or g < 0 or g != int(g):
        raise ValueError(f"column 'answer': {gt!r:.80} is not a non-negative integer count")
    return 1.0 if single_count(region) == int(g) else 0.0


@register("counting", bounds=(0.0, 1.0))
def counting(completions: list[Any], **columns: Any) -> list[float]:
    """1.0 if the answer commits to exactly the ground-truth count (digits or the words zero..twenty), else 0.0.
    "3 or 4" scores 0. Range [0, 1]."""
    return _best(completions, columns, _score_count)
