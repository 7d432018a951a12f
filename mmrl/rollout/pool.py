"""Env pools: a fixed number of envs driven through Gymnasium's vector API, sized by the rollout batch.

``sync`` is a ``SyncVectorEnv`` (envs in this process); ``async`` an ``AsyncVectorEnv`` (one worker process per env, for
heavy envs: browsers, simulators). Both run with ``AutoresetMode.DISABLED``: the collector decides when each env resets,
with which seed (``reset(seed=[...], options={"reset_mask": mask})``), so GRPO groups get identical observations and
continuing rollouts reset only the envs whose episode ended. A later Ray actor pool implements the same four calls.

Two wrappers go on every env, inside the pool:

- :class:`BoxedInfo` hands each env's ``info`` through the vector env as one opaque object, so the collector gets back
  exactly the dict the env returned (Gymnasium's info batching would stack arrays of equal shape, give ``int`` keys an
  ``int`` array that truncates a later ``float``, and split nested dicts).
- ``RecordEpisodeStatistics`` puts the episode's return and length (``info["episode"]``) on its final step, before any
  reward normalisation, so logged returns are the env's own.

Example:
    >>> pool = EnvPool(lambda: gym.make("CartPole-v1"), num_envs=2)
    >>> obs, infos = pool.reset(seeds=[0, 1])
    >>> len(obs), sorted(infos[0])
    (2, [])
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv
from gymnasium.vector.utils import iterate

from mmrl.config import ConfigError

logger = logging.getLogger(__name__)

POOL_MODES = ("sync", "async")
REWARD_CLIP = 10.0  # normalised rewards are clipped to [-10, 10] (CleanRL, SB3's VecNormalize)


class _Box:
    """An opaque holder: Gymnasium's vector info batching stores it in an object array and leaves it whole."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class BoxedInfo(gym.Wrapper):
    """Wrap each ``info`` as ``{"boxed": _Box(info)}`` (undone by :meth:`EnvPool.reset` / :meth:`EnvPool.step`)."""

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        return obs, {"boxed": _Box(info)}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, {"boxed": _Box(info)}


def wrap_env(env: gym.Env, normalize_reward_gamma: float | None = None) -> gym.Env:
    """The pool's wrappers around one env: episode statistics, optional reward normalisation, boxed infos.

    ``normalize_reward_gamma``: divide rewards by the running std of the discounted return (Gymnasium's
    ``NormalizeReward``) and clip them to [-10, 10], as CleanRL's continuous-control PPO; training pools only.
    """
    env = gym.wrappers.RecordEpisodeStatistics(env)
    if normalize_reward_gamma is not None:
        env = gym.wrappers.NormalizeReward(env, gamma=normalize_reward_gamma)
        env = gym.wrappers.TransformReward(env, lambda r: float(np.clip(r, -REWARD_CLIP, REWARD_CLIP)))
    return BoxedInfo(env)


class EnvPool:
    """``num_envs`` envs of ``env_fn()`` behind Gymnasium's vector API; observations and infos come back per env."""

    def __init__(self, env_fn: Callable[[], gym.Env], num_envs: int, mode: str = "sync",
                 normalize_reward_gamma: float | None = None) -> None:  # fmt: skip
        if mode not in POOL_MODES:
            raise ConfigError(f"env.pool: unknown pool mode '{mode}' (use {' or '.join(POOL_MODES)})")
        fns = [lambda: wrap_env(env_fn(), normalize_reward_gamma) for _ in range(num_envs)]
        if mode == "sync":
            self.vec: gym.vector.VectorEnv = SyncVectorEnv(fns, autoreset_mode=AutoresetMode.DISABLED)
        else:  # pickled through pipes: any observation space, no shared memory
            self.vec = AsyncVectorEnv(fns, shared_memory=False, autoreset_mode=AutoresetMode.DISABLED)
        self.num_envs = num_envs
        self.single_observation_space = self.vec.single_observation_space
        self.single_action_space = self.vec.single_action_space

    def reset(self, seeds: Sequence[int | None], mask: Sequence[bool] | None = None,
              options: dict[str, Any] | None = None) -> tuple[list[Any], list[dict[str, Any]]]:  # fmt: skip
        """Reset the envs where ``mask`` is true (all when None) with ``seeds[i]``; returns every env's current
        observation and the reset infos (``{}`` for envs not reset)."""
        opts = dict(options or {})
        if mask is not None:
            opts["reset_mask"] = np.asarray(mask, dtype=np.bool_)
        obs, infos = self.vec.reset(seed=[None if s is None else int(s) for s in seeds], options=opts or None)
        return self._split(obs), self._infos(infos)

    def step(self, actions: Sequence[Any]) -> tuple[list[Any], np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        """Step every env with ``actions[i]``: ``(obs per env, rewards [N], terminated [N], truncated [N], infos)``."""
        batched = np.stack(actions) if isinstance(self.single_action_space, gym.spaces.Box) else tuple(actions)
        obs, rewards, terminated, truncated, infos = self.vec.step(batched)
        return self._split(obs), np.asarray(rewards, float), np.asarray(terminated), np.asarray(truncated), self._infos(infos)

    def close(self) -> None:
        self.vec.close()

    def _split(self, obs: Any) -> list[Any]:
        return list(iterate(self.vec.observation_space, obs))

    def _infos(self, infos: dict[str, Any]) -> list[dict[str, Any]]:
        boxed, present = infos.get("boxed"), infos.get("_boxed")
        return [boxed[i].value if present is not None and present[i] else {} for i in range(self.num_envs)]
