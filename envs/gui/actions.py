"""The GUI action grammar: a strict, linear-time parser of the model's text action (never eval) and its inverse.

Four actions, each written as one call that is the whole answer (inside ``<answer>...</answer>`` when the text has
answer tags, else the whole text; surrounding whitespace is ignored, anything else around the call is an error):

==========================  ===========================================================================================
``click(x, y)``             a point in pixels of the screenshot the model saw, *before* any coordinate-convention
                            mapping (the env maps it with ``rewards.Frame``)
``type("text")``            a double-quoted string; ``\\"`` is a quote and ``\\\\`` a backslash, any other backslash
                            sequence is an error; raw newlines are kept
``press("Enter")``          a key from ``KEYS`` (case-insensitive, aliases in ``KEY_ALIASES``); the quotes may be left
                            out (``press(Enter)``)
``scroll(dx, dy)``          a wheel delta in pixels: ``dy > 0`` scrolls down, ``dx > 0`` right
==========================  ===========================================================================================

Names are case-insensitive; numbers are ``12``, ``-3``, ``4.5``, ``.5`` or ``1e3`` (at most 30 digits per part).
The JSON form the GUI rewards read (``rewards.extract.parse_action``) parses to the same action:
``{"action": "click", "point": [x, y]}`` (or a box: its centre), ``{"action": "type", "text": "..."}``,
``{"action": "press", "key": "enter"}``, ``{"action": "scroll", "dx": 0, "dy": 100}`` or ``"direction": "down"``
(``SCROLL_STEP`` pixels). Every regular expression below is anchored and never puts two quantifiers that can match the
same characters next to each other, so the work is linear in the text (tests/envs/test_gui_actions.py times 100 kB of
hostile text).

Example:
    >>> parse_action('<think>the Save button</think><answer>click(120, 45)</answer>')
    GuiAction(kind='click', x=120.0, y=45.0, text=None, key=None, dx=None, dy=None)
    >>> format_action(parse_action('{"action": "type", "text": "say \\\\"hi\\\\""}'))
    'type("say \\\\"hi\\\\"")'
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from rewards.extract import BOX_KEYS, POINT_KEYS, coords_of, tagged_region
from rewards.extract import parse_action as parse_json_action
from rewards.gui import TEXT_KEYS, action_type

KINDS = ("click", "type", "press", "scroll")
KEYS = (
    "Enter",
    "Tab",
    "Backspace",
    "Delete",
    "Escape",
    "Space",
    "ArrowUp",
    "ArrowDown",
    "ArrowLeft",
    "ArrowRight",
    "Home",
    "End",
    "PageUp",
    "PageDown",
)
KEY_ALIASES = {
    "return": "Enter",
    "esc": "Escape",
    "del": "Delete",
    "spacebar": "Space",
    "up": "ArrowUp",
    "down": "ArrowDown",
    "left": "ArrowLeft",
    "right": "ArrowRight",
    "pgup": "PageUp",
    "pgdn": "PageDown",
}
_KEY_LOOKUP = {k.lower(): k for k in KEYS} | KEY_ALIASES
SCROLL_STEP = 100.0  # pixels per JSON {"direction": ...} scroll: about a third of a 320x240 screen
_DIRECTIONS = {"down": (0.0, 1.0), "up": (0.0, -1.0), "right": (1.0, 0.0), "left": (-1.0, 0.0)}
EXPECTED = 'expected click(x, y), type("..."), press("Key") or scroll(dx, dy)'

_NUM = r"([-+]?(?:\d{1,30}(?:\.\d{0,30})?|\.\d{1,30})(?:[eE][-+]?\d{1,3})?)"
_TWO_NUMBERS = re.compile(rf"\s*\(\s*{_NUM}\s*,\s*{_NUM}\s*\)")
# A quoted string, the loop unrolled: plain characters, then (escape, plain characters)*. The two parts start with
# disjoint characters, so there is one way to match and an unclosed quote fails after one pass.
_STRING = re.compile(r'\s*\(\s*"([^"\\]*(?:\\["\\][^"\\]*)*)"\s*\)')
_BARE_KEY = re.compile(r"\s*\(\s*([A-Za-z]{1,20})\s*\)")
_UNESCAPE = re.compile(r'\\(["\\])')
_NAME = re.compile(r"[A-Za-z_]{1,20}(?=\s*\()")  # the call's name, followed (after spaces) by its "("
_SPACES = re.compile(r"\s*")


@dataclass(frozen=True)
class GuiAction:
    """One GUI action; only the fields of its ``kind`` are set."""

    kind: str  # "click" | "type" | "press" | "scroll"
    x: float | None = None  # click: x (pixels of the screenshot the model saw, before any convention mapping)
    y: float | None = None  # click: y
    text: str | None = None  # type
    key: str | None = None  # press (canonical name from KEYS, e.g. "Enter", "ArrowDown")
    dx: float | None = None  # scroll: horizontal wheel delta in pixels (> 0: right)
    dy: float | None = None  # scroll: vertical wheel delta in pixels (> 0: down)

    def __post_init__(self) -> None:
        need = {"click": ("x", "y"), "type": ("text",), "press": ("key",), "scroll": ("dx", "dy")}.get(self.kind)
        if need is None:
            raise ValueError(f"GuiAction.kind must be one of {KINDS}, got {self.kind!r}")
        if any(getattr(self, f) is None for f in need):
            raise ValueError(f"GuiAction({self.kind!r}) needs {', '.join(need)}")


class ActionParseError(ValueError):
    """The model's text is not one action of the grammar; the message is one short line (shown to the model)."""


def canonical_key(name: str) -> str:
    """The canonical key name for ``name`` (case-insensitive, aliases allowed), else :class:`ActionParseError`."""
    key = _KEY_LOOKUP.get(name.strip().lower())
    if key is None:
        raise ActionParseError(f"unknown key {name[:20]!r}; keys: {', '.join(KEYS)}")
    return key


def _number(s: str) -> float:
    v = float(s)
    if not math.isfinite(v):
        raise ActionParseError(f"number out of range: {s[:20]}")
    return v


def _call(name: str, s: str, pos: int) -> GuiAction:
    """The action ``name(...)`` whose argument list starts at ``s[pos]`` and must end the text."""
    if name in ("click", "scroll"):
        m = _TWO_NUMBERS.fullmatch(s, pos)
        if m is None:
            raise ActionParseError(f"expected {name}({'x, y' if name == 'click' else 'dx, dy'}) with two numbers")
        a, b = _number(m.group(1)), _number(m.group(2))
        return GuiAction("click", x=a, y=b) if name == "click" else GuiAction("scroll", dx=a, dy=b)
    if name == "type":
        m = _STRING.fullmatch(s, pos)
        if m is None:
            raise ActionParseError('expected type("text"): one double-quoted string, \\" and \\\\ as escapes')
        return GuiAction("type", text=_UNESCAPE.sub(r"\1", m.group(1)))
    if name == "press":
        m = _STRING.fullmatch(s, pos) or _BARE_KEY.fullmatch(s, pos)
        if m is None:
            raise ActionParseError('expected press("Key")')
        return GuiAction("press", key=canonical_key(m.group(1)))
    raise ActionParseError(f"unknown action {name!r}; {EXPECTED}")


def _json_number(value: Any) -> float | None:
    c = coords_of([value, 0])
    return c[0] if c is not None and math.isfinite(c[0]) else None


def _from_json(obj: dict[str, Any]) -> GuiAction:
    """The action a ``rewards``-style JSON action object stands for (see the module docstring)."""
    kind = action_type(obj["action"])
    kind = {"key": "press", "press_key": "press", "keypress": "press", "swipe": "scroll"}.get(kind, kind)
    if kind == "click":
        for key in POINT_KEYS + BOX_KEYS:
            c = coords_of(obj.get(key))
            if c is not None and all(math.isfinite(v) for v in c):
                x, y = c if len(c) == 2 else ((c[0] + c[2]) / 2, (c[1] + c[3]) / 2)
                return GuiAction("click", x=x, y=y)
        raise ActionParseError('click needs "point": [x, y] (or a box)')
    if kind == "type":
        text = next((obj[k] for k in TEXT_KEYS if isinstance(obj.get(k), str)), None)
        if text is None:
            raise ActionParseError('type needs "text": "..."')
        return GuiAction("type", text=text)
    if kind == "press":
        key = next((obj[k] for k in ("key", "keys", "button") if isinstance(obj.get(k), str)), None)
        if key is None:
            raise ActionParseError('press needs "key": "Enter"')
        return GuiAction("press", key=canonical_key(key))
    if kind == "scroll":
        dx, dy = _json_number(obj.get("dx", 0)), _json_number(obj.get("dy", 0))
        direction = obj.get("direction")
        if isinstance(direction, str) and direction.strip().lower() in _DIRECTIONS:
            ux, uy = _DIRECTIONS[direction.strip().lower()]
            dx, dy = ux * SCROLL_STEP, uy * SCROLL_STEP
        elif direction is not None or dx is None or dy is None:
            raise ActionParseError('scroll needs "dx"/"dy" numbers or "direction": up/down/left/right')
        return GuiAction("scroll", dx=dx, dy=dy)
    raise ActionParseError(f"unknown action {str(obj['action'])[:20]!r}; {EXPECTED}")


def parse_action(text: str) -> GuiAction:
    """The model's raw text -> its action, or :class:`ActionParseError` with a one-line message (see module docstring)."""
    if not isinstance(text, str):
        raise ActionParseError(f"expected text, got {type(text).__name__}")
    region = tagged_region(text)
    if region is None:
        raise ActionParseError("unbalanced <answer> tags")
    start = _SPACES.match(region).end()  # type: ignore[union-attr]  # \s* always matches
    if start == len(region):
        raise ActionParseError(f"empty action; {EXPECTED}")
    name = _NAME.match(region, start)
    if name is None:
        obj = parse_json_action(region) if region[start] in "[{`" else None  # ` : a code fence
        if obj is None:
            raise ActionParseError(EXPECTED)
        return _from_json(obj)
    return _call(name.group().lower(), region.rstrip(), name.end())


def _fmt_number(v: float) -> str:
    """Shortest text the grammar reads back as exactly ``v``: ``12``, ``4.5``, ``1e+20``."""
    v = float(v)
    return str(int(v)) if v.is_integer() and abs(v) < 1e15 else repr(v)


def format_action(action: GuiAction) -> str:
    """The canonical text of ``action``; ``parse_action(format_action(a)) == a`` for every valid action."""
    if action.kind == "click":
        return f"click({_fmt_number(action.x)}, {_fmt_number(action.y)})"  # type: ignore[arg-type]
    if action.kind == "scroll":
        return f"scroll({_fmt_number(action.dx)}, {_fmt_number(action.dy)})"  # type: ignore[arg-type]
    if action.kind == "press":
        return f'press("{action.key}")'
    text = action.text.replace("\\", "\\\\").replace('"', '\\"')  # type: ignore[union-attr]
    return f'type("{text}")'
