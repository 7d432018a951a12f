"""Both built-in families satisfy the contracts of mmrl.policies.base, and the registry finds them by kind."""

from __future__ import annotations

import gymnasium as gym
import pytest

from mmrl.config import ConfigError, load_config
from mmrl.policies import base


def test_registry_names_and_unknown_kind():
    assert {"vlm", "mlp", "flow", "diffusion"} <= set(base.names())
    with pytest.raises(ConfigError, match="policy.kind: unknown policy family 'mpl' \\(did you mean 'mlp'\\?\\)"):
        base.get("mpl")


def test_mlp_family_policy_and_critic_meet_the_contracts(tmp_path):
    cfg = load_config(None, ["policy.kind=mlp", "policy.kwargs={hidden: [8]}"])
    env = gym.make("Pendulum-v1")
    policy = base.build(cfg, env.observation_space, env.action_space)
    assert isinstance(policy, base.Policy) and isinstance(base.get("mlp").critic(cfg, policy), base.Critic)
    with pytest.raises(ConfigError, match="policy.kwargs.hiden"):
        base.build(load_config(None, ["policy.kind=mlp", "policy.kwargs={hiden: [8]}"]), env.observation_space,
                   env.action_space)  # fmt: skip


def test_vlm_family_policy_and_critic_meet_the_contracts(tiny_policy):
    from mmrl.policies.vlm import VLMCritic

    assert isinstance(tiny_policy, base.Policy) and isinstance(VLMCritic(tiny_policy), base.Critic)
