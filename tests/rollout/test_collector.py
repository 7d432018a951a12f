"""Rollout collector: a GRPO group's shared observation is encoded once, and every trajectory is still its own."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import envs
from mmrl.policies.vlm import SamplingParams
from mmrl.rollout.collector import Collector


class DriftingEnv(gym.Env):
    """Every instance shows a different image for the same seed (an env with its own hidden randomness)."""

    count = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        DriftingEnv.count += 1
        image = np.full((56, 56, 3), DriftingEnv.count % 256, np.uint8)
        return {"text": "What colour?", "images": (image,)}, {}

    def step(self, action):
        return {"text": "", "images": ()}, 0.0, True, False, {}


@pytest.fixture
def counted(tiny_policy, monkeypatch):
    """Number of image-processor calls."""
    calls = []
    real = tiny_policy.encoder.process_image
    monkeypatch.setattr(tiny_policy.encoder, "process_image", lambda image: calls.append(1) or real(image))
    return calls


def fresh_prompt(policy, obs):
    conv = policy.conversation()
    ids, vision = conv.add_user(obs["text"], list(obs["images"]))
    return ids, vision


def test_group_members_share_one_encoding_and_keep_their_own_trajectories(tiny_policy, counted):
    env_fn = lambda: envs.make("synthetic_vqa", task="count", image_size=56, rewards={"accuracy": 1.0})  # noqa: E731
    collector = Collector(tiny_policy, env_fn, max_turns=1, batch_size=64)
    seeds, G = [3, 11, 42], 4
    trajs = collector.collect(seeds, G, SamplingParams(temperature=1.0, max_new_tokens=6))
    assert len(counted) == len(seeds)  # one image-processor call per group, not per sample
    probe = env_fn()
    for k, seed in enumerate(seeds):
        obs, _ = probe.reset(seed=seed)
        ids, vision = fresh_prompt(tiny_policy, obs)
        for t in trajs[k * G : (k + 1) * G]:
            turn = t.turns[0]
            assert turn.prompt_ids == ids and t.group_id == k
            assert all((a.pixel_values == b.pixel_values).all() for a, b in zip(turn.extras["vision"], vision))
            seq, mask, _ = t.token_ids()
            assert seq == ids + turn.response_ids and sum(mask) == len(turn.response_ids)
    # the samples of a group diverge after the shared prompt (sampling at temperature 1)
    assert len({tuple(t.turns[0].response_ids) for t in trajs[:G]}) > 1


def test_members_with_different_observations_are_encoded_separately(tiny_policy, counted):
    collector = Collector(tiny_policy, DriftingEnv, max_turns=1, batch_size=64)
    DriftingEnv.count = 0
    trajs = collector.collect([0, 1], 3, SamplingParams(temperature=1.0, max_new_tokens=3))
    assert len(counted) == 6
    for i, t in enumerate(trajs):  # instance i's image has value i + 1
        assert int(t.turns[0].images[0][0, 0, 0]) == i + 1
        _, vision = fresh_prompt(tiny_policy, {"text": "What colour?", "images": t.turns[0].images})
        assert (t.turns[0].extras["vision"][0].pixel_values == vision[0].pixel_values).all()
