"""Synthetic GUI screens drawn with PIL: windows, title bars, menu bars and menus, buttons, text fields, checkboxes and
icons, each element with its kind, label and bounding box in original pixels. Seeded, unlimited, three difficulties.

Boxes are ``(x1, y1, x2, y2)`` pixel *edges*: an element covers the pixels ``x1 .. x2 - 1`` and ``y1 .. y2 - 1``, so
its centre ``((x1 + x2) / 2, (y1 + y2) / 2)`` lies inside it and ``x2 - x1`` is its width. Elements never overlap.

Difficulty (sides are fractions of the screen's shorter side ``s``):

- level 1: 1-3 elements of *different* kinds (the instruction's kind alone picks the target: a model that only tells
  a button from a checkbox by shape can solve it), heights 0.20-0.28 s, plain background, no window chrome.
- level 2: a window (title bar, menu bar) with 4-7 elements, kinds repeat (the label picks the target), heights
  0.11-0.15 s.
- level 3: 8-14 elements at heights 0.07-0.10 s (at least 10 px), decoy static text, a second window behind the first,
  an open menu (its items are targets too), labels drawn from look-alike pairs ("Save" / "Save as").

The drawing primitives (``draw_element``, ``draw_screen``) are shared with :mod:`envs.gui.app`, which draws its app
state with them.

Example:
    >>> screen = generate_screen(np.random.default_rng(0), width=160, height=120, difficulty=1)
    >>> screen.image.shape, screen.elements[0].kind in KINDS
    ((120, 160, 3), True)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFont

KINDS = ("button", "text_field", "checkbox", "icon", "menu", "menu_item")
KIND_NAMES = {  # how an instruction names each kind
    "button": "button",
    "text_field": "text field",
    "checkbox": "checkbox",
    "icon": "icon",
    "menu": "menu",
    "menu_item": "menu item",
}
BUTTON_LABELS = ("OK", "Cancel", "Save", "Open", "Close", "Apply", "Next", "Back", "Submit", "Delete", "Print", "Search",
                 "Export", "Login", "Help", "Send")  # fmt: skip
FIELD_LABELS = ("Name", "Email", "City", "Phone", "Password", "Search", "Title", "Notes")
CHECKBOX_LABELS = ("Bold", "Italic", "Wrap", "Notify", "Sync", "Remember me", "Dark mode", "Autosave")
MENU_LABELS = ("File", "Edit", "View", "Insert", "Tools", "Help")
MENU_ITEMS = ("New", "Open", "Save", "Export", "Print", "Undo", "Copy", "Paste", "Zoom", "Settings")
ICONS = ("home", "search", "close", "plus", "star", "trash", "mail", "play", "menu", "settings")
LOOK_ALIKES = {"Save": "Save as", "Open": "Open recent", "Print": "Print preview", "Search": "Search all",
               "Export": "Export as", "Help": "Help center"}  # fmt: skip  # level 3 decoy labels

BACKGROUND = (236, 238, 242)
WINDOW = (250, 250, 252)
TITLE_BAR = (52, 84, 140)
MENU_BAR = (226, 229, 235)
INK = (20, 20, 24)
MUTED = (120, 124, 132)
FOCUS = (30, 110, 230)
BUTTON_FILL = (214, 222, 236)
ICON_COLORS = {"home": (60, 130, 70), "search": (40, 90, 200), "close": (200, 50, 50), "plus": (40, 150, 120),
               "star": (220, 160, 20), "trash": (110, 110, 120), "mail": (60, 100, 180), "play": (30, 150, 60),
               "menu": (70, 70, 80), "settings": (100, 80, 150)}  # fmt: skip


@dataclass(frozen=True)
class Element:
    """One interactive element of a screen."""

    kind: str  # one of KINDS
    label: str  # its visible text (an icon's name for icons)
    box: tuple[int, int, int, int]  # (x1, y1, x2, y2) pixel edges in original-image pixels
    checked: bool = False  # checkbox: ticked
    value: str = ""  # text field: its content
    focused: bool = False  # drawn with the focus outline (a text field also with a caret)

    @property
    def data_type(self) -> str:
        """ScreenSpot's ``data_type``: ``icon`` for icons, ``text`` for elements identified by their text."""
        return "icon" if self.kind == "icon" else "text"

    @property
    def center(self) -> tuple[float, float]:
        x1, y1, x2, y2 = self.box
        return (x1 + x2) / 2.0, (y1 + y2) / 2.0


@dataclass
class Chrome:
    """Everything drawn that is not an element: windows, bars, decoy text."""

    windows: list[tuple[tuple[int, int, int, int], str]] = field(default_factory=list)  # (box, title), back to front
    menu_bar: tuple[int, int, int, int] | None = None  # the menu bar's box (its items are "menu" elements)
    dropdown: tuple[int, int, int, int] | None = None  # an open menu's panel (its items are "menu_item" elements)
    decoys: list[tuple[tuple[int, int], str, int]] = field(default_factory=list)  # static text: (xy, text, font px)


@dataclass
class Screen:
    """A rendered screen and its elements (what a grounding row is built from)."""

    image: np.ndarray  # RGB uint8 [H, W, 3]
    elements: list[Element]
    chrome: Chrome


def instruction(element: Element) -> str:
    """The grounding instruction for ``element``: "Click the 'Save' button", "Click the star icon"."""
    if element.kind == "icon":
        return f"Click the {element.label} icon"
    return f"Click the '{element.label}' {KIND_NAMES[element.kind]}"


# ----------------------------------------------------------------------------------------------------------- drawing
@functools.lru_cache(maxsize=64)
def font(size: int) -> ImageFont.FreeTypeFont:
    """Pillow's bundled font at ``size`` px (cached: loading costs more than drawing)."""
    return ImageFont.load_default(size=max(6, int(size)))


def text_width(text: str, box_height: int) -> int:
    """Width (px) of ``text`` as an element ``box_height`` px tall draws it."""
    return math.ceil(font(_label_size(box_height)).getlength(text))


@functools.lru_cache(maxsize=4096)
def _glyphs(text: str, size: int, fill: tuple[int, int, int], anchor: str) -> tuple[Image.Image, int, int]:
    """``text`` rendered once as an RGBA stamp, and the stamp's offset from the anchor point. Rendering glyphs is
    most of a screen's drawing time (FreeType, ~0.2 ms a label); screens repeat their labels step after step."""
    f = font(size)
    left, top, right, bottom = f.getbbox(text, anchor=anchor)
    stamp = Image.new("RGBA", (max(1, right - left), max(1, bottom - top)), (*fill, 0))
    ImageDraw.Draw(stamp).text((-left, -top), text, fill=(*fill, 255), font=f, anchor=anchor)
    return stamp, left, top


def put_text(image: Image.Image, xy: Sequence[float], text: str, fill: tuple[int, int, int], size: int,
             anchor: str = "la") -> None:  # fmt: skip
    """Draw ``text`` at ``xy`` (PIL's ``anchor``: "la" top-left, "lm" left-middle, "mm" centre) at font ``size``."""
    if text:
        stamp, left, top = _glyphs(text, max(6, int(size)), fill, anchor)
        image.paste(stamp, (round(xy[0] + left), round(xy[1] + top)), stamp)


def _label_size(box_height: int) -> int:
    """The label font size (px) of an element ``box_height`` px tall."""
    return max(7, round(box_height * 0.55))


def _centered_text(image: Image.Image, box: Sequence[int], text: str, fill: tuple[int, int, int]) -> None:
    x1, y1, x2, y2 = box
    put_text(image, ((x1 + x2) / 2, (y1 + y2) / 2), text, fill, _label_size(y2 - y1), "mm")


def _draw_icon(draw: ImageDraw.ImageDraw, box: Sequence[int], name: str) -> None:
    x1, y1, x2, y2 = box
    color = ICON_COLORS[name]
    draw.rounded_rectangle((x1, y1, x2 - 1, y2 - 1), radius=max(2, (x2 - x1) // 6), fill=(255, 255, 255), outline=color)
    p = max(2, (x2 - x1) // 5)  # glyph padding
    a, b, c, d = x1 + p, y1 + p, x2 - 1 - p, y2 - 1 - p
    mx, my = (a + c) / 2, (b + d) / 2
    w = max(1, (x2 - x1) // 10)  # stroke width
    if name == "home":
        draw.polygon([(a, my), (mx, b), (c, my)], fill=color)
        draw.rectangle((a + (c - a) / 5, my, c - (c - a) / 5, d), fill=color)
    elif name == "search":
        r = (c - a) * 0.32
        draw.ellipse((a, b, a + 2 * r, b + 2 * r), outline=color, width=w)
        draw.line((a + 1.7 * r, b + 1.7 * r, c, d), fill=color, width=w + 1)
    elif name == "close":
        draw.line((a, b, c, d), fill=color, width=w + 1)
        draw.line((a, d, c, b), fill=color, width=w + 1)
    elif name == "plus":
        draw.line((mx, b, mx, d), fill=color, width=w + 1)
        draw.line((a, my, c, my), fill=color, width=w + 1)
    elif name == "star":
        r_out, r_in = (c - a) / 2, (c - a) / 5
        pts = [(mx + (r_out if k % 2 == 0 else r_in) * math.sin(k * math.pi / 5),
                my - (r_out if k % 2 == 0 else r_in) * math.cos(k * math.pi / 5)) for k in range(10)]  # fmt: skip
        draw.polygon(pts, fill=color)
    elif name == "trash":
        draw.rectangle((a + (c - a) / 6, b + (d - b) / 4, c - (c - a) / 6, d), fill=color)
        draw.line((a, b + (d - b) / 6, c, b + (d - b) / 6), fill=color, width=w)
    elif name == "mail":
        draw.rectangle((a, b + (d - b) / 5, c, d - (d - b) / 5), outline=color, width=w)
        draw.line((a, b + (d - b) / 5, mx, my, c, b + (d - b) / 5), fill=color, width=w)
    elif name == "play":
        draw.polygon([(a + (c - a) / 6, b), (c, my), (a + (c - a) / 6, d)], fill=color)
    elif name == "menu":
        for k in range(3):
            y = b + (d - b) * (0.15 + 0.35 * k)
            draw.line((a, y, c, y), fill=color, width=w + 1)
    else:  # settings: a ring with a hub
        draw.ellipse((a, b, c, d), outline=color, width=w + 1)
        draw.ellipse((mx - (c - a) / 6, my - (d - b) / 6, mx + (c - a) / 6, my + (d - b) / 6), fill=color)


def draw_element(image: Image.Image, draw: ImageDraw.ImageDraw, e: Element) -> None:
    """Draw one element inside its box (``draw`` draws on ``image``, an RGB image)."""
    x1, y1, x2, y2 = e.box
    h = y2 - y1
    if e.kind == "button":
        draw.rounded_rectangle((x1, y1, x2 - 1, y2 - 1), radius=max(2, h // 5), fill=BUTTON_FILL,
                               outline=FOCUS if e.focused else (120, 130, 150), width=2 if e.focused else 1)  # fmt: skip
        _centered_text(image, e.box, e.label, INK)
    elif e.kind == "text_field":
        draw.rectangle((x1, y1, x2 - 1, y2 - 1), fill=(255, 255, 255), outline=FOCUS if e.focused else (150, 154, 162),
                       width=2 if e.focused else 1)  # fmt: skip
        size = _label_size(h)
        pad = max(2, h // 5)
        put_text(image, (x1 + pad, (y1 + y2) / 2), e.label, MUTED, size, "lm")
        x = x1 + 2 * pad + font(size).getlength(e.label)
        if e.value:
            put_text(image, (x, (y1 + y2) / 2), e.value, INK, size, "lm")
            x += font(size).getlength(e.value)
        if e.focused:
            draw.line((x + 1, y1 + pad, x + 1, y2 - 1 - pad), fill=INK, width=1)
    elif e.kind == "checkbox":
        draw.rectangle((x1, y1, x1 + h - 1, y2 - 1), fill=(255, 255, 255), outline=FOCUS if e.focused else INK,
                       width=max(1, h // 12))  # fmt: skip
        if e.checked:
            draw.line((x1 + h * 0.2, y1 + h * 0.55, x1 + h * 0.42, y1 + h * 0.78, x1 + h * 0.8, y1 + h * 0.22),
                      fill=(20, 140, 60), width=max(2, h // 7))  # fmt: skip
        put_text(image, (x1 + h + max(2, h // 4), (y1 + y2) / 2), e.label, INK, _label_size(h), "lm")
    elif e.kind == "icon":
        _draw_icon(draw, e.box, e.label)
    elif e.kind in ("menu", "menu_item"):
        if e.focused:
            draw.rectangle((x1, y1, x2 - 1, y2 - 1), fill=(200, 214, 240))
        _centered_text(image, e.box, e.label, INK)
    else:
        raise ValueError(f"unknown element kind '{e.kind}' (known: {', '.join(KINDS)})")


def draw_screen(width: int, height: int, elements: Sequence[Element], chrome: Chrome | None = None) -> np.ndarray:
    """Render a screen: background, windows back to front, menu bar, decoy text, elements, then an open menu's panel
    and its items on top. Returns RGB uint8 ``[height, width, 3]``."""
    chrome = chrome or Chrome()
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for (x1, y1, x2, y2), title in chrome.windows:
        bar = max(8, round(min(width, height) * 0.08))
        draw.rectangle((x1, y1, x2 - 1, y2 - 1), fill=WINDOW, outline=(150, 154, 162))
        draw.rectangle((x1, y1, x2 - 1, y1 + bar - 1), fill=TITLE_BAR)
        put_text(image, (x1 + bar // 2, y1 + bar / 2), title, (255, 255, 255), round(bar * 0.7), "lm")
    if chrome.menu_bar is not None:
        draw.rectangle(chrome.menu_bar, fill=MENU_BAR)
    for xy, text, size in chrome.decoys:
        put_text(image, xy, text, MUTED, size)
    on_top = [e for e in elements if e.kind == "menu_item"]
    for e in elements:
        if e.kind != "menu_item":
            draw_element(image, draw, e)
    if chrome.dropdown is not None:
        x1, y1, x2, y2 = chrome.dropdown
        draw.rectangle((x1, y1, x2 - 1, y2 - 1), fill=(255, 255, 255), outline=(120, 124, 132))
    for e in on_top:
        draw_element(image, draw, e)
    return np.asarray(image, dtype=np.uint8).copy()  # [H, W, 3], writable


# ------------------------------------------------------------------------------------------------------------ layout
@dataclass(frozen=True)
class Level:
    """What a difficulty level draws."""

    count: tuple[int, int]  # inclusive range of body elements
    height: tuple[float, float]  # element height as a fraction of the screen's shorter side
    distinct_kinds: bool  # every element of a different kind (the kind alone names the target)
    window: bool  # a window with title bar and menu bar
    clutter: bool  # decoy text, a second window behind, an open menu, look-alike labels


LEVELS = {
    1: Level((1, 3), (0.20, 0.28), True, False, False),
    2: Level((4, 7), (0.11, 0.15), False, True, False),
    3: Level((8, 14), (0.07, 0.10), False, True, True),
}
BODY_KINDS = ("button", "text_field", "checkbox", "icon")
MIN_HEIGHT = 10  # px: below this a label is unreadable
GAP = 3  # px kept free between element boxes


def _free(box: tuple[int, int, int, int], taken: Sequence[tuple[int, int, int, int]]) -> bool:
    return all(box[2] + GAP <= o[0] or o[2] + GAP <= box[0] or box[3] + GAP <= o[1] or o[3] + GAP <= box[1]
               for o in taken)  # fmt: skip


def element_size(kind: str, label: str, h: int, room: int) -> tuple[int, int]:
    """``(width, height)`` of an element of ``kind`` showing ``label`` at height ``h`` (a text field takes a third of
    the ``room`` width, or what its label needs, at most ``room``)."""
    if kind == "icon":
        return h, h
    if kind == "checkbox":
        return h + max(2, h // 4) + text_width(label, h) + 1, h
    if kind == "text_field":
        return min(room, max(text_width(label, h) + 2 * h, room // 3)), h
    return text_width(label, h) + h, h  # button, menu, menu_item


def place(rng: np.random.Generator, size: tuple[int, int], area: Sequence[int],
          taken: Sequence[tuple[int, int, int, int]], tries: int = 60) -> tuple[int, int, int, int] | None:  # fmt: skip
    """A random box of ``size`` inside ``area`` ``(x1, y1, x2, y2)`` clear of ``taken``, or None after ``tries``."""
    w, h = size
    if area[2] - area[0] < w or area[3] - area[1] < h:
        return None
    for _ in range(tries):
        x = int(rng.integers(area[0], area[2] - w + 1))
        y = int(rng.integers(area[1], area[3] - h + 1))
        box = (x, y, x + w, y + h)
        if _free(box, taken):
            return box
    return None


def _label(rng: np.random.Generator, kind: str, used: set[str], clutter: bool) -> str:
    pool = {"button": BUTTON_LABELS, "text_field": FIELD_LABELS, "checkbox": CHECKBOX_LABELS, "icon": ICONS}[kind]
    free = [p for p in pool if p not in used]
    label = free[int(rng.integers(len(free)))]
    if clutter and kind == "button" and label in LOOK_ALIKES and LOOK_ALIKES[label] not in used and rng.random() < 0.5:
        label = LOOK_ALIKES[label]
    return label


def generate_screen(rng: np.random.Generator, width: int, height: int, difficulty: int) -> Screen:
    """A random screen at ``difficulty`` (1-3, see the module docstring), every draw from ``rng``."""
    lv = LEVELS[difficulty]
    short = min(width, height)
    chrome = Chrome()
    elements: list[Element] = []
    body = (2, 2, width - 2, height - 2)
    if lv.window:
        bar = max(8, round(short * 0.08))
        if lv.clutter:  # a second window behind, offset towards the bottom right
            chrome.windows.append(((width // 3, height // 4, width, height), "Untitled"))
        chrome.windows.append(((0, 0, width - (width // 8 if lv.clutter else 0), height), "Document"))
        mh = max(MIN_HEIGHT, round(short * 0.08))
        chrome.menu_bar = (1, bar, chrome.windows[-1][0][2] - 1, bar + mh)
        x = 4
        for name in MENU_LABELS[: 3 + int(rng.integers(0, 4))]:
            w, _ = element_size("menu", name, mh, width)
            if x + w > chrome.menu_bar[2]:
                break
            elements.append(Element("menu", name, (x, bar, x + w, bar + mh)))
            x += w + 2
        body = (4, bar + mh + 4, chrome.windows[-1][0][2] - 4, height - 4)
    if lv.clutter and len(elements) > 0:  # an open menu under one of the bar's items
        owner = elements[int(rng.integers(len(elements)))]
        ih = max(MIN_HEIGHT, round(short * 0.08))
        items = [str(v) for v in rng.permutation(np.array(MENU_ITEMS))[: 3 + int(rng.integers(0, 3))]]
        iw = max(element_size("menu_item", it, ih, width)[0] for it in items) + 6
        x1, y1 = owner.box[0], owner.box[3]
        if x1 + iw < width and y1 + ih * len(items) + 4 < height:
            chrome.dropdown = (x1, y1, x1 + iw, y1 + ih * len(items) + 4)
            elements += [Element("menu_item", it, (x1 + 2, y1 + 2 + k * ih, x1 + iw - 2, y1 + 2 + (k + 1) * ih))
                         for k, it in enumerate(items)]  # fmt: skip
    taken = [e.box for e in elements if e.kind == "menu_item"] + ([chrome.dropdown] if chrome.dropdown else [])
    n = int(rng.integers(lv.count[0], lv.count[1] + 1))
    if lv.distinct_kinds:
        kinds = [str(k) for k in rng.permutation(np.array(BODY_KINDS))[:n]]
    else:
        kinds = [BODY_KINDS[int(rng.integers(len(BODY_KINDS)))] for _ in range(n)]
    used: set[str] = set()
    for kind in kinds:
        h = max(MIN_HEIGHT, round(short * rng.uniform(*lv.height)))
        label = _label(rng, kind, used, lv.clutter)
        for _ in range(4):  # shrink by 15% when there is no room, up to 4 times
            box = place(rng, element_size(kind, label, h, body[2] - body[0]), body, taken)
            if box is not None:
                used.add(label)
                taken.append(box)
                elements.append(Element(kind, label, box, checked=kind == "checkbox" and bool(rng.random() < 0.5)))
                break
            h = max(MIN_HEIGHT, int(h * 0.85))
    if lv.clutter:  # decoy text in free space
        for _ in range(int(rng.integers(2, 5))):
            size = max(7, round(short * 0.06))
            text = ("Ready", "Page 1 of 3", "Last saved 5 min ago", "v2.1", "Status: OK")[int(rng.integers(5))]
            box = place(rng, (math.ceil(font(size).getlength(text)), size + 2), body, taken, tries=20)
            if box is not None:
                taken.append(box)
                chrome.decoys.append(((box[0], box[1]), text, size))
    return Screen(draw_screen(width, height, elements, chrome), elements, chrome)
