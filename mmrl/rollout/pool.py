"""Env pools: a fixed number of envs driven through Gymnasium's vector API, sized by the rollout batch.

``sync`` is a ``SyncVectorEnv`` (envs in this process); ``async`` an ``AsyncVectorEnv`` (one worker process per env, for
heavy envs: browsers, simulators). Both run with ``AutoresetMode.DISABLED``: the collector decides when each env resets,
with which seed (``reset(seed=[...], options={"reset_mask": mask})``), so GRPO groups get identical observations and
continuing rollouts reset only the envs whose episode ended. A later Ray actor pool implements the same four calls.

Faults never end a run. Inside each env, :class:`ResilientEnv` catches an exception from ``step`` (the episode ends
as an infrastructure failure: ``terminated`` with ``info["infra_failure"]``, never scored as a policy failure) or from
``reset`` (retried), and rebuilds the env, at most ``max_restarts`` times in a row. A worker process that hangs past
``step_timeout`` or dies (``async`` pools) takes the whole vector env down: the pool kills its workers, starts new
ones, and reports every episode in flight as an infrastructure failure. The collector leaves those episodes out of
their groups and counts them. A hang in a ``sync`` pool cannot be interrupted: use ``async`` for envs that can hang.

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
import multiprocessing
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv
from gymnasium.vector.utils import iterate

from mmrl.config import ConfigError

logger = logging.getLogger(__name__)

POOL_MODES = ("sync", "async")
INFRA = "infra_failure"  # the info key of a step that ended because the env (not the policy) failed
# what a hung (timeout) or dead (closed pipe) worker process raises in the parent
WORKER_ERRORS = (multiprocessing.TimeoutError, EOFError, OSError)
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


class ResilientEnv(gym.Env):
    """``env_fn()``, rebuilt when it raises: a failed ``step`` ends the episode as an infrastructure failure, a failed
    ``reset`` is retried on a fresh env; ``max_restarts`` failures in a row re-raise the last error."""

    def __init__(self, env_fn: Callable[[], gym.Env], max_restarts: int = 3) -> None:
        self.env_fn, self.max_restarts = env_fn, max_restarts
        self.env = env_fn()
        self.observation_space, self.action_space = self.env.observation_space, self.env.action_space
        self.metadata = getattr(self.env, "metadata", {})
        self.failures = 0  # in a row
        self.last_obs: Any = None

    def _rebuild(self, error: Exception) -> None:
        self.failures += 1
        logger.warning("env %s failed (%s: %s); restarting it (%d in a row)", type(self.env).__name__,
                       type(error).__name__, str(error)[:200], self.failures)  # fmt: skip
        if self.failures > self.max_restarts:
            raise error
        try:
            self.env.close()
        except Exception:  # a broken env may not close cleanly; it is dropped either way
            pass
        self.env = self.env_fn()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        while True:
            try:
                obs, info = self.env.reset(seed=seed, options=options)
                self.last_obs = obs
                return obs, info
            except Exception as e:  # any env error: a fresh env tries the same seed again
                self._rebuild(e)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        try:
            obs, reward, terminated, truncated, info = self.env.step(action)
        except Exception as e:
            self._rebuild(e)  # ready for the next reset
            return self.last_obs, 0.0, True, False, {INFRA: f"{type(e).__name__}: {str(e)[:200]}"}
        self.failures = 0
        self.last_obs = obs
        return obs, reward, terminated, truncated, info

    def render(self) -> Any:
        return self.env.render()

    def close(self) -> None:
        self.env.close()


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
    """``num_envs`` envs of ``env_fn()`` behind Gymnasium's vector API; observations and infos come back per env.

    ``step_timeout`` (async pools): seconds to wait for a step or reset before the workers count as hung;
    ``max_restarts``: failures in a row an env (or the worker pool) may have before the error stops the run.
    """

    def __init__(self, env_fn: Callable[[], gym.Env], num_envs: int, mode: str = "sync",
                 normalize_reward_gamma: float | None = None, step_timeout: float | None = None,
                 max_restarts: int = 3, start_method: str = "fork") -> None:  # fmt: skip
        if mode not in POOL_MODES:
            raise ConfigError(f"env.pool: unknown pool mode '{mode}' (use {' or '.join(POOL_MODES)})")
        self.fns = [lambda: wrap_env(ResilientEnv(env_fn, max_restarts), normalize_reward_gamma)
                    for _ in range(num_envs)]  # fmt: skip
        self.num_envs, self.mode = num_envs, mode
        self.step_timeout, self.max_restarts = step_timeout, max_restarts
        self.start_method = start_method  # how async workers start: fork (fast) | spawn / forkserver (simulators)
        self.vec = self._start()
        self.single_observation_space = self.vec.single_observation_space
        self.single_action_space = self.vec.single_action_space
        self.restarts = 0  # worker-pool restarts in a row
        self.last_obs: list[Any] = [None] * num_envs
        self.lost = np.zeros(num_envs, dtype=bool)  # envs whose running episode a restart during a reset wiped out

    def _start(self) -> gym.vector.VectorEnv:
        if self.mode == "sync":
            return SyncVectorEnv(self.fns, autoreset_mode=AutoresetMode.DISABLED)
        # pickled through pipes: any observation space, no shared memory
        return AsyncVectorEnv(self.fns, shared_memory=False, autoreset_mode=AutoresetMode.DISABLED,
                              context=self.start_method)  # fmt: skip

    def _restart(self, error: Exception) -> None:
        """Kill the workers and start new ones (async pools): after a hang or a dead worker."""
        self.restarts += 1
        logger.warning("env workers failed (%s: %s); restarting the pool (%d in a row)", type(error).__name__,
                       str(error)[:200] or "no message", self.restarts)  # fmt: skip
        if self.restarts > self.max_restarts:
            raise error
        try:
            self.vec.close(terminate=True)
        except Exception:  # a dead worker's pipe fails the close: kill what is left by hand
            for process in getattr(self.vec, "processes", []):
                if process.is_alive():
                    process.terminate()
            for pipe in getattr(self.vec, "parent_pipes", []):
                pipe.close()
            self.vec.closed = True  # nothing left for its __del__ to close
        self.vec = self._start()

    def _wait(self, call: str, *args: Any, **kwargs: Any) -> Any:
        """``vec.<call>_async`` then ``<call>_wait(step_timeout)`` (async pools); the plain call otherwise."""
        if self.mode == "sync":
            return getattr(self.vec, call)(*args, **kwargs)
        getattr(self.vec, f"{call}_async")(*args, **kwargs)
        return getattr(self.vec, f"{call}_wait")(timeout=self.step_timeout)

    def reset(self, seeds: Sequence[int | None], mask: Sequence[bool] | None = None,
              options: dict[str, Any] | None = None) -> tuple[list[Any], list[dict[str, Any]]]:  # fmt: skip
        """Reset the envs where ``mask`` is true (all when None) with ``seeds[i]``; returns every env's current
        observation and the reset infos (``{}`` for envs not reset)."""
        opts = dict(options or {})
        if mask is not None:
            opts["reset_mask"] = np.asarray(mask, dtype=np.bool_)
        seed_list = [None if s is None else int(s) for s in seeds]
        while True:
            try:
                obs, infos = self._wait("reset", seed=seed_list, options=opts or None)
                break
            except WORKER_ERRORS as e:
                if self.mode == "sync":
                    raise
                self._restart(e)  # new workers: every env is reset, the episodes of those outside the mask are lost
                if "reset_mask" in opts:
                    self.lost |= ~opts.pop("reset_mask")
        self.restarts = 0
        self.last_obs = self._split(obs)
        return list(self.last_obs), self._infos(infos)

    def step(self, actions: Sequence[Any]) -> tuple[list[Any], np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        """Step every env with ``actions[i]``: ``(obs per env, rewards [N], terminated [N], truncated [N], infos)``.

        After a worker-pool failure every env reports ``terminated`` with ``info["infra_failure"]`` (and must be
        reset, as after any episode end)."""
        batched = np.stack(actions) if isinstance(self.single_action_space, gym.spaces.Box) else tuple(actions)
        try:
            obs, rewards, terminated, truncated, infos = self._wait("step", batched)
        except WORKER_ERRORS as e:
            if self.mode == "sync":
                raise
            self._restart(e)
            lost = {INFRA: f"worker pool restarted ({type(e).__name__})"}
            n = self.num_envs
            return list(self.last_obs), np.zeros(n), np.ones(n, bool), np.zeros(n, bool), [dict(lost) for _ in range(n)]
        self.restarts = 0
        self.last_obs = self._split(obs)
        infos, terminated = self._infos(infos), np.asarray(terminated)
        for i in np.flatnonzero(self.lost):  # their episode was reset under them: this step is not theirs to keep
            terminated[i], infos[i] = True, {INFRA: "episode lost to a worker pool restart during a reset"}
        self.lost[:] = False
        return list(self.last_obs), np.asarray(rewards, float), terminated, np.asarray(truncated), infos

    def close(self) -> None:
        self.vec.close()

    def _split(self, obs: Any) -> list[Any]:
        return list(iterate(self.vec.observation_space, obs))

    def _infos(self, infos: dict[str, Any]) -> list[dict[str, Any]]:
        boxed, present = infos.get("boxed"), infos.get("_boxed")
        return [boxed[i].value if present is not None and present[i] else {} for i in range(self.num_envs)]
