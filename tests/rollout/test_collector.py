"""Rollout collector and env pool: pools sized by the rollout batch, GRPO groups encoded once, multi-turn episodes that
end at different times, spares that never reach a trajectory, worker-process pools, exact per-env infos."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import envs
from mmrl.policies.base import Action, SamplingParams
from mmrl.policies.vlm import token_ids
from mmrl.rollout.collector import Collector
from mmrl.rollout.pool import EnvPool


class DriftingEnv(gym.Env):
    """Every instance shows a different image for the same seed (an env with its own hidden randomness)."""

    observation_space = gym.spaces.Dict({"text": gym.spaces.Text(64), "images": gym.spaces.Sequence(
        gym.spaces.Box(0, 255, (56, 56, 3), np.uint8), stack=False)})  # fmt: skip
    action_space = gym.spaces.Text(64)
    count = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        DriftingEnv.count += 1
        image = np.full((56, 56, 3), DriftingEnv.count % 256, np.uint8)
        return {"text": "What colour?", "images": (image,)}, {}

    def step(self, action):
        return {"text": "", "images": ()}, 0.0, True, False, {}


class CountdownEnv(gym.Env):
    """Episode length = seed % 4 + 1 steps; obs = (seed, t); reward = t; info carries mixed-type values."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = gym.spaces.Discrete(3)
    made = 0

    def __init__(self):
        CountdownEnv.made += 1

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.seed_, self.t = int(seed if seed is not None else -1), 0
        return np.array([self.seed_, 0], np.float32), {"start": self.seed_}

    def step(self, action):
        self.t += 1
        done = self.t >= self.seed_ % 4 + 1
        info = {"t": self.t, "value": 0.5 if self.t % 2 else 1, "image": np.zeros((self.t, 2))}
        return np.array([self.seed_, self.t], np.float32), float(self.t), done, False, info


class EchoPolicy:
    """Acts 0 and records the observation and the number of times it was called."""

    version = 7

    def __init__(self):
        self.calls = []

    def train(self, mode=True):
        return self

    def act(self, observations, params, states=None):
        self.calls.append(len(observations))
        return [Action(0, -1.0, np.asarray(o).tolist(), self.version, (s or 0) + 1) for o, s in zip(observations, states)]


@pytest.fixture
def counted(tiny_policy, monkeypatch):
    """Number of image-processor calls."""
    calls = []
    real = tiny_policy.encoder.process_image
    monkeypatch.setattr(tiny_policy.encoder, "process_image", lambda image: calls.append(1) or real(image))
    return calls


def test_pool_size_is_the_rollout_batch_whatever_the_number_of_episodes():
    CountdownEnv.made = 0
    pool = EnvPool(CountdownEnv, num_envs=3)
    policy = EchoPolicy()
    trajs = Collector(policy, pool).episodes(list(range(10)), group_size=2, params=SamplingParams())
    assert CountdownEnv.made == 3 and pool.num_envs == 3  # 20 episodes on 3 envs
    assert len(trajs) == 20 and max(policy.calls) <= 3
    for k, t in enumerate(trajs):  # in queue order; each episode is its seed's whole episode, nothing else
        seed = k // 2
        assert t.group_id == seed and t.info["start"] == seed
        assert [s.record for s in t.steps] == [[seed, i] for i in range(seed % 4 + 1)]
        assert [s.reward for s in t.steps] == [float(i + 1) for i in range(seed % 4 + 1)]
        assert t.steps[-1].terminated and t.ended and t.final_observation.tolist() == [seed, seed % 4 + 1]
        assert [s.version for s in t.steps] == [7] * len(t.steps)
        assert [s.info["t"] for s in t.steps] == list(range(1, len(t.steps) + 1))  # per-env infos, exactly
        assert [type(s.info["value"]) for s in t.steps] == [float if i % 2 == 0 else int for i in range(len(t))]
        assert t.steps[-1].info["image"].shape == (len(t), 2)
    pool.close()


def test_max_steps_truncates_and_states_carry_over():
    pool = EnvPool(CountdownEnv, num_envs=2)
    trajs = Collector(EchoPolicy(), pool, max_steps=2).episodes([3, 7, 1], 1, SamplingParams())
    assert [len(t) for t in trajs] == [2, 2, 2]  # seeds 3 and 7 would run 4 steps
    assert [t.steps[-1].truncated for t in trajs] == [True, True, False] and all(t.ended for t in trajs)
    assert trajs[2].steps[-1].terminated
    pool.close()


def test_async_pool_plays_the_same_episodes():
    sync, workers = EnvPool(CountdownEnv, 2), EnvPool(CountdownEnv, 2, mode="async")
    a = Collector(EchoPolicy(), sync).episodes([5, 6, 2], 2, SamplingParams())
    b = Collector(EchoPolicy(), workers).episodes([5, 6, 2], 2, SamplingParams())
    assert [[s.record for s in t.steps] for t in a] == [[s.record for s in t.steps] for t in b]
    assert [t.steps[-1].info["t"] for t in a] == [t.steps[-1].info["t"] for t in b]
    sync.close()
    workers.close()


def test_group_members_share_one_encoding_and_keep_their_own_trajectories(tiny_policy, counted):
    env_fn = lambda: envs.make("synthetic_vqa", task="count", image_size=56, rewards={"accuracy": 1.0})  # noqa: E731
    collector = Collector(tiny_policy, EnvPool(env_fn, num_envs=12), max_steps=1)
    seeds, G = [3, 11, 42], 4
    trajs = collector.episodes(seeds, G, SamplingParams(temperature=1.0, max_new_tokens=6))
    assert len(counted) == len(seeds)  # one image-processor call per group, not per sample
    probe = env_fn()
    for k, seed in enumerate(seeds):
        obs, _ = probe.reset(seed=seed)
        conv = tiny_policy.conversation()
        ids, vision = conv.add_user(obs["text"], list(obs["images"]))
        for t in trajs[k * G : (k + 1) * G]:
            turn = t.steps[0].record
            assert turn.prompt_ids == ids and t.group_id == k
            assert all((a.pixel_values == b.pixel_values).all() for a, b in zip(turn.vision, vision))
            seq, mask, _ = token_ids(t)
            assert seq == ids + turn.response_ids and sum(mask) == len(turn.response_ids)
            assert t.steps[0].action == tiny_policy.encoder.decode(turn.response_ids)
    # the samples of a group diverge after the shared prompt (sampling at temperature 1)
    assert len({tuple(t.steps[0].record.response_ids) for t in trajs[:G]}) > 1
    collector.close()


def test_members_with_different_observations_are_encoded_separately(tiny_policy, counted):
    collector = Collector(tiny_policy, EnvPool(DriftingEnv, num_envs=6))
    DriftingEnv.count = 0
    trajs = collector.episodes([0, 1], 3, SamplingParams(temperature=1.0, max_new_tokens=3))
    assert len(counted) == 6
    for i, t in enumerate(trajs):  # instance i's image has value i + 1
        record = t.steps[0].record
        assert int(record.images[0][0, 0, 0]) == i + 1
        _, vision = tiny_policy.conversation().add_user("What colour?", record.images)
        assert (record.vision[0].pixel_values == vision[0].pixel_values).all()
