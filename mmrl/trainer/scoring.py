"""Rewards as a batched stage: every reward function scores a whole rollout batch in one call.

Training envs are built with ``defer_rewards=True`` where they support it: their ``step()`` returns reward 0 and the
reward inputs in ``info["reward_columns"]`` (the env still computes ``success``). This stage gathers every deferred step
of the batch and calls each configured reward function once, TRL-style ``fn(completions, **columns)``, so a model judge
batches across the rollout; the weighted sum becomes the step's reward and the unweighted values its
``info["reward_parts"]``. Envs that score in ``step()`` (any Gymnasium env) keep their own rewards: nothing is scored
twice.

A reward that is not finite (NaN, inf) is never turned into a number: with ``train.nonfinite_rewards: error`` (the
default) the run stops with a one-line error naming the reward function (or the env) and the completion's episode;
with ``drop`` the episode is left out of the batch and counted (``reward/nonfinite_dropped``).

Example:
    >>> stage = RewardStage({"accuracy": 1.0, "format_answer": 0.1})
    >>> stage(trajectories)  # sets the deferred steps' rewards
    >>> stage.parts(trajectories)["reward/accuracy/mean"]
    0.25
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

import rewards
from mmrl.config import ConfigError
from mmrl.trainer import TrainingError
from mmrl.types import Step, Trajectory

DEFERRED = "reward_columns"  # the info key of a step whose reward this stage computes


NONFINITE = ("error", "drop")


class NonFiniteRewardError(TrainingError):
    """A reward function (or an env) returned NaN or inf: one line naming it."""


def is_deferred(step: Step) -> bool:
    return DEFERRED in step.info


class RewardStage:
    """The weighted sum of the named reward functions (``rewards: {name: weight}``), applied to deferred steps."""

    def __init__(self, weights: dict[str, float], nonfinite: str = "error") -> None:
        if nonfinite not in NONFINITE:
            raise ConfigError(f"train.nonfinite_rewards: expected error or drop, got '{nonfinite}'")
        self.nonfinite = nonfinite
        self.weights = dict(weights)
        try:
            self.total = rewards.composite(self.weights) if self.weights else None
        except KeyError as e:  # an unknown name: one line listing the known ones
            raise ConfigError(f"rewards: {e.args[0]}") from None

    def __call__(self, trajectories: list[Trajectory]) -> int:
        """Score the deferred steps of ``trajectories`` in place (one call of each reward function); episodes with a
        non-finite reward raise :class:`NonFiniteRewardError` or, with ``drop``, are removed from the list. Returns
        the number dropped."""
        pending = [s for t in trajectories for s in t.steps if is_deferred(s)]
        bad: dict[int, str] = {}  # id(step) -> what returned a non-finite value
        if pending and self.total is not None:
            keys = sorted({k for s in pending for k in s.info[DEFERRED]})
            columns: dict[str, list[Any]] = {k: [s.info[DEFERRED].get(k) for s in pending] for k in keys}
            total, parts = self.total([str(s.action) for s in pending], **columns)
            for i, step in enumerate(pending):
                step.reward = float(total[i])
                step.info["reward_parts"] = {name: float(values[i]) for name, values in parts.items()}
                culprit = next((f"reward '{n}'" for n, v in step.info["reward_parts"].items() if not math.isfinite(v)), None)
                if culprit is not None:
                    bad[id(step)] = culprit
        for t in trajectories:  # rewards the envs computed themselves
            for s in t.steps:
                if not math.isfinite(s.reward) and id(s) not in bad:
                    bad[id(s)] = "the env's reward"
        dropped = 0
        if bad:
            hit = [t for t in trajectories if any(id(s) in bad for s in t.steps)]
            if self.nonfinite == "error":
                culprit = next(bad[id(s)] for s in hit[0].steps if id(s) in bad)
                raise NonFiniteRewardError(f"{culprit} returned a non-finite value (NaN or inf) for an episode of group "
                                           f"{hit[0].group_id}; train.nonfinite_rewards=drop leaves such episodes out")  # fmt: skip
            dropped = len(hit)
            trajectories[:] = [t for t in trajectories if all(id(s) not in bad for s in t.steps)]
        for t in trajectories:  # the episode's info reflects its scored last step, as an env that scores itself
            if t.steps and "reward_parts" in t.steps[-1].info:
                t.info["reward_parts"] = t.steps[-1].info["reward_parts"]
        return dropped

    @staticmethod
    def parts(trajectories: Sequence[Trajectory]) -> dict[str, float]:
        """Each reward function's mean and std over the batch's steps (``info["reward_parts"]``, whoever computed
        them)."""
        by_name: dict[str, list[float]] = {}
        for t in trajectories:
            for s in t.steps:
                for name, value in (s.info.get("reward_parts") or {}).items():
                    by_name.setdefault(name, []).append(float(value))
        stats: dict[str, float] = {}
        for name, values in by_name.items():
            stats[f"reward/{name}/mean"] = float(np.mean(values))
            stats[f"reward/{name}/std"] = float(np.std(values))
        return stats


def episode_return(traj: Trajectory) -> float:
    """The env's own return of an episode: ``info["episode"]["r"]`` (recorded before any reward normalisation) unless
    its rewards were deferred to this stage (then the scored step rewards' sum)."""
    last = traj.steps[-1].info if traj.steps else {}
    if "episode" in last and not any(is_deferred(s) for s in traj.steps):
        return float(last["episode"]["r"])
    return traj.reward
