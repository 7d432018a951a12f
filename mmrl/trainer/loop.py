"""The one training loop for every policy family: optional warm-up, then RL steps ``collect -> score -> advantage ->
update``.

The family (``policy.kind``, :mod:`mmrl.policies.base`) builds the policy and its critic; everything else here talks to
the contracts only. Each step is a short named method; the loop sequences them, logs, evaluates and checkpoints. Every
source of randomness in a step is seeded from ``(seed, step)``, so a run resumed from a checkpoint replays the same step.

Example:
    >>> cfg = load_config("configs/quickstart.yaml", ["train.steps=5"])
    >>> summary = Trainer(cfg).fit()
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from typing import Any

import numpy as np
import torch

from mmrl.algos import advantages, estimate, filters, kl, losses
from mmrl.algos.learner import Learner
from mmrl.config import ConfigError, RunConfig, to_dict, validate
from mmrl.policies import base
from mmrl.policies.base import SamplingParams
from mmrl.rollout.collector import Collector, generated_tokens
from mmrl.trainer import TrainingError, temporal
from mmrl.trainer import checkpoint as ckpt
from mmrl.trainer.build import env_factory, evaluate, make_pool, register_judges
from mmrl.trainer.logging import MetricsLogger
from mmrl.trainer.progress import Progress
from mmrl.trainer.scoring import RewardStage, episode_return
from mmrl.types import Batch, Trajectory
from mmrl.viz.plots import plot_curves
from mmrl.viz.rollouts import batch_advantages, write_rollouts
from mmrl.viz.viewer import write_viewer

logger = logging.getLogger(__name__)
RECENT = 10  # episodes averaged in episode/return_recent


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def step_seed(*parts: int) -> int:
    """A 31-bit seed derived from ``parts`` (run seed, phase, step): independent streams per step."""
    return int(np.random.default_rng(list(parts)).integers(0, 2**31 - 1))


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports ru_maxrss in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def zero_std_fraction(rewards: torch.Tensor, group_ids: torch.Tensor) -> float:
    """Fraction of groups whose rewards are all equal (they carry no GRPO signal): those DAPO's filter would drop."""
    inv, n = advantages.group_index(group_ids)
    kept = inv[filters.dynamic_sampling_mask(rewards, inv)].unique().numel()
    return 1.0 - kept / max(n, 1)


def check_algo(cfg: RunConfig, family: base.Family) -> None:
    """Reject options the trainer cannot honour, with a one-line error naming the key."""
    a = cfg.algo
    if a.advantage not in estimate.ESTIMATE:
        family_name = advantages.FAMILY.get(a.advantage)
        if family_name is None:
            raise ConfigError(f"algo.advantage: unknown estimator '{a.advantage}' "
                              f"(known: {', '.join(sorted(estimate.ESTIMATE))})")  # fmt: skip
        raise ConfigError(f"algo.advantage: '{a.advantage}' is a {family_name}-level estimator; the trainer takes "
                          f"{', '.join(sorted(estimate.ESTIMATE))}")  # fmt: skip
    if cfg.model.history_images is not None and (a.replay_capacity or a.vppo_top_frac > 0):
        raise ConfigError("model.history_images: with a history window each turn is its own row; selective replay "
                          "(algo.replay_capacity) and VPPO (algo.vppo_top_frac) work on whole episodes")  # fmt: skip
    try:
        losses.get(a.loss)
    except KeyError as e:
        raise ConfigError(f"algo.loss: {e.args[0]}") from None
    per_position = a.advantage in estimate.PER_POSITION_REWARDS
    if a.kl_in_reward and not per_position:
        raise ConfigError(f"algo.kl_in_reward: '{a.advantage}' has one reward per sequence; in-reward KL needs a "
                          "token-level estimator (reinforce_pp, reinforce_pp_baseline, gae)")  # fmt: skip
    if a.kl_in_reward and not a.kl_coef:
        raise ConfigError("algo.kl_in_reward: set algo.kl_coef > 0 (the coefficient of the KL in the rewards)")
    if a.replay_capacity and per_position:
        raise ConfigError("algo.replay_capacity: selective replay keeps per-sequence advantages (outcome estimators)")
    if a.tis_cap is not None:
        raise ConfigError("algo.tis_cap: the HF rollout engine is the trainer itself (no mismatch to correct)")
    if a.vppo_top_frac > 0 and family.token_weights is None:
        raise ConfigError(f"algo.vppo_top_frac: policy family '{cfg.policy.kind}' has no visual-dependency weights")
    if a.advantage in estimate.CRITIC and family.critic is None:
        raise ConfigError(f"algo.advantage: gae needs a critic; policy family '{cfg.policy.kind}' has none")
    if cfg.warmup.steps > 0 and family.warmup is None:
        raise ConfigError(f"warmup.steps: policy family '{cfg.policy.kind}' has no supervised warm-up")
    if cfg.rollout.horizon > 0 and a.advantage not in estimate.CRITIC:
        raise ConfigError(f"rollout.horizon: fixed-horizon rollouts cut episodes and have no prompt groups; "
                          f"'{a.advantage}' needs whole episodes (set rollout.horizon=0) or use gae with a critic")  # fmt: skip
    if cfg.rollout.horizon > 0 and cfg.model.max_context_tokens is not None and family.tokens:
        raise ConfigError("model.max_context_tokens: fixed-horizon rollouts (rollout.horizon) cannot end an episode "
                          "early; use whole episodes (rollout.horizon=0)")  # fmt: skip
    if cfg.rollout.horizon > 0 and (a.dynamic_sampling or a.replay_capacity):
        raise ConfigError("rollout.horizon: fixed-horizon rollouts have no prompt groups to resample or replay")


class Trainer:
    """Runs one :class:`~mmrl.config.RunConfig` end to end, writing everything under ``cfg.run_dir``."""

    def __init__(self, cfg: RunConfig, show_progress: bool = True) -> None:
        validate(cfg)  # ranges and enumerations (load_config ran it too; a config built in code has not)
        self.family = base.get(cfg.policy.kind)
        check_algo(cfg, self.family)
        self.cfg = cfg
        self.run_dir = cfg.run_dir
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        seed_everything(cfg.seed)
        register_judges(cfg)  # before the reward stage and any env: both resolve reward names
        self.rewards = RewardStage(cfg.rewards, cfg.train.nonfinite_rewards)
        ckpt.claim_run_dir(self.run_dir, to_dict(cfg), cfg.train.resume, cfg.train.overwrite)
        self.pool = make_pool(cfg)
        spaces = (self.pool.single_observation_space, self.pool.single_action_space)
        if cfg.algo.temporal_contrast:  # Video-R1's T-GRPO needs grouped advantages and an env with videos
            temporal.check(cfg, spaces[0])
        resume_from, state = None, None
        if cfg.train.resume and ckpt.list_checkpoints(self.run_dir):  # the newest readable checkpoint
            found = ckpt.load_latest(self.run_dir, lambda path: (ckpt.load_trainer_state(path),
                                                                 self.family.build(cfg, *spaces, path)))  # fmt: skip
            if found is None:
                raise ConfigError(f"train.resume: no checkpoint in {self.run_dir} can be read; "
                                  "train.overwrite=true starts the run again")  # fmt: skip
            resume_from, (state, self.policy) = found
        else:
            self.policy = self.family.build(cfg, *spaces, None)
        self.run_dir.mkdir(parents=True, exist_ok=True)  # everything is checked: now the run directory is written
        (self.run_dir / "config.json").write_text(json.dumps(to_dict(cfg), indent=2))
        self.ref_policy = None
        if cfg.algo.kl_coef:  # kl_coef = 0 loads no reference model at all
            # the reference is the policy RL starts from: the warm-up's result once saved, else the initial policy
            saved = self.run_dir / "reference"
            self.ref_policy = self.family.build(cfg, *spaces, saved if resume_from and saved.exists() else None)
            if resume_from is None:
                copy_parameters(self.policy, self.ref_policy)
            self.ref_policy.train(False)
            for p in self.ref_policy.parameters():
                p.requires_grad_(False)
        self.critic = self.family.critic(cfg, self.policy) if cfg.algo.advantage in estimate.CRITIC else None
        self.collector = Collector(self.policy, self.pool, cfg.env.max_turns)
        self.eval_collector: Collector | None = None  # built at the first evaluation
        self.learner = Learner(self.policy, cfg.algo, critic=self.critic)
        self.base_lrs = [g["lr"] for g in self.learner.optimizer.param_groups]
        self.replay = None
        if cfg.algo.replay_capacity:  # selective sample replay (VL-Rethinker)
            self.replay = filters.SelectiveReplayBuffer(cfg.algo.replay_capacity,
                                                        max_zero_frac=cfg.algo.replay_max_zero_frac, seed=cfg.seed)  # fmt: skip
        r = cfg.rollout
        self.sampling = SamplingParams(r.temperature, r.top_p, r.top_k, r.max_new_tokens)
        self.step = 0
        self.summary: dict[str, Any] = {}
        self.recent: deque[float] = deque(maxlen=RECENT)  # returns of the last finished training episodes
        self.bad_steps = 0  # consecutive steps with a skipped (non-finite) update
        self.bad_rows: dict[int, int] = {}  # env slot -> data rows its env skipped so far (reset info "bad_rows")
        if state is not None:
            self.learner.optimizer.load_state_dict(state["optimizer"])
            ckpt.set_rng_state(state["rng"])
            self.step = self.policy.version = int(state["step"])
            self.summary = dict(state.get("summary", {}))
            self.recent.extend(state.get("recent_returns", []))
            self.collector.total_env_steps = int(state.get("env_steps", 0))
            self.learner.kl_ctl.value = float(state.get("kl_coef", cfg.algo.kl_coef))  # the adaptive KL coefficient
            if self.critic is not None:
                self.critic.load_state_dict(state["critic"])
            logger.info("resumed from %s (step %d)", resume_from, self.step)
        self.metrics = MetricsLogger(self.run_dir, resume_step=self.step if resume_from else None)
        self.progress = Progress(enabled=show_progress)

    # -------------------------------------------------------------------------------------------------------- steps
    def collect(self, draw: int = 0) -> list[Trajectory]:
        """One rollout batch with the current policy: ``prompts_per_step`` prompts x ``group_size`` episodes, or
        ``rollout.horizon`` steps of every env (``draw``: > 0 only when dynamic sampling draws again)."""
        a = self.cfg.algo
        torch.manual_seed(step_seed(self.cfg.seed, 3, self.step, draw))
        if self.cfg.rollout.horizon > 0:
            return self.collector.fragments(self.cfg.rollout.horizon, self.sampling, seed=self.cfg.seed)
        rng = np.random.default_rng([self.cfg.seed, 2, self.step, draw])
        seeds = rng.integers(0, 2**31 - 1, size=a.prompts_per_step).tolist()
        return self.collector.episodes(seeds, a.group_size, self.sampling)

    def collect_scored(self) -> tuple[list[Trajectory], dict[str, float]]:
        """Collect and score; with ``algo.dynamic_sampling`` (DAPO) draw again until ``prompts_per_step`` groups with
        unequal rewards are kept (at most ``max_sampling_batches`` draws)."""
        a = self.cfg.algo
        if not a.dynamic_sampling:
            trajs = self.collect()
            return trajs, self.score(trajs)
        draws = iter(range(a.max_sampling_batches))

        def sample() -> tuple[torch.Tensor, torch.Tensor, list[Trajectory]]:
            trajs = self.collect(next(draws))
            self.score(trajs)
            return torch.tensor([t.reward for t in trajs]), torch.tensor([t.group_id for t in trajs]), trajs

        out = filters.DynamicSampler(sample, a.prompts_per_step, a.max_sampling_batches)()
        trajs = [t for part in out.payloads for t in part]
        for t, g in zip(trajs, out.group_ids.tolist()):
            t.group_id = g  # dense ids across draws
        stats = self.stats(trajs) if trajs else {}
        stats.update({"dynamic_sampling/keep_rate": out.keep_rate, "dynamic_sampling/draws": float(out.num_batches)})
        return trajs, stats

    def score(self, trajs: list[Trajectory]) -> dict[str, float]:
        """The batched reward stage, Video-R1's temporal bonus, then DAPO's overlong shaping (token families) on each
        episode's last step."""
        a = self.cfg.algo
        dropped = self.rewards(trajs)  # a non-finite reward: an error, or (drop) its episode leaves the list
        contrast: dict[str, float] = {}  # Video-R1's T-GRPO: a bonus to correct answers that needed the frame order
        if a.temporal_contrast and trajs:
            contrast = temporal.apply(trajs, self.policy, self.cfg, self.sampling, self.step)
        if a.overlong_cache and self.family.tokens:  # soft overlong punishment over the last overlong_cache tokens
            lengths = torch.tensor([sum(generated_tokens(s.record) for s in t.steps) for t in trajs])
            penalty = filters.overlong_penalty(lengths, self.sampling.max_new_tokens, a.overlong_cache, a.overlong_penalty)
            for t, p in zip(trajs, penalty.tolist()):
                t.steps[-1].reward += p
        stats = self.stats(trajs) if trajs else {}
        if a.overlong_cache and self.family.tokens and trajs:
            stats["reward/overlong/mean"] = float(penalty.mean())
        if dropped:
            stats["reward/nonfinite_dropped"] = float(dropped)
        return {**stats, **contrast}

    def stats(self, trajs: list[Trajectory]) -> dict[str, float]:
        """Reward mean/std (per reward function too), success, episode returns and lengths of a scored batch."""
        rewards = torch.tensor([t.reward for t in trajs], dtype=torch.float32)
        out = {"reward/mean": float(rewards.mean()), "reward/std": float(rewards.std(unbiased=False))}
        out.update(self.rewards.parts(trajs))
        if any("success" in t.info for t in trajs):
            out["success"] = float(np.mean([t.success for t in trajs]))
        ended = [episode_return(t) for t in trajs if t.ended]
        if ended:
            out["episode/return_mean"] = float(np.mean(ended))
        if self.family.tokens:
            out["response_length"] = float(np.mean([sum(generated_tokens(s.record) for s in t.steps) for t in trajs]))
        return out

    def make_batch(self, trajs: list[Trajectory]) -> Batch:
        """The family's collate, plus what the update needs: reference log-probs (KL), the critic's values and
        bootstraps, and the family's per-position weights (VPPO), when configured."""
        batch = self.policy.collate(trajs)
        with torch.no_grad():
            if self.ref_policy is not None:
                batch.ref_logp = self.ref_policy.log_prob(batch)[0].cpu()
            if self.critic is not None:
                self.critic.train(False)
                batch.old_values = self.critic.value(batch).cpu() * batch.mask
        if self.family.token_weights is not None:
            batch.token_weights = self.family.token_weights(self.cfg, self.policy, trajs, batch, self.step)
        return batch

    def advantage(self, batch: Batch) -> dict[str, float]:
        """Advantages (and critic returns) through the estimator's one signature; with ``algo.kl_in_reward`` the KL to
        the reference is folded into the per-position rewards."""
        a = self.cfg.algo
        stats: dict[str, float] = {}
        kl_tok, coef = None, 0.0
        if a.kl_in_reward:  # r_t -= beta * KL_t with the behaviour log-probs (no gradient), beta possibly adaptive
            m = batch.mask.bool()
            kl_tok = kl.kl(batch.old_logp, batch.ref_logp, a.kl_kind, mask=m)  # [B, L], 0 outside the mask
            mean_kl = float(advantages.masked_mean(kl_tok, m, dim=-1).mean())
            coef = self.learner.kl_ctl.value
            self.learner.kl_ctl.update(mean_kl, n_steps=len(batch))
            stats.update({"kl_ref": mean_kl, "kl_coef": coef})
        bootstrap = None
        if self.critic is not None and bool(batch.bootstrap_mask.any()):
            with torch.no_grad():  # V(final observation) where the return goes on past the row
                bootstrap = self.critic.final_value(batch).cpu() * batch.bootstrap_mask
        inputs = estimate.AdvantageInputs(
            rewards=batch.rewards, step_rewards=batch.step_rewards, mask=batch.mask, group_ids=batch.group_ids,
            values=batch.old_values, bootstrap=bootstrap, kl=kl_tok, kl_coef=coef, gamma=a.gamma, lam=a.lam,
            eps=a.adv_eps, steps=batch.step_ids, anchors=batch.anchor_keys,
        )  # fmt: skip
        if batch.episode_ids is None:
            batch.advantages, batch.returns = estimate.ESTIMATE[a.advantage](inputs)
            return stats
        packed, unpack = estimate.pack_episodes(inputs, batch.episode_ids)  # turns as rows: estimate per episode
        adv, returns = estimate.ESTIMATE[a.advantage](packed)
        batch.advantages, batch.returns = unpack(adv), None if returns is None else unpack(returns)
        return stats

    def update(self, batch: Batch) -> dict[str, float]:
        """PPO epochs over the family's learner view of the batch (linear learning-rate decay when configured)."""
        if self.cfg.algo.lr_decay:  # CleanRL's anneal_lr: from the base rate at step 0 to 0 after the last step
            frac = 1.0 - self.step / max(self.cfg.train.steps, 1)
            for group, lr in zip(self.learner.optimizer.param_groups, self.base_lrs):
                group["lr"] = lr * frac
        gen = torch.Generator().manual_seed(step_seed(self.cfg.seed, 4, self.step))
        stats = self.learner.update(self.policy.learner_view(batch), generator=gen)
        self.policy.version = self.step + 1
        return stats

    def train_step(self) -> dict[str, float]:
        """One RL step: collect -> score -> advantage -> update."""
        t0 = time.perf_counter()
        trajs, stats = self.collect_scored()
        t_collect = time.perf_counter() - t0
        stats["infra_failures"] = float(self.collector.stats.infra_failures)  # episodes lost to env failures, left out
        if self.family.tokens:
            stats["context_truncations"] = float(self.collector.stats.context_truncations)  # episodes ended by a full context
        stats.update(self.count_bad_rows(trajs))
        self.recent.extend(episode_return(t) for t in trajs if t.ended)
        if self.recent:
            stats["episode/return_recent"] = float(np.mean(self.recent))
        if not trajs:  # dynamic sampling found no group with a learning signal: nothing to train on
            return {**stats, "skipped": 1.0}
        batch = self.make_batch(trajs)
        stats["zero_std_groups"] = zero_std_fraction(batch.rewards, batch.group_ids)
        stats.update(self.advantage(batch))
        if self.replay is not None:  # selective replay swaps zero-advantage groups for stored informative samples
            trajs, adv, replay_stats = self.replay.process(trajs, batch.advantages, batch.group_ids)
            stats.update(replay_stats)
            if replay_stats["ssr/replayed"]:
                batch = self.make_batch(trajs)
                batch.advantages = adv
        tc = self.cfg.train
        if tc.rollouts_every and (self.step == 0 or (self.step + 1) % tc.rollouts_every == 0):  # numbered as the metrics
            write_rollouts(self.run_dir, self.step + 1, trajs, batch_advantages(batch, trajs), tc.rollouts_samples)
        t1 = time.perf_counter()
        stats.update(self.update(batch))
        stats.update({
            "env_steps_per_s": self.collector.stats.env_steps_per_s,
            "env_steps": float(self.collector.total_env_steps),
            "time/collect_s": t_collect,
            "time/update_s": time.perf_counter() - t1,
        })  # fmt: skip
        if self.family.tokens:
            stats["tokens_per_s"] = self.collector.stats.tokens_per_s
        return stats

    # --------------------------------------------------------------------------------------------------------- eval
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """``train.eval_size`` held-out episodes with the greedy policy: mean return and success rate."""
        if self.eval_collector is None:
            self.eval_collector = Collector(self.policy, make_pool(self.cfg, evaluation=True), self.cfg.env.max_turns)
        return evaluate(self.eval_collector, self.rewards, self.cfg)

    # ----------------------------------------------------------------------------------------------------------- fit
    def save(self) -> None:
        """A checkpoint of the current step, unless a weight is not finite (then the last good checkpoint stays)."""
        modules = [self.policy] + ([self.critic] if self.critic is not None else [])
        if not all(bool(torch.isfinite(p).all()) for m in modules for p in m.parameters()):
            logger.error("step %d: non-finite weights, no checkpoint written (the previous one is kept)", self.step)
            return
        extra = {"summary": self.summary, "kl_coef": self.learner.kl_ctl.value, "recent_returns": list(self.recent),
                 "env_steps": self.collector.total_env_steps}
        if self.critic is not None:
            extra["critic"] = self.critic.state_dict()
        ckpt.save_checkpoint(self.run_dir, self.step, self.policy, self.learner.optimizer, extra,
                             keep=self.cfg.train.keep_checkpoints)  # fmt: skip

    def count_bad_rows(self, trajs: list[Trajectory]) -> dict[str, float]:
        """Data rows the envs skipped (undecodable images), summed over the pool; ``train.max_bad_rows`` stops the run."""
        for t in trajs:
            if "bad_rows" in t.info:
                self.bad_rows[t.env_index] = max(self.bad_rows.get(t.env_index, 0), int(t.info["bad_rows"]))
        total = sum(self.bad_rows.values())
        if total > self.cfg.train.max_bad_rows:
            raise TrainingError(f"the envs skipped {total} data rows that do not decode (train.max_bad_rows="
                                f"{self.cfg.train.max_bad_rows}); the log names each file and line: fix or remove them")  # fmt: skip
        return {"data/bad_rows": float(total)} if self.bad_rows else {}

    def check_health(self, stats: dict[str, float]) -> None:
        """Count steps whose update skipped a non-finite minibatch; ``train.max_bad_steps`` of them in a row stop the
        run (the weights and optimizer state are those of the last good step, the last checkpoint is finite)."""
        self.bad_steps = self.bad_steps + 1 if stats.get("nonfinite_updates", 0.0) > 0 else 0
        if self.bad_steps >= self.cfg.train.max_bad_steps:
            self.metrics.log(self.step, stats)
            raise TrainingError(f"step {self.step}: {self.bad_steps} steps in a row had a non-finite loss or gradient "
                                f"(train.max_bad_steps={self.cfg.train.max_bad_steps}); the run stops, its last "
                                "checkpoint is finite: lower algo.lr or check the rewards")  # fmt: skip

    def warmup(self) -> None:
        """The family's supervised warm-up (fresh runs); the reference policy then starts from its result."""
        if self.cfg.warmup.steps <= 0:
            return
        stats = self.family.warmup(self.cfg, self.policy, self.critic, env_factory(self.cfg), self.progress)
        self.metrics.log(0, stats)
        if self.ref_policy is not None:  # KL is measured against the warmed-up policy
            copy_parameters(self.policy, self.ref_policy)
            self.ref_policy.save(self.run_dir / "reference")  # resumed runs reload it

    def fit(self) -> dict[str, Any]:
        """Warm-up (fresh runs only), evaluate, RL steps with periodic eval/checkpoints, final eval and summary."""
        tc = self.cfg.train
        start = time.perf_counter()
        before: dict[str, float] = {}
        if self.step == 0 and "return_before_rl" not in self.summary:
            self.warmup()
            before = self.evaluate()
            self.summary.update(summary_keys(before, "before_rl"))
            self.metrics.log(0, before)
            logger.info("held-out evaluation before RL: %s", _brief(before))
        with self.progress.task("RL", tc.steps, completed=self.step) as advance:
            while self.step < tc.steps:
                stats = self.train_step()
                self.step += 1
                self.check_health(stats)
                if tc.eval_every and self.step % tc.eval_every == 0 and self.step < tc.steps:
                    stats.update(self.evaluate())
                if self.step % max(tc.log_every, 1) == 0 or self.step == tc.steps:
                    self.metrics.log(self.step, stats)
                if tc.save_every and self.step % tc.save_every == 0 and self.step < tc.steps:
                    self.save()
                evals = {k: v for k, v in stats.items() if k.startswith("eval/")}
                advance(f"reward {stats.get('reward/mean', float('nan')):.2f} kl {stats.get('approx_kl', 0.0):.4f}"
                        + (f" {_brief(evals)}" if evals else ""))  # fmt: skip
        if self.summary.get("steps") == self.step and "return_after_rl" in self.summary:
            final = {}  # resumed from the final checkpoint: its evaluation is already logged and summarised
        else:
            final = before if self.step == 0 and before else self.evaluate()  # no RL step ran: the first eval is final
            if final is not before:
                self.metrics.log(self.step, final)
        self.summary.update({
            **summary_keys(final, "after_rl"),
            "eval_size": tc.eval_size,
            "steps": self.step,
            "env_steps": self.collector.total_env_steps,
            "minutes": self.summary.get("minutes", 0.0) + (time.perf_counter() - start) / 60,
            "peak_rss_mib": peak_rss_mib(),
        })  # fmt: skip
        self.save()
        (self.run_dir / "summary.json").write_text(json.dumps(self.summary, indent=2))
        plot_curves(self.metrics.path, self.run_dir / "curves.png")
        if tc.rollouts_every and (self.run_dir / "rollouts").is_dir():
            write_viewer(self.run_dir)  # the stored rollout samples as a static page: mmrl view RUN_DIR rewrites it
        self.metrics.close()
        self.close()
        return self.summary

    def close(self) -> None:
        self.collector.close()
        if self.eval_collector is not None:
            self.eval_collector.close()


def copy_parameters(source: Any, target: Any) -> None:
    """``target``'s parameters set to ``source``'s (two policies of one family and shape)."""
    with torch.no_grad():
        for t, s in zip(target.parameters(), source.parameters(), strict=True):
            t.copy_(s)


def summary_keys(evaluation: dict[str, float], when: str) -> dict[str, float]:
    """``eval/success`` -> ``success_<when>``, ``eval/return`` -> ``return_<when>``."""
    return {f"{k.split('/', 1)[1]}_{when}": v for k, v in evaluation.items()}


def _brief(stats: dict[str, float]) -> str:
    return " ".join(f"{k.split('/', 1)[-1]} {v:.3f}" for k, v in stats.items())
