"""Answer extraction shared by every reward: tags, ``\\boxed{}``, option letters, numbers, boxes/points, JSON actions.

Every function here takes model text and never raises on it: it returns ``None`` (or an empty list) when nothing usable
is found. Nothing is ever evaluated: only ``str`` methods, linear regular expressions and ``json``. Work is bounded on
very long completions (100 kB+), because a reward runs inside training (tests/rewards/test_rewards_hostile_timing.py):

* Regular expressions never put two quantifiers that can match the same characters next to each other:
  ``\\s*(?:is)?\\s*`` lets the engine split a whitespace run between the two stars in O(n^2) ways before it gives up
  (three such stars: n^3); ``\\s*(?:is\\s*)?`` matches the same strings with one way to split. The patterns this was
  fixed in say so beside them.
* Brace matching for every ``\\boxed`` tried is one shared linear scan; JSON decoding has an attempt budget and a budget
  on the characters that failed attempts may scan.
* Phrase searches ("the answer is") look at the last ``_PHRASE_TAIL`` characters only.

Example:
    >>> answer_region("<think>2+2</think><answer>\\\\boxed{4}</answer>")
    '4'
    >>> option_letter("(B) a cat")
    'B'
    >>> single_shape('{"bbox_2d": [10, 20, 30, 40]}').coords
    (10.0, 20.0, 30.0, 40.0)
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

# --------------------------------------------------------------------------------------------------------------------
# Unicode normalisation
# --------------------------------------------------------------------------------------------------------------------

# NFKC maps full-width digits/brackets to ASCII; these are the few look-alikes it leaves alone.
_PUNCT = (("\u2212", "-"), ("\u2013", "-"), ("\u2044", "/"), ("\u2215", "/"), ("\u00a0", " "))
# \d on str patterns = Unicode category Nd = has a decimal value. Whole runs are matched so that a run of 100k digits
# is one str.translate call (C speed) instead of 100k Python callbacks.
_NON_ASCII_DIGITS = re.compile(r"(?:(?![0-9])\d)+")


class _DigitTable(dict[int, int]):
    """``str.translate`` table: a Unicode decimal digit's code point -> its ASCII digit's, filled in on first sight.

    Only ``\\d`` characters are ever looked up, so it holds at most the Nd code points (660 in Unicode 14).
    """

    def __missing__(self, cp: int) -> int:
        value = self[cp] = ord("0") + unicodedata.decimal(chr(cp), 0)
        return value


_DIGIT_TABLE = _DigitTable()


def normalize_digits(text: str) -> str:
    """NFKC-normalise ``text`` and map every Unicode decimal digit (Arabic-Indic, Devanagari...) to ASCII ``0-9``.

    Also maps the Unicode minus sign and fraction slashes to ``-`` and ``/``. ASCII text is returned unchanged (fast path).
    """
    if text.isascii():
        return text
    text = unicodedata.normalize("NFKC", text)
    for ch, ascii_ch in _PUNCT:  # str.replace is C-speed; str.translate with a dict table is per-character Python
        if ch in text:
            text = text.replace(ch, ascii_ch)
    if text.isascii():
        return text
    return _NON_ASCII_DIGITS.sub(lambda m: m.group().translate(_DIGIT_TABLE), text)


# --------------------------------------------------------------------------------------------------------------------
# Answer regions: <answer> tags, \boxed{}, "the answer is"
# --------------------------------------------------------------------------------------------------------------------

_OPEN_TAG, _CLOSE_TAG = "<answer>", "</answer>"
_BOXED_ATTEMPTS = 8  # how many \boxed occurrences (from the end) are tried before giving up
_BRACE_STEP = re.compile(r"(?P<inner>(?:\{[^{}]*\}[^{}]*)+)|(?P<open>\{+)|\}+")  # see _closing_braces
_BOXED_TOKEN = re.compile(r" +([^\s$]{1,64})")  # "\boxed 5": the next whitespace-free token
_PHRASE_TAIL = 4096  # "the answer is" is searched for in the last 4 kB only: a final answer sits at the end


def has_answer_tag(text: str) -> bool:
    """Whether ``text`` contains an ``<answer>`` or ``</answer>`` tag (complete or not)."""
    return _OPEN_TAG in text or _CLOSE_TAG in text


def answer_span(text: str) -> str | None:
    """Content of the last complete ``<answer>...</answer>`` pair, or ``None``."""
    end = text.rfind(_CLOSE_TAG)
    if end < 0:
        return None
    start = text.rfind(_OPEN_TAG, 0, end)
    if start < 0:
        return None
    return text[start + len(_OPEN_TAG) : end]


def _closing_braces(text: str, opens: list[int]) -> dict[int, int]:
    """``{open index: index of its closing }`` for the ``{`` at each index in ``opens`` (unbalanced ones are left out).

    One linear scan for all of them, from the first: with ``depth`` = number of ``{`` minus ``}`` scanned so far, a
    ``{`` entered at depth d closes at the first later ``}`` that brings the depth back to d. Each step of the scan is a
    run of ``{``, a run of ``}``, or a stretch of innermost ``{...}`` groups (depth-neutral), so ``{`` x 100k or
    ``{}`` x 50k is one regex match. Trying each open separately would rescan the text once per open.
    """
    want = sorted(opens)
    closes: dict[int, int] = {}
    pending: list[tuple[int, int]] = []  # (depth before the open, open index); nested, so the innermost is last
    nxt = depth = 0  # nxt: the next index of `want` not yet reached
    for m in _BRACE_STEP.finditer(text, want[0] if want else len(text)):
        a, b = m.span()
        step = m.lastgroup
        if step is None:  # a run of }
            after = depth - (b - a)  # the k-th } of the run (k = 1..b-a) sits at a + k - 1 and leaves depth - k
            while pending and pending[-1][0] >= after:
                d, i = pending.pop()
                closes[i] = a + depth - d - 1  # k = depth - d
            depth = after
        elif step == "inner":  # innermost groups: an open inside one closes at the group's }
            while nxt < len(want) and want[nxt] < b:
                closes[want[nxt]] = text.index("}", want[nxt])
                nxt += 1
        else:  # a run of {: opens inside it enter at depth + their offset in the run
            while nxt < len(want) and want[nxt] < b:
                pending.append((depth + want[nxt] - a, want[nxt]))
                nxt += 1
            depth += b - a
        if not pending and nxt == len(want):
            break
    return closes


def boxed(text: str) -> str | None:
    """Content of the last balanced ``\\boxed{...}`` (or ``\\fbox{...}``), nested braces included; ``\\boxed 5`` too.

    The last ``_BOXED_ATTEMPTS`` occurrences are tried from the end; the first one that is balanced wins.
    """
    starts: list[int] = []  # where the argument of each occurrence begins, last occurrence first
    pos = len(text)
    while len(starts) < _BOXED_ATTEMPTS:
        i = max(text.rfind("\\boxed", 0, pos), text.rfind("\\fbox", 0, pos))
        if i < 0:
            break
        starts.append(i + (6 if text.startswith("\\boxed", i) else 5))
        pos = i
    closes = _closing_braces(text, [j for j in starts if text.startswith("{", j)])
    for j in starts:
        if j in closes:
            return text[j + 1 : closes[j]]
        m = _BOXED_TOKEN.match(text, j, j + 80) if text.startswith(" ", j) else None
        if m:
            return m.group(1)
    return None


def tagged_region(text: str, require_tags: bool = False) -> str | None:
    """The last ``<answer>...</answer>`` content when the text has answer tags (``None`` if unbalanced), else the whole
    text, or ``None`` when ``require_tags``. Used for structured answers (boxes, JSON actions) that span lines."""
    if has_answer_tag(text):
        return answer_span(text)
    return None if require_tags else text


def answer_region(text: str, require_tags: bool = False) -> str | None:
    """The part of a completion that holds its final answer, or ``None`` when there is none.

    1. If the text has answer tags, the content of the last complete ``<answer>...</answer>`` pair (the ``\\boxed{}``
       content inside it if any); a tag without its partner gives ``None``. Text outside the tags never counts.
    2. Else, if ``require_tags``: ``None`` (an answer outside the required tags scores the minimum).
    3. Else the last ``\\boxed{}`` content, else the rest of the line after the last "answer is"/"answer:", else the
       whole text.
    """
    if has_answer_tag(text):
        span = answer_span(text)
        if span is None:
            return None
        inner = boxed(span)
        return inner if inner is not None else span
    if require_tags:
        return None
    inner = boxed(text)
    if inner is not None:
        return inner
    tail = text[-_PHRASE_TAIL:]
    low = tail.lower()
    idx = max(low.rfind("answer is"), low.rfind("answer:"))
    if idx >= 0:
        rest = tail[idx + len("answer") :].lstrip()
        rest = rest[2:] if rest.lower().startswith("is") else rest
        line = rest.lstrip(" \t:").split("\n", 1)[0].strip()
        if line:
            return line
    return text


# --------------------------------------------------------------------------------------------------------------------
# Option letters
# --------------------------------------------------------------------------------------------------------------------

_MARKUP = re.compile(r"\*\*|__|`|\$|\\text\{|\\textbf\{|\\mathrm\{|[{}]")
# "answer is: B". Written `answer\s*(?:is\s*)?(?:[:：]\s*)?`, never `answer\s*(?:is)?\s*[:：]?\s*`: with "is" and the
# colon absent, the three stars of the latter can split a whitespace run in O(n^2) ways, and each split is retried when
# what follows fails (cubic: "x answer" + 2,000 spaces + "1" took 30 s). The two forms match exactly the same strings.
_PREFIX = re.compile(
    r"^(?:the\s+)?(?:final\s+)?(?:correct\s+)?(?:answer|option|choice)\s*(?:is\s*)?(?:[:：]\s*)?", re.I
)
_WHOLE_LETTER = re.compile(r"\(?\[?([A-Z])\]?\)?[.:]?")
_LETTER_WITH_TEXT = re.compile(r"\(?([A-Z])[.):]\s+(\S.*)", re.S)
_OTHER_MARKER = re.compile(r"(?<![A-Za-z0-9])(?:\(([A-Z])\)|([A-Z])[.)](?=\s|$))")
_PHRASE_LETTER = re.compile(r"answer\s*(?:is\s*)?(?:[:：]\s*)?\(?([A-Z])\)?(?![A-Za-z0-9])", re.I)  # as _PREFIX
_ALTERNATIVE = re.compile(r"\s*(?:or|and|/|,|&|\|)\s*\(?[A-Z]\)?(?![A-Za-z0-9])", re.I)
_STANDALONE = re.compile(r"(?<![A-Za-z0-9'])([A-Z])(?![A-Za-z0-9'])")


def option_letter(text: str, letters: str = "ABCDE") -> str | None:
    """The single option letter ``text`` commits to, or ``None`` when there is none or more than one.

    Accepts ``B``, ``(B)``, ``[B]``, ``B.``, ``B) a cat``, ``Answer: B``, ``the answer is (B)``. Any hedge
    ("A or B or C", "(A) ... (B)", "A/B") gives ``None``. ``letters`` is the set of valid options.
    """
    s = _MARKUP.sub("", normalize_digits(text[-_PHRASE_TAIL:])).strip()
    s = _PREFIX.sub("", s, count=1).strip().rstrip(".").strip()
    if not s:
        return None
    m = _WHOLE_LETTER.fullmatch(s)
    if m:
        return m.group(1) if m.group(1) in letters else None
    m = _LETTER_WITH_TEXT.fullmatch(s)
    if m and m.group(1) in letters:
        others = {a or b for a, b in _OTHER_MARKER.findall(m.group(2))} & set(letters)
        return m.group(1) if not others - {m.group(1)} else None
    hits = [m for m in _PHRASE_LETTER.finditer(s) if m.group(1) in letters]
    if hits:
        last = hits[-1]
        return None if _ALTERNATIVE.match(s, last.end()) else last.group(1)
    found = {x for x in _STANDALONE.findall(s) if x in letters}
    return found.pop() if len(found) == 1 else None


# --------------------------------------------------------------------------------------------------------------------
# Numbers
# --------------------------------------------------------------------------------------------------------------------

_NUM = r"(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d{1,4})?"
_NUMBER = re.compile(rf"(?<![\w.])([-+]?)({_NUM})(?:[ \t]{{0,3}}/[ \t]{{0,3}}({_NUM}))?")
# `\s*(?:%\s*)?`, not `\s*%?\s*`, and `\s*(?:(-)\s*)?`, not `\s*(-?)\s*`: the same strings, but the latter split a
# whitespace run between two stars in O(n^2) ways ("\frac{" + 50,000 spaces took 22 s).
_FULL_NUMBER = re.compile(rf"\$?\s*([-+]?)({_NUM})(?:\s*/\s*({_NUM}))?\s*(?:%\s*)?\$?\.?")
_LATEX_FRAC = re.compile(
    r"\\[dt]?frac\{\s*(?:(-)\s*)?(\d{1,30}(?:\.\d{1,30})?)\s*\}\{\s*(\d{1,30}(?:\.\d{1,30})?)\s*\}"
)
_MAX_NUMERAL = 300  # a numeral longer than this is not a number a model means
MAX_NUMBERS = 1000  # numbers() stops after this many


def _to_float(sign: str, num: str, den: str | None) -> float | None:
    if len(num) > _MAX_NUMERAL or (den is not None and len(den) > _MAX_NUMERAL):
        return None
    try:
        value = float(num.replace(",", ""))
        if den is not None:
            d = float(den.replace(",", ""))
            value = value / d if d != 0 else math.nan
    except (ValueError, OverflowError, ZeroDivisionError):
        return None
    value = -value if sign == "-" else value
    return value if math.isfinite(value) else None


def _prepare(text: str) -> str:
    return _LATEX_FRAC.sub(lambda m: f"{m.group(1) or ''}{m.group(2)}/{m.group(3)}", normalize_digits(text))


def numbers(text: str) -> list[float]:
    """Every number in ``text`` in order: ints, decimals, ``1,234``, ``-5``, ``3/4``, ``\\frac{3}{4}``, ``1e3``, any digits.

    NaN and infinity are never produced (the words are not numbers; overflowing numerals are skipped).
    """
    out: list[float] = []
    for m in _NUMBER.finditer(_prepare(text)):
        v = _to_float(m.group(1), m.group(2), m.group(3))
        if v is not None:
            out.append(v)
            if len(out) >= MAX_NUMBERS:
                break
    return out


def parse_number(text: str) -> float | None:
    """``text`` as one number when the whole (stripped) string is a number (``"3"``, ``"-1,234.5"``, ``"$3/4$"``, ``"50%"``)."""
    m = _FULL_NUMBER.fullmatch(_prepare(text).strip())
    return _to_float(m.group(1), m.group(2), m.group(3)) if m else None


def single_number(text: str) -> float | None:
    """The one number ``text`` commits to: all numbers found must be equal ("3 or 4" gives ``None``)."""
    values = set(numbers(text))
    return values.pop() if len(values) == 1 else None


_NUMBER_WORDS = {
    w: i
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
        "seventeen eighteen nineteen twenty".split()
    )
}
_WORD = re.compile(r"[A-Za-z]+")


def single_count(text: str) -> int | None:
    """The one non-negative integer ``text`` commits to, from digits or the words zero..twenty; ``None`` if ambiguous."""
    values = set(numbers(text))
    values |= {
        float(_NUMBER_WORDS[w.lower()]) for w in _WORD.findall(text[-_PHRASE_TAIL:]) if w.lower() in _NUMBER_WORDS
    }
    if len(values) != 1:
        return None
    v = values.pop()
    return int(v) if v >= 0 and v == int(v) else None


# --------------------------------------------------------------------------------------------------------------------
# JSON values, boxes and points
# --------------------------------------------------------------------------------------------------------------------

_DECODER = json.JSONDecoder()
_JSON_OPEN = re.compile(r"[\[{]")
MAX_JSON_ATTEMPTS = 256  # raw_decode attempts per text: bounds work on adversarial bracket soup
# Characters that failed raw_decode attempts may scan in total (~5 ms of C decoding). A failed attempt normally stops
# within a few characters ("[see above]") or once at a truncated end; each later [ or { inside an unclosed structure
# rescans to the end, so "[" x 255 + a 100 kB list cost 256 full scans (0.5 s) before this budget. A completion of
# 8 kB can fail 32 times over its whole length before the budget changes anything.
MAX_JSON_SCAN = 1 << 18
MAX_SHAPES = 100  # more boxes/points than this is spam: the parse fails


def json_values(text: str, max_values: int = 128) -> list[Any]:
    """Top-level JSON objects/arrays embedded in ``text``, in order (bounded attempts and scanning, see
    ``MAX_JSON_ATTEMPTS`` and ``MAX_JSON_SCAN``; code fences need no stripping).

    Python-style dicts with single quotes (``{'action': 'click'}``) are read when the text has no double quotes.
    """
    if "'" in text and '"' not in text:
        text = text.replace("'", '"')
    out: list[Any] = []
    pos = attempts = scanned = 0
    while len(out) < max_values and attempts < MAX_JSON_ATTEMPTS and scanned < MAX_JSON_SCAN:
        m = _JSON_OPEN.search(text, pos)
        if m is None:
            break
        attempts += 1
        try:
            value, end = _DECODER.raw_decode(text, m.start())
        except json.JSONDecodeError as exc:
            scanned += exc.pos - m.start() + 1
            pos = m.start() + 1
            continue
        except (ValueError, RecursionError):  # a 4,300+ digit integer, or nesting too deep: how far it got is unknown
            scanned += len(text) - m.start()
            pos = m.start() + 1
            continue
        out.append(value)
        pos = end
    return out


@dataclass(frozen=True)
class Shape:
    """A box ``(x1, y1, x2, y2)`` or point ``(x, y)`` as written by the model (its own coordinate convention)."""

    coords: tuple[float, ...]
    confidence: float | None = None
    label: str | None = None

    @property
    def is_box(self) -> bool:
        return len(self.coords) == 4


BOX_KEYS = ("bbox_2d", "bbox", "box_2d", "box")
POINT_KEYS = ("point_2d", "point", "coordinate", "coordinates", "click_point", "position")
_CONF_KEYS = ("confidence", "score", "conf")


def _num(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        try:
            v = float(value)
        except OverflowError:  # a JSON integer with hundreds of digits
            return math.nan
        return v if math.isfinite(v) else math.nan  # kept as NaN so the caller can score the minimum
    if isinstance(value, str) and len(value) < 64:
        return parse_number(value)
    return None


def coords_of(value: Any) -> tuple[float, ...] | None:
    """``value`` as 2 or 4 coordinates (a list of numbers), else ``None``; NaN/inf survive as NaN for the caller."""
    if isinstance(value, (list, tuple)) and len(value) in (2, 4):
        nums = [_num(v) for v in value]
        if all(v is not None for v in nums):
            return tuple(nums)  # type: ignore[arg-type]
    return None


def _shapes_from_json(value: Any, out: list[Shape], depth: int = 0) -> None:
    if len(out) > MAX_SHAPES or depth > 4:
        return
    if isinstance(value, dict):
        conf_key = next((k for k in _CONF_KEYS if k in value), None)
        conf = None if conf_key is None else _num(value[conf_key])
        conf = math.nan if conf_key is not None and conf is None else conf  # present but unreadable: NaN -> minimum
        label = value.get("label") if isinstance(value.get("label"), str) else None
        for key in BOX_KEYS + POINT_KEYS:
            if key in value:
                c = coords_of(value[key])
                if c is not None:
                    out.append(Shape(c, conf, label))
                else:
                    _shapes_from_json(value[key], out, depth + 1)
                return
    elif isinstance(value, list):
        c = coords_of(value)
        if c is not None:
            out.append(Shape(c))
            return
        for item in value[: MAX_SHAPES + 1]:
            _shapes_from_json(item, out, depth + 1)


_QWEN_BOX = re.compile(r"<\|box_start\|>(.{0,200}?)<\|box_end\|>", re.S)
_COORD = r"(-?(?:\d{1,30}(?:\.\d{1,30})?|\.\d{1,30}))"
_PAIR = rf"\(\s*{_COORD}\s*,\s*{_COORD}\s*\)"
_PAREN_PAIR = re.compile(_PAIR)
_PAREN_BOX = re.compile(rf"{_PAIR}\s*(?:,\s*)?{_PAIR}")  # "(x1,y1),(x2,y2)": Qwen2-VL's box without the tokens
_PAREN_FOUR = re.compile(rf"\(\s*{_COORD}\s*,\s*{_COORD}\s*,\s*{_COORD}\s*,\s*{_COORD}\s*\)")


def _floats(groups: tuple[str, ...]) -> tuple[float, ...] | None:
    vals = [_to_float("-", g[1:], None) if g.startswith("-") else _to_float("", g, None) for g in groups]
    return tuple(v for v in vals if v is not None) if all(v is not None for v in vals) else None


def shapes(text: str) -> list[Shape]:
    """Every box/point in ``text``: JSON (``{"bbox_2d": [...]}``, ``{"point_2d": [...]}``, lists of those, bare
    ``[x1, y1, x2, y2]`` / ``[x, y]``), else Qwen ``<|box_start|>(x1,y1),(x2,y2)<|box_end|>``, else ``(x1,y1),(x2,y2)``,
    ``(x1, y1, x2, y2)`` or ``(x, y)``. More than ``MAX_SHAPES`` gives ``[]`` (spam)."""
    text = normalize_digits(text)
    out: list[Shape] = []
    for value in json_values(text):
        _shapes_from_json(value, out)
    if not out:
        for m in _QWEN_BOX.finditer(text):
            inner = m.group(1)
            box = _PAREN_BOX.search(inner)
            pair = _PAREN_PAIR.search(inner)
            c = _floats(box.groups()) if box else _floats(pair.groups()) if pair else None
            if c is not None:
                out.append(Shape(c))
            if len(out) > MAX_SHAPES:
                break
    if not out:
        spans: list[tuple[int, Shape]] = []
        taken: list[tuple[int, int]] = []
        for pattern in (_PAREN_BOX, _PAREN_FOUR, _PAREN_PAIR):
            for m in pattern.finditer(text):
                if any(a < m.end() and m.start() < b for a, b in taken):
                    continue
                c = _floats(m.groups())
                if c is not None:
                    spans.append((m.start(), Shape(c)))
                    taken.append((m.start(), m.end()))
                if len(spans) > MAX_SHAPES:
                    return []
        out = [s for _, s in sorted(spans, key=lambda t: t[0])]
    return out if len(out) <= MAX_SHAPES else []


def single_shape(text: str) -> Shape | None:
    """The one box or point ``text`` commits to (duplicates allowed), else ``None`` (none, or several distinct)."""
    found = shapes(text)
    return found[0] if found and len({s.coords for s in found}) == 1 else None


# --------------------------------------------------------------------------------------------------------------------
# GUI actions
# --------------------------------------------------------------------------------------------------------------------


def parse_action(text: str, require_tags: bool = False) -> dict[str, Any] | None:
    """The one JSON action object (a dict with a string ``"action"`` key) in ``tagged_region(text)``, else ``None``.

    A one-element list ``[{"action": ...}]`` (GUI-R1 style) counts; two or more actions give ``None``.
    """
    region = tagged_region(text, require_tags)
    if region is None:
        return None
    found: list[dict[str, Any]] = []
    for value in json_values(normalize_digits(region)):
        if isinstance(value, list) and len(value) == 1:
            value = value[0]
        if isinstance(value, dict) and isinstance(value.get("action"), str) and value["action"].strip():
            found.append(value)
    return found[0] if len(found) == 1 else None
