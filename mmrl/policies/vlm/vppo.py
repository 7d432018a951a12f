"""VPPO token perception: per-token visual dependency and the token weights it induces.

VPPO ("Spotlight on Token Perception for Multimodal Reinforcement Learning", https://arxiv.org/abs/2510.09285) measures
how much each generated token depends on the image: the response is re-scored with the image perturbed (random
``patch``-px patches blackened with probability ``p``) and the per-token dependency is the k3 KL estimate between the
log-probs of the sampled token under the original and the perturbed image, clamped to ``[0, clamp]``. Only the most
dependent tokens are trained, and each trajectory is scaled by its (normalised) mean dependency.

The weights returned by :func:`vppo_weights` plug into the learner's existing ``Batch.token_weights`` hook ``[B, L]``.
Because a non-negative per-row factor ``s`` commutes with the PPO clip (``min(r sA, clip(r) sA) = s min(rA, clip(r)A)``),
multiplying a row's token weights by ``s`` is the same as scaling that trajectory's advantage by ``s``.

Example:
    >>> rng = np.random.default_rng(0)
    >>> dep = visual_dependency(policy, trajectories, rng)            # [B, L], 0 outside the mask
    >>> batch = policy.collate(trajectories)
    >>> batch.token_weights = vppo_weights(dep, batch.mask, top_frac=0.2)   # [B, L]
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from mmrl.policies.vlm.chat import to_pil
from mmrl.policies.vlm.policy import turns

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from mmrl.types import Trajectory


def perturb_image(image: np.ndarray, patch: int = 14, p: float = 0.5, *, rng: np.random.Generator) -> np.ndarray:
    """Blacken random grid-aligned ``patch`` x ``patch`` patches, each independently with probability ``p``.

    The grid starts at pixel (0, 0); edge patches of images whose sides are not multiples of ``patch`` are smaller and
    are drawn like any other. One uniform draw per patch, in row-major order, from ``rng``.

    Args:
        image: RGB uint8 array ``[H, W, 3]``.
        patch: patch side in pixels (VPPO: 14, the ViT patch of Qwen-family VLMs).
        p: probability that a patch is blackened, in ``[0, 1]``.
        rng: the random generator (keyword only).
    Returns:
        a new ``[H, W, 3]`` uint8 array; the input is not modified.
    """
    if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3):
        got = f"dtype {image.dtype} shape {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"image must be an RGB uint8 array [H, W, 3], got {got}")
    if not isinstance(patch, (int, np.integer)) or isinstance(patch, bool) or patch < 1:
        raise ValueError(f"patch must be a positive int, got {patch!r}")
    if not (isinstance(p, (int, float, np.floating)) and 0.0 <= float(p) <= 1.0):
        raise ValueError(f"p must be a probability in [0, 1], got {p!r}")
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    h, w = image.shape[:2]
    gh, gw = math.ceil(h / patch), math.ceil(w / patch)
    drop = rng.random((gh, gw)) < float(p)  # [gh, gw]
    pixel_drop = np.repeat(np.repeat(drop, patch, axis=0), patch, axis=1)[:h, :w]  # [H, W]
    out = image.copy()
    out[pixel_drop] = 0
    return out


def visual_dependency(
    policy: Any,
    trajectories: list[Trajectory],
    rng: np.random.Generator,
    patch: int = 14,
    p: float = 0.5,
    clamp: float = 10.0,
) -> torch.Tensor:
    """Per-token visual dependency ``d_t = clamp(k3(logp_t(original) vs logp_t(perturbed)), 0, clamp)``.

    Inputs come from ``policy.collate(trajectories)``; the perturbed inputs reuse the same token ids and replace every
    processed image (``turn.extras["vision"]``) with ``policy.encoder.process_image(perturb_image(turn.images[i]))``.
    Perturbation keeps the image size, so each image's grid (hence its pad count) is unchanged; a mismatch raises.
    Images are perturbed in trajectory, turn, image order, so results are reproducible for a seeded ``rng``. The k3
    estimate is :func:`mmrl.algos.kl.kl` with ``logp = logp_original`` and ``ref_logp = logp_perturbed``.

    Args:
        policy: a :class:`mmrl.policies.vlm.VLMPolicy` (``collate``, ``log_prob``, ``encoder.process_image``).
        trajectories: the episodes to score (their images must be RGB uint8 arrays or PIL images).
        rng: random generator for the patch draws.
        patch: patch side in pixels.
        p: blackening probability per patch (``p = 0`` gives a dependency of exactly 0).
        clamp: upper bound of the dependency.
    Returns:
        ``[B, L]`` float32 dependency on the policy's device, ``>= 0``, exactly 0 outside ``mask`` (``L = T - 1``, the
        log-prob positions of ``collate``).
    """
    import torch

    from mmrl.algos.kl import kl

    if not clamp > 0:
        raise ValueError(f"clamp must be > 0, got {clamp!r}")
    batch = policy.collate(trajectories)
    inputs, mask = batch.model_inputs, batch.mask
    perturbed_vision = []
    for b, traj in enumerate(trajectories):
        row = []
        for turn in turns(traj):
            processed = turn.vision
            if len(processed) != len(turn.images):
                raise ValueError(
                    f"trajectory {b}: turn has {len(turn.images)} images but {len(processed)} processed ones"
                )
            for img, orig in zip(turn.images, processed):
                pert = policy.encoder.process_image(perturb_image(np.asarray(to_pil(img)), patch, p, rng=rng))
                if not torch.equal(pert.grid_thw.cpu(), orig.grid_thw.cpu()):
                    raise ValueError(
                        f"trajectory {b}: perturbed image grid {pert.grid_thw.tolist()} != original "
                        f"{orig.grid_thw.tolist()}"
                    )
                row.append(pert)
        perturbed_vision.append(row)
    perturbed_inputs = dict(inputs, vision=perturbed_vision)
    with torch.no_grad():
        logp = policy.log_prob(inputs)[0]  # [B, L]
        logp_pert = policy.log_prob(perturbed_inputs)[0]  # [B, L]
        m = mask.to(logp.device).bool()
        d = kl(logp.float(), logp_pert.float(), "k3", mask=m).clamp(0.0, float(clamp))
        d = torch.where(m, d, torch.zeros((), dtype=d.dtype, device=d.device))
    return d


def vppo_weights(
    dependency: torch.Tensor, mask: torch.Tensor, top_frac: float = 0.2, scale_trajectory: bool = True
) -> torch.Tensor:
    """VPPO token weights: 1 on each row's most visually dependent tokens, 0 elsewhere, optionally row-scaled.

    Selection (token-level gradient filtering), per row ``b`` with ``n_b`` masked tokens:
    ``k_b = ceil(top_frac * n_b)`` tokens get weight 1 (so any row with a masked token keeps at least one when
    ``top_frac > 0``; ``top_frac = 1`` keeps all). Tokens are ranked by descending dependency; ties go to the earlier
    position (a stable sort), so the result is deterministic. Unmasked positions are never selected.

    Trajectory scaling (``scale_trajectory=True``): with ``m_b`` the mean dependency of row ``b`` over its masked tokens
    and ``M`` the mean of ``m_b`` over the rows that have at least one masked token, row ``b`` is multiplied by
    ``s_b = m_b / M``. Rows without masked tokens stay 0. If ``M == 0`` (no token depends on the image at all) every
    ``s_b = 1``. This "divide by the batch mean" normalisation keeps the mean factor at 1, so the overall loss scale is
    unchanged; it is this module's choice following the project reference, and VPPO's own normalisation of the
    trajectory dependency (see the paper) may differ in form.

    Args:
        dependency: ``[B, L]`` per-token visual dependency (e.g. from :func:`visual_dependency`).
        mask: ``[B, L]`` response mask (1 on trained tokens).
        top_frac: fraction of masked tokens kept per row, in ``[0, 1]`` (VPPO: 0.2).
        scale_trajectory: multiply each row by its normalised mean dependency.
    Returns:
        ``[B, L]`` float32 token weights on ``dependency``'s device, 0 outside the mask.
    """
    import torch

    if dependency.dim() != 2 or tuple(dependency.shape) != tuple(mask.shape):
        raise ValueError(f"dependency and mask must both be [B, L], got {tuple(dependency.shape)}, {tuple(mask.shape)}")
    if not (0.0 <= float(top_frac) <= 1.0):
        raise ValueError(f"top_frac must be in [0, 1], got {top_frac!r}")
    dep = dependency.detach().float()
    m = mask.to(dep.device).bool()
    B, L = dep.shape
    weights = torch.zeros((B, L), dtype=torch.float32, device=dep.device)
    if B == 0 or L == 0:
        return weights
    n = m.sum(dim=1)  # [B]
    k = torch.tensor([math.ceil(float(top_frac) * int(x)) for x in n.tolist()], device=dep.device)  # [B]
    keyed = torch.where(m, dep, torch.full((), -math.inf, device=dep.device))  # unmasked sort last
    order = torch.sort(keyed, dim=1, descending=True, stable=True).indices  # [B, L]
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(L, device=dep.device).expand(B, L))  # rank[b, t]: position of t in the order
    weights = ((rank < k.unsqueeze(1)) & m).float()
    if scale_trajectory:
        has = n > 0
        row_mean = torch.where(has, (dep * m).sum(1) / n.clamp(min=1), torch.zeros((), device=dep.device))  # [B]
        batch_mean = row_mean[has].mean() if bool(has.any()) else torch.zeros((), device=dep.device)
        scale = row_mean / batch_mean if float(batch_mean) > 0 else torch.ones_like(row_mean)
        weights = weights * scale.unsqueeze(1)
    return weights
