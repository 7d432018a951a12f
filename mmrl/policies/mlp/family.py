"""The MLP family as the trainer sees it (``policy.kind: mlp``), configured by ``policy.kwargs`` (:class:`MLPConfig`).

Example:
    >>> cfg = load_config("configs/cartpole_ppo.yaml")
    >>> policy = FAMILY.build(cfg, env.observation_space, env.action_space)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmrl.config import ConfigError, RunConfig, from_dict
from mmrl.policies.base import Family
from mmrl.policies.mlp.policy import CategoricalMLPPolicy, GaussianMLPPolicy, MLPCritic, mlp_policy_for


@dataclass
class MLPConfig:
    hidden: list[int] = field(default_factory=lambda: [64, 64])  # hidden layer sizes of the actor and of the critic
    log_std_init: float = -0.5  # Gaussian heads: initial log-std of every action dim (CleanRL: 0)
    normalize_obs: bool = False  # running mean/std observation normalisation, clipped to [-10, 10] (CleanRL's continuous PPO)


def config(cfg: RunConfig) -> MLPConfig:
    """``policy.kwargs`` checked into :class:`MLPConfig` (one-line errors naming the key)."""
    mc = from_dict(MLPConfig, dict(cfg.policy.kwargs), prefix="policy.kwargs")
    if not mc.hidden or min(mc.hidden) < 1:
        raise ConfigError(f"policy.kwargs.hidden: expected positive layer sizes, got {mc.hidden}")
    return mc


def build(cfg: RunConfig, observation_space: Any, action_space: Any,
          path: Path | None = None) -> GaussianMLPPolicy | CategoricalMLPPolicy:  # fmt: skip
    """A policy for the env's spaces (weights and observation statistics from ``path`` when given)."""
    mc = config(cfg)
    try:
        policy = mlp_policy_for(observation_space, action_space, mc.hidden, mc.log_std_init, mc.normalize_obs)
    except TypeError as e:
        raise ConfigError(f"policy.kind: mlp: {e}") from None
    if path is not None:
        policy.load(path)
    return policy


def critic(cfg: RunConfig, policy: GaussianMLPPolicy | CategoricalMLPPolicy) -> MLPCritic:
    """A value MLP of the same hidden sizes on the policy's (normalised) observations."""
    return MLPCritic(int(np.prod(policy.config["obs_dim"])), config(cfg).hidden).to(policy.device)


FAMILY = Family(build=build, critic=critic)
