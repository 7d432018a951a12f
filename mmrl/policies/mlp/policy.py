"""MLP actor-critic policies for state-vector envs (Gymnasium classic control, proprioceptive robots).

Two heads share one contract: :class:`GaussianMLPPolicy` for continuous actions (diagonal Gaussian, state-independent
log-std) and :class:`CategoricalMLPPolicy` for discrete actions. Both follow CleanRL's ``ppo_continuous_action.py`` /
``ppo.py`` agents: separate tanh MLPs for actor and critic, orthogonal init (gain sqrt(2) on hidden layers, 0.01 on the
policy head so the first actions are near the mean, 1 on the value head).

The learner sees ``L = 1``: one log-prob per env step (summed over action dims, as ``Independent(Normal, 1)``).
``batch.model_inputs`` holds ``obs [B, D]`` and ``actions`` (``[B, A]`` float or ``[B]`` long).

Example:
    >>> import torch
    >>> policy = GaussianMLPPolicy(obs_dim=3, act_dim=1, action_low=[-2.0], action_high=[2.0])
    >>> actions, logp = policy.act(torch.zeros(4, 3))
    >>> actions.shape, logp.shape, policy.env_action(actions).shape
    (torch.Size([4, 1]), torch.Size([4]), (4, 1))
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn
from torch.distributions import Categorical, Normal

from mmrl.types import Batch


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, out_gain: float) -> nn.Sequential:
    """``Linear -> tanh`` stack with CleanRL's orthogonal init (hidden gain sqrt(2), bias 0; last layer ``out_gain``)."""
    dims = [in_dim, *hidden]
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [_init(nn.Linear(a, b), math.sqrt(2)), nn.Tanh()]
    layers.append(_init(nn.Linear(dims[-1], out_dim), out_gain))
    return nn.Sequential(*layers)


def _init(layer: nn.Linear, gain: float) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


class ActorCritic(nn.Module):
    """The trainable parameters: ``actor`` MLP, optional state-independent ``log_std [A]``, separate ``critic`` MLP."""

    def __init__(self, obs_dim: int, out_dim: int, hidden: Sequence[int], log_std_init: float | None) -> None:
        super().__init__()
        self.actor = mlp(obs_dim, hidden, out_dim, out_gain=0.01)
        self.critic = mlp(obs_dim, hidden, 1, out_gain=1.0)
        self.log_std = None if log_std_init is None else nn.Parameter(torch.full((out_dim,), float(log_std_init)))


class _MLPPolicy:
    """What both heads share: the critic, acting, and the learner's ``log_prob`` / ``value`` contract."""

    model: ActorCritic

    def distribution(self, obs: Tensor) -> torch.distributions.Distribution:  # pragma: no cover - overridden
        raise NotImplementedError

    def _logp_entropy(self, dist: torch.distributions.Distribution, actions: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError  # pragma: no cover - overridden

    @staticmethod
    def _mode(dist: torch.distributions.Distribution) -> Tensor:
        raise NotImplementedError  # pragma: no cover - overridden

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def act(self, obs: Tensor, deterministic: bool = False) -> tuple[Tensor, Tensor]:
        """Sample ``actions`` for ``obs [N, D]``; returns ``(actions, logp [N])``, the behaviour log-probs.

        ``deterministic`` takes the mode (Gaussian mean / argmax) for evaluation; its ``logp`` is still the density.
        """
        dist = self.distribution(obs.to(self.device, torch.float32))
        actions = self._mode(dist) if deterministic else dist.sample()
        logp, _ = self._logp_entropy(dist, actions)
        return actions, logp

    @torch.no_grad()
    def predict_values(self, obs: Tensor) -> Tensor:
        """Critic values ``[N]`` of ``obs [N, D]`` without grad (rollout time: ``old_values`` and bootstraps)."""
        return self.model.critic(obs.to(self.device, torch.float32)).squeeze(-1)

    def log_prob(self, batch: Batch, with_entropy: bool = False) -> tuple[Tensor, ...]:
        """Log-probs of ``batch.model_inputs["actions"]`` with grad: ``(logp [B, 1], mask [B, 1])`` (+ ``entropy [B, 1]``)."""
        obs = batch.model_inputs["obs"].to(self.device, torch.float32)  # [B, D]
        actions = batch.model_inputs["actions"].to(self.device)  # [B, A] or [B]
        logp, entropy = self._logp_entropy(self.distribution(obs), actions)  # [B] each
        mask = torch.ones(obs.shape[0], 1, device=self.device)  # [B, 1] every env step is trained
        if with_entropy:
            return logp.unsqueeze(-1), mask, entropy.unsqueeze(-1)
        return logp.unsqueeze(-1), mask

    def value(self, batch: Batch) -> Tensor:
        """Critic values ``[B, 1]`` of ``batch.model_inputs["obs"]`` with grad."""
        return self.model.critic(batch.model_inputs["obs"].to(self.device, torch.float32))  # [B, 1]


class GaussianMLPPolicy(_MLPPolicy):
    """Diagonal Gaussian policy ``a ~ N(mu_theta(s), diag(exp(log_std))^2)`` with a separate MLP critic.

    Bounds: actions are sampled *unbounded* and :meth:`env_action` clips them to ``[action_low, action_high]`` before
    the env sees them (CleanRL's ``ClipAction`` choice). The log-prob is the exact Normal density of the unclipped
    sample, so ratios stay exact; a tanh squash would need the change-of-variables correction and biases the mean
    toward the bounds, and buys nothing on classic control.

    Example:
        >>> import torch
        >>> policy = GaussianMLPPolicy(obs_dim=3, act_dim=2, hidden=(32, 32), log_std_init=-0.5)
        >>> policy.predict_values(torch.zeros(5, 3)).shape
        torch.Size([5])
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: Sequence[int] = (64, 64),
        log_std_init: float = -0.5,
        action_low: Sequence[float] | np.ndarray | None = None,
        action_high: Sequence[float] | np.ndarray | None = None,
    ) -> None:
        self.model = ActorCritic(obs_dim, act_dim, hidden, log_std_init)
        self.act_dim = act_dim
        self.action_low = None if action_low is None else np.asarray(action_low, dtype=np.float32)  # [A]
        self.action_high = None if action_high is None else np.asarray(action_high, dtype=np.float32)  # [A]

    def distribution(self, obs: Tensor) -> Normal:
        """``Normal(mean [N, A], std [N, A])`` for ``obs [N, D]``."""
        mean = self.model.actor(obs)  # [N, A]
        std = self.model.log_std.exp().expand_as(mean)  # [N, A] state-independent
        return Normal(mean, std)

    def _logp_entropy(self, dist: Normal, actions: Tensor) -> tuple[Tensor, Tensor]:
        """Sum over action dims (independent dims): ``logp [N]``, ``entropy [N]``."""
        return dist.log_prob(actions.to(dist.mean.dtype)).sum(-1), dist.entropy().sum(-1)

    @staticmethod
    def _mode(dist: Normal) -> Tensor:
        return dist.mean

    def env_action(self, actions: Tensor) -> np.ndarray:
        """The array the env steps with: ``actions [N, A]`` clipped to the action bounds (when given)."""
        a = actions.detach().cpu().numpy()
        if self.action_low is not None or self.action_high is not None:
            a = np.clip(a, self.action_low, self.action_high)
        return a


class CategoricalMLPPolicy(_MLPPolicy):
    """Softmax policy over ``n_actions`` discrete actions with a separate MLP critic (CleanRL ``ppo.py`` agent).

    Example:
        >>> import torch
        >>> policy = CategoricalMLPPolicy(obs_dim=4, n_actions=2)
        >>> actions, logp = policy.act(torch.zeros(3, 4))
        >>> actions.dtype, logp.shape
        (torch.int64, torch.Size([3]))
    """

    def __init__(self, obs_dim: int, n_actions: int, hidden: Sequence[int] = (64, 64)) -> None:
        self.model = ActorCritic(obs_dim, n_actions, hidden, log_std_init=None)
        self.n_actions = n_actions

    def distribution(self, obs: Tensor) -> Categorical:
        """``Categorical(logits [N, n_actions])`` for ``obs [N, D]``."""
        return Categorical(logits=self.model.actor(obs))

    def _logp_entropy(self, dist: Categorical, actions: Tensor) -> tuple[Tensor, Tensor]:
        return dist.log_prob(actions.long()), dist.entropy()  # [N] each

    @staticmethod
    def _mode(dist: Categorical) -> Tensor:
        return dist.logits.argmax(-1)

    def env_action(self, actions: Tensor) -> np.ndarray:
        """The integer actions ``[N]`` the env steps with."""
        return actions.detach().cpu().numpy()


def mlp_policy_for(
    observation_space: gym.Space, action_space: gym.Space, hidden: Sequence[int] = (64, 64), log_std_init: float = -0.5
) -> GaussianMLPPolicy | CategoricalMLPPolicy:
    """The MLP policy fitting a (single) env's spaces: Gaussian for a ``Box`` action space, categorical for ``Discrete``.

    Example:
        >>> import gymnasium as gym
        >>> env = gym.make("CartPole-v1")
        >>> type(mlp_policy_for(env.observation_space, env.action_space)).__name__
        'CategoricalMLPPolicy'
    """
    obs_dim = int(np.prod(observation_space.shape))
    if isinstance(action_space, gym.spaces.Box):
        return GaussianMLPPolicy(obs_dim, int(np.prod(action_space.shape)), hidden, log_std_init,
                                 action_space.low, action_space.high)  # fmt: skip
    if isinstance(action_space, gym.spaces.Discrete):
        return CategoricalMLPPolicy(obs_dim, int(action_space.n), hidden)
    raise TypeError(f"no MLP policy for action space {action_space} (Box and Discrete are supported)")
