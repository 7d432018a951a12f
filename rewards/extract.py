"""Answer extraction shared by every reward: tags, ``\\boxed{}``, option letters, numbers, boxes/points, JSON actions.

Every function here takes model text and never raises on it: it returns ``None`` (or an empty list) when nothing usable
is found. Nothing is ever evaluated: only ``str`` methods, linear regular expressions and ``json``. Work is bounded on
very long completions (100 kB+): every scan is linear in the text length, and scans that could repeat (brace matching,
JSON decoding attempts) have a fixed attempt budget.

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
_NON_ASCII_DIGIT = re.compile(r"(?![0-9])\d")  # \d on str patterns = Unicode category Nd = has a decimal value


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
    return _NON_ASCII_DIGIT.sub(lambda m: str(unicodedata.decimal(m.group(), 0)), text)


# --------------------------------------------------------------------------------------------------------------------
# Answer regions: <answer> tags, \boxed{}, "the answer is"
# --------------------------------------------------------------------------------------------------------------------

_OPEN_TAG, _CLOSE_TAG = "<answer>", "</answer>"
_BOXED_ATTEMPTS = 8  # how many \boxed occurrences (from the end) are tried before giving up: bounds the brace matching
_BRACE = re.compile(r"[{}]")
_PHRASE_TAIL = 4096  # "the answer is" is searched for in the last 4 kB only


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


def _match_brace(text: str, open_idx: int) -> int:
    """Index of the ``}`` closing the ``{`` at ``open_idx``, or -1 when unbalanced (one linear C-level scan)."""
    depth = 0
    for m in _BRACE.finditer(text, open_idx):
        depth += 1 if m.group() == "{" else -1
        if depth == 0:
            return m.start()
    return -1


def boxed(text: str) -> str | None:
    """Content of the last balanced ``\\boxed{...}`` (or ``\\fbox{...}``), nested braces included; ``\\boxed 5`` too."""
    pos = len(text)
    for _ in range(_BOXED_ATTEMPTS):
        i = max(text.rfind("\\boxed", 0, pos), text.rfind("\\fbox", 0, pos))
        if i < 0:
            return None
        j = i + (6 if text.startswith("\\boxed", i) else 5)
        if j < len(text) and text[j] == "{":
            k = _match_brace(text, j)
            if k >= 0:
                return text[j + 1 : k]
        elif j < len(text) and text[j] == " ":  # "\boxed 5": the next whitespace-free token
            m = re.match(r" +([^\s$]{1,64})", text[j : j + 80])
            if m:
                return m.group(1)
        pos = i
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
_PREFIX = re.compile(r"^(?:the\s+)?(?:final\s+)?(?:correct\s+)?(?:answer|option|choice)\s*(?:is)?\s*[:：]?\s*", re.I)
_WHOLE_LETTER = re.compile(r"\(?\[?([A-Z])\]?\)?[.:]?")
_LETTER_WITH_TEXT = re.compile(r"\(?([A-Z])[.):]\s+(\S.*)", re.S)
_OTHER_MARKER = re.compile(r"(?<![A-Za-z0-9])(?:\(([A-Z])\)|([A-Z])[.)](?=\s|$))")
_PHRASE_LETTER = re.compile(r"answer\s*(?:is)?\s*[:：]?\s*\(?([A-Z])\)?(?![A-Za-z0-9])", re.I)
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
_FULL_NUMBER = re.compile(rf"\$?\s*([-+]?)({_NUM})(?:\s*/\s*({_NUM}))?\s*%?\s*\$?\.?")
_LATEX_FRAC = re.compile(r"\\[dt]?frac\{\s*(-?)\s*(\d{1,30}(?:\.\d{1,30})?)\s*\}\{\s*(\d{1,30}(?:\.\d{1,30})?)\s*\}")
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
    return _LATEX_FRAC.sub(lambda m: f"{m.group(1)}{m.group(2)}/{m.group(3)}", normalize_digits(text))


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
MAX_SHAPES = 100  # more boxes/points than this is spam: the parse fails


def json_values(text: str, max_values: int = 128) -> list[Any]:
    """Top-level JSON objects/arrays embedded in ``text``, in order (bounded attempts; code fences need no stripping).

    Python-style dicts with single quotes (``{'action': 'click'}``) are read when the text has no double quotes.
    """
    if "'" in text and '"' not in text:
        text = text.replace("'", '"')
    out: list[Any] = []
    pos = attempts = 0
    while len(out) < max_values and attempts < MAX_JSON_ATTEMPTS:
        m = _JSON_OPEN.search(text, pos)
        if m is None:
            break
        attempts += 1
        try:
            value, end = _DECODER.raw_decode(text, m.start())
        except (ValueError, RecursionError):
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
