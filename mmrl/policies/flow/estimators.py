"""Log-likelihood estimators of a flow-matching policy (REFERENCE.md "Flow-matching policy log-likelihood", pi_RL,
https://arxiv.org/abs/2510.25889), chosen by name in ``policy.kwargs.estimator`` (:data:`ESTIMATORS`).

A deterministic ODE sampler has no likelihood; each estimator makes the K-step denoising chain stochastic so that the
sampled chain has an exact Gaussian log-prob, and records what recomputing it needs. Time runs from ``t = 1`` (noise) to
``t = 0`` (action) over ``t_k = 1 - k / K``, ``k = 0..K``, ``delta = 1 / K``; chain index ``k`` is the state at ``t_k``
(``x[0]`` the noise, ``x[K]`` the action chunk). ``v = v_theta(x_t, t, obs)`` is the action expert's velocity.

Every estimator gives *element* log-probs ``[N, S, H, A]``: ``S`` Gaussian terms per chain (one per stochastic
transition, plus the noise prior for Flow-Noise), each diagonal over the chunk's ``H x A`` elements, so that the policy
can sum them into one log-prob per chunk, per action or per dimension (its ``granularity``) over the executed part.

==============  ===================================================================  ===================================
estimator       transitions (mean, std)                                              chain log-prob
==============  ===================================================================  ===================================
``flow_noise``  every step: ``mu_k = x_t - delta v`` (ODE mean), ``sigma_k`` from   ``log N(x[0]; 0, I) + sum_k
                a learnable noise head on the expert features, squashed into         log N(x[k+1]; mu_k, s_k^2)``
                ``[sigma_min, sigma_max]``                                            (S = K + 1)
``flow_sde``    one step ``k*`` per chain, drawn uniformly: the SDE step             ``log N(x[k*+1]; mu, std^2)``
                ``sigma_t = a sqrt(t / (1 - t))``, ``mu = x_t - delta v -             (S = 1: the other steps are ODE
                (sigma_t^2 delta / 2t)(x_t + (1 - t) v)``, ``std = sigma_t            steps, part of the "environment"
                sqrt(delta)``; the others ODE steps                                    of pi_RL's two-layer MDP)
==============  ===================================================================  ===================================

Flow-SDE's ``sigma_t`` is infinite at ``t = 1``: its denominator there is taken at ``t = 1 - delta`` (Flow-GRPO's
guard), so the first step's ``sigma = a sqrt(1 / delta)``. Evaluation (``deterministic``) runs the plain ODE from the
zero noise (the prior's mode) and records the chain it took.

Example:
    >>> import torch
    >>> from mmrl.policies.flow.expert import ActionExpert
    >>> est = FlowNoise(ActionExpert(chunk=2, action_dim=1, feature_dim=4, hidden=[16]), steps=3)
    >>> actions, record, logp = est.sample(torch.zeros(5, 4))
    >>> actions.shape, record["chain"].shape, logp.shape
    (torch.Size([5, 2, 1]), torch.Size([5, 4, 2, 1]), torch.Size([5, 4, 2, 1]))
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from mmrl.policies.flow.expert import ActionExpert, flow_matching_loss

LOG_2PI = math.log(2 * math.pi)


def normal_logp(x: Tensor, mean: Tensor | float, std: Tensor | float) -> Tensor:
    """Element-wise ``log N(x; mean, std^2)``."""
    std = torch.as_tensor(std, dtype=x.dtype, device=x.device)
    return -0.5 * ((x - mean) / std).pow(2) - std.log() - 0.5 * LOG_2PI


def normal_entropy(std: Tensor) -> Tensor:
    """Element-wise entropy of ``N(., std^2)``: ``0.5 log(2 pi e std^2)``."""
    return 0.5 * (LOG_2PI + 1.0) + std.log()


class FlowNoise(nn.Module):
    """Flow-Noise: every denoising step Gaussian around the ODE step, with a learned std (the noise head)."""

    name = "flow_noise"

    def __init__(self, expert: ActionExpert, steps: int, sigma_min: float = 0.05, sigma_max: float = 0.5) -> None:
        super().__init__()
        self.expert, self.steps = expert, steps
        self.sigma_min, self.sigma_max = sigma_min, sigma_max
        self.noise_head = nn.Linear(expert.hidden_dim, expert.chunk * expert.action_dim)

    @classmethod
    def from_config(cls, expert: ActionExpert, cfg: Any) -> FlowNoise:
        return cls(expert, cfg.steps, cfg.sigma_min, cfg.sigma_max)

    def std(self, h: Tensor) -> Tensor:
        """``[N, W]`` expert features -> ``[N, H, A]`` std in ``[sigma_min, sigma_max]`` (a sigmoid squash)."""
        s = torch.sigmoid(self.noise_head(h)).view(
            -1, self.expert.chunk, self.expert.action_dim
        )  # [N, H*A] -> [N, H, A]
        return self.sigma_min + (self.sigma_max - self.sigma_min) * s

    def sample(self, features: Tensor, deterministic: bool = False) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        """``(actions [N, H, A], {"chain": [N, K+1, H, A]}, element log-probs [N, K+1, H, A])``."""
        N, K, delta = features.shape[0], self.steps, 1.0 / self.steps
        shape = (N, self.expert.chunk, self.expert.action_dim)
        x = torch.zeros(shape, device=features.device) if deterministic else torch.randn(shape, device=features.device)
        chain, logps = [x], [normal_logp(x, 0.0, 1.0)]  # x[0] ~ N(0, I): the prior term
        for k in range(K):
            v, h = self.expert(x, torch.full((N,), 1.0 - k * delta, device=x.device), features)
            mean, std = x - delta * v, self.std(h)  # [N, H, A] each
            x = mean if deterministic else mean + std * torch.randn_like(mean)
            chain.append(x)
            logps.append(normal_logp(x, mean, std))
        return x, {"chain": torch.stack(chain, 1)}, torch.stack(logps, 1)  # [N, K+1, H, A]

    def log_prob(self, features: Tensor, record: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Element log-probs and entropies ``[N, K+1, H, A]`` of recorded chains, with grad (K steps in one pass)."""
        chain = record["chain"].to(features.device)  # [N, K+1, H, A]
        N, K, delta = chain.shape[0], self.steps, 1.0 / self.steps
        x = chain[:, :-1].flatten(0, 1)  # [N*K, H, A] the state before each transition
        t = (1.0 - torch.arange(K, device=x.device) * delta).repeat(N)  # [N*K]: t_0..t_{K-1} for each chain
        v, h = self.expert(x, t, features.repeat_interleave(K, 0))  # features [N, F] -> [N*K, F]
        mean, std = x - delta * v, self.std(h)  # [N*K, H, A]
        trans = normal_logp(chain[:, 1:].flatten(0, 1), mean, std).view(N, K, *chain.shape[2:])  # [N, K, H, A]
        prior = normal_logp(chain[:, :1], 0.0, 1.0)  # [N, 1, H, A]
        entropy = torch.cat([normal_entropy(torch.ones_like(prior)), normal_entropy(std).view_as(trans)], 1)
        return torch.cat([prior, trans], 1), entropy  # [N, K+1, H, A] each

    def bc_loss(self, features: Tensor, actions: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return flow_matching_loss(self.expert, features, actions, generator)


def sde_step(x: Tensor, t: Tensor, v: Tensor, steps: int, noise_level: float) -> tuple[Tensor, Tensor]:
    """Flow-SDE transition from ``x [N, H, A]`` at ``t [N]`` with velocity ``v``: ``(mean, std)`` ``[N, H, A]``."""
    delta = 1.0 / steps
    tt = t.view(-1, 1, 1)  # [N, 1, 1]
    sigma = noise_level * torch.sqrt(tt / (1.0 - tt.clamp(max=1.0 - delta)))  # guard t = 1: denominator at 1 - delta
    mean = x - delta * v - sigma.pow(2) * delta / (2.0 * tt) * (x + (1.0 - tt) * v)
    return mean, (sigma * math.sqrt(delta)).expand_as(x)


class FlowSDE(nn.Module):
    """Flow-SDE, hybrid sampling: one random SDE step per chain, ODE steps elsewhere; only it enters the log-prob."""

    name = "flow_sde"

    def __init__(self, expert: ActionExpert, steps: int, noise_level: float = 0.5) -> None:
        super().__init__()
        self.expert, self.steps, self.noise_level = expert, steps, noise_level

    @classmethod
    def from_config(cls, expert: ActionExpert, cfg: Any) -> FlowSDE:
        return cls(expert, cfg.steps, cfg.noise_level)

    def sample(self, features: Tensor, deterministic: bool = False) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        """``(actions [N, H, A], record, log-probs [N, 1, H, A])``; the record holds the stochastic step ``k [N]``, its
        endpoints ``x_k``, ``x_next`` and the chain's noise ``x1`` (``[N, H, A]`` each)."""
        N, K, delta = features.shape[0], self.steps, 1.0 / self.steps
        shape = (N, self.expert.chunk, self.expert.action_dim)
        x = torch.zeros(shape, device=features.device) if deterministic else torch.randn(shape, device=features.device)
        x1 = x  # the chain's noise, recorded: the whole chain replays from it (ODE steps around the stochastic one)
        k_star = torch.randint(0, K, (N,), device=x.device)  # the stochastic step of each chain
        x_k, x_next = torch.zeros_like(x), torch.zeros_like(x)
        mean_k, std_k = torch.zeros_like(x), torch.ones_like(x)
        for k in range(K):
            t = torch.full((N,), 1.0 - k * delta, device=x.device)
            v, _ = self.expert(x, t, features)
            here = (k_star == k).view(N, 1, 1)  # [N, 1, 1]
            mean, std = sde_step(x, t, v, K, self.noise_level)
            ode = x - delta * v
            step = ode if deterministic else torch.where(here, mean + std * torch.randn_like(x), ode)
            x_k, x_next = torch.where(here, x, x_k), torch.where(here, step, x_next)
            mean_k, std_k = torch.where(here, mean, mean_k), torch.where(here, std, std_k)
            x = step
        record = {"k": k_star, "x_k": x_k, "x_next": x_next, "x1": x1}
        return x, record, normal_logp(x_next, mean_k, std_k).unsqueeze(1)  # [N, 1, H, A]

    def log_prob(self, features: Tensor, record: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Log-probs and entropies ``[N, 1, H, A]`` of the recorded stochastic transitions, with grad."""
        x_k = record["x_k"].to(features.device)  # [N, H, A]
        t = 1.0 - record["k"].to(features.device).float() / self.steps  # [N]
        v, _ = self.expert(x_k, t, features)
        mean, std = sde_step(x_k, t, v, self.steps, self.noise_level)
        return normal_logp(record["x_next"].to(x_k.device), mean, std).unsqueeze(1), normal_entropy(std).unsqueeze(1)

    def bc_loss(self, features: Tensor, actions: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return flow_matching_loss(self.expert, features, actions, generator)


ESTIMATORS: dict[str, type[FlowNoise] | type[FlowSDE]] = {"flow_noise": FlowNoise, "flow_sde": FlowSDE}


def make_estimator(name: str, expert: ActionExpert, cfg: Any) -> FlowNoise | FlowSDE:
    """The estimator registered as ``name`` around ``expert``, its options read from ``cfg`` (a ``FlowConfig``)."""
    if name not in ESTIMATORS:
        raise KeyError(f"unknown flow estimator '{name}' (known: {', '.join(sorted(ESTIMATORS))})")
    return ESTIMATORS[name].from_config(expert, cfg)
