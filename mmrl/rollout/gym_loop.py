"""On-policy collection from vectorized Gymnasium envs for PPO with a critic (classic control, state-vector envs).

One :meth:`GymCollector.collect` call runs ``T`` steps x ``N`` envs with an MLP policy
(:mod:`mmrl.policies.mlp`), computes GAE with :func:`mmrl.algos.advantages.gae`, and returns a
:class:`~mmrl.types.Batch` with ``L = 1`` that the shared :class:`~mmrl.algos.learner.Learner` trains on.

Episode ends, with Gymnasium 1.x's default ``AutoresetMode.NEXT_STEP`` autoreset
(https://farama.org/Vector-Autoreset-Mode):

- The step that ends an episode returns the episode's *final* observation as ``next_obs``. The following ``step`` call
  ignores the action, resets that env and returns its first observation with reward 0. That row is not a transition of
  the policy: it is dropped from the batch (``valid = False``) and marked done so GAE never crosses it.
- ``terminated``: the MDP ended, ``V(final) = 0``: ``done = 1``.
- ``truncated`` (time limit, e.g. Pendulum's 200 steps): the MDP goes on, so the return is bootstrapped with the
  critic's value of the final observation: ``r_t += gamma * V(final_obs)`` and ``done = 1`` (the rule stated in
  :func:`~mmrl.algos.advantages.gae`). CleanRL treats truncation as termination; that biases Pendulum's values.

Normalisation (:func:`make_vec_env`, as CleanRL ``ppo_continuous_action.py``'s ``make_env``, but on the vector env so
all envs share the running statistics): observations are normalised by a running mean/std and clipped to [-10, 10];
rewards are divided by the running std of the discounted return and clipped to [-10, 10]. Episode statistics are
recorded *before* both, so logged returns are the env's own.

Example:
    >>> import torch
    >>> from mmrl.policies.mlp import mlp_policy_for
    >>> envs = make_vec_env("CartPole-v1", num_envs=2, gamma=0.99)
    >>> policy = mlp_policy_for(envs.single_observation_space, envs.single_action_space)
    >>> batch, stats = GymCollector(envs, policy, num_steps=8, gamma=0.99, lam=0.95, seed=0).collect()
    >>> batch.mask.shape[1], batch.returns.shape[1], len(batch) <= 16
    (1, 1, True)
"""

from __future__ import annotations

import copy
import logging
import time
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from gymnasium.wrappers import vector as vw

from mmrl.algos.advantages import gae
from mmrl.types import Batch

logger = logging.getLogger(__name__)

OBS_CLIP = 10.0  # CleanRL clips normalised observations and rewards to [-10, 10]
REWARD_CLIP = 10.0


def make_vec_env(
    env_id: str, num_envs: int, gamma: float, norm_obs: bool = True, norm_reward: bool = True, **env_kwargs: Any
) -> gym.vector.VectorEnv:
    """``num_envs`` copies of ``env_id`` in a ``SyncVectorEnv`` (NEXT_STEP autoreset) with CleanRL's normalisation.

    Wrapper order (inside out): ``RecordEpisodeStatistics`` (raw returns in ``info["episode"]``), then optionally
    ``NormalizeObservation`` + clip, ``NormalizeReward(gamma)`` + clip. Sync, not async: on a 2-core CPU the envs are
    microseconds per step and the MLP forward dominates.
    """
    envs = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync",
                        vector_kwargs={"autoreset_mode": AutoresetMode.NEXT_STEP}, **env_kwargs)  # fmt: skip
    envs = vw.RecordEpisodeStatistics(envs)
    if norm_obs:
        envs = vw.NormalizeObservation(envs)
        envs = vw.TransformObservation(envs, lambda o: np.clip(o, -OBS_CLIP, OBS_CLIP))
    if norm_reward:
        envs = vw.NormalizeReward(envs, gamma=gamma)
        envs = vw.TransformReward(envs, lambda r: np.clip(r, -REWARD_CLIP, REWARD_CLIP))
    return envs


class GymCollector:
    """Collect ``num_steps`` x ``num_envs`` transitions, compute GAE, and build the learner's :class:`Batch`.

    The collector owns the envs' current observations between calls, so consecutive rollouts continue episodes.

    Example:
        >>> from mmrl.policies.mlp import GaussianMLPPolicy
        >>> envs = make_vec_env("Pendulum-v1", num_envs=2, gamma=0.99)
        >>> policy = GaussianMLPPolicy(3, 1, action_low=[-2.0], action_high=[2.0])
        >>> batch, stats = GymCollector(envs, policy, num_steps=4, gamma=0.99, lam=0.95, seed=0).collect()
        >>> batch.model_inputs["obs"].shape, batch.model_inputs["actions"].shape
        (torch.Size([8, 3]), torch.Size([8, 1]))
    """

    def __init__(self, envs: gym.vector.VectorEnv, policy: Any, num_steps: int, gamma: float, lam: float,
                 seed: int | None = None) -> None:  # fmt: skip
        mode = envs.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
        if mode != AutoresetMode.NEXT_STEP:
            raise ValueError(f"GymCollector needs NEXT_STEP autoreset, the vector env uses {mode}")
        self.envs, self.policy = envs, policy
        self.num_steps, self.gamma, self.lam = num_steps, gamma, lam
        self.num_envs = envs.num_envs
        obs, _ = envs.reset(seed=seed)
        self.obs = torch.as_tensor(obs, dtype=torch.float32)  # [N, D]
        self.autoreset = np.zeros(self.num_envs, dtype=bool)  # [N] the env resets on its next step (NEXT_STEP)
        self.total_steps = 0  # env steps taken, dummy reset steps included

    def collect(self) -> tuple[Batch, dict[str, Any]]:
        """One rollout. Returns ``(batch, stats)``; ``stats["episode_returns"]`` lists the finished episodes' returns.

        The batch rows are the valid transitions (at most ``T * N``, time-major order): ``model_inputs`` ``obs [B, D]``,
        ``actions [B, A]`` or ``[B]``; ``old_logp``, ``mask``, ``returns``, ``old_values`` ``[B, 1]``; ``advantages [B]``.
        """
        T, N, gamma = self.num_steps, self.num_envs, self.gamma
        obs_buf = torch.zeros((T, *self.obs.shape))  # [T, N, D]
        act_buf: list[torch.Tensor] = []  # T x [N, A] or [N]
        logp_buf = torch.zeros(T, N)  # [T, N]
        rew_buf = torch.zeros(T, N)  # [T, N]
        done_buf = torch.zeros(T, N)  # [T, N]
        val_buf = torch.zeros(T + 1, N)  # [T + 1, N] the last row bootstraps past the rollout
        valid = torch.zeros(T, N, dtype=torch.bool)  # [T, N] False on NEXT_STEP reset rows
        ep_returns: list[float] = []
        ep_lengths: list[int] = []
        t0 = time.perf_counter()
        for t in range(T):
            obs_buf[t] = self.obs
            valid[t] = torch.as_tensor(~self.autoreset)
            actions, logp = self.policy.act(self.obs)  # [N, A] or [N], [N]
            val_buf[t] = self.policy.predict_values(self.obs)  # [N]
            next_obs, reward, terminated, truncated, info = self.envs.step(self.policy.env_action(actions))
            next_obs_t = torch.as_tensor(next_obs, dtype=torch.float32)  # [N, D]
            r = torch.as_tensor(reward, dtype=torch.float32)  # [N] 0 on reset rows
            trunc_only = truncated & ~terminated  # [N] time limit: bootstrap from V(final obs)
            if trunc_only.any():
                v_final = self.policy.predict_values(next_obs_t)  # [N]; NEXT_STEP: next_obs is the final obs
                r = r + gamma * v_final * torch.as_tensor(trunc_only, dtype=torch.float32)
            act_buf.append(actions.cpu())
            logp_buf[t], rew_buf[t] = logp.cpu(), r
            done_buf[t] = torch.as_tensor(terminated | truncated | self.autoreset, dtype=torch.float32)
            if "episode" in info:  # RecordEpisodeStatistics: raw return and length of episodes that just ended
                ended = info["_episode"]
                ep_returns += [float(x) for x in np.asarray(info["episode"]["r"])[ended]]
                ep_lengths += [int(x) for x in np.asarray(info["episode"]["l"])[ended]]
            self.autoreset = np.asarray(terminated | truncated)
            self.obs = next_obs_t
        val_buf[T] = self.policy.predict_values(self.obs)
        collect_s = time.perf_counter() - t0
        self.total_steps += T * N

        adv, returns = gae(rew_buf, val_buf, done_buf, gamma, self.lam)  # [T, N] each
        keep = valid.reshape(-1)  # [T * N] time-major rows, reset rows dropped
        actions_all = torch.stack(act_buf)  # [T, N, A] or [T, N]
        B = int(keep.sum())
        batch = Batch(
            model_inputs={"obs": obs_buf.reshape(T * N, -1)[keep],  # [B, D]
                          "actions": actions_all.reshape(T * N, *actions_all.shape[2:])[keep]},  # [B, A] or [B]
            mask=torch.ones(B, 1),  # [B, 1]
            old_logp=logp_buf.reshape(-1)[keep].unsqueeze(-1),  # [B, 1]
            advantages=adv.reshape(-1)[keep],  # [B]
            rewards=rew_buf.reshape(-1)[keep],  # [B] (normalised) step rewards
            group_ids=torch.arange(N).repeat(T)[keep],  # [B] env index
            returns=returns.reshape(-1)[keep].unsqueeze(-1),  # [B, 1]
            old_values=val_buf[:T].reshape(-1)[keep].unsqueeze(-1),  # [B, 1]
        )  # fmt: skip
        stats = {"episode_returns": ep_returns, "episode_lengths": ep_lengths, "env_steps_per_s": T * N / collect_s,
                 "valid_frac": B / (T * N)}  # fmt: skip
        return batch, stats


def evaluate(policy: Any, env_id: str, episodes: int = 10, seed: int = 0,
             train_envs: gym.vector.VectorEnv | None = None) -> list[float]:  # fmt: skip
    """Returns of ``episodes`` fresh episodes (one env each, run together) with the deterministic policy (mean action).

    With ``train_envs``, observations are normalised with a frozen copy of its running statistics (the policy was trained
    on normalised observations); rewards are the env's own.
    """
    norm = _find_wrapper(train_envs, vw.NormalizeObservation) if train_envs is not None else None
    envs = make_vec_env(env_id, episodes, gamma=1.0, norm_obs=norm is not None, norm_reward=False)
    if norm is not None:
        frozen = _find_wrapper(envs, vw.NormalizeObservation)
        frozen.obs_rms = copy.deepcopy(norm.obs_rms)
        frozen.update_running_mean = False
    obs, _ = envs.reset(seed=seed)
    returns = np.full(episodes, np.nan)  # [E] the first episode's return of each env
    while np.isnan(returns).any():
        actions, _ = policy.act(torch.as_tensor(obs, dtype=torch.float32), deterministic=True)
        obs, _, terminated, truncated, info = envs.step(policy.env_action(actions))
        first = (terminated | truncated) & np.isnan(returns)  # [E] envs whose first episode just ended
        if first.any():
            returns[first] = np.asarray(info["episode"]["r"])[first]
    envs.close()
    return returns.tolist()


def _find_wrapper(env: Any, cls: type) -> Any:
    """The first wrapper of type ``cls`` in a wrapper stack (None if absent)."""
    while env is not None and not isinstance(env, cls):
        env = getattr(env, "env", None)
    return env
