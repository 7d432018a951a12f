"""MiniWoB++ web tasks in a real headless Chromium, acted on with the GUI text grammar (:mod:`envs.gui.actions`).

One env drives one browser (``miniwob`` 1.1 with Debian's ``chromium`` and its ``chromedriver``, passed explicitly so
Selenium Manager never looks for a browser on the network; everything is local ``file://`` pages). ``task`` is one
MiniWoB++ task name (``click-button``, ``enter-text``, ``login-user``, ...) or a list, one drawn per reset from the
env's generator (so a seed fixes the task too); switching tasks loads the other page in the same browser.

What the model sees and does:

- observation ``{"text", "images"}``: the first turn's text is ``prompt_template`` filled with the task's utterance and
  the coordinate range; later turns carry only feedback (an unparsable or refused action, empty otherwise). The image
  is the task area's screenshot ``[210, 160, 3]`` uint8 (MiniWoB's own crop of the page).
- action: the model's raw text, parsed by :func:`envs.gui.actions.parse_action` and mapped onto MiniWoB's action space:

  ==================  =======================================================================================
  ``click(x, y)``     ``CLICK_COORDS`` at the point mapped to screenshot pixels by ``rewards.Frame`` (one CSS
                      pixel of the page per screenshot pixel); a point outside the screenshot is refused (a no-op)
  ``type("s")``       ``TYPE_TEXT``: keystrokes into the focused element (at most ``max_type_length`` characters)
  ``press("K")``      ``PRESS_KEY`` with MiniWoB's ``<K>`` (every key of ``actions.KEYS``)
  ``scroll(dx, dy)``  ``SCROLL_DOWN_COORDS`` / ``SCROLL_UP_COORDS`` of ``|dy|`` pixels under the pointer (the last
                      click, else the screenshot's centre); MiniWoB has no horizontal wheel: ``dy = 0`` is refused
  ==================  =======================================================================================

  Text that does not parse is a no-op: the episode goes on and the next observation's text says why.
- reward: 1.0 on the step that ends the episode with success (MiniWoB's raw reward, without its time discount, at least
  ``success_threshold``), else 0.0. ``info`` has ``success``, ``raw_reward``, ``env_reward`` (time-discounted),
  ``reason``, ``task``, ``utterance``, ``fields`` and ``dom`` (the page's elements with boxes in screenshot pixels,
  what :mod:`envs.gui.miniwob_oracle` plays from). ``max_steps`` steps without an end -> ``truncated``. For tasks
  with an oracle, the reset ``info`` also has the warm-up's ``answer``/``solution`` (the oracle's first action) and
  ``answer_choices`` (a click on each leaf element).

MiniWoB ends an episode after a wall-clock limit (10 s for most tasks). A model that thinks for seconds per step would
be scored on its latency, so ``time_limit_s`` replaces it (``None`` keeps the task's own).

Faults: the env never hides a dead browser. Any WebDriver error (the browser crashed or was killed, the page crashed)
propagates out of ``reset``/``step``, so the env pool's :class:`~mmrl.rollout.pool.ResilientEnv` rebuilds the env and
the collector counts the episode as an infrastructure failure. With ``kill_with_parent`` (Linux, ``setpriv`` from
util-linux) the chromedriver and browser processes get ``PR_SET_PDEATHSIG``: when the pool kills a hung worker, its
browser dies with it instead of living on as an orphan (the env must then be built by a thread that outlives it, as the
pools do). Heavy: run it in worker processes (``env.pool: async``).

Example:
    >>> env = MiniWoBEnv(task="click-button", max_steps=5)  # doctest: +SKIP
    >>> obs, info = env.reset(seed=0)  # doctest: +SKIP
    >>> obs["images"][0].shape, info["utterance"]  # doctest: +SKIP
    ((210, 160, 3), 'Click on the "okay" button.')
    >>> obs, reward, terminated, truncated, info = env.step("click(24, 73)")  # doctest: +SKIP
    >>> reward, terminated, info["success"]  # doctest: +SKIP
    (1.0, True, True)
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import string
import tempfile
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.gui.actions import KEYS, ActionParseError, GuiAction, parse_action
from envs.gui.miniwob_oracle import ORACLES, click, oracle_action
from mmrl.config import COORDINATE_CONVENTIONS, FLAG, POSITIVE, SIZE, ConfigError, from_dict, number, one_of, suggest
from mmrl.config import validate as validate_config
from rewards.coords import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS, Frame

logger = logging.getLogger(__name__)

EXTRA = "install the gui extra: pip install 'mmrl[gui]' and apt-get install chromium chromium-driver"
DEFAULT_PROMPT = (
    '{utterance}\nAct on the screenshot ({width} x {height}) with one action per turn: click(x, y), type("text"), '
    'press("Enter") or scroll(dx, dy).'
)
MINIWOB_KEYS = tuple(f"<{k}>" for k in KEYS)  # MiniWoB's PRESS_KEY names, in the order of actions.KEYS
ACTION_CHARSET = frozenset(string.printable)  # what action_space.sample() draws from; step accepts any str
MAX_TEXT = 4096  # observation text space bound (utterances are at most 256 characters, feedback a line)


# fmt: off
@dataclass
class MiniWoBConfig:
    task: str | list[str] = "click-button"  # a MiniWoB++ task name, or a list: one drawn per reset (from the seed)
    max_steps: Annotated[int, SIZE] = 10  # actions per episode before it is truncated
    coordinate_convention: Annotated[str, one_of(*COORDINATE_CONVENTIONS)] = "pixel"  # the model's click coordinates (rewards.coords): pixel = screenshot pixels
    min_pixels: Annotated[int, SIZE] = DEFAULT_MIN_PIXELS  # qwen2_5_vl convention: the image processor's min_pixels
    max_pixels: Annotated[int, SIZE] = DEFAULT_MAX_PIXELS  # qwen2_5_vl convention: the image processor's max_pixels
    time_limit_s: Annotated[float | None, POSITIVE] = None  # MiniWoB's wall-clock episode limit; None keeps the task's own (10 s for most)
    success_threshold: Annotated[float, number(-1, 1, lo_open=True)] = 1.0  # success: raw reward >= this (MiniWoB's binary reward uses 1.0)
    prompt_template: str = DEFAULT_PROMPT  # first turn's text: {utterance}, {width} and {height} (coordinate range in the convention)
    max_type_length: Annotated[int, SIZE] = 64  # longest type("...") text executed (MiniWoB's TYPING_MAX_LENGTH); longer is refused
    max_action_length: Annotated[int, SIZE] = 256  # action_space max length (longer text is still accepted by step)
    wait_ms: Annotated[float, number(0)] = 0.0  # pause after each action (tasks with animations)
    chromium: str = "chromium"  # browser executable (name on PATH or path): Debian's chromium
    chromedriver: str = "chromedriver"  # driver executable (name on PATH or path): Debian's chromium-driver
    kill_with_parent: Annotated[bool, FLAG] = True  # browser and driver die with the process that built the env (setpriv --pdeathsig)
# fmt: on


def _miniwob() -> Any:
    """The ``miniwob`` package, or a one-line error naming the extra."""
    try:
        import miniwob
        import miniwob.environment
    except ImportError as e:
        raise ConfigError(f"env miniwob: {e}; {EXTRA}") from None
    return miniwob


def task_names() -> list[str]:
    """Every MiniWoB++ task name this installation has (``flight.*`` tasks included)."""
    html = Path(_miniwob().__file__).parent / "html"
    names = [p.stem for p in (html / "miniwob").glob("*.html")]
    names += [f"flight.{p.parent.name}" for p in (html / "flight").glob("*/wrapper.html")]
    return sorted(names)


def _executable(name: str, field: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ConfigError(f"{field}: '{name}' not found; {EXTRA}")
    return path


def _reaped(executable: str) -> str:
    """A wrapper script that runs ``executable`` with ``PR_SET_PDEATHSIG=SIGKILL`` (it dies with its parent), kept in
    the temp dir under a name derived from its content, so every process reuses one copy."""
    setpriv = _executable("setpriv", "kill_with_parent (util-linux setpriv)")
    script = f'#!/bin/sh\nexec {setpriv} --pdeathsig KILL -- {executable} "$@"\n'
    digest = hashlib.sha256(script.encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"mmrl-reaped-{Path(executable).name}-{digest}"
    if not path.exists():
        tmp = path.with_suffix(f".{os.getpid()}")
        tmp.write_text(script)
        tmp.chmod(0o755)
        os.replace(tmp, path)  # atomic: concurrent workers never run a half-written script
    return str(path)


@contextlib.contextmanager
def _environ(**values: str) -> Iterator[None]:
    """Set environment variables for the duration of the block (miniwob reads its browser paths from them)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def child_pids(pid: int) -> list[int]:
    """PIDs of the live direct children of process ``pid`` (from ``/proc``: Linux)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, ...
        except OSError:  # the process exited meanwhile
            continue
        if fields[1] == str(pid) and fields[0] != "Z":
            out.append(int(stat.parent.name))
    return sorted(out)


def _dom(elements: tuple[dict[str, Any], ...]) -> list[dict[str, Any]]:
    """MiniWoB's serialised DOM elements as plain values; boxes in screenshot pixels (= MiniWoB's CSS pixels)."""
    return [
        {
            "ref": int(e["ref"]),  # > 0: elements; < 0: text nodes
            "parent": int(e["parent"]),
            "tag": e["tag"],  # lower-case; inputs carry their type: input_text, input_checkbox, ...
            "text": e["text"],
            "value": e["value"],  # inputs: their value; checkboxes and radios: "True" when checked, else ""
            "id": e["id"],
            "classes": e["classes"],
            "left": float(e["left"][0]),
            "top": float(e["top"][0]),
            "width": float(e["width"][0]),
            "height": float(e["height"][0]),
            "focused": bool(e["flags"][0]),
        }
        for e in elements
    ]


class MiniWoBEnv(gym.Env[dict[str, Any], str]):
    """A MiniWoB++ task in headless Chromium; the action is the model's raw text (see the module docstring)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 1}

    def __init__(self, config: MiniWoBConfig | None = None, **kwargs: Any) -> None:
        if config is not None and kwargs:
            raise ConfigError("pass either a MiniWoBConfig or keyword arguments, not both")
        if "rewards" in kwargs or "defer_rewards" in kwargs:
            raise ConfigError("rewards: the miniwob env scores its own task reward; set `rewards: {}` in the config")
        self.config = cfg = validate_config(config if config is not None else from_dict(MiniWoBConfig, kwargs))
        self.tasks = [cfg.task] if isinstance(cfg.task, str) else list(cfg.task)
        known = task_names()
        for task in self.tasks:
            if task not in known:
                raise ConfigError(f"task: unknown MiniWoB++ task '{task}'{suggest(task, known)}")
        if not self.tasks or (len(self.tasks) > 1 and any(t.startswith("flight.") for t in self.tasks)):
            raise ConfigError("task: give a task name or a list of non-flight tasks (flight tasks have another size)")
        self._check_template()
        chromium = _executable(cfg.chromium, "chromium")
        driver = _executable(cfg.chromedriver, "chromedriver")
        if cfg.kill_with_parent:
            chromium, driver = _reaped(chromium), _reaped(driver)
        from miniwob.environment import MiniWoBEnvironment

        with _environ(MINIWOB_CHROME_BINARY=chromium, MINIWOB_CHROMEDRIVER=driver):
            self._raw = MiniWoBEnvironment(self.tasks[0], wait_ms=cfg.wait_ms)
        self.task = self.tasks[0]
        self._set_time_limit()
        self.width, self.height = int(self._raw.instance.task_width), int(self._raw.instance.task_height)
        self.frame = Frame(cfg.coordinate_convention, (float(self.width), float(self.height)), cfg.min_pixels,
                           cfg.max_pixels)  # fmt: skip
        cw, ch = self.frame.from_pixels((self.width, self.height))
        self._range = (f"{cw:.4g}", f"{ch:.4g}")
        config_ = self._raw.action_space_config  # every action type; the keys and the text length are set here
        config_.allowed_keys = MINIWOB_KEYS
        config_.text_max_len = cfg.max_type_length
        self._type_index = {str(t.value): i for i, t in enumerate(config_.action_types)}  # ActionTypes name -> index
        self.action_space = spaces.Text(max_length=cfg.max_action_length, min_length=0, charset=ACTION_CHARSET)
        self.observation_space = spaces.Dict(
            {
                "text": spaces.Text(max_length=MAX_TEXT, min_length=0, charset=ACTION_CHARSET),
                "images": spaces.Sequence(spaces.Box(0, 255, (self.height, self.width, 3), np.uint8)),
            }
        )
        self.render_mode = "rgb_array"
        self._pointer = (self.width / 2.0, self.height / 2.0)  # where the wheel scrolls: the last click
        self._steps = 0
        self._done = True
        self._utterance = ""
        self._screenshot = np.zeros((self.height, self.width, 3), np.uint8)

    # -------------------------------------------------------------------------------------------------------- gymnasium
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """A new episode: the task (drawn from the list with the env's generator), MiniWoB's page seeded with ``seed``
        (``options={"task": name}`` picks the task)."""
        super().reset(seed=seed)
        options = dict(options or {})
        task = options.pop("task", None)
        if options:
            raise ValueError(f"reset(options=...): unknown keys {sorted(options)} (known: task)")
        if task is None:
            task = self.tasks[int(self.np_random.integers(len(self.tasks)))] if len(self.tasks) > 1 else self.tasks[0]
        elif task not in self.tasks:
            raise ValueError(f"reset(options=...): task '{task}' is not one of this env's tasks {self.tasks}")
        if task != self.task:
            self._load(task)
        raw_obs, raw_info = self._raw.reset(seed=seed)
        self._steps, self._done = 0, False
        self._pointer = (self.width / 2.0, self.height / 2.0)
        self._utterance = raw_obs["utterance"]
        width, height = self._range
        text = self.config.prompt_template.format(utterance=self._utterance, width=width, height=height)
        info = self._info(raw_obs, raw_info)
        return self._observation(text, raw_obs), info | self._reference(info)

    def step(self, action: str) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        """Parse and execute ``action``; a WebDriver error (dead browser) propagates (see the module docstring)."""
        if self._done:
            raise gym.error.ResetNeeded("call reset() before step() (the episode has ended)")
        feedback = ""
        try:
            raw_action, feedback = self._to_miniwob(parse_action(action))
        except ActionParseError as e:
            raw_action, feedback = None, f"Invalid action: {e}"
        if raw_action is None:  # a no-op: the page is read again (the task may have ended on its own: a timeout)
            raw_action = self._action("NONE")
        raw_obs, _, terminated, _, raw_info = self._raw.step(raw_action)
        self._steps += 1
        truncated = not terminated and self._steps >= self.config.max_steps
        self._done = bool(terminated or truncated)
        info = self._info(raw_obs, raw_info)
        info["action_error"] = feedback or None
        return self._observation(feedback, raw_obs), float(info["success"]), bool(terminated), truncated, info

    def render(self) -> np.ndarray:
        """The last screenshot ``[H, W, 3]`` uint8."""
        return self._screenshot.copy()

    def close(self) -> None:
        """Quit the browser and its driver (safe to call twice, or after the browser died)."""
        raw = getattr(self, "_raw", None)
        if raw is not None and not raw.instance.died:
            raw.close()

    # ---------------------------------------------------------------------------------------------------------- helpers
    def browser_pids(self) -> list[int]:
        """PIDs of this env's chromedriver and of its direct children (the browser), for fault tests and operators."""
        driver = self._raw.instance.driver.service.process.pid
        return [driver, *child_pids(driver)]

    def _to_miniwob(self, action: GuiAction) -> tuple[dict[str, Any] | None, str]:
        """MiniWoB's action for ``action`` and a feedback line (``None`` and the reason when it is refused)."""
        if action.kind == "click":
            x, y = self.frame.to_pixels((action.x, action.y))
            if not (0.0 <= x < self.width and 0.0 <= y < self.height):
                return None, f"Refused: click({action.x:g}, {action.y:g}) is outside the screenshot."
            self._pointer = (x, y)
            return self._action("CLICK_COORDS", coords=np.array([x, y], np.float32)), ""
        if action.kind == "type":
            if len(action.text) > self.config.max_type_length:  # type: ignore[arg-type]
                return None, f"Refused: type() takes at most {self.config.max_type_length} characters."
            return self._action("TYPE_TEXT", text=action.text), ""
        if action.kind == "press":
            return self._action("PRESS_KEY", key=MINIWOB_KEYS.index(f"<{action.key}>")), ""
        dy = float(action.dy)  # type: ignore[arg-type]
        if dy == 0.0:
            return None, "Refused: only vertical scrolling (dy) is supported."
        self._raw.action_space_config.scroll_amount = max(1, round(abs(dy)))  # MiniWoB reads the delta from its config
        kind = "SCROLL_DOWN_COORDS" if dy > 0 else "SCROLL_UP_COORDS"
        return self._action(kind, coords=np.array(self._pointer, np.float32)), ""

    def _action(self, kind: str, **fields: Any) -> dict[str, Any]:
        """MiniWoB's action dict: the type's index and the fields its executor reads (``create_action`` would also
        sample every other field of the space at random, a cost per step for values nobody reads)."""
        return {"action_type": self._type_index[kind], **fields}

    def _observation(self, text: str, raw_obs: dict[str, Any]) -> dict[str, Any]:
        self._screenshot = np.ascontiguousarray(raw_obs["screenshot"], dtype=np.uint8)  # [H, W, 3]
        return {"text": text, "images": (self._screenshot.copy(),)}

    def _info(self, raw_obs: dict[str, Any], raw_info: dict[str, Any]) -> dict[str, Any]:
        raw_reward = float(raw_info.get("raw_reward") or 0.0)
        done = bool(raw_info.get("done"))
        return {
            "task": self.task,
            "utterance": self._utterance,
            "success": done and raw_reward >= self.config.success_threshold,
            "raw_reward": raw_reward,
            "env_reward": float(raw_info.get("env_reward") or 0.0),
            "reason": None if raw_info.get("reason") is None else str(raw_info["reason"]),
            "fields": [list(f) for f in raw_obs["fields"]],
            "dom": _dom(raw_obs["dom_elements"]),
            "step": self._steps,
            **self.frame.columns(),  # how viewers map the model's clicks back to screenshot pixels
        }

    def _reference(self, info: dict[str, Any]) -> dict[str, Any]:
        """What the VLM warm-up reads at reset (tasks with an oracle): the oracle's first action as ``answer`` and
        ``solution``, and a click on the centre of every leaf element as ``answer_choices`` (a format warm-up draws
        its targets from them: the grammar and "click on things", not the task)."""
        if self.task not in ORACLES:
            return {}
        answer = oracle_action(self.task, info, self.frame)
        parents = {e["parent"] for e in info["dom"] if e["ref"] > 0}
        leaves = [e for e in info["dom"] if e["ref"] > 0 and e["ref"] not in parents]
        inside = [
            e for e in leaves if e["left"] + e["width"] / 2 < self.width and e["top"] + e["height"] / 2 < self.height
        ]
        choices = list(dict.fromkeys([answer, *(click(e, self.frame) for e in inside)]))
        return {"answer": answer, "answer_choices": choices, "solution": f"<answer>{answer}</answer>"}

    def _load(self, task: str) -> None:
        """Open ``task``'s page in the running browser (tasks of one list share the page directory and size)."""
        from miniwob.fields import get_field_extractor
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as EC
        from selenium.webdriver.support.wait import WebDriverWait

        instance = self._raw.instance
        instance.url = urllib.parse.urljoin(instance.url, f"{task}.html")
        instance.field_extractor = get_field_extractor(task)
        instance.driver.get(instance.url)
        WebDriverWait(instance.driver, 5).until(EC.element_to_be_clickable((By.ID, instance.SYNC_SCREEN_ID)))
        self.task = task
        self._set_time_limit()

    def _set_time_limit(self) -> None:
        if self.config.time_limit_s is not None:
            ms = int(self.config.time_limit_s * 1000)
            self._raw.instance.driver.execute_script(f"core.EPISODE_MAX_TIME = {ms};")

    def _check_template(self) -> None:
        try:
            self.config.prompt_template.format(utterance="u", width="1", height="1")
        except (KeyError, IndexError, ValueError) as e:
            raise ConfigError(
                f"prompt_template: bad placeholder {e} (use {{utterance}}, {{width}}, {{height}}; double other braces)"
            ) from None
