"""Action chunks ``[H, A]`` for any Gymnasium continuous-control env (a ``Box`` action space): one ``step`` of the
wrapper runs the chunk's actions one after another on the wrapped env.

What one chunk step returns, for the actions ``a_0 .. a_{k-1}`` that were executed (``k <= H``):

- ``reward``: the undiscounted sum of the ``k`` per-step rewards (the return of the chunk as a macro-action);
- ``terminated`` / ``truncated``: those of the last executed step. The chunk stops early at the first step that ends
  the episode, so no action ever runs after the end (and no autoreset of the wrapped env can be triggered);
- ``observation`` and ``info``: the last step's, plus ``info["executed"] = k`` (the learner keeps only the executed
  actions' log-probs) and ``info["step_rewards"]`` (``[k]`` float64, for action-level credit).

Clipping: before it runs, each action is clipped to the env's ``action_space`` bounds (``np.clip(a, low, high)``),
so a policy may sample from an unbounded distribution (a Gaussian, a flow) and the env only sees valid actions.
The chunk's log-prob is the policy's business and refers to the unclipped sample, as in CleanRL's continuous PPO.
``clip=False`` hands actions through as they are (the env then does what it does with out-of-range values).

Example:
    >>> import gymnasium as gym, numpy as np
    >>> env = ActionChunk(gym.make("Pendulum-v1"), horizon=4)
    >>> env.action_space.shape
    (4, 1)
    >>> _ = env.reset(seed=0)
    >>> obs, reward, terminated, truncated, info = env.step(np.zeros((4, 1), np.float32))
    >>> info["executed"]
    4
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from mmrl.config import ConfigError


class ActionChunk(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Run an action chunk ``[horizon, A]`` per step on ``env`` (a single env with a ``Box(A)`` action space)."""

    def __init__(self, env: gym.Env, horizon: int, clip: bool = True) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, horizon=horizon, clip=clip)  # env.spec names the wrapper
        gym.Wrapper.__init__(self, env)
        single = env.action_space
        if not isinstance(single, spaces.Box) or len(single.shape) != 1:
            raise ConfigError(f"horizon: action chunks need a flat Box action space, {env} has {single}")
        if horizon < 1:
            raise ConfigError(f"horizon: must be >= 1, got {horizon}")
        self.horizon, self.clip = int(horizon), clip
        self.low, self.high = single.low, single.high  # [A] bounds every action of a chunk is clipped to
        low = np.broadcast_to(single.low, (self.horizon, *single.shape))  # [H, A]
        high = np.broadcast_to(single.high, (self.horizon, *single.shape))  # [H, A]
        self.action_space = spaces.Box(low, high, dtype=single.dtype)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        chunk = np.asarray(action, dtype=self.env.action_space.dtype)
        if chunk.shape != self.action_space.shape:
            raise ValueError(f"action chunk of shape {chunk.shape}, expected {self.action_space.shape} [H, A]")
        if self.clip:
            chunk = np.clip(chunk, self.low, self.high)  # [H, A]
        rewards: list[float] = []
        for a in chunk:  # [A]
            obs, reward, terminated, truncated, info = self.env.step(a)
            rewards.append(float(reward))
            if terminated or truncated:
                break
        info = {**info, "executed": len(rewards), "step_rewards": np.asarray(rewards)}
        return obs, float(sum(rewards)), bool(terminated), bool(truncated), info


def make_chunked(env: str, horizon: int, clip: bool = True, **kwargs: Any) -> ActionChunk:
    """``envs.make(env, **kwargs)`` (an mmrl env or any Gymnasium id) wrapped in :class:`ActionChunk`; registered as
    ``chunked``, so a config reads ``env: {id: chunked, kwargs: {env: maniskill, horizon: 8, task: PushCube-v1}}``."""
    from envs.registry import make

    return ActionChunk(make(env, **kwargs), horizon=horizon, clip=clip)
