"""The diffusion family as the trainer sees it (``policy.kind: diffusion``): DDPM / DDIM action-chunk policies with
DPPO's per-denoising-step log-probs, configured by ``policy.kwargs`` (:class:`DiffusionConfig`). Policy, critic and
behaviour-cloning warm-up are the flow family's (:mod:`mmrl.policies.flow.family`), around a
:class:`~mmrl.policies.diffusion.sampler.DiffusionSampler`.

Example:
    >>> cfg = load_config(None, ["policy.kind=diffusion", "policy.kwargs={sampler: ddim, steps: 20, ddim_steps: 5}"])
    >>> policy = FAMILY.build(cfg, env.observation_space, env.action_space)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmrl.config import ConfigError, RunConfig, from_dict
from mmrl.policies.base import Family
from mmrl.policies.diffusion.sampler import SAMPLERS, DiffusionSampler
from mmrl.policies.flow.family import build_chunk_policy, check_common, critic, warmup
from mmrl.policies.flow.policy import ChunkPolicy


@dataclass
class DiffusionConfig:
    chunk: int = 1  # H: actions per chunk the denoiser predicts
    n_exec: int = 0  # executed actions per chunk, the only ones in the log-prob (0 = the env's: Box [A] 1, [n, A] n)
    action_dim: int = 0  # A: the denoiser's action dims (0 = the env's); dims past the env's are padding it never sees
    steps: int = 10  # K: diffusion steps of the (cosine) noise schedule; DDPM samples all of them
    sampler: str = "ddpm"  # ddpm | ddim (DPPO, https://arxiv.org/abs/2409.00588)
    ddim_steps: int = 0  # ddim: denoising steps actually taken, dividing `steps` (0 = all K)
    eta: float = 1.0  # ddim: stochasticity (0 = deterministic DDIM mean; the std is still clipped at min_std)
    min_std: float = 0.1  # lower clip of every step's std (DPPO's 0.1): the last steps stay stochastic
    clip_x0: float = 1.0  # clip the clean-action estimate to [-clip_x0, clip_x0] at each step (DPPO's 1.0; 0 = off)
    granularity: str = (
        "step"  # one log-prob position is: step (DPPO: a ratio per denoising step) | chunk | action | dim
    )
    hidden: list[int] = field(default_factory=lambda: [128, 128])  # hidden sizes of the noise predictor (SiLU MLP)
    encoder_hidden: list[int] = field(default_factory=lambda: [64, 64])  # hidden sizes of the state-vector encoder
    feature_dim: int = 64  # observation feature width (encoder output, the denoiser's conditioning)
    critic_hidden: list[int] = field(default_factory=lambda: [64, 64])  # critic's value head (on its own encoder)
    demos: str = ""  # warm-up demonstrations: a local .npz (mmrl.policies.flow.family); "" = none


def config(cfg: RunConfig) -> DiffusionConfig:
    """``policy.kwargs`` checked into :class:`DiffusionConfig` (one-line errors naming the key)."""
    dc = from_dict(DiffusionConfig, dict(cfg.policy.kwargs), prefix="policy.kwargs")
    check_common(dc)
    if dc.sampler not in SAMPLERS:
        raise ConfigError(f"policy.kwargs.sampler: unknown '{dc.sampler}' (use one of {', '.join(SAMPLERS)})")
    if dc.ddim_steps < 0 or (dc.ddim_steps and dc.steps % dc.ddim_steps):
        raise ConfigError(f"policy.kwargs.ddim_steps: expected 0 or a divisor of steps={dc.steps}, got {dc.ddim_steps}")
    if not dc.min_std > 0:
        raise ConfigError(f"policy.kwargs.min_std: expected a number > 0, got {dc.min_std}")
    for name in ("eta", "clip_x0"):
        if getattr(dc, name) < 0:
            raise ConfigError(f"policy.kwargs.{name}: expected a number >= 0, got {getattr(dc, name)}")
    return dc


def build(cfg: RunConfig, observation_space: Any, action_space: Any, path: Path | None = None) -> ChunkPolicy:
    """A diffusion policy for the env's spaces (weights from ``path`` when given)."""
    dc = config(cfg)
    return build_chunk_policy(dc, observation_space, action_space, lambda e: DiffusionSampler.from_config(e, dc), path)


FAMILY = Family(build=build, critic=critic, warmup=warmup)
