"""The VLM family as the trainer sees it (``policy.kind: vlm``): build from ``model.*``, the critic, the warm-up, VPPO.

Example:
    >>> from mmrl.policies import base
    >>> policy = base.build(cfg, pool.single_observation_space, pool.single_action_space)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmrl.config import RunConfig
from mmrl.policies.base import Family
from mmrl.policies.vlm.critic import VLMCritic
from mmrl.policies.vlm.policy import VLMPolicy
from mmrl.policies.vlm.warmup import warmup
from mmrl.types import Batch, Trajectory


def build(cfg: RunConfig, observation_space: Any, action_space: Any, path: Path | None = None) -> VLMPolicy:
    """Load ``path`` (a saved policy) or ``model.path`` (building the offline tiny model there first when
    ``model.build_tiny``). The env's spaces are not needed: the model reads text and images of any size."""
    from mmrl.models import load_policy

    m = cfg.model
    if path is None and m.build_tiny:
        from mmrl.models.tiny import build_tiny_qwen2_5_vl

        build_tiny_qwen2_5_vl(m.path, preset=m.tiny_preset, seed=cfg.seed)
    policy = load_policy(path or m.path, m.dtype, m.device, m.min_pixels, m.max_pixels, temperature=cfg.rollout.temperature)
    policy.history_images, policy.max_context_tokens = m.history_images, m.max_context_tokens
    return policy


def critic(cfg: RunConfig, policy: VLMPolicy) -> VLMCritic:
    """A copy of the policy's backbone with a zero value head."""
    return VLMCritic(policy)


def token_weights(cfg: RunConfig, policy: VLMPolicy, trajectories: Sequence[Trajectory], batch: Batch,
                  step: int) -> torch.Tensor | None:  # fmt: skip
    """VPPO (``algo.vppo_top_frac > 0``): gradient only on each response's most image-dependent tokens, rows scaled by
    their dependency; the patch draws are seeded by ``(seed, step)``."""
    a = cfg.algo
    if a.vppo_top_frac <= 0:
        return None
    from mmrl.policies.vlm.vppo import visual_dependency, vppo_weights

    rng = np.random.default_rng([cfg.seed, 5, step])
    patch = int(getattr(policy.encoder.image_processor, "patch_size", 14))
    dep = visual_dependency(policy, trajectories, rng, patch=patch, p=a.vppo_mask_prob)
    return vppo_weights(dep, batch.mask, top_frac=a.vppo_top_frac).cpu()


FAMILY = Family(build=build, critic=critic, warmup=warmup, token_weights=token_weights, tokens=True)
