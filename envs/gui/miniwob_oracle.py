"""Scripted policies for MiniWoB++ tasks, written against the adapter's text grammar: references for the env's tests and
for the success tables (an oracle shows a task is solvable through ``click``/``type``/``press`` text; random clicks
show what chance gives).

An oracle reads the page from ``info["dom"]`` (element boxes in screenshot pixels, values, focus) and
``info["fields"]`` (the task's targets) of the last ``reset``/``step`` and returns the next action's text, in the env's
coordinate convention (``frame``). It is stateless: each call looks at the page as it is now (a field not yet holding its
target is clicked, then typed into once focused; a checkbox in the wrong state is clicked; then the submit button).

Example:
    >>> env = MiniWoBEnv(task="enter-text")  # doctest: +SKIP
    >>> obs, info = env.reset(seed=0)  # doctest: +SKIP
    >>> oracle_action("enter-text", info, env.frame)  # doctest: +SKIP
    'click(66, 63.5)'
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from envs.gui.actions import GuiAction, format_action
from rewards.coords import Frame

Element = dict[str, Any]  # one entry of info["dom"]
Policy = Callable[[dict[str, Any]], str]  # info -> action text
GRID = (0.5, 0.3, 0.7, 0.1, 0.9)  # fractions of a box's sides tried for a visible click point, the centre first


def text_of(dom: Sequence[Element], element: Element) -> str:
    """The element's own text, else the text of its text-node children (a checkbox's label)."""
    if element["text"]:
        return element["text"]
    return " ".join(e["text"] for e in dom if e["ref"] < 0 and e["parent"] == element["ref"]).strip()


def visible_point(dom: Sequence[Element], element: Element) -> tuple[float, float]:
    """A point of ``element``'s box that no element later in the page covers (a later sibling drawn on top of it, as
    click-test-2's overlapping buttons): its centre when free, else the first free point of a 5 x 5 grid over it."""
    own = {element["ref"]}
    for e in dom:  # descendants (pre-order: a child follows its parent)
        if e["parent"] in own:
            own.add(e["ref"])
    later = dom[next(i for i, e in enumerate(dom) if e["ref"] == element["ref"]) + 1 :]
    covers = [e for e in later if e["ref"] > 0 and e["ref"] not in own]
    for fy in GRID:
        for fx in GRID:
            x, y = element["left"] + fx * element["width"], element["top"] + fy * element["height"]
            if not any(inside(c, x, y) for c in covers):
                return x, y
    return centre(element)


def centre(element: Element) -> tuple[float, float]:
    return element["left"] + element["width"] / 2, element["top"] + element["height"] / 2


def inside(element: Element, x: float, y: float) -> bool:
    return (
        element["left"] <= x < element["left"] + element["width"]
        and element["top"] <= y < element["top"] + element["height"]
    )


def click(element: Element, frame: Frame, dom: Sequence[Element] = ()) -> str:
    """``click(x, y)`` on the element, in ``frame``'s convention: at its centre, or at a point left uncovered by the
    later elements of ``dom`` when given."""
    x, y = frame.from_pixels(visible_point(dom, element) if dom else centre(element))
    return format_action(GuiAction("click", x=round(x, 2), y=round(y, 2)))


def find(dom: Sequence[Element], tag: str, text: str | None = None, id: str | None = None) -> Element:
    """The first element with ``tag`` (and ``text`` / ``id`` when given); a ``LookupError`` names what is missing."""
    for e in dom:
        if e["tag"] == tag and (text is None or text_of(dom, e) == text) and (id is None or e["id"] == id):
            return e
    raise LookupError(f"no <{tag}> with text={text!r} id={id!r} on the page")


def fill(dom: Sequence[Element], field: Element, target: str, frame: Frame) -> str | None:
    """The next action that makes input ``field`` hold ``target`` (None once it does)."""
    if field["value"] == target:
        return None
    if not field["focused"]:
        return click(field, frame)
    if field["value"]:
        return format_action(GuiAction("press", key="Backspace"))  # a wrong start: erase it one key at a time
    return format_action(GuiAction("type", text=target))


def _click_named(tag: str) -> Callable[[dict[str, Any], Frame], str]:
    """Click the ``tag`` element whose text is the ``target`` field (click-button, click-link, click-test-2)."""

    def act(info: dict[str, Any], frame: Frame) -> str:
        dom = info["dom"]
        return click(find(dom, tag, text=dict(info["fields"])["target"]), frame, dom)

    return act


def _enter_text(info: dict[str, Any], frame: Frame) -> str:
    dom = info["dom"]
    step = fill(dom, find(dom, "input_text"), dict(info["fields"])["target"], frame)
    return step or click(find(dom, "button", text="Submit"), frame)


def _login_user(info: dict[str, Any], frame: Frame) -> str:
    dom, fields = info["dom"], dict(info["fields"])
    for name, tag in (("username", "input_text"), ("password", "input_password")):
        step = fill(dom, find(dom, tag, id=name), fields[name], frame)
        if step is not None:
            return step
    return click(find(dom, "button", text="Login"), frame)


def _click_checkboxes(info: dict[str, Any], frame: Frame) -> str:
    dom = info["dom"]
    targets = {v for k, v in info["fields"] if k.startswith("target")}
    labels = {e["ref"]: text_of(dom, e) for e in dom if e["tag"] == "label"}
    for box in (e for e in dom if e["tag"] == "input_checkbox"):
        if (box["value"] == "True") != (labels.get(box["parent"]) in targets):
            return click(box, frame)
    return click(find(dom, "button", text="Submit"), frame)


ORACLES: dict[str, Callable[[dict[str, Any], Frame], str]] = {
    "click-button": _click_named("button"),
    "click-link": _click_named("span"),
    "click-test-2": _click_named("button"),
    "enter-text": _enter_text,
    "login-user": _login_user,
    "click-checkboxes": _click_checkboxes,
}


def oracle_action(task: str, info: dict[str, Any], frame: Frame | None = None) -> str:
    """The oracle's next action text for ``task`` given the last ``info`` (``frame``: the env's convention)."""
    if task not in ORACLES:
        raise KeyError(f"no oracle for MiniWoB++ task '{task}' (have: {', '.join(sorted(ORACLES))})")
    return ORACLES[task](info, frame or Frame())


def random_clicks(rng: np.random.Generator, size: tuple[int, int], frame: Frame | None = None) -> Policy:
    """A policy clicking uniformly at random on the ``(width, height)`` screenshot."""
    frame = frame or Frame()

    def act(info: dict[str, Any]) -> str:
        x, y = frame.from_pixels((rng.uniform(0, size[0]), rng.uniform(0, size[1])))
        return format_action(GuiAction("click", x=round(x, 2), y=round(y, 2)))

    return act


def success_rate(env: Any, policy: Policy | None, seeds: Sequence[int], task: str | None = None) -> float:
    """Fraction of episodes (one per seed) ``policy`` (else the env task's oracle) ends with ``info["success"]``."""
    wins = 0
    for seed in seeds:
        _, info = env.reset(seed=int(seed), options={"task": task} if task else None)
        done = False
        while not done:
            action = policy(info) if policy is not None else oracle_action(info["task"], info, env.frame)
            _, _, terminated, truncated, info = env.step(action)
            done = terminated or truncated
        wins += bool(info["success"])
    return wins / max(len(seeds), 1)
