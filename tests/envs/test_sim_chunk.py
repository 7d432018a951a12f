"""ActionChunk on plain Gymnasium envs, checked against stepping the raw env by hand with the same actions."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env

from envs.sim.chunk import ActionChunk, make_chunked
from mmrl.config import ConfigError

PENDULUM_MAX_TORQUE = 2.0  # Pendulum-v1's action bound (Gymnasium docs): actions live in [-2, 2]


class Countdown(gym.Env):
    """Terminates on step ``end``; reward = step index + action[0]; observation = the step count."""

    def __init__(self, end: int = 5) -> None:
        self.end, self.t = end, 0
        self.observation_space = spaces.Box(0, 100, (1,), np.float32)
        self.action_space = spaces.Box(-1, 1, (2,), np.float32)
        self.seen: list[np.ndarray] = []  # actions received, in order

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.seen.append(np.array(action))
        self.t += 1
        return np.array([self.t], np.float32), self.t + float(action[0]), self.t >= self.end, False, {"t": self.t}


def test_chunk_matches_stepping_the_raw_env_by_hand() -> None:
    raw, chunked = gym.make("Pendulum-v1"), ActionChunk(gym.make("Pendulum-v1"), horizon=5)
    rng = np.random.default_rng(0)
    raw_obs, _ = raw.reset(seed=3)
    obs, _ = chunked.reset(seed=3)
    np.testing.assert_array_equal(obs, raw_obs)
    for _ in range(6):
        chunk = rng.uniform(-1.5, 1.5, size=(5, 1)).astype(np.float32)
        total = 0.0
        for a in chunk:
            raw_obs, r, _, _, _ = raw.step(a)
            total += r
        obs, reward, terminated, truncated, info = chunked.step(chunk)
        np.testing.assert_allclose(obs, raw_obs, rtol=0, atol=0)
        assert reward == pytest.approx(total, rel=1e-12)
        assert info["executed"] == 5 and info["step_rewards"].shape == (5,)
        assert not terminated and not truncated


def test_actions_are_clipped_to_the_bounds() -> None:
    raw, chunked = gym.make("Pendulum-v1"), ActionChunk(gym.make("Pendulum-v1"), horizon=3)
    raw.reset(seed=1)
    chunked.reset(seed=1)
    chunk = np.array([[5.0], [-7.0], [0.5]], np.float32)
    by_hand = [[PENDULUM_MAX_TORQUE], [-PENDULUM_MAX_TORQUE], [0.5]]  # clipped without the code under test
    rewards = [raw.step(np.array(a, np.float32))[1] for a in by_hand]
    _, reward, *_ = chunked.step(chunk)
    assert reward == pytest.approx(sum(rewards))
    # Pendulum clips torques itself too: what actually reaches the env is checked on Countdown
    counted = Countdown(end=10)
    ActionChunk(counted, horizon=2).step(np.array([[3.0, -3.0], [0.25, -0.5]], np.float32))
    np.testing.assert_array_equal(np.stack(counted.seen), [[1.0, -1.0], [0.25, -0.5]])
    unclipped = Countdown(end=10)
    ActionChunk(unclipped, horizon=1, clip=False).step(np.array([[3.0, -3.0]], np.float32))
    np.testing.assert_array_equal(unclipped.seen[0], [3.0, -3.0])


def test_chunk_stops_at_termination() -> None:
    env = ActionChunk(Countdown(end=3), horizon=4)
    env.reset(seed=0)
    chunk = np.full((4, 2), 0.5, np.float32)
    obs, reward, terminated, truncated, info = env.step(chunk)
    assert (info["executed"], terminated, truncated) == (3, True, False)
    assert reward == pytest.approx((1 + 0.5) + (2 + 0.5) + (3 + 0.5))  # steps 1..3, the 4th action never runs
    assert len(env.unwrapped.seen) == 3 and obs[0] == 3 and info["t"] == 3


def test_chunk_stops_at_truncation() -> None:
    """Pendulum-v1 is truncated at 200 steps: with horizon 7, the 29th chunk runs 200 - 28 * 7 = 4 actions."""
    raw, chunked = gym.make("Pendulum-v1"), ActionChunk(gym.make("Pendulum-v1"), horizon=7)
    raw.reset(seed=0)
    chunked.reset(seed=0)
    zeros = np.zeros((7, 1), np.float32)
    for _ in range(28):
        assert chunked.step(zeros)[3] is False
    raw_rewards = [raw.step(zeros[0])[1] for _ in range(200)]
    _, reward, terminated, truncated, info = chunked.step(zeros)
    assert (info["executed"], terminated, truncated) == (4, False, True)
    assert reward == pytest.approx(sum(raw_rewards[196:]))


def test_spaces_errors_and_env_checker() -> None:
    env = make_chunked("Pendulum-v1", horizon=3)
    assert env.action_space.shape == (3, 1)
    np.testing.assert_array_equal(env.action_space.high, np.full((3, 1), PENDULUM_MAX_TORQUE, np.float32))
    check_env(env, skip_render_check=True)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(2, 1\), expected \(3, 1\)"):
        env.step(np.zeros((2, 1), np.float32))
    with pytest.raises(ConfigError, match="horizon: action chunks need a flat Box"):
        ActionChunk(gym.make("CartPole-v1"), horizon=2)
    with pytest.raises(ConfigError, match="horizon: must be >= 1"):
        ActionChunk(gym.make("Pendulum-v1"), horizon=0)
