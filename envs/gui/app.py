"""A synthetic multi-step GUI app, no browser: PIL-drawn screenshots, text actions (:mod:`envs.gui.actions`), a task to
finish in a few steps, reward 1 / 0 for task success at the end.

Each turn the policy sees ``{"text": <task or feedback>, "images": (screenshot,)}`` and answers one action,
``click(x, y)`` (coordinates in its ``coordinate_convention``, mapped with :class:`rewards.Frame`), ``type("...")``,
``press("Enter")`` or ``scroll(dx, dy)``, optionally inside ``<answer>...</answer>``. Text that does not parse is a
no-op: the next observation says why in one line and the episode goes on. What the actions do:

- click a button: ends the episode; success when it is the task's button and the form / checkboxes are as asked.
- click a menu: opens its list (clicking it again, or anywhere off the list, closes it); click an item: ends the
  episode, success when it is the task's menu and item.
- click a checkbox: toggles it. Click a text field: focuses it. Click anything else: nothing.
- ``type("...")`` sets the focused field's text (replacing it: a select-all-and-type); ``press("Tab")`` focuses the next
  field, ``press("Enter")`` in a field presses the form's button, ``press("Escape")`` closes an open menu; other keys
  and ``scroll`` do nothing here.

Tasks (``task``: one of them, or ``mixed``: uniform over the level's):

==========  ======================================================  =====================================
``click``   "Click the 'OK' button."                                level 1 (1 step)
``tick``    "Tick the 'Bold' checkbox." (ends when ticked)          level 1 (1 step)
``form``    "Enter Name 'Ann', then press Submit."                  levels 2-3 (3 steps per field + 1)
``menu``    "Open the File menu and choose Export."                 levels 2-3 (2 steps)
``checks``  "Tick Bold and Sync (only those), then press OK."       levels 2-3 (boxes to change + 1)
==========  ======================================================  =====================================

Difficulty: level 1 is for a tiny VLM trained for minutes: a 112 x 112 screen, the target and at most one element of
another kind (telling a button from a checkbox by shape is enough), elements 0.22-0.30 of the side, 3 steps. Level 2:
240 x 320, a window with a menu bar, 1 form field or 3 checkboxes or 2-3 menus, a distractor button, 8 steps. Level 3:
smaller elements, 2-3 fields, 4-5 checkboxes some already ticked, 3-5 menus whose items may repeat across menus,
two distractor buttons, 12 steps.

Seeding: ``reset(seed=s)`` reseeds the generator (same seed, same layout and task). ``split`` (train | eval) keeps the
two streams disjoint by one bit of a content hash of the task and layout. ``oracle_action`` reads the env's own state
and returns the next action as grammar text (it succeeds every episode).

Example:
    >>> env = GuiAppEnv(task="menu", difficulty=2, seed=0)
    >>> obs, info = env.reset()
    >>> while True:
    ...     obs, reward, terminated, truncated, info = env.step(oracle_action(env))
    ...     if terminated or truncated:
    ...         break
    >>> reward, info["success"]
    (1.0, True)
"""

from __future__ import annotations

import hashlib
import string
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding

from envs.gui.actions import ActionParseError, GuiAction, format_action, parse_action
from envs.gui.grounding import check_frame_options, convention_text, point_in, policy_frame
from envs.gui.screens import (
    BUTTON_LABELS,
    CHECKBOX_LABELS,
    MENU_ITEMS,
    MENU_LABELS,
    Chrome,
    Element,
    draw_screen,
    element_size,
    place,
)
from envs.vqa.base import image_hw
from mmrl.config import ConfigError, from_dict

TASKS = ("click", "tick", "form", "menu", "checks")
FIELD_VALUES = {"Name": ("Ann", "Bob", "Eva", "Max", "Lea", "Tom"), "City": ("Rome", "Oslo", "Lima", "Bern", "Kyiv"),
                "Email": ("a@b.io", "me@x.org", "hi@ai.dev"), "Phone": ("555-0101", "555-0199", "555-0123")}  # fmt: skip
PRINTABLE = frozenset(string.printable)


@dataclass(frozen=True)
class AppLevel:
    """What a difficulty level draws."""

    tasks: tuple[str, ...]  # the tasks ``mixed`` draws from
    size: tuple[int, int]  # default (height, width)
    height: tuple[float, float]  # element height as a fraction of the shorter side
    max_steps: int  # actions before the episode is truncated
    window: bool  # a window with title bar and menu bar (the menus are there in every task)
    fields: tuple[int, int]  # form: inclusive range of fields
    boxes: tuple[int, int]  # checks: inclusive range of checkboxes (2 of them wanted)
    pre_ticked: bool  # checks: unwanted boxes may start ticked
    menus: tuple[int, int]  # inclusive range of menus in the bar
    items: tuple[int, int]  # inclusive range of items per menu (drawn independently: names repeat across menus)
    distractors: int  # extra buttons (each ends the episode as a failure)


LEVELS = {
    1: AppLevel(("click", "tick"), (112, 112), (0.22, 0.30), 3, False, (1, 1), (1, 1), False, (0, 0), (0, 0), 0),
    2: AppLevel(
        ("form", "menu", "checks"), (240, 320), (0.09, 0.12), 8, True, (1, 1), (3, 3), False, (2, 3), (3, 4), 1
    ),
    3: AppLevel(
        ("form", "menu", "checks"), (240, 320), (0.07, 0.09), 12, True, (2, 3), (4, 5), True, (3, 5), (4, 6), 2
    ),
}


@dataclass
class GuiAppConfig:
    task: str = "mixed"  # click | tick | form | menu | checks | mixed (uniform over the level's tasks)
    difficulty: int = 1  # 1-3 (module docstring); level 1 is sized for the tiny VLM
    image_size: int | list[int] | None = None  # side or [height, width]; None = the level's (112 or 240x320)
    max_steps: int | None = None  # actions before truncation; None = the level's (3, 8, 12)
    coordinate_convention: str = "pixel"  # the policy's: pixel | qwen2_5_vl | qwen2_vl | qwen3_vl | normalized
    min_pixels: int | None = None  # qwen2_5_vl: the image processor's min_pixels (None: rewards.coords' default)
    max_pixels: int | None = None  # qwen2_5_vl: the image processor's max_pixels (None: rewards.coords' default)
    split: str = "train"  # train | eval: disjoint by a content hash of task and layout
    seed: int | None = None  # seeds the generator at construction (reset(seed=...) reseeds); None = fresh entropy
    solution: str = (
        "oracle"  # info["solution"]: oracle (its next action) | random (a random click: format-only warm-up)
    )
    max_action_length: int = 256  # action_space max length in characters (longer text is still accepted by step)
    render_mode: str | None = "rgb_array"  # rgb_array (render() returns the current screenshot) | null
    rewards: dict[str, float] = field(default_factory=dict)  # must stay empty: the env's reward is task success
    defer_rewards: bool = False  # accepted for the trainer's env factory; nothing is deferred (rewards is empty)


@dataclass
class Widget:
    """One element of the app's state (drawn as a :class:`envs.gui.screens.Element`)."""

    kind: str  # button | text_field | checkbox | menu
    label: str
    box: tuple[int, int, int, int]  # (x1, y1, x2, y2) pixel edges
    checked: bool = False  # checkbox
    value: str = ""  # text field


@dataclass(frozen=True)
class AppTask:
    """What the episode asks for."""

    kind: str  # one of TASKS
    text: str  # the instruction shown in the first observation
    button: str | None = None  # the button that finishes it (None: tick finishes when the box is ticked, menu by item)
    values: tuple[tuple[str, str], ...] = ()  # form: (field label, text) in order
    ticks: tuple[tuple[str, bool], ...] = ()  # tick / checks: wanted state of every checkbox
    menu: tuple[str, str] | None = None  # menu: (menu label, item)


class GuiAppEnv(gym.Env[dict[str, Any], str]):
    """The synthetic multi-step app (module docstring). Observations ``{"text", "images": (screenshot,)}``."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 2}

    def __init__(self, config: GuiAppConfig | None = None, **kwargs: Any) -> None:
        if config is not None and kwargs:
            raise ConfigError("pass either a GuiAppConfig or keyword arguments, not both")
        self.config = config if config is not None else from_dict(GuiAppConfig, kwargs)
        cfg = self.config
        if cfg.rewards:
            raise ConfigError("rewards: gui_app's reward is task success (1/0) from step(); set `rewards: {}`")
        if cfg.difficulty not in LEVELS:
            raise ConfigError(f"difficulty: expected 1, 2 or 3, got {cfg.difficulty}")
        self.level = LEVELS[cfg.difficulty]
        if cfg.task != "mixed" and cfg.task not in self.level.tasks:
            known = ", ".join(self.level.tasks)
            raise ConfigError(f"task: '{cfg.task}' is not a level-{cfg.difficulty} task (known: {known}, mixed)")
        check_frame_options(cfg)  # the app's min_pixels / max_pixels were not checked before
        if cfg.split not in ("train", "eval"):
            raise ConfigError(f"split: expected train or eval, got '{cfg.split}'")
        if cfg.solution not in ("oracle", "random"):
            raise ConfigError(f"solution: expected oracle or random, got '{cfg.solution}'")
        if cfg.render_mode is not None and cfg.render_mode not in self.metadata["render_modes"]:
            raise ConfigError(f"render_mode: '{cfg.render_mode}' is not supported (use 'rgb_array' or null)")
        self.height, self.width = image_hw(cfg.image_size) if cfg.image_size is not None else self.level.size
        if min(self.height, self.width) < 96:
            raise ConfigError(f"image_size: the app needs sides >= 96 px, got {cfg.image_size}")
        self.max_steps = cfg.max_steps if cfg.max_steps is not None else self.level.max_steps
        if self.max_steps < 1:
            raise ConfigError(f"max_steps: must be >= 1, got {self.max_steps}")
        self.frame = policy_frame(cfg.coordinate_convention, self.width, self.height, cfg.min_pixels, cfg.max_pixels)
        self.render_mode = cfg.render_mode
        self.observation_space = spaces.Dict({
            "text": spaces.Text(max_length=1000, min_length=0, charset=PRINTABLE),
            "images": spaces.Sequence(spaces.Box(0, 255, (self.height, self.width, 3), np.uint8)),
        })  # fmt: skip
        self.action_space = spaces.Text(max_length=cfg.max_action_length, min_length=0, charset=PRINTABLE)
        if cfg.seed is not None:
            self._np_random, self._np_random_seed = seeding.np_random(cfg.seed)
        self.task: AppTask | None = None
        self.widgets: list[Widget] = []
        self.menus: dict[str, tuple[str, ...]] = {}  # menu label -> its items
        self.open_menu: str | None = None
        self.focus: int | None = None  # index in widgets of the focused text field
        self.steps = 0
        self._done = True
        self._image = np.zeros((self.height, self.width, 3), np.uint8)

    # ------------------------------------------------------------------------------------------------------ geometry
    def menu_items(self) -> list[Element]:
        """The open menu's items as elements (below its bar entry), or []."""
        if self.open_menu is None:
            return []
        owner = next(w for w in self.widgets if w.kind == "menu" and w.label == self.open_menu)
        h = owner.box[3] - owner.box[1]
        items = self.menus[self.open_menu]
        w = max(element_size("menu_item", it, h, self.width)[0] for it in items) + 6
        x1, y1 = min(owner.box[0], self.width - w - 1), owner.box[3]
        return [Element("menu_item", it, (x1 + 2, y1 + 2 + k * h, x1 + w - 2, y1 + 2 + (k + 1) * h))
                for k, it in enumerate(items)]  # fmt: skip

    def _chrome(self, items: list[Element]) -> Chrome:
        chrome = Chrome()
        if self.level.window:
            chrome.windows.append(((0, 0, self.width, self.height), "App"))
            bar = next(w.box for w in self.widgets if w.kind == "menu")
            chrome.menu_bar = (1, bar[1], self.width - 1, bar[3])
        if items:
            x1, y1, x2, y2 = items[0].box[0] - 2, items[0].box[1] - 2, items[-1].box[2] + 2, items[-1].box[3] + 2
            chrome.dropdown = (x1, y1, x2, y2)
        return chrome

    def render_state(self) -> np.ndarray:
        """Draw the current state: RGB uint8 ``[H, W, 3]``."""
        items = self.menu_items()
        elements = [Element(w.kind, w.label, w.box, w.checked, w.value, i == self.focus or w.label == self.open_menu)
                    for i, w in enumerate(self.widgets)]  # fmt: skip
        return draw_screen(self.width, self.height, elements + items, self._chrome(items))

    # ------------------------------------------------------------------------------------------------------- layout
    def _sample(self) -> tuple[AppTask, list[Widget], dict[str, tuple[str, ...]]]:
        """A task and its screen (widgets in drawing order, menus' items), every draw from ``np_random``."""
        rng, lv = self.np_random, self.level
        kind = self.config.task if self.config.task != "mixed" else lv.tasks[int(rng.integers(len(lv.tasks)))]
        pick = lambda seq, n: [str(v) for v in rng.permutation(np.array(seq))[:n]]  # noqa: E731
        short = min(self.width, self.height)
        widgets: list[Widget] = []
        menus: dict[str, tuple[str, ...]] = {}
        top = 2
        if lv.window:  # title bar, then the menu bar
            title = max(8, round(short * 0.08))
            mh = max(10, round(short * 0.08))
            x = 4
            for name in pick(MENU_LABELS, int(rng.integers(lv.menus[0], lv.menus[1] + 1))):
                w = element_size("menu", name, mh, self.width)[0]
                widgets.append(Widget("menu", name, (x, title, x + w, title + mh)))
                menus[name] = tuple(pick(MENU_ITEMS, int(rng.integers(lv.items[0], lv.items[1] + 1))))
                x += w + 2
            top = title + mh + 4
        body = (4, top, self.width - 4, self.height - 4)
        body_kinds: list[tuple[str, str]] = []  # (kind, label) to place
        if kind == "click":
            target = pick(BUTTON_LABELS, 1)[0]
            task = AppTask(kind, f"Click the '{target}' button.", button=target)
            body_kinds.append(("button", target))
        elif kind == "tick":
            target = pick(CHECKBOX_LABELS, 1)[0]
            task = AppTask(kind, f"Tick the '{target}' checkbox.", ticks=((target, True),))
            body_kinds.append(("checkbox", target))
        elif kind == "form":
            labels = pick(list(FIELD_VALUES), int(rng.integers(lv.fields[0], lv.fields[1] + 1)))
            values = tuple((lab, pick(FIELD_VALUES[lab], 1)[0]) for lab in labels)
            asked = " and ".join(f"{lab} '{v}'" for lab, v in values)
            task = AppTask(kind, f"Enter {asked}, then press Submit.", button="Submit", values=values)
            body_kinds += [("text_field", lab) for lab in labels] + [("button", "Submit")]
        elif kind == "menu":
            name = list(menus)[int(rng.integers(len(menus)))]
            item = menus[name][int(rng.integers(len(menus[name])))]
            task = AppTask(kind, f"Open the {name} menu and choose {item}.", menu=(name, item))
        else:  # checks
            labels = pick(CHECKBOX_LABELS, int(rng.integers(lv.boxes[0], lv.boxes[1] + 1)))
            wanted = set(labels[:2])
            ticks = tuple((lab, lab in wanted) for lab in labels)
            asked = " and ".join(sorted(wanted, key=labels.index))
            task = AppTask(kind, f"Tick {asked} (only those), then press OK.", button="OK", ticks=ticks)
            body_kinds += [("checkbox", lab) for lab in labels] + [("button", "OK")]
        if kind in ("click", "tick") and rng.random() < 0.5:  # level 1: at most one element of the other kind
            other = ("checkbox", CHECKBOX_LABELS) if kind == "click" else ("button", BUTTON_LABELS)
            body_kinds.append((other[0], pick(other[1], 1)[0]))
        taken_labels = {lab for _, lab in body_kinds}
        spare = [b for b in BUTTON_LABELS if b not in taken_labels and b not in ("Submit", "OK")]
        body_kinds += [("button", b) for b in pick(spare, lv.distractors)]
        taken = [w.box for w in widgets]
        for wkind, label in body_kinds:
            h = max(10, round(short * rng.uniform(*lv.height)))
            shown = label + " " + max(FIELD_VALUES.get(label, ("",)), key=len) if wkind == "text_field" else label
            for _ in range(6):
                box = place(rng, element_size(wkind, shown, h, body[2] - body[0]), body, taken)
                if box is not None:
                    break
                h = max(10, int(h * 0.85))
            if box is None:
                raise RuntimeError(f"no room for {len(body_kinds)} elements on a {self.width}x{self.height} screen")
            taken.append(box)
            pre = lv.pre_ticked and wkind == "checkbox" and dict(task.ticks).get(label) is False and rng.random() < 0.5
            widgets.append(Widget(wkind, label, box, checked=pre))
        return task, widgets, menus

    def _split_of(self, task: AppTask, widgets: list[Widget]) -> str:
        key = repr((self.height, self.width, task, [(w.kind, w.label, w.box, w.checked) for w in widgets]))
        return "eval" if hashlib.sha256(key.encode()).digest()[0] & 1 else "train"

    # ---------------------------------------------------------------------------------------------------- gymnasium
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """A new task and screen; the first observation is the task, the action grammar and the coordinate range."""
        super().reset(seed=seed)
        if options:
            raise ValueError(f"reset(options=...): unknown keys {sorted(options)} (none are known)")
        while True:  # redraw until the episode belongs to this split (about 2 draws)
            task, widgets, menus = self._sample()
            if self._split_of(task, widgets) == self.config.split:
                break
        self.task, self.widgets, self.menus = task, widgets, menus
        self.open_menu, self.focus, self.steps, self._done = None, None, 0, False
        self._image = self.render_state()
        actions = "click(x, y)" if task.kind in ("click", "tick") else 'click(x, y), type("text") or press("Enter")'
        text = (f"{task.text} Reply with one action in <answer></answer>: {actions}; x, y in "
                f"{convention_text(self.frame)}.")  # fmt: skip
        return self._obs(text), self._info(success=False)

    def _obs(self, text: str) -> dict[str, Any]:
        return {"text": text, "images": (self._image.copy(),)}

    def _info(self, success: bool, **extra: Any) -> dict[str, Any]:
        assert self.task is not None
        info = {"success": success, "task": self.task.kind, "instruction": self.task.text, "steps": self.steps,
                **self.frame.columns(), **extra}  # the frame: how viewers map the model's clicks back to pixels
        if not self._done:  # the next action to imitate (a warm-up target)
            if self.config.solution == "oracle":
                info["solution"] = f"<answer>{oracle_action(self)}</answer>"
            else:
                px, py = (float(v) for v in self.np_random.uniform(0, (self.width, self.height)))
                x, y = point_in(self.frame, (px, py, px, py))
                info["solution"] = f"<answer>{format_action(GuiAction('click', x=x, y=y))}</answer>"
        return info

    def step(self, action: str) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        """Apply the action; ``(obs, reward, terminated, truncated, info)``, reward 1.0 only on the step that
        finishes the task. ``info``: ``success``, ``task``, ``steps``, ``action`` (canonical text or None),
        ``parse_error`` (the one-line message or None)."""
        if self.task is None or self._done:
            raise gym.error.ResetNeeded("GuiAppEnv.step() called before reset() or after the episode ended")
        if isinstance(action, bytes):
            action = action.decode("utf-8", errors="replace")
        self.steps += 1
        try:
            parsed: GuiAction | None = parse_action(action)
        except ActionParseError as e:
            parsed, feedback, ended = None, f"Error: {e}", None
        else:
            feedback, ended = self._apply(parsed)
        success = ended is True
        terminated = ended is not None
        truncated = not terminated and self.steps >= self.max_steps
        self._done = terminated or truncated
        self._image = self.render_state()
        text = "".join(c if c in PRINTABLE else "?" for c in f"{feedback} Step {self.steps}/{self.max_steps}.")
        info = self._info(success, action=format_action(parsed) if parsed else None,
                          parse_error=feedback[7:] if parsed is None else None)  # fmt: skip
        return self._obs(text), float(success), terminated, truncated, info

    def _apply(self, action: GuiAction) -> tuple[str, bool | None]:
        """Apply a parsed action: ``(feedback, None)`` while the episode goes on, ``(feedback, success)`` when it ends."""
        task = self.task
        assert task is not None
        if action.kind == "type":
            if self.focus is None:
                return "No text field is focused.", None
            self.widgets[self.focus].value = action.text or ""
            return f"Typed into '{self.widgets[self.focus].label}'.", None
        if action.kind == "press":
            fields = [i for i, w in enumerate(self.widgets) if w.kind == "text_field"]
            if action.key == "Escape" and self.open_menu is not None:
                self.open_menu = None
                return "Closed the menu.", None
            if action.key == "Tab" and fields:
                self.focus = fields[(fields.index(self.focus) + 1) % len(fields)] if self.focus in fields else fields[0]
                return f"Focused '{self.widgets[self.focus].label}'.", None
            if action.key == "Enter" and self.focus is not None and task.button is not None:
                return self._press_button(task.button)
            return f"Pressed {action.key}: nothing happened.", None
        if action.kind == "scroll":
            return "Nothing to scroll.", None
        x, y = self.frame.to_pixels((action.x, action.y))  # type: ignore[arg-type]
        inside = lambda box: box[0] <= x < box[2] and box[1] <= y < box[3]  # noqa: E731
        if self.open_menu is not None:
            name = self.open_menu
            hit = next((e for e in self.menu_items() if inside(e.box)), None)
            if hit is not None:
                return f"Chose {name} > {hit.label}.", task.menu == (name, hit.label)
            self.open_menu = None
            if not any(w.kind == "menu" and inside(w.box) and w.label != name for w in self.widgets):
                return "Closed the menu.", None
        index = next((i for i, w in enumerate(self.widgets) if inside(w.box)), None)
        if index is None:
            return "Nothing there.", None
        w = self.widgets[index]
        if w.kind == "menu":
            self.open_menu = w.label
            return f"Opened {w.label}.", None
        if w.kind == "text_field":
            self.focus = index
            return f"Focused '{w.label}'.", None
        if w.kind == "checkbox":
            w.checked = not w.checked
            if task.button is None and task.kind == "tick" and self._state_ok():
                return f"Ticked '{w.label}'.", True
            return f"{'Ticked' if w.checked else 'Unticked'} '{w.label}'.", None
        return self._press_button(w.label)

    def _press_button(self, label: str) -> tuple[str, bool]:
        return f"Pressed '{label}'.", label == (self.task.button if self.task else None) and self._state_ok()

    def _state_ok(self) -> bool:
        """Whether the form fields and checkboxes are as the task asks."""
        assert self.task is not None
        by_label = {w.label: w for w in self.widgets if w.kind in ("text_field", "checkbox")}
        values_ok = all(by_label[lab].value.strip() == v for lab, v in self.task.values)
        ticks_ok = all(by_label[lab].checked == want for lab, want in self.task.ticks)
        return values_ok and ticks_ok

    def render(self) -> np.ndarray | None:
        """The current screenshot, RGB uint8 ``[H, W, 3]``; None when render_mode is None."""
        if self.render_mode is None:
            gym.logger.warn("GuiAppEnv.render() called with render_mode=None")
            return None
        return self._image.copy()


# -------------------------------------------------------------------------------------------------------------- oracle
def oracle_action(env: GuiAppEnv) -> str:
    """The next action that solves ``env``'s task, read from its state, as grammar text (coordinates in the env's
    convention): open the menu then choose the item; click each field, type its text; toggle each checkbox that is
    wrong; then press the task's button."""
    task = env.task
    if task is None:
        raise gym.error.ResetNeeded("oracle_action() needs an env after reset()")

    def click(box: tuple[int, ...]) -> str:
        x, y = point_in(env.frame, box)
        return format_action(GuiAction("click", x=x, y=y))

    if task.menu is not None:
        name, item = task.menu
        if env.open_menu == name:
            return click(next(e.box for e in env.menu_items() if e.label == item))
        return click(next(w.box for w in env.widgets if w.kind == "menu" and w.label == name))
    by_label = {w.label: (i, w) for i, w in enumerate(env.widgets) if w.kind in ("text_field", "checkbox")}
    for label, value in task.values:
        i, w = by_label[label]
        if w.value.strip() != value:
            return format_action(GuiAction("type", text=value)) if env.focus == i else click(w.box)
    for label, want in task.ticks:
        if by_label[label][1].checked != want:
            return click(by_label[label][1].box)
    button = next(w for w in env.widgets if w.kind == "button" and w.label == task.button)
    return click(button.box)
