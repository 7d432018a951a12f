"""The multi-turn rollout collector: drives a pool of envs with a VLM policy and records trajectories.

For GRPO every prompt is played ``group_size`` times: the envs of one group are reset with the same seed, so they show the
same observation (encoded once per group: the image processor runs once, not ``group_size`` times), and their
trajectories share a group id. Episodes run turn by turn; all still-running episodes of the
batch are sampled together in one ``policy.generate`` call per turn.

Example:
    >>> collector = Collector(policy, env_fn=lambda: envs.make("synthetic_vqa"), num_envs=64)
    >>> trajs = collector.collect(seeds=[0, 1, 2, 3, 4, 5, 6, 7], group_size=8, params=SamplingParams())
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from mmrl.policies.vlm import SamplingParams, VLMPolicy
from mmrl.policies.vlm.chat import Conversation
from mmrl.types import Observation, Trajectory, Turn

logger = logging.getLogger(__name__)


@dataclass
class RolloutStats:
    """Throughput of the last ``collect`` call."""

    seconds: float = 0.0
    generated_tokens: int = 0
    env_steps: int = 0

    @property
    def tokens_per_s(self) -> float:
        return self.generated_tokens / max(self.seconds, 1e-9)

    @property
    def env_steps_per_s(self) -> float:
        return self.env_steps / max(self.seconds, 1e-9)


def same_observation(a: Observation, b: Observation) -> bool:
    """Whether two first-turn observations are identical (text and every image pixel)."""
    return (
        a.text == b.text
        and len(a.images) == len(b.images)
        and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a.images, b.images))
    )


class Collector:
    """Plays episodes of ``env_fn()`` envs with ``policy``; envs are created once and reused."""

    def __init__(
        self,
        policy: VLMPolicy,
        env_fn: Callable[[], gym.Env],
        max_turns: int = 1,
        batch_size: int = 64,
        system_prompt: str | None = None,
    ) -> None:
        self.policy = policy
        self.env_fn = env_fn
        self.max_turns = max_turns  # an episode still running after this many turns is truncated
        self.batch_size = batch_size  # sequences per generate call
        self.system_prompt = system_prompt
        self.envs: list[gym.Env] = []
        self.stats = RolloutStats()

    def _pool(self, n: int) -> list[gym.Env]:
        while len(self.envs) < n:
            self.envs.append(self.env_fn())
        return self.envs[:n]

    def collect(self, seeds: list[int], group_size: int, params: SamplingParams) -> list[Trajectory]:
        """One trajectory per (seed, sample): ``len(seeds) * group_size`` trajectories, group id = index of the seed."""
        start = time.perf_counter()
        n = len(seeds) * group_size
        envs = self._pool(n)
        convs: list[Conversation] = []
        trajs: list[Trajectory] = []
        pending: list[Turn | None] = []
        first: dict[int, tuple[Observation, Conversation]] = {}  # group -> its first observation, encoded
        for i, env in enumerate(envs):
            group = i // group_size
            obs_dict, info = env.reset(seed=int(seeds[group]))
            obs = Observation.from_dict(obs_dict)
            if group in first and same_observation(first[group][0], obs):
                conv = first[group][1].fork()  # same seed, same observation: reuse the encoded prompt
                ids, vision = list(conv.ids), list(conv.vision)
            else:
                conv = self.policy.conversation(self.system_prompt)
                ids, vision = conv.add_user(obs.text, obs.images)
                first.setdefault(group, (obs, conv.fork()))
            convs.append(conv)
            pending.append(Turn(prompt_ids=ids, images=list(obs.images), response_ids=[], response_logprobs=[],
                                response_text="", extras={"vision": vision}))  # fmt: skip
            trajs.append(Trajectory(turns=[], group_id=group, info=dict(info)))
        active = list(range(n))
        gen_tokens = steps = 0
        for turn_index in range(self.max_turns):
            if not active:
                break
            for lo in range(0, len(active), self.batch_size):
                chunk = active[lo : lo + self.batch_size]
                gens = self.policy.generate([convs[i].ids for i in chunk], [convs[i].vision for i in chunk], params)
                for i, g in zip(chunk, gens):
                    turn = pending[i]
                    turn.response_ids, turn.response_logprobs, turn.response_text = g.ids, g.logprobs, g.text
                    convs[i].add_assistant(g.ids)
                    gen_tokens += len(g.ids)
            still = []
            for i in active:
                obs_dict, reward, terminated, truncated, info = envs[i].step(pending[i].response_text)
                steps += 1
                pending[i].reward = float(reward)
                trajs[i].turns.append(pending[i])
                trajs[i].info.update(info)
                trajs[i].success = bool(info.get("success", False))
                if terminated or truncated or turn_index == self.max_turns - 1:
                    trajs[i].info["truncated"] = bool(truncated or (not terminated and turn_index == self.max_turns - 1))
                    continue
                obs = Observation.from_dict(obs_dict)
                ids, vision = convs[i].add_user(obs.text, obs.images)
                pending[i] = Turn(prompt_ids=ids, images=list(obs.images), response_ids=[], response_logprobs=[],
                                  response_text="", extras={"vision": vision})  # fmt: skip
                still.append(i)
            active = still
        self.stats = RolloutStats(time.perf_counter() - start, gen_tokens, steps)
        return trajs

    def close(self) -> None:
        for env in self.envs:
            env.close()
        self.envs = []
