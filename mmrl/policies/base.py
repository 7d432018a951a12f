"""The contracts every policy family implements, and the registry that maps ``policy.kind`` to a family.

A family is a folder (``mmrl/policies/vlm/``, ``mmrl/policies/mlp/``) with a module that provides a :class:`Family`:
how to build its policy (and, for PPO with a critic, its value model) for an env, and optional hooks (a supervised
warm-up, per-position weights such as VPPO's). The trainer, the collector and the learner only ever talk to these
contracts, so a new family is a new folder plus one :func:`register` call, and nothing else changes.

Sampling side: ``act(observations, params, states) -> [Action]``; each :class:`Action` carries what the env receives,
its behaviour log-prob, the policy version, a private ``record`` that the same family's ``collate`` turns back into
learner inputs, and a ``state`` the collector hands back on the episode's next step (a VLM's conversation so far).
Trainable side: ``parameters()``, ``log_prob(batch, with_entropy) -> (logp [B, L], mask [B, L], entropy [B, L] | None)``
with grad. The critic is a separate object passed to the learner explicitly.

Example:
    >>> from mmrl.policies import base
    >>> sorted(base.names())
    ['diffusion', 'flow', 'mlp', 'pi0', 'token_vla', 'vlm']
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from mmrl.config import ConfigError, suggest

if TYPE_CHECKING:  # pragma: no cover
    import gymnasium as gym
    import torch

    from mmrl.config import RunConfig
    from mmrl.types import Batch, Trajectory


@dataclass
class SamplingParams:
    """How to act: the same fields for every family (each uses what applies to it)."""

    temperature: float = 1.0  # 0 = greedy / the distribution's mode (evaluation)
    top_p: float = 1.0  # nucleus threshold (1.0 = off; token policies)
    top_k: int = 0  # top-k (0 = off; token policies)
    max_new_tokens: int = 32  # generation budget per turn (token policies)


@dataclass
class Action:
    """One sampled action and everything the learner will need about it."""

    env_action: Any  # what the env's step() receives: text, an action array, a chunk [H, A]
    logp: float  # behaviour log-prob of the action (summed over its tokens / dims)
    record: Any  # family-private record of the step; the family's collate turns records back into learner inputs
    version: int = 0  # policy version (optimizer steps) that produced it
    state: Any = None  # carried to the episode's next act() call (None at an episode's first step)
    stop: bool = False  # the policy cannot act on this observation (a VLM whose context is full): the collector ends the episode before it, as truncated


@runtime_checkable
class Policy(Protocol):
    """What the collector, the learner and the trainer call on a policy of any family."""

    version: int  # optimizer steps taken; stamped on every action

    def act(self, observations: Sequence[Any], params: SamplingParams, states: Sequence[Any] | None = None) -> list[Action]:
        """One action per observation (the observations of the pool's live envs, sampled together)."""

    def collate(self, trajectories: Sequence[Trajectory]) -> Batch:
        """Trajectories as learner inputs: ``model_inputs``, ``mask [B, L]``, ``old_logp [B, L]``, ``step_rewards
        [B, L]`` (each step's reward on its last position), ``rewards [B]``, ``group_ids [B]``, ``bootstrap_mask [B]``."""

    def learner_view(self, batch: Batch) -> Batch:
        """The batch the learner minibatches over (the same batch, or each position a row of its own:
        :meth:`mmrl.types.Batch.positions_as_rows`)."""

    def parameters(self) -> Iterable[torch.nn.Parameter]:
        """The trainable parameters."""

    def log_prob(self, batch: Batch, with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(logp [B, L], mask [B, L], entropy [B, L] or None)`` with grad; the entropy only when asked."""

    def train(self, mode: bool = True) -> Any:
        """Training (dropout on) or evaluation mode, as ``torch.nn.Module.train``."""

    def save(self, path: Path) -> None:
        """Write the policy to the directory ``path`` so that its family's ``build(..., path)`` loads it back."""


@runtime_checkable
class Critic(Protocol):
    """A value model for PPO with a critic; separate from the policy, given to the learner explicitly."""

    def parameters(self) -> Iterable[torch.nn.Parameter]:
        """The trainable parameters (their own optimizer group at ``algo.critic_lr``)."""

    def value(self, batch: Batch) -> torch.Tensor:
        """``V`` at every log-prob position, ``[B, L]``, with grad."""

    def final_value(self, batch: Batch) -> torch.Tensor:
        """``V`` of the observation after each row's last position, ``[B]`` (bootstraps rows with ``bootstrap_mask``)."""

    def train(self, mode: bool = True) -> Any:
        """As ``torch.nn.Module.train``."""

    def state_dict(self) -> dict[str, Any]:
        """Tensors to checkpoint."""

    def load_state_dict(self, state: dict[str, Any]) -> Any:
        """Restore from :meth:`state_dict`."""


@dataclass
class Family:
    """One policy family: how to build its policy and critic, and its optional hooks."""

    build: Callable[..., Policy]  # build(cfg, observation_space, action_space, path=None) -> Policy; path: a saved policy
    critic: Callable[..., Critic] | None = None  # critic(cfg, policy) -> Critic (PPO with a value model)
    warmup: Callable[..., dict[str, float]] | None = None  # warmup(cfg, policy, critic, make_env, progress) -> stats
    token_weights: Callable[..., torch.Tensor | None] | None = None  # token_weights(cfg, policy, trajectories, batch, step)
    tokens: bool = False  # the policy generates text (rollout.max_new_tokens, overlong shaping and top-p/top-k apply)


# ------------------------------------------------------------------------------------------------------------ registry
_FAMILIES: dict[str, Family | str] = {
    "vlm": "mmrl.policies.vlm.family:FAMILY",  # lazy "module:attr": importing mmrl.policies imports no model code
    "mlp": "mmrl.policies.mlp.family:FAMILY",
    "flow": "mmrl.policies.flow.family:FAMILY",  # flow-matching action chunks (Flow-Noise / Flow-SDE)
    "diffusion": "mmrl.policies.diffusion.family:FAMILY",  # DDPM / DDIM action chunks (DPPO)
    "pi0": "mmrl.policies.pi0.family:FAMILY",  # pi0-style VLA: a Qwen2.5-VL prefix conditioning the flow action expert
    "token_vla": "mmrl.policies.token_vla.family:FAMILY",  # OpenVLA-style actions as VLM bin tokens
}


def register(kind: str, family: Family | str) -> None:
    """Register ``family`` (a :class:`Family` or a lazy ``"module:attr"``) as ``policy.kind: <kind>``."""
    _FAMILIES[kind] = family


def names() -> list[str]:
    return sorted(_FAMILIES)


def get(kind: str) -> Family:
    """The family registered as ``kind``; an unknown kind is a one-line :class:`ConfigError`."""
    if kind not in _FAMILIES:
        raise ConfigError(f"policy.kind: unknown policy family '{kind}'{suggest(kind, names())}")
    entry = _FAMILIES[kind]
    if isinstance(entry, str):
        module, attr = entry.split(":")
        entry = _FAMILIES[kind] = getattr(importlib.import_module(module), attr)
    return entry


def build(cfg: RunConfig, observation_space: gym.Space, action_space: gym.Space, path: Path | None = None) -> Policy:
    """Build ``cfg.policy.kind``'s policy for an env's spaces (from a saved policy at ``path`` when given)."""
    return get(cfg.policy.kind).build(cfg, observation_space, action_space, path)
