"""Observation encoders: the inputs built from raw observations (state vectors, uint8 images, dicts) against numpy,
feature shapes, one-line errors for unsupported spaces, and a flow policy acting on ``{"state", "rgb", ...}``
observations whose recomputed log-probs equal the rollout's."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from mmrl.config import load_config
from mmrl.policies.base import SamplingParams
from mmrl.policies.encoders import encoder_for
from mmrl.policies.flow.family import FAMILY
from mmrl.types import Step, Trajectory

DICT_SPACE = gym.spaces.Dict({
    "state": gym.spaces.Box(-1, 1, (4,), np.float32),
    "proprio": gym.spaces.Box(-1, 1, (2, 3), np.float32),
    "rgb": gym.spaces.Box(0, 255, (24, 32, 3), np.uint8),
    "instruction": gym.spaces.Text(64),
})  # fmt: skip


def test_state_and_image_encoders():
    torch.manual_seed(0)
    enc = encoder_for(gym.spaces.Box(-1, 1, (2, 3)), hidden=[16], feature_dim=8)
    obs = [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones((2, 3), np.float32)]
    inputs = enc.inputs(obs)
    np.testing.assert_array_equal(inputs["state"].numpy(), np.stack([o.reshape(-1) for o in obs]))
    assert enc(inputs).shape == (2, 8)
    img = encoder_for(gym.spaces.Box(0, 255, (16, 16, 3), np.uint8), feature_dim=8)
    frames = [np.zeros((16, 16, 3), np.uint8), np.full((16, 16, 3), 255, np.uint8)]
    x = img.inputs(frames)
    assert x["rgb"].dtype == torch.uint8 and x["rgb"].shape == (2, 16, 16, 3)
    feats = img(x)
    assert feats.shape == (2, 8) and not torch.allclose(feats[0], feats[1])  # the pixels reach the features


def test_dict_encoder_concatenates_vectors_in_key_order_and_ignores_text():
    enc = encoder_for(DICT_SPACE, hidden=[16], feature_dim=8)
    assert enc.state_keys == ["proprio", "state"] and enc.image_key == "rgb"
    rng = np.random.default_rng(0)
    obs = [DICT_SPACE.sample() for _ in range(3)]
    for o in obs:
        o["rgb"] = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    inputs = enc.inputs(obs)
    expected = np.stack([np.concatenate([o["proprio"].reshape(-1), o["state"]]) for o in obs])
    np.testing.assert_array_equal(inputs["state"].numpy(), expected)
    np.testing.assert_array_equal(inputs["rgb"].numpy(), np.stack([o["rgb"] for o in obs]))
    assert set(inputs) == {"state", "rgb"} and enc(inputs).shape == (3, 8)


IMAGE = gym.spaces.Box(0, 255, (8, 8, 3), np.uint8)


@pytest.mark.parametrize("space", [
    gym.spaces.Discrete(4),
    gym.spaces.Dict({"a": IMAGE, "b": IMAGE}),
    gym.spaces.Dict({"instruction": gym.spaces.Text(8)}),
])  # fmt: skip
def test_unsupported_spaces_are_type_errors(space):
    with pytest.raises(TypeError, match="observation"):
        encoder_for(space)


def test_flow_policy_on_image_observations_recomputes_its_logps():
    cfg = load_config(None, ["policy.kind=flow", "policy.kwargs.chunk=2", "policy.kwargs.steps=3",
                             "policy.kwargs.hidden=[32]", "policy.kwargs.feature_dim=8",
                             "policy.kwargs.granularity=action"])  # fmt: skip
    torch.manual_seed(0)
    policy = FAMILY.build(cfg, DICT_SPACE, gym.spaces.Box(-1, 1, (3,)))
    steps = []
    for _ in range(3):
        o = DICT_SPACE.sample()
        [a] = policy.act([o], SamplingParams())
        steps.append(Step(o, a.env_action, a.logp, a.record, reward=1.0))
    batch = policy.learner_view(policy.collate([Trajectory(steps, final_observation=o)]))
    assert batch.model_inputs["obs.rgb"].shape == (3, 1, 24, 32, 3)
    logp, _, _ = policy.log_prob(batch)
    torch.testing.assert_close(logp.detach(), batch.old_logp, atol=1e-5, rtol=1e-5)
    logp.sum().backward()
    assert policy.model.encoder.rgb.convs[0].weight.grad.abs().sum() > 0
