"""GuiAppEnv: the oracle solves every task at every level and convention, random clicks rarely do; what each action
does to the state (read back from the env's widgets and from the pixels); no-op parse errors, truncation, seeding,
splits and the Gymnasium API."""

from __future__ import annotations

import doctest
import hashlib

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs.gui.app as app_module
from envs.gui.app import LEVELS, GuiAppEnv, oracle_action
from mmrl.config import ConfigError

CONVENTIONS = ("pixel", "qwen2_5_vl", "qwen2_vl", "normalized")
TASKS_AT = [(level, task) for level in (1, 2, 3) for task in LEVELS[level].tasks]


def play(env: GuiAppEnv, policy, seed: int) -> tuple[float, bool, int]:
    """Run one episode: ``(return, success, steps)``; rewards before the last step must be 0."""
    env.reset(seed=seed)
    total, steps = 0.0, 0
    while True:
        _, reward, terminated, truncated, info = env.step(policy(env))
        steps += 1
        if terminated or truncated:
            return total + reward, info["success"], steps
        assert reward == 0.0 and not info["success"]


def centre_click(env: GuiAppEnv, box: tuple[int, ...]) -> str:
    """A click at ``box``'s centre, converted to the env's convention by the inverse of rewards.Frame."""
    x, y = env.frame.from_pixels(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2))
    return f"click({x:.4f}, {y:.4f})"


def random_click(env: GuiAppEnv, rng: np.random.Generator) -> str:
    """A click uniform over the screenshot (the baseline policy)."""
    x, y = rng.uniform(0, env.width), rng.uniform(0, env.height)
    return centre_click(env, (x, y, x, y))


def widget(env: GuiAppEnv, kind: str, label: str | None = None):
    return next(w for w in env.widgets if w.kind == kind and (label is None or w.label == label))


@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize(("level", "task"), TASKS_AT)
def test_the_oracle_always_succeeds(level, task, convention):
    env = GuiAppEnv(difficulty=level, task=task, coordinate_convention=convention, seed=0)
    for seed in range(6):
        ret, success, steps = play(env, oracle_action, seed)
        assert ret == 1.0 and success and steps <= env.max_steps


def test_random_clicks_succeed_sometimes_at_level_1_and_rarely_later():
    """The random-click baseline beside the oracle's 1.0 (figures in the report): level 1 leaves GRPO a signal."""
    rates = {}
    rng = np.random.default_rng(0)
    for level in (1, 2, 3):
        env = GuiAppEnv(difficulty=level, seed=0)
        rates[level] = np.mean(
            [play(env, lambda e: random_click(e, rng), s)[1] for s in range(120 if level == 1 else 40)]
        )
    assert 0.1 < rates[1] < 0.8 and rates[2] < 0.1 and rates[3] < 0.1, rates


def test_a_parse_error_is_a_no_op_with_feedback():
    env = GuiAppEnv(difficulty=2, task="checks", seed=0)
    obs, info = env.reset(seed=3)
    before = [(w.checked, w.value) for w in env.widgets]
    bad = ["hello", "click(1)", 'type("unclosed', "<answer>click(1, 2)", "(" * 50_000, b"\xff\xfe", 'press("\u00e9")']
    for k, text in enumerate(bad + ["nope"], start=1):  # 8 errors: the 8th step is the last (max_steps 8)
        obs2, reward, terminated, truncated, info = env.step(text)
        assert not terminated and reward == 0.0 and info["action"] is None and info["parse_error"]
        assert obs2["text"].startswith("Error: ") and len(obs2["text"]) < 200 and obs2 in env.observation_space
        assert np.array_equal(obs2["images"][0], obs["images"][0])  # nothing changed on screen
        assert [(w.checked, w.value) for w in env.widgets] == before
        assert truncated == (k == env.max_steps)


def test_max_steps_truncates_with_zero_reward():
    env = GuiAppEnv(difficulty=2, task="form", max_steps=3, seed=0)
    env.reset(seed=0)
    results = [env.step("scroll(0, 100)") for _ in range(3)]
    assert [r[3] for r in results] == [False, False, True] and not any(r[2] for r in results)
    assert sum(r[1] for r in results) == 0.0 and not results[-1][4]["success"]
    assert results[0][0]["text"] == "Nothing to scroll. Step 1/3."
    with pytest.raises(gym.error.ResetNeeded):
        env.step("scroll(0, 1)")


def test_checkbox_clicks_toggle_state_and_pixels():
    env = GuiAppEnv(difficulty=2, task="checks", seed=0)
    obs, _ = env.reset(seed=1)
    box_widget = next(w for w in env.widgets if w.kind == "checkbox")
    x1, y1, x2, y2 = box_widget.box
    side = y2 - y1  # the square is the left part of the box
    was = box_widget.checked
    obs2, *_, info = env.step(centre_click(env, (x1, y1, x1 + side, y2)))
    assert box_widget.checked != was and info["action"].startswith("click(")
    changed = np.any(obs["images"][0] != obs2["images"][0], axis=-1)  # [H, W]
    ys, xs = np.nonzero(changed)
    assert len(ys) > 0 and x1 <= xs.min() and xs.max() < x1 + side and y1 <= ys.min() and ys.max() < y2
    obs3, *_ = env.step(centre_click(env, (x1, y1, x1 + side, y2)))
    assert box_widget.checked == was and np.array_equal(obs3["images"][0], obs["images"][0])


def test_form_typing_focus_tab_and_enter():
    env = GuiAppEnv(difficulty=3, task="form", seed=0)
    env.reset(seed=2)
    fields = [w for w in env.widgets if w.kind == "text_field"]
    assert len(fields) >= 2
    obs, *_ = env.step('type("x")')
    assert obs["text"].startswith("No text field is focused.")
    env.step(centre_click(env, fields[0].box))
    assert env.focus == env.widgets.index(fields[0])
    env.step('<answer>type("Zed \\"Q\\"")</answer>')
    assert fields[0].value == 'Zed "Q"'
    env.step('press("Tab")')
    assert env.focus == env.widgets.index(fields[1])
    for label, value in env.task.values:  # fill in the right values (typing replaces the text)
        field = widget(env, "text_field", label)
        env.step(centre_click(env, field.box))
        env.step(f'type("{value}")')
    _, reward, terminated, _, info = env.step('press("Enter")')  # Enter in a field presses Submit
    assert terminated and reward == 1.0 and info["success"]


def test_wrong_button_or_wrong_values_fail():
    env = GuiAppEnv(difficulty=2, task="form", seed=0)
    env.reset(seed=4)
    submit = widget(env, "button", "Submit")
    _, reward, terminated, _, info = env.step(centre_click(env, submit.box))  # submitted empty
    assert terminated and reward == 0.0 and not info["success"]
    env.reset(seed=4)
    other = next(w for w in env.widgets if w.kind == "button" and w.label != "Submit")
    for label, value in env.task.values:  # the right values, then the wrong button
        env.step(centre_click(env, widget(env, "text_field", label).box))
        env.step(f'type("{value}")')
    _, reward, terminated, _, info = env.step(centre_click(env, other.box))
    assert terminated and reward == 0.0 and not info["success"]


def test_menus_open_close_and_choose():
    env = GuiAppEnv(difficulty=3, task="menu", seed=0)
    for seed in range(5):
        env.reset(seed=seed)
        name, item = env.task.menu
        menu = widget(env, "menu", name)
        env.step(centre_click(env, menu.box))
        assert env.open_menu == name and [e.label for e in env.menu_items()] == list(env.menus[name])
        env.step(centre_click(env, menu.box))  # a second click closes it
        assert env.open_menu is None
        env.step(centre_click(env, menu.box))
        env.step('press("Escape")')
        assert env.open_menu is None
        env.step(centre_click(env, menu.box))
        wrong = [e for e in env.menu_items() if e.label != item]
        target = next(e for e in env.menu_items() if e.label == item)
        _, reward, terminated, *_ = env.step(centre_click(env, (wrong or [target])[0].box))
        assert terminated and reward == (0.0 if wrong else 1.0)


def test_seeding_and_splits():
    env = GuiAppEnv(difficulty=3, seed=0)
    a, ia = env.reset(seed=9)
    b, ib = env.reset(seed=9)
    c, _ = env.reset(seed=10)
    assert a["text"] == b["text"] and np.array_equal(a["images"][0], b["images"][0])
    assert ia["solution"] == ib["solution"] and not np.array_equal(a["images"][0], c["images"][0])
    digests = {}
    for split in ("train", "eval"):
        env = GuiAppEnv(difficulty=1, split=split, seed=0)
        digests[split] = {hashlib.sha256(env.reset(seed=s)[0]["images"][0].tobytes()).hexdigest() for s in range(150)}
    assert len(digests["train"]) > 30 and not digests["train"] & digests["eval"]


def test_observations_are_short_and_sized():
    env = GuiAppEnv(difficulty=1, coordinate_convention="qwen2_vl", seed=0)
    obs, info = env.reset(seed=0)
    assert obs["images"][0].shape == (112, 112, 3) and "0-1000" in obs["text"] and len(obs["text"]) < 160
    assert info["solution"].startswith("<answer>click(")
    obs, *_ = env.step("scroll(0, 1)")
    assert len(obs["text"]) < 40 and obs in env.observation_space


@pytest.mark.filterwarnings("ignore:.*not having a spec")
@pytest.mark.parametrize("level", [1, 2, 3])
def test_gymnasium_env_checker(level):
    check_env(GuiAppEnv(difficulty=level))


def test_gymnasium_env_checker_with_spec():
    gym.register(id="mmrl_test/GuiApp-v0", entry_point="envs.gui.app:GuiAppEnv")
    try:
        check_env(gym.make("mmrl_test/GuiApp-v0", difficulty=2).unwrapped)
    finally:
        gym.registry.pop("mmrl_test/GuiApp-v0")


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"rewards": {"hit": 1.0}}, "rewards"),
        ({"difficulty": 0}, "difficulty"),
        ({"task": "form"}, "task"),
        ({"task": "dance"}, "task"),
        ({"coordinate_convention": "qwen9"}, "coordinate_convention"),
        ({"min_pixels": 100}, "min_pixels"),
        ({"max_pixels": "big"}, "max_pixels"),
        ({"image_size": 64}, "image_size"),
        ({"max_steps": 0}, "max_steps"),
        ({"split": "test"}, "split"),
        ({"render_mode": "human"}, "render_mode"),
    ],
)
def test_config_errors_name_the_argument(kwargs, name):
    with pytest.raises(ConfigError) as err:
        GuiAppEnv(**kwargs)
    assert name in str(err.value) and "\n" not in str(err.value)


def test_doctests():
    assert doctest.testmod(app_module, raise_on_error=True).attempted >= 1


@pytest.mark.parametrize("convention", ["qwen2_5_vl", "qwen2_vl", "normalized"])
def test_infos_carry_the_frame_that_maps_the_models_clicks_back(convention):
    """A viewer or reward reads the frame from the info (rewards.frame_from_row) and gets the click's pixel back: the
    scale written out here from the convention's definition (Qwen2-VL: 0-1000; normalized: 0-1; Qwen2.5-VL: pixels
    of the smart-resized image, here 112 x 112 as the pixel range fixes it)."""
    from rewards.coords import frame_from_row

    env = GuiAppEnv(difficulty=1, coordinate_convention=convention, min_pixels=12544, max_pixels=12544, seed=0)
    _, info = env.reset(seed=3)
    w, h = env.width, env.height
    scale = {"qwen2_5_vl": (w / 112, h / 112), "qwen2_vl": (w / 1000, h / 1000), "normalized": (w, h)}[convention]
    frame = frame_from_row(info)
    assert frame.to_pixels((10.0, 20.0)) == pytest.approx((10.0 * scale[0], 20.0 * scale[1]))
