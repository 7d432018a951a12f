"""Video-R1's temporal contrast (T-GRPO, https://arxiv.org/abs/2503.21776): a bonus for correct answers to a video
question that the policy answers better with the frames in order than shuffled.

For each GRPO group whose observation carries videos, the policy answers the same question again on the same frames in
a random temporal order: ``algo.temporal_contrast_samples`` answers (default ``algo.group_size``) with the rollout's
sampling parameters, every group in one ``act`` call (in chunks of ``rollout.batch_size``, the pool's memory knob).
Ordered and shuffled answers are scored by the env's verdict reward (``accuracy``: ``info["success"]`` is its full
score) on the group's reward columns, the inputs the env deferred to the trainer. With ``p`` the accuracy of the
group's ordered answers and ``p~`` that of its shuffled ones, :func:`rewards.temporal_contrast_bonus` gives each correct
ordered answer ``algo.temporal_contrast`` when ``p >= algo.temporal_contrast_ratio * p~`` (Video-R1: 0.3 and 0.8).

The bonus is added to the episode's last-step reward, after the reward stage and before the advantages, and recorded as
the ``temporal_contrast`` entry of its ``reward_parts`` (0 for every other episode), so the per-reward metrics stay
truthful (``reward/temporal_contrast/mean``) and the rollout viewer shows it. The shuffled answers are never trained
on, never stored as rollout samples and never stepped in an env. Groups without videos (image rows of a mixed dataset)
are not asked again and get no bonus: Video-R1 contrasts video inputs only.

Seeding: group ``g``'s frames at step ``s`` are permuted by ``default_rng([seed, PHASE, s, g])``, redrawn until the
permutation is not the identity (a clip of one frame has only the identity); ``video_fps`` and the text are unchanged.
The answers are sampled from the step's torch stream, which :meth:`mmrl.trainer.loop.Trainer.collect` seeds from
``(seed, step)``, so a resumed run replays them.

Example:
    >>> check(cfg, pool.single_observation_space)  # at construction: a grouped advantage, an env with videos
    >>> apply(trajectories, policy, cfg, sampling, step=3)  # after the reward stage
    {'temporal/acc_ordered': 0.625, 'temporal/acc_shuffled': 0.5, 'temporal/bonus_groups': 1.0}
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

import rewards
from mmrl.algos import advantages
from mmrl.config import ConfigError, RunConfig
from mmrl.policies.base import Policy, SamplingParams
from mmrl.trainer.scoring import DEFERRED
from mmrl.types import Trajectory

PHASE = 6  # seed phase of the permutations (loop.py: 2 prompt seeds, 3 sampling, 4 minibatches; the vlm family: 5 VPPO)
ACCURACY = "accuracy"  # the reward whose full score is the env's info["success"] (envs.vqa.base.VQAEnv.success_reward)
PART = "temporal_contrast"  # the bonus's name in reward_parts (logged as reward/temporal_contrast/mean)


def check(cfg: RunConfig, observation_space: gym.Space[Any]) -> None:
    """What the config alone cannot decide (mmrl.config checks the policy family, one turn and ``rewards``): a
    group-relative outcome advantage, whose groups are the contrast's, and an env whose observations carry videos."""
    a = cfg.algo
    if advantages.FAMILY.get(a.advantage) != "outcome":
        known = ", ".join(advantages.names("outcome"))
        raise ConfigError(f"algo.temporal_contrast: needs a group-relative outcome advantage ({known}), "
                          f"got algo.advantage '{a.advantage}'")  # fmt: skip
    if "videos" not in getattr(observation_space, "spaces", {}):
        raise ConfigError(f"algo.temporal_contrast: the observations of env '{cfg.env.id}' carry no `videos` "
                          "(use a video env, or a dataset with video rows)")  # fmt: skip


def shuffle_frames(obs: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """``obs`` with each video's frames in a random order, never the identity when a clip has two frames or more;
    ``video_fps``, the text and the images unchanged."""
    videos = []
    for video in obs["videos"]:
        t = len(video)
        perm = rng.permutation(t)  # [T]
        while t > 1 and np.array_equal(perm, np.arange(t)):
            perm = rng.permutation(t)
        videos.append(video[perm])  # [T, H, W, 3]
    return {**obs, "videos": tuple(videos)}


def apply(
    trajectories: list[Trajectory], policy: Policy, cfg: RunConfig, sampling: SamplingParams, step: int
) -> dict[str, float]:
    """Add the T-GRPO bonus to the scored single-turn ``trajectories`` in place (see the module docstring). Returns
    ``temporal/acc_ordered`` and ``temporal/acc_shuffled`` (over the video groups' answers) and
    ``temporal/bonus_groups`` (the fraction of video groups whose correct answers got the bonus); nothing when the
    batch has no video group."""
    a = cfg.algo
    for t in trajectories:
        last = t.steps[-1]
        if DEFERRED not in last.info:
            raise ConfigError(f"algo.temporal_contrast: env '{cfg.env.id}' scored its own rewards; the contrast needs "
                              "the reward columns of an env whose rewards the trainer computes")  # fmt: skip
        last.info.setdefault("reward_parts", {})[PART] = 0.0
        t.info["reward_parts"] = last.info["reward_parts"]
    groups: dict[int, list[Trajectory]] = {}
    for t in trajectories:
        groups.setdefault(t.group_id, []).append(t)
    video = [ts for ts in groups.values() if len(ts[0].steps[0].observation.get("videos") or ()) > 0]
    if not video:
        return {}
    n = a.temporal_contrast_samples or a.group_size
    shuffled: list[dict[str, Any]] = []
    for ts in video:  # n copies of one observation: the VLM encodes a group's prompt once and forks it
        rng = np.random.default_rng([cfg.seed, PHASE, step, ts[0].group_id])
        shuffled += [shuffle_frames(ts[0].steps[0].observation, rng)] * n
    size = cfg.rollout.batch_size
    acts = [x for i in range(0, len(shuffled), size) for x in policy.act(shuffled[i : i + size], sampling)]
    answers = ["" if x.env_action is None else str(x.env_action) for x in acts]  # None: the context was full
    # one call of the env's verdict reward: each group's ordered answers, then its shuffled ones, on its columns
    texts: list[str] = []
    rows: list[dict[str, Any]] = []
    for k, ts in enumerate(video):
        texts += [str(t.steps[-1].action) for t in ts] + answers[k * n : (k + 1) * n]
        rows += [t.steps[-1].info[DEFERRED] for t in ts] + [ts[0].steps[-1].info[DEFERRED]] * n
    keys = sorted({k for row in rows for k in row})
    correct = [s >= 1.0 for s in rewards.get(ACCURACY)(texts, **{k: [row.get(k) for row in rows] for k in keys})]
    ordered: list[bool] = []
    contrast: list[bool] = []
    paid, start = 0, 0
    for ts in video:
        mine, theirs = correct[start : start + len(ts)], correct[start + len(ts) : start + len(ts) + n]
        start += len(ts) + n
        bonus = rewards.temporal_contrast_bonus(mine, float(np.mean(mine)), float(np.mean(theirs)),
                                                a.temporal_contrast, a.temporal_contrast_ratio)  # fmt: skip
        for t, b in zip(ts, bonus):
            t.steps[-1].reward += b
            t.steps[-1].info["reward_parts"][PART] = b
        ordered += mine
        contrast += theirs
        paid += any(b > 0 for b in bonus)
    return {
        "temporal/acc_ordered": float(np.mean(ordered)),
        "temporal/acc_shuffled": float(np.mean(contrast)),
        "temporal/bonus_groups": paid / len(video),
    }
