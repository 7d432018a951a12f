"""The rollout collector: drives an :class:`~mmrl.rollout.pool.EnvPool` with a policy of any family.

Two ways to collect, one loop underneath (act on every live env together, step the pool, record, reset what ended):

- :meth:`Collector.episodes` plays whole episodes: every seed ``group_size`` times (a GRPO group: the same seed, so the
  same first observation), in order, on the pool's ``N`` envs. An env whose episode ends takes the next queued episode;
  once the queue is empty it becomes a *spare*: Gymnasium's vector API steps every env, so a spare is reset and stepped
  with a random valid action (``single_action_space.sample()``: no policy compute) until the last real episode ends,
  and its steps are dropped. Pool size is the rollout batch, never the number of episodes (64 envs play 256 eval
  episodes in four waves).
- :meth:`Collector.fragments` continues running episodes for ``horizon`` steps per env (PPO on Gymnasium tasks): each
  env's steps since its last reset form a trajectory; one that has not ended when the horizon is reached is returned
  as a fragment (its ``final_observation`` bootstraps the return) and goes on in the next call.

Infrastructure failures (an env that raised, hung or lost its worker: ``info["infra_failure"]``, see
:mod:`mmrl.rollout.pool`) end their episode, which is left out of the returned trajectories (and so out of its GRPO
group) and counted in ``stats.infra_failures``: a crash is never scored as the policy's failure.

A policy that cannot act on an observation (``Action.stop``: a VLM whose context would overflow) ends its episode
there: the previous step is marked truncated, the env is stepped at random like a spare and reset, and the episode is
counted in ``stats.context_truncations`` (one with no step at all is dropped, as it has nothing to train on).

Episode ends: ``terminated`` ends the MDP (no bootstrap). ``truncated`` (the env's time limit, or ``max_steps`` here,
recorded as truncation) ends the episode but not the MDP: the learner bootstraps the return with ``V(final_observation)``,
as it does for fragments. Gymnasium's autoreset is off (``AutoresetMode.DISABLED``): the env is reset here, right after
the step that ended it, so no dummy transition from an autoreset step ever enters a batch.

Example:
    >>> collector = Collector(policy, EnvPool(lambda: envs.make("synthetic_vqa"), num_envs=64))
    >>> trajs = collector.episodes(seeds=[0, 1, 2, 3, 4, 5, 6, 7], group_size=8, params=SamplingParams())
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mmrl.policies.base import Policy, SamplingParams
from mmrl.rollout.pool import INFRA, EnvPool
from mmrl.types import Step, Trajectory

logger = logging.getLogger(__name__)


@dataclass
class RolloutStats:
    """Throughput of the last collection."""

    seconds: float = 0.0
    env_steps: int = 0  # steps of the policy's episodes (spares not counted)
    generated_tokens: int = 0  # tokens of the actions (families whose records count them)
    infra_failures: int = 0  # episodes (or fragments) lost to an env failure and left out
    context_truncations: int = 0  # episodes the policy ended because its context was full (kept, as truncated)

    @property
    def env_steps_per_s(self) -> float:
        return self.env_steps / max(self.seconds, 1e-9)

    @property
    def tokens_per_s(self) -> float:
        return self.generated_tokens / max(self.seconds, 1e-9)


class Collector:
    """Plays ``policy`` on ``pool``; ``max_steps`` caps an episode's length (the collector truncates it there)."""

    def __init__(self, policy: Policy, pool: EnvPool, max_steps: int | None = None) -> None:
        self.policy = policy
        self.pool = pool
        self.max_steps = max_steps
        self.stats = RolloutStats()
        self._open: list[Trajectory] | None = None  # fragments: the trajectory running in each env
        self._obs: list[Any] | None = None  # fragments: each env's current observation
        self._states: list[Any] = []  # fragments: each env's policy state
        self.total_env_steps = 0  # env steps of the policy over all calls

    # ---------------------------------------------------------------------------------------------------- episodes
    def episodes(self, seeds: Sequence[int], group_size: int, params: SamplingParams) -> list[Trajectory]:
        """``len(seeds) * group_size`` whole episodes, in order; trajectory ``k * group_size + j`` has group id ``k``."""
        start = time.perf_counter()
        queue = [(k, int(seed)) for k, seed in enumerate(seeds) for _ in range(group_size)]
        done: list[Trajectory | None] = [None] * len(queue)
        N = self.pool.num_envs
        slot: list[int] = [-1] * N  # episode index running in each env; -1: a spare
        trajs: dict[int, Trajectory] = {}
        states: list[Any] = [None] * N
        next_ep = 0

        def assign(mask: list[bool]) -> list[int | None]:
            """Give each masked env the next queued episode (else make it a spare); return the reset seeds."""
            nonlocal next_ep
            seeds_now: list[int | None] = [None] * N
            for i in range(N):
                if not mask[i]:
                    continue
                states[i] = None
                if next_ep < len(queue):
                    slot[i], seeds_now[i] = next_ep, queue[next_ep][1]
                    next_ep += 1
                else:
                    slot[i] = -1
            return seeds_now

        obs, infos = self.pool.reset(assign([True] * N))
        self._begin(slot, trajs, infos, queue)
        steps = tokens = truncations = 0
        self.policy.train(False)
        while any(s >= 0 for s in slot):
            live = [i for i in range(N) if slot[i] >= 0]
            actions = dict(zip(live, self.policy.act([obs[i] for i in live], params, [states[i] for i in live])))
            stopped = [i for i, a in actions.items() if a.stop]
            for i in stopped:  # the policy cannot go on (full context): the episode ends before this observation
                traj = trajs.pop(slot[i])
                del actions[i]
                truncations += 1
                if traj.steps:
                    traj.steps[-1].truncated = not traj.steps[-1].terminated
                    traj.final_observation = obs[i]
                    done[slot[i]] = traj
                slot[i] = -1  # a spare for this step, reset below
            env_actions = [actions[i].env_action if i in actions else self.pool.single_action_space.sample()
                           for i in range(N)]  # spares act at random  # fmt: skip
            next_obs, rewards, terminated, truncated, step_infos = self.pool.step(env_actions)
            ended = [i in stopped for i in range(N)]
            for i, a in actions.items():
                traj = trajs[slot[i]]
                cut = self.max_steps is not None and len(traj.steps) + 1 >= self.max_steps
                traj.steps.append(Step(obs[i], a.env_action, a.logp, a.record, a.version, float(rewards[i]),
                                       bool(terminated[i]), bool(truncated[i] or (cut and not terminated[i])),
                                       step_infos[i]))  # fmt: skip
                traj.info.update(step_infos[i])
                states[i] = a.state
                steps += 1
                tokens += generated_tokens(a.record)
                if traj.ended:
                    traj.final_observation = next_obs[i]
                    done[slot[i]] = trajs.pop(slot[i])
                    ended[i] = True
            ended = [e or (slot[i] < 0 and bool(terminated[i] or truncated[i])) for i, e in enumerate(ended)]
            obs = next_obs
            running = any(slot[i] >= 0 and not ended[i] for i in range(N))
            if not running and next_ep == len(queue):
                break
            if any(ended):
                reset_obs, reset_infos = self.pool.reset(assign(ended), mask=ended)
                obs = [reset_obs[i] if ended[i] else obs[i] for i in range(N)]
                self._begin([s if ended[i] else -1 for i, s in enumerate(slot)], trajs, reset_infos, queue)
        dropped = sum(1 for t in done if t is None)  # context full at the first observation: nothing to train on
        kept = [t for t in done if t is not None and not failed(t)]
        self.stats = RolloutStats(time.perf_counter() - start, steps, tokens, len(queue) - len(kept) - dropped, truncations)
        self.total_env_steps += steps
        return kept

    @staticmethod
    def _begin(slot: list[int], trajs: dict[int, Trajectory], infos: list[dict[str, Any]],
               queue: list[tuple[int, int]]) -> None:  # fmt: skip
        """Open a trajectory for each env that just started a queued episode."""
        for i, ep in enumerate(slot):
            if ep >= 0 and ep not in trajs:
                trajs[ep] = Trajectory(steps=[], group_id=queue[ep][0], env_index=i, info=dict(infos[i]))

    # --------------------------------------------------------------------------------------------------- fragments
    def fragments(self, horizon: int, params: SamplingParams, seed: int | None = None) -> list[Trajectory]:
        """``horizon`` steps of every env, continuing the episodes of the previous call (the first call resets every
        env with ``seed + i``). Returns the trajectories that ended plus each env's open fragment, in the order they
        started; group id = env index."""
        start = time.perf_counter()
        N = self.pool.num_envs
        if self._obs is None:
            base = 0 if seed is None else int(seed)
            self._obs, infos = self.pool.reset([base + i for i in range(N)])
            self._open = [Trajectory(steps=[], group_id=i, env_index=i, info=dict(infos[i])) for i in range(N)]
            self._states = [None] * N
        out: list[Trajectory] = []
        tokens = 0
        self.policy.train(False)
        for _ in range(horizon):
            actions = self.policy.act(self._obs, params, self._states)
            next_obs, rewards, terminated, truncated, infos = self.pool.step([a.env_action for a in actions])
            ended = [False] * N
            for i, a in enumerate(actions):
                traj = self._open[i]
                cut = self.max_steps is not None and len(traj.steps) + 1 >= self.max_steps
                traj.steps.append(Step(self._obs[i], a.env_action, a.logp, a.record, a.version, float(rewards[i]),
                                       bool(terminated[i]), bool(truncated[i] or (cut and not terminated[i])),
                                       infos[i]))  # fmt: skip
                traj.info.update(infos[i])
                self._states[i] = a.state
                tokens += generated_tokens(a.record)
                if traj.ended:
                    traj.final_observation = next_obs[i]
                    out.append(traj)
                    ended[i] = True
            self._obs = next_obs
            if any(ended):
                reset_obs, reset_infos = self.pool.reset([None] * N, mask=ended)
                for i in range(N):
                    if ended[i]:
                        self._obs[i] = reset_obs[i]
                        self._states[i] = None
                        self._open[i] = Trajectory(steps=[], group_id=i, env_index=i, info=dict(reset_infos[i]))
        for i, traj in enumerate(self._open):  # still running: a fragment, bootstrapped from the current observation
            if traj.steps:
                out.append(Trajectory(list(traj.steps), traj.group_id, i, dict(traj.info), self._obs[i]))
                self._open[i] = Trajectory(steps=[], group_id=i, env_index=i, info=dict(traj.info))
        kept = [t for t in out if not failed(t)]
        self.total_env_steps += horizon * N
        self.stats = RolloutStats(time.perf_counter() - start, horizon * N, tokens, len(out) - len(kept))
        return kept

    def close(self) -> None:
        self.pool.close()


def failed(traj: Trajectory) -> bool:
    """The trajectory ended because its env failed (not because of the policy)."""
    return bool(traj.steps) and INFRA in traj.steps[-1].info


def generated_tokens(record: Any) -> int:
    """Generated tokens of a step, for families whose records have ``response_ids`` (0 for the others)."""
    return len(getattr(record, "response_ids", ()) or ())
