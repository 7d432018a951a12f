"""The MiniWoB++ adapter in a real headless Chromium: the oracle solves tasks through the text grammar, bad text is a
no-op, clicks land where MiniWoB's own DOM says, and a killed browser becomes a counted infrastructure failure.

Ground truth is MiniWoB's: its task reward (``raw_reward``, computed by the page's JavaScript) and the element boxes
its ``getDOMInfo`` reports. Skipped (with the reason) where the ``gui`` extra or Debian's chromium is absent.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("miniwob", reason="the gui extra (miniwob) is not installed")
pytest.importorskip("selenium", reason="the gui extra (selenium) is not installed")
if shutil.which("chromium") is None or shutil.which("chromedriver") is None:
    pytest.skip("Debian's chromium and chromium-driver are not installed", allow_module_level=True)

from envs.gui.miniwob import MiniWoBEnv, child_pids  # noqa: E402
from envs.gui.miniwob_oracle import find, oracle_action, random_clicks, success_rate  # noqa: E402
from mmrl.config import ConfigError  # noqa: E402
from mmrl.policies.base import Action, SamplingParams  # noqa: E402
from mmrl.rollout.collector import Collector  # noqa: E402
from mmrl.rollout.pool import INFRA, EnvPool  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TASKS = ["click-button", "enter-text", "login-user"]


@pytest.fixture(scope="module")
def env():
    env = MiniWoBEnv(task=TASKS, max_steps=6)
    yield env
    env.close()


def centre(element: dict) -> tuple[float, float]:
    return element["left"] + element["width"] / 2, element["top"] + element["height"] / 2


def play(env: MiniWoBEnv, info: dict) -> tuple[list[float], bool, bool, dict]:
    """The oracle until the episode ends: (rewards, terminated, truncated, last info)."""
    rewards, done = [], False
    while not done:
        _, reward, terminated, truncated, info = env.step(oracle_action(info["task"], info, env.frame))
        rewards.append(reward)
        done = terminated or truncated
    return rewards, terminated, truncated, info


@pytest.mark.parametrize("task", TASKS)
def test_the_oracle_solves_the_task_through_the_text_grammar(env, task):
    for seed in range(2):
        obs, info = env.reset(seed=seed, options={"task": task})
        assert info["utterance"] in obs["text"] and obs["images"][0].shape == (210, 160, 3)
        assert obs["images"][0].dtype == np.uint8 and obs["images"][0].std() > 0  # a real page, not a blank
        rewards, terminated, truncated, last = play(env, info)
        assert terminated and not truncated and last["raw_reward"] == 1.0  # MiniWoB's own verdict
        assert rewards[-1] == 1.0 and all(r == 0.0 for r in rewards[:-1]) and last["success"]


def test_a_click_on_the_wrong_button_fails_the_episode(env):
    _, info = env.reset(seed=4, options={"task": "click-button"})
    target = dict(info["fields"])["target"]
    wrong = next(e for e in info["dom"] if e["tag"] == "button" and e["text"] != target)
    _, reward, terminated, _, info = env.step("click({:.1f}, {:.1f})".format(*centre(wrong)))
    assert terminated and reward == 0.0 and not info["success"] and info["raw_reward"] == -1.0


def test_a_seed_fixes_the_task_and_the_page(env):
    first = env.reset(seed=11)
    again = env.reset(seed=11)
    assert first[1]["task"] == again[1]["task"] and first[1]["utterance"] == again[1]["utterance"]
    assert np.array_equal(first[0]["images"][0], again[0]["images"][0])
    drawn = {env.reset(seed=s)[1]["task"] for s in range(12)}
    assert drawn == set(TASKS)  # the list is sampled per reset


@pytest.mark.parametrize("text, says", [
    ("I think I should click OK", "Invalid action"),
    ("click(12)", "Invalid action"),
    ('press("F13")', "Invalid action"),
    ("click(-3, 40)", "outside the screenshot"),
    ("click(160, 40)", "outside the screenshot"),
    ("scroll(50, 0)", "vertical"),
    ('type("' + "a" * 65 + '")', "at most 64"),
])  # fmt: skip
def test_unusable_text_is_a_no_op_with_feedback_and_the_episode_goes_on(env, text, says):
    obs, info = env.reset(seed=2, options={"task": "enter-text"})
    obs2, reward, terminated, truncated, info2 = env.step(text)
    assert says in obs2["text"] and info2["action_error"] == obs2["text"]
    assert (reward, terminated, truncated) == (0.0, False, False)
    assert np.array_equal(obs["images"][0], obs2["images"][0]) and info2["dom"] == info["dom"]  # the page unchanged
    rewards, terminated, _, _ = play(env, info2)  # the episode is still there to be solved
    assert terminated and rewards[-1] == 1.0


def test_max_steps_truncate_an_episode(env):
    env.reset(seed=0, options={"task": "login-user"})
    ends = [env.step('type("")')[2:4] for _ in range(6)]
    assert ends == [(False, False)] * 5 + [(False, True)]
    with pytest.raises(gym.error.ResetNeeded):
        env.step('type("x")')


def test_typing_and_keys_reach_the_page(env):
    _, info = env.reset(seed=1, options={"task": "enter-text"})
    field = find(info["dom"], "input_text")
    env.step("click({:.1f}, {:.1f})".format(*centre(field)))
    _, _, _, _, info = env.step('type("ab\\"c")')
    assert find(info["dom"], "input_text")["value"] == 'ab"c'
    _, _, _, _, info = env.step('press("Backspace")')
    assert find(info["dom"], "input_text")["value"] == 'ab"'


def test_scroll_turns_the_wheel_under_the_pointer_by_dy_pixels():
    env = MiniWoBEnv(task="scroll-text-2")
    try:
        env.reset(seed=1)
        top = "var t = document.querySelector('textarea'); return [t.scrollTop, t.scrollHeight - t.clientHeight];"
        driver = env._raw.instance.driver  # the browser's own account of the scroll position
        start, most = driver.execute_script(top)
        assert 40 <= start <= most - 40  # room both ways (the page's start position for this seed)
        env.step("scroll(0, 40)")  # the pointer starts at the screenshot's centre, over the text area
        assert driver.execute_script(top)[0] == start + 40
        env.step("scroll(0, -25)")
        assert driver.execute_script(top)[0] == start + 15
    finally:
        env.close()


def test_qwen2_vl_coordinates_are_mapped_back_to_the_screenshot():
    env = MiniWoBEnv(task="click-test-2", coordinate_convention="qwen2_vl", max_steps=3)
    try:
        obs, info = env.reset(seed=0)
        assert "(1000 x 1000)" in obs["text"]
        button = find(info["dom"], "button", text=dict(info["fields"])["target"])
        x, y = centre(button)
        # written out by hand: Qwen2-VL's [0, 1000) grid over the 160 x 210 screenshot
        _, reward, terminated, _, info = env.step(f"click({x / 160 * 1000:.1f}, {y / 210 * 1000:.1f})")
        assert terminated and reward == 1.0 and info["raw_reward"] == 1.0
        # seed 1027: button TWO is drawn over ONE's centre; the oracle clicks a part of ONE left uncovered
        _, info = env.reset(seed=1027)
        one, two = find(info["dom"], "button", text="ONE"), find(info["dom"], "button", text="TWO")
        assert two["left"] < centre(one)[0] < two["left"] + two["width"]
        assert two["top"] < centre(one)[1] < two["top"] + two["height"]
        _, reward, terminated, _, info = env.step(oracle_action("click-test-2", info, env.frame))
        assert terminated and info["raw_reward"] == 1.0
    finally:
        env.close()


def test_time_limit_replaces_miniwobs_wall_clock_limit():
    env = MiniWoBEnv(task="click-button", time_limit_s=0.3)
    try:
        env.reset(seed=0)
        time.sleep(0.6)
        _, reward, terminated, _, info = env.step("not an action")  # a no-op still reads the page: the timer fired
        assert terminated and reward == 0.0 and info["raw_reward"] == -1.0 and info["reason"] == "timed out"
    finally:
        env.close()


def test_config_errors_are_one_line_and_launch_no_browser():
    with pytest.raises(ConfigError, match="unknown MiniWoB.* task 'click-buton'.*did you mean 'click-button'"):
        MiniWoBEnv(task="click-buton")
    with pytest.raises(ConfigError, match="rewards: .*own task reward"):
        MiniWoBEnv(task="click-button", rewards={"accuracy": 1.0}, defer_rewards=True)
    with pytest.raises(ConfigError, match="unknown config key 'max_step'"):
        MiniWoBEnv(task="click-button", max_step=3)
    with pytest.raises(ConfigError, match="prompt_template"):
        MiniWoBEnv(task="click-button", prompt_template="{question}")
    with pytest.raises(ConfigError, match="max_steps"):
        MiniWoBEnv(task="click-button", max_steps=0)
    with pytest.raises(ConfigError, match="chromium: 'no-such-browser' not found; install the gui extra"):
        MiniWoBEnv(task="click-button", chromium="no-such-browser")


def test_the_env_passes_gymnasiums_checker(env):
    from gymnasium.utils.env_checker import check_env

    check_env(env, skip_render_check=True)
    assert env.observation_space.contains(env.reset(seed=0)[0])


def test_a_killed_browser_raises_instead_of_returning_garbage():
    env = MiniWoBEnv(task="click-button")
    try:
        env.reset(seed=0)
        driver, browser = env.browser_pids()[:2]
        os.kill(browser, signal.SIGKILL)
        time.sleep(0.5)
        from selenium.common.exceptions import WebDriverException

        with pytest.raises(WebDriverException):
            env.step("click(10, 10)")
    finally:
        env.close()
    assert _gone(driver)


def _gone(pid: int, wait_s: float = 5.0) -> bool:
    """The process has exited (a zombie awaiting its parent counts as gone)."""
    deadline = time.time() + wait_s
    while time.time() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(")")[-1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.1)
    return False


class KillsABrowser:
    """Types into nothing (episodes run to max_steps); on its second call, one step into episode 0, kills the browser
    of worker 0."""

    version = 0

    def __init__(self, pool: EnvPool) -> None:
        self.pool, self.calls, self.killed = pool, 0, []

    def train(self, mode=True):
        return self

    def act(self, observations, params, states=None):
        self.calls += 1
        if self.calls == 2:  # worker 0 is one step into episode 0: find its chromedriver, then the browser under it
            worker = self.pool.vec.processes[0].pid
            driver = child_pids(worker)
            browsers = [p for d in driver for p in child_pids(d)]
            assert len(browsers) == 1, f"expected one browser under worker {worker}, got {browsers}"
            os.kill(browsers[0], signal.SIGKILL)
            self.killed.append(browsers[0])
        return [Action('type("x")', 0.0, None) for _ in observations]


def test_a_browser_killed_mid_episode_is_an_infra_failure_left_out_of_its_group():
    pool = EnvPool(lambda: MiniWoBEnv(task="enter-text", max_steps=3), num_envs=2, mode="async", step_timeout=60)
    try:
        policy = KillsABrowser(pool)
        collector = Collector(policy, pool)
        trajs = collector.episodes(seeds=[0, 1], group_size=2, params=SamplingParams())
        assert policy.killed and _gone(policy.killed[0])
        assert collector.stats.infra_failures == 1
        assert sorted(t.group_id for t in trajs) == [0, 1, 1]  # episode 0 (group 0, env 0) is gone
        assert not any(INFRA in s.info for t in trajs for s in t.steps)
        assert all(len(t.steps) == 3 and t.steps[-1].truncated for t in trajs)
        # env 0 was rebuilt with a new browser: its next episode saw real pages
        rebuilt = [t for t in trajs if t.env_index == 0]
        assert rebuilt and all(s.observation["images"][0].std() > 0 for t in rebuilt for s in t.steps)
    finally:
        pool.close()


def test_a_killed_worker_takes_its_browser_with_it():
    code = "from envs.gui.miniwob import MiniWoBEnv\nenv = MiniWoBEnv(task='click-test-2')\nprint(*env.browser_pids(), flush=True)\nimport time; time.sleep(60)\n"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 2 and not _gone(pids[1], 0.1)
    finally:
        proc.kill()  # SIGKILL: no cleanup runs in the worker
        proc.wait()
    assert all(_gone(p) for p in pids)  # PR_SET_PDEATHSIG took the driver, then the browser


@pytest.mark.slow
@pytest.mark.parametrize(
    "task", ["click-test-2", "click-button", "click-link", "enter-text", "login-user", "click-checkboxes"]
)
def test_the_oracle_succeeds_on_at_least_95_percent_of_50_episodes(task):
    env = MiniWoBEnv(task=task, max_steps=10)
    try:
        oracle = success_rate(env, None, range(100, 150))
        chance = success_rate(env, random_clicks(np.random.default_rng(0), (env.width, env.height)), range(100, 110))
    finally:
        env.close()
    assert oracle >= 0.95 and chance < oracle
