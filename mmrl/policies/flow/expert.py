"""The action expert: a network ``f(x [N, H, A], t [N], features [N, F]) -> [N, H, A]`` over action chunks, and the
conditional flow-matching loss that trains it by behaviour cloning.

For a flow policy ``f`` is the velocity ``v_theta(x_t, t, obs)``; the diffusion family uses the same network as its
noise predictor ``eps_theta(a^k, k / K, obs)``. It is an MLP over the flattened chunk, the sinusoidal embedding of ``t``
and the observation features; its last hidden layer (``[N, W]``, "the expert features") is returned too, so that
heads such as Flow-Noise's learnable noise network read the same representation as the velocity.

Flow-matching conventions (REFERENCE.md, pi_RL): time runs from ``t = 1`` (noise) to ``t = 0`` (action);
``x_t = t eps + (1 - t) a``, so the velocity ``dx_t / dt = eps - a`` and an ODE step toward the action is
``x_{t - delta} = x_t - delta v``.

Example:
    >>> import torch
    >>> expert = ActionExpert(chunk=2, action_dim=3, feature_dim=8, hidden=[32, 32])
    >>> v, h = expert(torch.zeros(5, 2, 3), torch.ones(5), torch.zeros(5, 8))
    >>> v.shape, h.shape
    (torch.Size([5, 2, 3]), torch.Size([5, 32]))
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

TIME_DIM = 32  # sinusoidal time-embedding width (16 frequencies, sin and cos)


def time_embedding(t: Tensor, dim: int = TIME_DIM) -> Tensor:
    """``[N] -> [N, dim]``: ``sin / cos(1000 t w_i)`` with frequencies ``w_i`` log-spaced from 1 to 1e-4 (Transformer /
    DDPM embedding; the factor 1000 spreads t in [0, 1] over the frequencies as integer diffusion steps would)."""
    half = dim // 2
    dtype = t.dtype if t.is_floating_point() else torch.float32
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=dtype) / half)  # [half]
    angles = 1000.0 * t.to(dtype).unsqueeze(-1) * freqs  # [N, half]
    return torch.cat([angles.sin(), angles.cos()], -1)  # [N, dim]


class ActionExpert(nn.Module):
    """``(x [N, H, A], t [N], features [N, F]) -> (output [N, H, A], expert features [N, W])``; SiLU MLP."""

    def __init__(self, chunk: int, action_dim: int, feature_dim: int, hidden: Sequence[int] = (128, 128)) -> None:
        super().__init__()
        self.chunk, self.action_dim, self.hidden_dim = chunk, action_dim, hidden[-1]
        dims = [chunk * action_dim + TIME_DIM + feature_dim, *hidden]
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.SiLU()]
        self.body = nn.Sequential(*layers)
        self.out = nn.Linear(hidden[-1], chunk * action_dim)

    def forward(self, x: Tensor, t: Tensor, features: Tensor) -> tuple[Tensor, Tensor]:
        h = self.body(torch.cat([x.flatten(1), time_embedding(t), features], -1))  # [N, H*A + TIME_DIM + F] -> [N, W]
        return self.out(h).view(-1, self.chunk, self.action_dim), h  # [N, H*A] -> [N, H, A]


def flow_matching_loss(
    expert: ActionExpert, features: Tensor, actions: Tensor, generator: torch.Generator | None = None
) -> Tensor:
    """Conditional flow-matching loss (Lipman et al. 2023, https://arxiv.org/abs/2210.02747) on demonstrations.

    ``t ~ U(0, 1)``, ``eps ~ N(0, I)``, ``x_t = t eps + (1 - t) a``; the regression target is the velocity of that
    straight path, ``eps - a``: ``mean || v_theta(x_t, t, s) - (eps - a) ||^2`` over the batch, chunk and dims.

    Args:
        expert: the action expert (the velocity network).
        features: ``[N, F]`` observation features.
        actions: ``[N, H, A]`` demonstrated action chunks in the policy's action space.
        generator: optional source of ``t`` and ``eps`` (on the CPU).
    """
    N = actions.shape[0]
    t = torch.rand(N, generator=generator).to(actions.device)  # [N]
    eps = torch.randn(actions.shape, generator=generator).to(actions.device)  # [N, H, A]
    tt = t.view(N, 1, 1)  # [N, 1, 1] broadcast over chunk and dims
    x_t = tt * eps + (1 - tt) * actions  # [N, H, A]
    v, _ = expert(x_t, t, features)
    return (v - (eps - actions)).pow(2).mean()
