"""The token-VLA family as the trainer sees it (``policy.kind: token_vla``): a VLM from ``model.*`` whose actions are
OpenVLA bin tokens (:mod:`mmrl.policies.token_vla.policy`), configured by ``policy.kwargs`` (:class:`TokenVLAConfig`).

The env needs a ``Box`` action space with finite bounds, ``[A]`` (one action per step) or ``[n, A]`` (a chunk, e.g.
the ``chunked`` env): each step is ``n * A`` tokens. Behaviour cloning (``warmup.steps > 0``) reads the demonstration
``.npz`` of the flow family (:func:`mmrl.policies.flow.family.load_demos`: ``actions [N, H', A]`` or ``[N, A]`` in env
units, ``H' >= n``, and one ``obs.<key>`` array per array key of the env's observation, ``obs`` for an array
observation) and minimises the cross-entropy of the demonstrated actions' bin tokens under the policy's restricted
distribution (the one it samples from). Text fields of the observation that a demo file cannot hold (ManiSkill's
``instruction``) are taken from the env's first observation.

Example:
    >>> cfg = load_config("configs/maniskill_token_vla_grpo.yaml")
    >>> policy = FAMILY.build(cfg, pool.single_observation_space, pool.single_action_space)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from mmrl.config import ConfigError, RunConfig, from_dict
from mmrl.policies.base import Family
from mmrl.policies.flow.family import load_demos
from mmrl.policies.flow.policy import action_layout
from mmrl.policies.token_vla.bins import ActionBins
from mmrl.policies.token_vla.policy import TokenVLACritic, TokenVLAPolicy
from mmrl.policies.vlm import family as vlm_family
from mmrl.policies.vlm.warmup import nll_step


@dataclass
class TokenVLAConfig:
    n_bins: int = 256  # uniform bins per action dim over the env's bounds, each one vocabulary token (OpenVLA: 256, https://arxiv.org/abs/2406.09246)
    instruction: str = ""  # the task sentence when the observation carries none (its `instruction` / `text` wins)
    state_decimals: int = 2  # decimals of the proprio / state numbers written into the prompt
    demos: str = ""  # warm-up demonstrations: a local .npz as the flow family's (module docstring); "" = none


def config(cfg: RunConfig) -> TokenVLAConfig:
    """``policy.kwargs`` checked into :class:`TokenVLAConfig` (one-line errors naming the key)."""
    c = from_dict(TokenVLAConfig, dict(cfg.policy.kwargs), prefix="policy.kwargs")
    if c.n_bins < 2:
        raise ConfigError(f"policy.kwargs.n_bins: expected an integer >= 2, got {c.n_bins}")
    if c.state_decimals < 0:
        raise ConfigError(f"policy.kwargs.state_decimals: expected an integer >= 0, got {c.state_decimals}")
    return c


def build(cfg: RunConfig, observation_space: Any, action_space: Any, path: Path | None = None) -> TokenVLAPolicy:
    """The VLM of ``model.*`` (or the saved policy at ``path``) acting in bin tokens over the env's action bounds."""
    c = config(cfg)
    try:
        n_actions, _, single, low, high = action_layout(action_space, 0)
    except ValueError as e:
        raise ConfigError(f"policy.kind: token_vla {e}") from None
    if low is None:
        raise ConfigError(f"policy.kind: token_vla bins the action bounds, but {action_space} has infinite ones")
    vlm = vlm_family.build(cfg, observation_space, action_space, path)
    policy = TokenVLAPolicy.from_vlm(vlm, ActionBins(low, high, c.n_bins), n_actions, single, c.instruction,
                                     c.state_decimals)  # fmt: skip
    policy.demo_keys = demo_keys(observation_space)
    return policy


def demo_keys(observation_space: Any) -> list[str]:
    """The observation keys a demo file holds (``obs.<key>``): a ``Dict`` space's array keys, ``[""]`` (``obs``) for
    an array space."""
    if isinstance(observation_space, gym.spaces.Dict):
        return [k for k, s in observation_space.spaces.items() if isinstance(s, gym.spaces.Box)]
    return [""]


def critic(cfg: RunConfig, policy: TokenVLAPolicy) -> TokenVLACritic:
    """A copy of the policy's backbone with a zero value head; it also values cut episodes' final observations."""
    return TokenVLACritic(policy)


def env_text(make_env: Callable[[], Any], seed: int) -> dict[str, Any]:
    """The string fields of the env's first observation (an instruction), which demo files do not hold."""
    env = make_env()
    try:
        obs, _ = env.reset(seed=seed)
    finally:
        env.close()
    return {k: v for k, v in obs.items() if isinstance(v, str)} if isinstance(obs, dict) else {}


def demo_rows(policy: TokenVLAPolicy, observations: list[Any], actions: np.ndarray,
              text: dict[str, Any]) -> list[tuple[list[int], list[int], list[Any]]]:  # fmt: skip
    """``(ids, loss mask, vision)`` per demonstration: the prompt the policy would act on, then the action's bin tokens
    (the only tokens trained)."""
    try:
        targets = policy.action_tokens(actions).tolist()  # [N, n*A]
    except ValueError as e:
        raise ConfigError(f"policy.kwargs.demos: {e}") from None
    rows = []
    for obs, target in zip(observations, targets):
        ids, vision = policy.encode_prompt({**text, **obs} if isinstance(obs, dict) else obs)
        rows.append((ids + target, [0] * len(ids) + [1] * len(target), vision))
    return rows


def warmup(cfg: RunConfig, policy: TokenVLAPolicy, critic: TokenVLACritic | None, make_env: Callable[[], Any],
           progress: Any) -> dict[str, float]:  # fmt: skip
    """Behaviour cloning on ``policy.kwargs.demos`` for ``warmup.steps`` AdamW steps (``warmup.batch_size`` rows
    drawn with replacement, ``warmup.lr``, the RL gradient clip); the critic's backbone then starts from the result.
    Returns ``{"warmup/bc_loss": last loss}`` (mean cross-entropy per action token)."""
    c, wc = config(cfg), cfg.warmup
    if not c.demos:
        raise ConfigError("policy.kwargs.demos: warmup.steps > 0 needs a demonstration file to clone")
    observations, actions = load_demos(c.demos, policy.demo_keys)
    rows = demo_rows(policy, observations, actions, env_text(make_env, cfg.seed))
    opt = torch.optim.AdamW(policy.parameters(), lr=wc.lr)
    rng = np.random.default_rng([cfg.seed, 1])
    loss_val = float("nan")
    policy.train(True)
    with progress.task("warm-up (BC)", wc.steps) as advance:
        for _ in range(wc.steps):
            batch = [rows[i] for i in rng.integers(0, len(rows), size=wc.batch_size)]
            loss_val = nll_step(policy, batch, opt, cfg.algo.max_grad_norm)
            advance(f"bc loss {loss_val:.3f}")
    if critic is not None:  # the critic starts from the weights RL starts from
        critic.sync_backbone()
    return {"warmup/bc_loss": loss_val}


FAMILY = Family(build=build, critic=critic, warmup=warmup)
