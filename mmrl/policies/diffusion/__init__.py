"""Diffusion action-chunk policies (DDPM / DDIM with DPPO's per-step Gaussian log-probs) and their family
(``policy.kind: diffusion``); the chunk policy, critic and warm-up are shared with :mod:`mmrl.policies.flow`."""

from mmrl.policies.diffusion.sampler import SAMPLERS, DiffusionSampler, cosine_alpha_bar

__all__ = ["SAMPLERS", "DiffusionSampler", "cosine_alpha_bar"]
