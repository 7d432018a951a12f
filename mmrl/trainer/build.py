"""What a run builds from its config besides the policy: envs, env pools, judges, the evaluation.

Shared by the trainer and by ``mmrl eval`` (which builds only the policy, the eval pool and the rewards: no optimizer,
reference model or critic, and writes nothing into the run directory).

Example:
    >>> pool = make_pool(cfg, evaluation=True)
    >>> stats = evaluate(Collector(policy, pool, cfg.env.max_turns), RewardStage(cfg.rewards), cfg)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

import envs
from mmrl.config import ConfigError, RunConfig
from mmrl.policies.base import SamplingParams
from mmrl.rollout.collector import Collector
from mmrl.rollout.pool import EnvPool
from mmrl.trainer.scoring import RewardStage, episode_return
from mmrl.types import Trajectory

logger = logging.getLogger(__name__)


def env_factory(cfg: RunConfig, evaluation: bool = False) -> Callable[[], gym.Env]:
    """A constructor of the run's env (``env.eval_kwargs`` on top for evaluation). mmrl's envs also get the run's
    ``rewards`` and score them in the trainer's batched stage (``defer_rewards``); other Gymnasium envs keep theirs."""
    envs.check(cfg.env.id)
    kwargs = {**cfg.env.kwargs, **(cfg.env.eval_kwargs if evaluation else {})}
    if cfg.rewards:
        if cfg.env.id not in envs.names():
            raise ConfigError(f"rewards: env '{cfg.env.id}' is not an mmrl env and computes its own rewards; set `rewards: {{}}`")
        kwargs.update(rewards=dict(cfg.rewards), defer_rewards=True)
    env_id = cfg.env.id
    return lambda: envs.make(env_id, **kwargs)


def make_pool(cfg: RunConfig, evaluation: bool = False) -> EnvPool:
    """``rollout.batch_size`` envs (``env.pool``: in this process or in worker processes); training pools normalise
    rewards when ``env.normalize_reward``."""
    gamma = (cfg.algo.gamma if cfg.algo.gamma is not None else 0.99) if cfg.env.normalize_reward and not evaluation else None
    return EnvPool(env_factory(cfg, evaluation), cfg.rollout.batch_size, cfg.env.pool, normalize_reward_gamma=gamma,
                   step_timeout=cfg.env.step_timeout, max_restarts=cfg.env.max_restarts,
                   start_method=cfg.env.start_method)  # fmt: skip


def register_judges(cfg: RunConfig) -> None:
    """Load every configured judge model and register it as a reward under its name (:mod:`rewards.judges`), so that
    ``rewards: {name: weight}`` can use it. A judge sees the question, the images and the reference of each episode."""
    if not cfg.judges:
        return
    from mmrl.models import load_policy
    from mmrl.policies.vlm.judge import PolicyEngine, VLMStepScorer
    from rewards import GenerativeJudge, ProcessRewardJudge, register_judge

    for name, j in cfg.judges.items():
        where = f"judges.{name}"
        if j.kind not in ("generative", "process"):
            raise ConfigError(f"{where}.kind: expected generative or process, got '{j.kind}'")
        if not (Path(j.path) / "config.json").exists():
            raise ConfigError(f"{where}.path: no local checkpoint at '{j.path}' (mmrl never downloads a judge)")
        policy = load_policy(j.path, cfg.model.dtype, j.device)
        policy.model.requires_grad_(False).eval()
        try:
            if j.kind == "generative":
                engine = PolicyEngine(policy, max_new_tokens=j.max_new_tokens)
                judge: Any = GenerativeJudge(engine, mode=j.mode, batch_size=j.batch_size)
            else:
                judge = ProcessRewardJudge(VLMStepScorer(policy, j.step_tag, j.good, j.bad), aggregate=j.aggregate)
            register_judge(name, judge)
        except ValueError as e:
            raise ConfigError(f"{where}: {e}") from None


def eval_params(cfg: RunConfig) -> SamplingParams:
    """Greedy decoding / the policy's mode, with the run's generation budget."""
    return SamplingParams(temperature=0.0, max_new_tokens=cfg.rollout.max_new_tokens)


def eval_episodes(collector: Collector, stage: RewardStage, cfg: RunConfig, n: int | None = None) -> list[Trajectory]:
    """``n`` held-out episodes (seeds ``0..n-1`` of the eval env, ``train.eval_size`` by default) with
    :func:`eval_params`, scored; episodes lost to env failures are not in the list (counted by the collector)."""
    trajs = collector.episodes(list(range(n or cfg.train.eval_size)), 1, eval_params(cfg))
    stage(trajs)
    return trajs


def eval_stats(trajs: list[Trajectory]) -> dict[str, float]:
    """The mean return of ``trajs``, and the success rate when the env reports ``success``."""
    out = {"eval/return": float(np.mean([episode_return(t) for t in trajs])) if trajs else float("nan")}
    if any("success" in t.info for t in trajs):
        out["eval/success"] = float(np.mean([t.success for t in trajs]))
    return out


def evaluate(collector: Collector, stage: RewardStage, cfg: RunConfig, n: int | None = None) -> dict[str, float]:
    """The trainer's held-out evaluation: :func:`eval_stats` of :func:`eval_episodes`."""
    return eval_stats(eval_episodes(collector, stage, cfg, n))


def evaluate_run(cfg: RunConfig, checkpoints: Sequence[Path | None]) -> list[dict[str, Any]]:
    """``mmrl eval``: each policy of ``checkpoints`` (a saved policy directory; None: the initial policy,
    ``model.path`` or a fresh one) on one eval pool, read-only. Per checkpoint: what the trainer logs for it
    (``eval/return``, ``eval/success``), the episodes scored ``n`` and successful ``successes``, and each reward
    function's mean ``eval/reward/<name>``."""
    from mmrl.policies import base

    register_judges(cfg)
    pool = make_pool(cfg, evaluation=True)
    stage = RewardStage(cfg.rewards)
    results = []
    try:
        for checkpoint in checkpoints:
            policy = base.build(cfg, pool.single_observation_space, pool.single_action_space, checkpoint)
            trajs = eval_episodes(Collector(policy, pool, cfg.env.max_turns), stage, cfg)
            del policy  # one policy in memory at a time
            means = {f"eval/{k[: -len('/mean')]}": v for k, v in stage.parts(trajs).items() if k.endswith("/mean")}
            results.append({"checkpoint": None if checkpoint is None else str(checkpoint), "n": len(trajs),
                            "successes": sum(bool(t.success) for t in trajs), **eval_stats(trajs), **means})  # fmt: skip
    finally:
        pool.close()
    return results
