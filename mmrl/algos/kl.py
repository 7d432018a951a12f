"""KL to a reference policy: per-token estimators, KL-coefficient controllers, and KL folded into token rewards.

With ``x = logp - ref_logp`` per token (samples drawn from the current policy), the estimators of KL(pi || pi_ref) are
(Schulman, "Approximating KL divergence" http://joschu.net/blog/kl-approx.html):

- ``k1 = x`` (unbiased, high variance, can be negative); alias ``kl``.
- ``k2 = x^2 / 2`` (biased, low variance); alias ``mse``.
- ``k3 = exp(-x) - 1 + x`` (unbiased, low variance, >= 0), clamped to [-10, 10] as verl's ``low_var_kl``; alias
  ``low_var_kl``.

The KL either enters the loss (``loss + beta * agg(kl(...))``, the learner's job) or the reward
(:func:`kl_in_reward`, with a :class:`FixedKLController` or :class:`AdaptiveKLController` coefficient).

Example:
    >>> import torch
    >>> kl(torch.tensor([[0.0, -1.0]]), torch.tensor([[0.0, -2.0]]), "k1")
    tensor([[0., 1.]])
"""

from __future__ import annotations

import torch
from torch import Tensor

from mmrl.algos.advantages import last_token_rewards, masked_mean

KL_KINDS = {"k1": "k1", "kl": "k1", "k2": "k2", "mse": "k2", "k3": "k3", "low_var_kl": "k3"}
K3_CLAMP = 10.0  # verl clamps low_var_kl to [-10, 10] to stop a few wild tokens from dominating


def kl(logp: Tensor, ref_logp: Tensor, kind: str = "k3", mask: Tensor | None = None) -> Tensor:
    """Per-token KL estimate between the policy and the reference.

    Args:
        logp: ``[B, L]`` log-probs of the sampled tokens under the current policy.
        ref_logp: ``[B, L]`` log-probs of the same tokens under the reference policy.
        kind: ``k1`` | ``k2`` | ``k3`` (aliases ``kl``, ``mse``, ``low_var_kl``).
        mask: optional ``[B, L]`` mask; positions outside it are exactly 0 (even where the inputs are garbage).
    Returns:
        ``[B, L]`` per-token KL; differentiable in ``logp``.
    """
    if kind not in KL_KINDS:
        raise KeyError(f"unknown KL kind '{kind}'; known: {', '.join(KL_KINDS)}")
    x = logp - ref_logp
    if mask is not None:
        x = torch.where(mask.bool(), x, torch.zeros((), dtype=x.dtype, device=x.device))
    k = KL_KINDS[kind]
    if k == "k1":
        return x
    if k == "k2":
        return 0.5 * x.square()
    return (torch.exp(-x) - 1.0 + x).clamp(-K3_CLAMP, K3_CLAMP)


class FixedKLController:
    """A constant KL coefficient ``value``.

    Example:
        >>> ctl = FixedKLController(0.05); ctl.update(current_kl=0.3, n_steps=64); ctl.value
        0.05
    """

    def __init__(self, kl_coef: float) -> None:
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        """No-op: the coefficient stays fixed."""


class AdaptiveKLController:
    """Adaptive KL coefficient (Ziegler et al. 2019 https://arxiv.org/abs/1909.08593, Sec. 2.2).

    After each batch: ``e = clip(current_kl / target - 1, -0.2, 0.2)``; ``value *= 1 + e * n_steps / horizon``. The
    coefficient grows while the KL is above target and shrinks while below.

    Example:
        >>> ctl = AdaptiveKLController(init_kl_coef=0.1, target_kl=0.05, horizon=10000)
        >>> ctl.update(current_kl=0.1, n_steps=1000); round(ctl.value, 6)
        0.102
    """

    def __init__(self, init_kl_coef: float, target_kl: float, horizon: int = 10000) -> None:
        self.value = float(init_kl_coef)
        self.target = float(target_kl)
        self.horizon = int(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        """Move ``value`` toward keeping ``current_kl`` (mean KL per sequence of the last batch) at the target."""
        proportional_error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)  # clip to +-20%, as in the paper
        self.value *= 1.0 + proportional_error * n_steps / self.horizon


def kl_in_reward(
    rewards: Tensor, logp: Tensor, ref_logp: Tensor, mask: Tensor, kl_coef: float, kind: str = "k1"
) -> tuple[Tensor, float]:
    """Fold a KL penalty into per-token rewards: ``r_t - kl_coef * kl_t`` on masked tokens.

    Args:
        rewards: ``[B]`` outcome rewards (placed on each row's last masked token) or ``[B, L]`` token rewards.
        logp: ``[B, L]`` behaviour (old) log-probs of the sampled tokens; no gradient flows through the result.
        ref_logp: ``[B, L]`` reference log-probs.
        mask: ``[B, L]`` response mask.
        kl_coef: penalty coefficient (``controller.value``).
        kind: KL estimator (``k1`` is the classic RLHF choice).
    Returns:
        ``(token_rewards [B, L], mean_kl)``: rewards, 0 outside the mask; ``mean_kl`` is the batch mean of the per-sequence
        masked-mean KL, the quantity to feed to ``AdaptiveKLController.update``.
    """
    m = mask.bool()
    with torch.no_grad():
        per_token = kl(logp, ref_logp, kind, mask=m)  # [B, L]
        r = rewards if rewards.dim() == 2 else last_token_rewards(rewards, m)
        r = torch.where(m, r - kl_coef * per_token, torch.zeros((), dtype=r.dtype, device=r.device))
        mean_kl = masked_mean(per_token, m, dim=-1).mean().item() if m.shape[0] else 0.0
    return r, mean_kl
