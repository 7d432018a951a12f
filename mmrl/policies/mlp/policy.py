"""MLP policies and their critic for state-vector envs (Gymnasium classic control, proprioceptive robots).

Two heads share one contract: :class:`GaussianMLPPolicy` for continuous actions (diagonal Gaussian, state-independent
log-std) and :class:`CategoricalMLPPolicy` for discrete actions; :class:`MLPCritic` is the separate value network. They
follow CleanRL's ``ppo_continuous_action.py`` / ``ppo.py`` agents: separate tanh MLPs for actor and critic, orthogonal
init (gain sqrt(2) on hidden layers, 0.01 on the policy head so the first actions are near the mean, 1 on the value head).

Layout: ``collate`` makes one row per trajectory (fragment), ``L`` = its env steps; ``model_inputs`` hold ``obs
[B, L, D]`` (normalised as the actor saw them), ``actions`` (``[B, L, A]`` float or ``[B, L]`` long) and ``final_obs
[B, D]`` (what the critic bootstraps from). The advantages run along the rows; :meth:`learner_view` then makes every
step a row of its own, so PPO's minibatches shuffle single transitions as CleanRL's do.

Observation normalisation (``normalize_obs``, CleanRL's ``NormalizeObservation`` + clip): a running mean/var kept in the
policy's buffers (so checkpoints carry it), updated in ``collate`` from each training batch's raw observations, after the
batch itself was normalised with the statistics its actions were sampled with. ``act`` never changes it, so evaluation
and the learner's recompute see exactly the statistics of the rollout.

Example:
    >>> import numpy as np
    >>> policy = GaussianMLPPolicy(obs_dim=3, act_dim=1, action_low=[-2.0], action_high=[2.0])
    >>> [action] = policy.act([np.zeros(3, np.float32)], SamplingParams())
    >>> action.env_action.shape, float(np.abs(action.env_action).max()) <= 2.0
    ((1,), True)
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.distributions import Categorical, Distribution, Normal

from mmrl.policies.base import Action, SamplingParams
from mmrl.types import Batch, Trajectory

OBS_CLIP = 10.0  # normalised observations are clipped to [-10, 10] (CleanRL, SB3)


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


class RunningNorm(nn.Module):
    """Running mean/variance of observations ``[D]`` (parallel Welford update, as Gymnasium's ``RunningMeanStd``)."""

    def __init__(self, dim: int, enabled: bool) -> None:
        super().__init__()
        self.enabled = enabled
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("var", torch.ones(dim, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(1e-4, dtype=torch.float64))  # Gymnasium's epsilon prior

    def forward(self, obs: Tensor) -> Tensor:
        """``obs [..., D]`` normalised and clipped (unchanged when disabled)."""
        if not self.enabled:
            return obs.float()
        z = (obs.double() - self.mean) / torch.sqrt(self.var + 1e-8)
        return z.clamp(-OBS_CLIP, OBS_CLIP).float()

    @torch.no_grad()
    def update(self, obs: Tensor) -> None:
        """Fold a batch ``[N, D]`` of raw observations into the statistics."""
        if not self.enabled or obs.shape[0] == 0:
            return
        x = obs.double()
        b_mean, b_var, b_n = x.mean(0), x.var(0, unbiased=False), x.shape[0]
        delta, total = b_mean - self.mean, self.count + b_n
        m2 = self.var * self.count + b_var * b_n + delta**2 * self.count * b_n / total
        self.mean += delta * b_n / total
        self.var.copy_(m2 / total)
        self.count.copy_(total)


class _MLPPolicy:
    """What both heads share: acting, collate, the learner contract and saving."""

    model: nn.Module  # .actor (MLP), .obs_norm (RunningNorm), Gaussian: .log_std
    config: dict[str, Any]  # constructor arguments, saved beside the weights

    def distribution(self, obs: Tensor) -> Distribution:  # pragma: no cover - overridden
        raise NotImplementedError

    def _logp_entropy(self, dist: Distribution, actions: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError  # pragma: no cover - overridden

    @staticmethod
    def _mode(dist: Distribution) -> Tensor:
        raise NotImplementedError  # pragma: no cover - overridden

    def env_action(self, action: Tensor) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError

    version = 0

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def parameters(self) -> list[nn.Parameter]:
        """The model's parameters (the learner trains those that require grad)."""
        return list(self.model.parameters())

    def train(self, mode: bool = True) -> _MLPPolicy:
        self.model.train(mode)
        return self

    @torch.no_grad()
    def act(self, observations: Sequence[Any], params: SamplingParams, states: Sequence[Any] | None = None) -> list[Action]:
        """Sample an action for each observation ``[D]``; ``params.temperature = 0`` takes the mode (evaluation).

        The record is ``(normalised obs [D], action)``: what the learner recomputes the log-prob on.
        """
        raw = torch.as_tensor(np.stack([np.asarray(o, np.float32).reshape(-1) for o in observations]))  # [N, D]
        obs = self.model.obs_norm(raw.to(self.device))  # [N, D]
        dist = self.distribution(obs)
        actions = self._mode(dist) if params.temperature <= 0 else dist.sample()  # [N, A] or [N]
        logp, _ = self._logp_entropy(dist, actions)  # [N]
        return [Action(self.env_action(a), float(lp), (o.cpu(), a.cpu()), self.version)
                for o, a, lp in zip(obs, actions, logp.tolist())]  # fmt: skip

    def log_prob(self, batch: Batch, with_entropy: bool = False) -> tuple[Tensor, Tensor, Tensor | None]:
        """Log-probs of ``model_inputs["actions"]`` with grad: ``(logp [B, L], mask [B, L], entropy [B, L] | None)``."""
        obs = batch.model_inputs["obs"].to(self.device, torch.float32)  # [B, L, D]
        actions = batch.model_inputs["actions"].to(self.device)  # [B, L, A] or [B, L]
        logp, entropy = self._logp_entropy(self.distribution(obs), actions)  # [B, L] each
        return logp, batch.mask.to(self.device), entropy if with_entropy else None

    def collate(self, trajectories: Sequence[Trajectory]) -> Batch:
        """One row per trajectory, ``L`` = its steps (see the module docstring); then the observation statistics
        absorb the batch's raw observations."""
        B, L = len(trajectories), max(len(t) for t in trajectories)
        first_obs, first_act = trajectories[0].steps[0].record
        obs = torch.zeros(B, L, first_obs.shape[-1])  # [B, L, D]
        actions = torch.zeros(B, L, *first_act.shape, dtype=first_act.dtype)  # [B, L, A] or [B, L]
        mask, old, step_rewards = torch.zeros(B, L), torch.zeros(B, L), torch.zeros(B, L)
        for i, traj in enumerate(trajectories):
            n = len(traj)
            obs[i, :n] = torch.stack([s.record[0] for s in traj.steps])
            actions[i, :n] = torch.stack([s.record[1] for s in traj.steps])
            mask[i, :n] = 1.0
            old[i, :n] = torch.tensor([s.logp for s in traj.steps])
            step_rewards[i, :n] = torch.tensor([s.reward for s in traj.steps])
        final_raw = torch.as_tensor(np.stack([np.asarray(t.final_observation, np.float32).reshape(-1)
                                              for t in trajectories]))  # fmt: skip
        final_obs = self.model.obs_norm(final_raw.to(self.device)).cpu()  # [B, D] with the rollout's statistics
        raw = [np.asarray(s.observation, np.float32).reshape(-1) for t in trajectories for s in t.steps]
        self.model.obs_norm.update(torch.as_tensor(np.stack(raw)).to(self.device))
        return Batch(
            model_inputs={"obs": obs, "actions": actions, "final_obs": final_obs},
            mask=mask,
            old_logp=old,
            advantages=torch.zeros(B),
            rewards=step_rewards.sum(1),
            group_ids=torch.tensor([t.group_id for t in trajectories], dtype=torch.long),
            step_rewards=step_rewards,
            bootstrap_mask=torch.tensor([0.0 if t.terminated else 1.0 for t in trajectories]),
            step_ids=torch.where(mask.bool(), torch.arange(L).expand(B, L), -1),  # [B, L] each position its own step
            anchor_keys=[[np.asarray(s.observation).tobytes() for s in t.steps] for t in trajectories],
        )

    def learner_view(self, batch: Batch) -> Batch:
        """Every env step a row of its own (``L = 1``): an MLP's log-prob at one step depends on that step alone."""
        keep = batch.mask.bool()  # [B, L]
        inputs = {"obs": batch.model_inputs["obs"][keep].unsqueeze(1),  # [S, 1, D]
                  "actions": batch.model_inputs["actions"][keep].unsqueeze(1)}  # [S, 1, A] or [S, 1]  # fmt: skip
        return batch.positions_as_rows(inputs)

    def save(self, path: Path) -> None:
        """``model.safetensors`` (weights and observation statistics) and ``mlp_policy.json`` (the constructor)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.model.state_dict().items()}, str(path / "model.safetensors"))
        (path / "mlp_policy.json").write_text(json.dumps({"class": type(self).__name__, **self.config}, indent=2))

    def load(self, path: Path) -> None:
        """Weights and observation statistics from :meth:`save`'s directory (tensors only: nothing is unpickled)."""
        self.model.load_state_dict(load_file(str(Path(path) / "model.safetensors"), device=str(self.device)))


class GaussianMLPPolicy(_MLPPolicy):
    """Diagonal Gaussian policy ``a ~ N(mu_theta(s), diag(exp(log_std))^2)``.

    Bounds: actions are sampled *unbounded* and :meth:`env_action` clips them to ``[action_low, action_high]`` before
    the env sees them (CleanRL's ``ClipAction`` choice). The log-prob is the exact Normal density of the unclipped
    sample, so ratios stay exact; a tanh squash would need the change-of-variables correction and biases the mean
    toward the bounds, and buys nothing on classic control.
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int] = (64, 64), log_std_init: float = -0.5,
                 action_low: Sequence[float] | np.ndarray | None = None,
                 action_high: Sequence[float] | np.ndarray | None = None, normalize_obs: bool = False) -> None:  # fmt: skip
        self.model = nn.Module()
        self.model.actor = mlp(obs_dim, hidden, act_dim, out_gain=0.01)
        self.model.log_std = nn.Parameter(torch.full((act_dim,), float(log_std_init)))
        self.model.obs_norm = RunningNorm(obs_dim, normalize_obs)
        self.act_dim = act_dim
        self.action_low = None if action_low is None else np.asarray(action_low, dtype=np.float32)  # [A]
        self.action_high = None if action_high is None else np.asarray(action_high, dtype=np.float32)  # [A]
        self.config = {"obs_dim": obs_dim, "act_dim": act_dim, "hidden": list(hidden), "log_std_init": log_std_init,
                       "normalize_obs": normalize_obs}  # fmt: skip

    def distribution(self, obs: Tensor) -> Normal:
        """``Normal(mean [..., A], std [..., A])`` for ``obs [..., D]``."""
        mean = self.model.actor(obs)  # [..., A]
        return Normal(mean, self.model.log_std.exp().expand_as(mean))  # state-independent std

    def _logp_entropy(self, dist: Normal, actions: Tensor) -> tuple[Tensor, Tensor]:
        """Sum over action dims (independent dims): ``logp [...]``, ``entropy [...]``."""
        return dist.log_prob(actions.to(dist.mean.dtype)).sum(-1), dist.entropy().sum(-1)

    @staticmethod
    def _mode(dist: Normal) -> Tensor:
        return dist.mean

    def env_action(self, action: Tensor) -> np.ndarray:
        """The array the env steps with: ``action [A]`` clipped to the action bounds (when given)."""
        a = action.detach().cpu().numpy()
        if self.action_low is not None or self.action_high is not None:
            a = np.clip(a, self.action_low, self.action_high)
        return a


class CategoricalMLPPolicy(_MLPPolicy):
    """Softmax policy over ``n_actions`` discrete actions (CleanRL ``ppo.py`` agent)."""

    def __init__(self, obs_dim: int, n_actions: int, hidden: Sequence[int] = (64, 64), normalize_obs: bool = False) -> None:
        self.model = nn.Module()
        self.model.actor = mlp(obs_dim, hidden, n_actions, out_gain=0.01)
        self.model.obs_norm = RunningNorm(obs_dim, normalize_obs)
        self.n_actions = n_actions
        self.config = {"obs_dim": obs_dim, "n_actions": n_actions, "hidden": list(hidden), "normalize_obs": normalize_obs}

    def distribution(self, obs: Tensor) -> Categorical:
        """``Categorical(logits [..., n_actions])`` for ``obs [..., D]``."""
        return Categorical(logits=self.model.actor(obs))

    def _logp_entropy(self, dist: Categorical, actions: Tensor) -> tuple[Tensor, Tensor]:
        return dist.log_prob(actions.long()), dist.entropy()  # [...] each

    @staticmethod
    def _mode(dist: Categorical) -> Tensor:
        return dist.logits.argmax(-1)

    def env_action(self, action: Tensor) -> np.ndarray:
        """The integer action the env steps with."""
        return action.detach().cpu().numpy()


class MLPCritic(nn.Module):
    """``V(s)``: a tanh MLP on the same normalised observations as the actor (value head gain 1)."""

    def __init__(self, obs_dim: int, hidden: Sequence[int] = (64, 64)) -> None:
        super().__init__()
        self.net = mlp(obs_dim, hidden, 1, out_gain=1.0)

    def value(self, batch: Batch) -> Tensor:
        """``[B, L]`` values of ``model_inputs["obs"] [B, L, D]`` with grad."""
        obs = batch.model_inputs["obs"]
        return self.net(obs.to(self.net[0].weight.device, torch.float32)).squeeze(-1)

    def final_value(self, batch: Batch) -> Tensor:
        """``[B]`` values of ``model_inputs["final_obs"] [B, D]``, the observation after each row's last step."""
        obs = batch.model_inputs["final_obs"]
        return self.net(obs.to(self.net[0].weight.device, torch.float32)).squeeze(-1)


def mlp_policy_for(observation_space: gym.Space, action_space: gym.Space, hidden: Sequence[int] = (64, 64),
                   log_std_init: float = -0.5, normalize_obs: bool = False) -> GaussianMLPPolicy | CategoricalMLPPolicy:  # fmt: skip
    """The MLP policy fitting a (single) env's spaces: Gaussian for a ``Box`` action space, categorical for ``Discrete``.

    Example:
        >>> import gymnasium as gym
        >>> env = gym.make("CartPole-v1")
        >>> type(mlp_policy_for(env.observation_space, env.action_space)).__name__
        'CategoricalMLPPolicy'
    """
    if not isinstance(observation_space, gym.spaces.Box):
        raise TypeError(f"no MLP policy for observation space {observation_space} (a Box state vector is needed)")
    obs_dim = int(np.prod(observation_space.shape))
    if isinstance(action_space, gym.spaces.Box):
        return GaussianMLPPolicy(obs_dim, int(np.prod(action_space.shape)), hidden, log_std_init,
                                 action_space.low, action_space.high, normalize_obs)  # fmt: skip
    if isinstance(action_space, gym.spaces.Discrete):
        return CategoricalMLPPolicy(obs_dim, int(action_space.n), hidden, normalize_obs)
    raise TypeError(f"no MLP policy for action space {action_space} (Box and Discrete are supported)")
