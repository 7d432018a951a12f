"""DDPM / DDIM action samplers with a Gaussian log-prob at every denoising step (DPPO, Ren et al. 2024,
https://arxiv.org/abs/2409.00588), and the epsilon-prediction loss that trains them by behaviour cloning.

The noise predictor ``eps_theta(a^k, k / K, obs)`` is the flow family's
:class:`~mmrl.policies.flow.expert.ActionExpert`.
Schedule: cosine (Nichol & Dhariwal 2021, https://arxiv.org/abs/2102.09672), ``alpha_bar(k) = f(k) / f(0)``,
``f(k) = cos^2(((k / K + s) / (1 + s)) pi / 2)``, ``s = 0.008``,
``beta_k = min(1 - alpha_bar_k / alpha_bar_{k-1}, 0.999)``,
``alpha_bar_k = prod_{j <= k} (1 - beta_j)``, ``alpha_bar_0 = 1``.

One denoising step from ``a^k`` to ``a^prev`` (``prev = k - 1`` for DDPM; DDIM walks ``M`` of the ``K`` steps,
``k = j K / M``) starts from the clean estimate ``x0 = (a^k - sqrt(1 - ab_k) eps) / sqrt(ab_k)``, clipped to
``[-clip_x0, clip_x0]`` when set (DDIM then re-derives ``eps`` from the clipped ``x0``, as DPPO):

======  ================================================================  =============================================
sampler mean                                                              std (clipped from below at ``min_std``)
======  ================================================================  =============================================
ddpm    ``sqrt(ab_prev) beta_k / (1 - ab_k) x0``                          ``sqrt(beta_k (1 - ab_prev) / (1 - ab_k))``
        ``+ sqrt(alpha_k) (1 - ab_prev) / (1 - ab_k) a^k``                (the posterior's)
ddim    ``sqrt(ab_prev) x0 + sqrt(1 - ab_prev - s^2) eps``                ``s = eta sqrt((1 - ab_prev) / (1 - ab_k))
                                                                          sqrt(1 - ab_k / ab_prev)``
======  ================================================================  =============================================

Every step is ``N(mean, std^2)`` (the clip from below keeps the last steps, whose scheduler std is ~0, stochastic), so a
chain ``a^K -> ... -> a^0`` has element log-probs ``[N, M, H, A]``, one term per denoising step (no prior term: it has
no parameters). Evaluation (``deterministic``) starts from zero noise and takes the means. Without the clip the
means are computed as ``c_x a^k + c_eps eps`` with coefficients folded in float64 (the same formulas), since ``x0``
alone divides by ``sqrt(ab_K)`` ~ 0 at the noisiest step and loses float32 precision.

Example:
    >>> import torch
    >>> from mmrl.policies.flow.expert import ActionExpert
    >>> expert = ActionExpert(chunk=2, action_dim=1, feature_dim=4, hidden=[16])
    >>> s = DiffusionSampler(expert, steps=10, kind="ddim", ddim_steps=5)
    >>> actions, record, logp = s.sample(torch.zeros(3, 4))
    >>> record["chain"].shape, logp.shape
    (torch.Size([3, 6, 2, 1]), torch.Size([3, 5, 2, 1]))
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from mmrl.policies.flow.estimators import normal_entropy, normal_logp
from mmrl.policies.flow.expert import ActionExpert

SAMPLERS = ("ddpm", "ddim")
COSINE_S = 0.008  # the cosine schedule's offset (Nichol & Dhariwal): keeps beta_1 from being vanishingly small
MAX_BETA = 0.999  # beta cap at the schedule's noisy end (Nichol & Dhariwal)


def cosine_alpha_bar(steps: int) -> Tensor:
    """``[K + 1]`` float64 ``alpha_bar_0 = 1 .. alpha_bar_K`` of the cosine schedule (betas capped at ``MAX_BETA``)."""
    k = torch.arange(steps + 1, dtype=torch.float64)
    f = torch.cos((k / steps + COSINE_S) / (1 + COSINE_S) * math.pi / 2) ** 2  # [K+1]
    betas = (1 - f[1:] / f[:-1]).clamp(max=MAX_BETA)  # [K]
    return torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1 - betas, 0)])  # [K+1]


class DiffusionSampler(nn.Module):
    """DDPM or DDIM over action chunks with a per-step Gaussian log-prob (see the module docstring)."""

    def __init__(self, expert: ActionExpert, steps: int, kind: str = "ddpm", ddim_steps: int = 0, eta: float = 1.0,
                 min_std: float = 0.1, clip_x0: float = 1.0) -> None:  # fmt: skip
        super().__init__()
        if kind not in SAMPLERS:
            raise ValueError(f"sampler: unknown '{kind}' (use one of {', '.join(SAMPLERS)})")
        M = steps if kind == "ddpm" or ddim_steps == 0 else ddim_steps
        if steps % M:
            raise ValueError(f"ddim_steps: {M} does not divide steps={steps}")
        self.expert, self.steps, self.kind = expert, steps, kind
        self.eta, self.min_std, self.clip_x0 = eta, min_std, clip_x0
        ab = cosine_alpha_bar(steps)  # [K+1] float64
        ks = torch.arange(M, 0, -1) * (steps // M)  # [M] the k of each sampling step, noisy first
        prev = ks - steps // M  # [M]
        ab_k, ab_prev = ab[ks], ab[prev]  # [M] each
        beta = 1 - ab_k / ab_prev  # [M] (DDPM: prev = k - 1, so this is beta_k)
        # the unclipped mean as c_x a^k + c_eps eps, folded in float64: x0 alone divides by sqrt(ab_k) ~ 0
        if kind == "ddpm":
            std = (beta * (1 - ab_prev) / (1 - ab_k)).sqrt()
            direction = torch.zeros_like(std)  # (DDIM's coefficient of eps; unused)
            c_x0, c_xk = ab_prev.sqrt() * beta / (1 - ab_k), (1 - beta).sqrt() * (1 - ab_prev) / (1 - ab_k)
            c_x, c_eps = c_x0 / ab_k.sqrt() + c_xk, -c_x0 * (1 - ab_k).sqrt() / ab_k.sqrt()
        else:
            std = eta * ((1 - ab_prev) / (1 - ab_k)).sqrt() * (1 - ab_k / ab_prev).sqrt()
            direction = (1 - ab_prev - std**2).clamp(min=0).sqrt()  # the coefficient of eps in the mean
            c_x, c_eps = (ab_prev / ab_k).sqrt(), direction - (ab_prev * (1 - ab_k) / ab_k).sqrt()
        table = {"k": ks.double(), "ab_k": ab_k, "ab_prev": ab_prev, "beta": beta, "sched_std": std,
                 "direction": direction, "c_x": c_x, "c_eps": c_eps}  # fmt: skip
        self.names = list(table)
        for name, value in table.items():  # per sampling step, [M] each; float32 for the model's arithmetic
            self.register_buffer(name, value.float(), persistent=False)

    @classmethod
    def from_config(cls, expert: ActionExpert, cfg: Any) -> DiffusionSampler:
        return cls(expert, cfg.steps, cfg.sampler, cfg.ddim_steps, cfg.eta, cfg.min_std, cfg.clip_x0)

    def step_mean_std(self, x: Tensor, i: Tensor, features: Tensor) -> tuple[Tensor, Tensor]:
        """The Gaussian of sampling step ``i [N]`` (0 = the noisiest) from ``x [N, H, A]``: ``(mean, std)``."""
        g = {name: getattr(self, name)[i].view(-1, 1, 1) for name in self.names}  # [N, 1, 1] each
        eps, _ = self.expert(x, g["k"].view(-1) / self.steps, features)
        if self.clip_x0 <= 0:
            mean = g["c_x"] * x + g["c_eps"] * eps  # the table's rows written out in the module docstring
        else:
            x0 = ((x - (1 - g["ab_k"]).sqrt() * eps) / g["ab_k"].sqrt()).clamp(-self.clip_x0, self.clip_x0)
            if self.kind == "ddpm":
                c_x0 = g["ab_prev"].sqrt() * g["beta"] / (1 - g["ab_k"])
                c_xk = (1 - g["beta"]).sqrt() * (1 - g["ab_prev"]) / (1 - g["ab_k"])
                mean = c_x0 * x0 + c_xk * x
            else:  # eps consistent with the clipped x0 (DPPO)
                eps = (x - g["ab_k"].sqrt() * x0) / (1 - g["ab_k"]).sqrt()
                mean = g["ab_prev"].sqrt() * x0 + g["direction"] * eps
        return mean, g["sched_std"].clamp(min=self.min_std).expand_as(mean)

    def sample(self, features: Tensor, deterministic: bool = False) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        """``(actions [N, H, A], {"chain": [N, M+1, H, A]}, element log-probs [N, M, H, A])``."""
        N, M = features.shape[0], self.k.shape[0]
        shape = (N, self.expert.chunk, self.expert.action_dim)
        x = torch.zeros(shape, device=features.device) if deterministic else torch.randn(shape, device=features.device)
        chain, logps = [x], []
        for i in range(M):
            mean, std = self.step_mean_std(x, torch.full((N,), i, device=x.device), features)
            x = mean if deterministic else mean + std * torch.randn_like(mean)
            chain.append(x)
            logps.append(normal_logp(x, mean, std))
        return x, {"chain": torch.stack(chain, 1)}, torch.stack(logps, 1)

    def log_prob(self, features: Tensor, record: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Element log-probs and entropies ``[N, M, H, A]`` of recorded chains, with grad (all steps in one pass)."""
        chain = record["chain"].to(features.device)  # [N, M+1, H, A]
        N, M = chain.shape[0], chain.shape[1] - 1
        i = torch.arange(M, device=chain.device).repeat(N)  # [N*M]
        mean, std = self.step_mean_std(chain[:, :-1].flatten(0, 1), i, features.repeat_interleave(M, 0))  # [N*M, H, A]
        logp = normal_logp(chain[:, 1:].flatten(0, 1), mean, std).view(N, M, *chain.shape[2:])  # [N, M, H, A]
        return logp, normal_entropy(std).view_as(logp)

    def bc_loss(self, features: Tensor, actions: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """DDPM's epsilon loss (Ho et al. 2020): ``k ~ U{1..K}``, ``a^k = sqrt(ab_k) a + sqrt(1 - ab_k) eps``,
        ``mean || eps_theta(a^k, k / K, s) - eps ||^2``."""
        N = actions.shape[0]
        k = torch.randint(1, self.steps + 1, (N,), generator=generator).to(actions.device)  # [N]
        eps = torch.randn(actions.shape, generator=generator).to(actions.device)  # [N, H, A]
        ab = cosine_alpha_bar(self.steps).float().to(actions.device)[k].view(N, 1, 1)  # [N, 1, 1]
        pred, _ = self.expert(ab.sqrt() * actions + (1 - ab).sqrt() * eps, k.float() / self.steps, features)
        return (pred - eps).pow(2).mean()
