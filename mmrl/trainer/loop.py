"""The training loop: optional supervised warm-up, then RL steps ``collect -> score -> advantage -> update``.

Each step is a short named method; the loop itself only sequences them, logs, evaluates and checkpoints. Every source of
randomness in a step is seeded from ``(seed, step)``, so a run resumed from a checkpoint replays the same next step.

Example:
    >>> cfg = load_config("configs/quickstart.yaml", ["train.steps=5"])
    >>> summary = Trainer(cfg).fit()
"""

from __future__ import annotations

import copy
import json
import logging
import re
import time
from typing import Any

import numpy as np
import torch

import envs
from mmrl.algos import advantages, filters, kl
from mmrl.algos.learner import Learner
from mmrl.config import ConfigError, RunConfig, to_dict
from mmrl.models import load_policy
from mmrl.policies.vlm import SamplingParams, VLMCritic
from mmrl.rollout.collector import Collector
from mmrl.trainer import checkpoint as ckpt
from mmrl.trainer.logging import MetricsLogger
from mmrl.trainer.progress import Progress
from mmrl.types import Batch, Trajectory
from mmrl.viz.plots import plot_curves
from mmrl.policies.vlm.vppo import visual_dependency, vppo_weights

logger = logging.getLogger(__name__)


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


def check_vlm_algo(cfg: RunConfig) -> None:
    """Reject algorithm options the VLM trainer does not implement, with a one-line error naming the key."""
    a = cfg.algo
    family = advantages.FAMILY.get(a.advantage)
    if family is None:
        advantages.get(a.advantage)  # raises the registry's one-line error listing the known names
    token_level = family == "token" or a.advantage == "gae"
    if family not in ("outcome", "token") and a.advantage != "gae":
        known = ", ".join(advantages.names("outcome") + advantages.names("token"))
        raise ConfigError(f"algo.advantage: '{a.advantage}' is a {family}-level estimator; the VLM trainer takes "
                          f"{known} or gae (with a critic)")  # fmt: skip
    if a.kl_in_reward and not token_level:
        raise ConfigError(f"algo.kl_in_reward: '{a.advantage}' has one reward per sequence; in-reward KL needs a "
                          "token-level estimator (reinforce_pp, reinforce_pp_baseline, gae)")  # fmt: skip
    if a.kl_in_reward and not a.kl_coef:
        raise ConfigError("algo.kl_in_reward: set algo.kl_coef > 0 (the coefficient of the KL in the rewards)")
    if a.replay_capacity and token_level:
        raise ConfigError("algo.replay_capacity: selective replay keeps per-sequence advantages (outcome estimators)")
    if a.tis_cap is not None:
        raise ConfigError("algo.tis_cap: the HF rollout engine is the trainer itself (no mismatch to correct)")
    if not 0.0 <= a.vppo_top_frac <= 1.0:
        raise ConfigError(f"algo.vppo_top_frac: expected a fraction in [0, 1], got {a.vppo_top_frac}")
    if not 0.0 <= a.vppo_mask_prob <= 1.0:
        raise ConfigError(f"algo.vppo_mask_prob: expected a probability in [0, 1], got {a.vppo_mask_prob}")


def register_judges(cfg: RunConfig) -> None:
    """Load every configured judge model and register it as a reward under its name (:mod:`rewards.judges`), so that
    ``rewards: {name: weight}`` can use it. A judge sees the question, the images and the reference of each episode."""
    from pathlib import Path

    from rewards.judges import GenerativeJudge, ProcessRewardJudge, VLMStepScorer, register_judge

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
                judge = GenerativeJudge(policy, mode=j.mode, max_new_tokens=j.max_new_tokens, batch_size=j.batch_size)
            else:
                judge = ProcessRewardJudge(VLMStepScorer(policy, j.step_tag, j.good, j.bad), aggregate=j.aggregate)
            register_judge(name, judge)
        except ValueError as e:
            raise ConfigError(f"{where}: {e}") from None


class Trainer:
    """Runs one :class:`~mmrl.config.RunConfig` end to end, writing everything under ``cfg.run_dir``."""

    def __init__(self, cfg: RunConfig, show_progress: bool = True) -> None:
        check_vlm_algo(cfg)
        self.cfg = cfg
        self.run_dir = cfg.run_dir
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.json").write_text(json.dumps(to_dict(cfg), indent=2))
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        seed_everything(cfg.seed)
        if cfg.model.build_tiny:
            from mmrl.models.tiny import build_tiny_qwen2_5_vl

            build_tiny_qwen2_5_vl(cfg.model.path, preset=cfg.model.tiny_preset, seed=cfg.seed)
        resume_from = ckpt.latest_checkpoint(self.run_dir) if cfg.train.resume else None
        m = cfg.model
        self.policy = load_policy(resume_from or m.path, m.dtype, m.device, m.min_pixels, m.max_pixels,
                                  temperature=cfg.rollout.temperature)  # fmt: skip
        self.ref_policy = None
        if cfg.algo.kl_coef:  # kl_coef = 0 loads no reference model at all
            # the reference is the policy RL starts from: the warm-up's result once saved, else the base model
            ref_path = self.run_dir / "reference" if resume_from and (self.run_dir / "reference").exists() else m.path
            self.ref_policy = load_policy(ref_path, m.dtype, m.device, m.min_pixels, m.max_pixels, cfg.rollout.temperature)
            self.ref_policy.model.requires_grad_(False).eval()
        register_judges(cfg)  # before any env is built: envs resolve reward names at construction
        env_kwargs = {**cfg.env.kwargs, "rewards": dict(cfg.rewards)}
        eval_kwargs = {**env_kwargs, **cfg.env.eval_kwargs}
        self.collector = Collector(self.policy, lambda: envs.make(cfg.env.id, **env_kwargs), cfg.env.max_turns,
                                   cfg.rollout.batch_size)  # fmt: skip
        self.eval_collector = Collector(self.policy, lambda: envs.make(cfg.env.id, **eval_kwargs), cfg.env.max_turns,
                                        cfg.rollout.batch_size)  # fmt: skip
        if cfg.algo.advantage == "gae":  # PPO with a value model: a copy of the policy's backbone + a value head
            self.policy.critic = VLMCritic(copy.deepcopy(self.policy.model)).to(self.policy.device)
        self.learner = Learner(self.policy, cfg.algo)
        self.advantage_fn = advantages.get(cfg.algo.advantage)
        self.replay = None
        if cfg.algo.replay_capacity:  # selective sample replay (VL-Rethinker)
            self.replay = filters.SelectiveReplayBuffer(cfg.algo.replay_capacity,
                                                        max_zero_frac=cfg.algo.replay_max_zero_frac, seed=cfg.seed)  # fmt: skip
        self.sampling = SamplingParams(cfg.rollout.temperature, cfg.rollout.top_p, cfg.rollout.top_k,
                                       cfg.rollout.max_new_tokens)  # fmt: skip
        self.step = 0
        self.summary: dict[str, Any] = {}
        if resume_from is not None:
            state = ckpt.load_trainer_state(resume_from)
            self.learner.optimizer.load_state_dict(state["optimizer"])
            ckpt.set_rng_state(state["rng"])
            self.step = int(state["step"])
            self.summary = dict(state.get("summary", {}))
            self.learner.kl_ctl.value = float(state.get("kl_coef", cfg.algo.kl_coef))  # the adaptive KL coefficient
            if self.policy.critic is not None:
                self.policy.critic.load_state_dict(state["critic"])
            logger.info("resumed from %s (step %d)", resume_from, self.step)
        self.metrics = MetricsLogger(self.run_dir, resume_step=self.step if resume_from else None)
        self.progress = Progress(enabled=show_progress)

    # ------------------------------------------------------------------------------------------------------ warm-up
    def warmup(self) -> dict[str, float]:
        """Supervised steps on the env's reference completions (``info["solution"]``) so the policy learns the format.

        With ``warmup.targets = "format"`` the answer inside the solution is replaced by one drawn uniformly from
        ``info["answer_choices"]`` (``"answer"``: the target is only ``<answer>{drawn}</answer>``): the policy learns
        the output format but not the task, and any accuracy gained later comes from RL alone.
        """
        wc = self.cfg.warmup
        if wc.steps <= 0:
            return {}
        opt = torch.optim.AdamW(self.learner.params, lr=wc.lr)
        env = envs.make(self.cfg.env.id, **{**self.cfg.env.kwargs, "rewards": dict(self.cfg.rewards)})
        eos = self.policy.tokenizer.convert_tokens_to_ids("<|im_end|>")
        loss_val = float("nan")
        with self.progress.task("warm-up", wc.steps) as advance:
            for k in range(wc.steps):
                rng = np.random.default_rng([self.cfg.seed, 1, k])
                seqs, masks, vision = [], [], []
                for _ in range(wc.batch_size):
                    obs, info = env.reset(seed=int(rng.integers(0, 2**31 - 1)))
                    target = info["solution"]
                    if wc.targets in ("format", "answer") and info.get("answer_choices"):
                        fake = str(rng.choice(info["answer_choices"]))
                        # format: every mention of the truth (in the reasoning too) becomes the drawn answer
                        target = re.sub(rf"\b{re.escape(str(info['answer']))}\b", fake, target)
                        if wc.targets == "answer":  # the answer tags alone, no reasoning
                            target = f"<answer>{fake}</answer>"
                    conv = self.policy.conversation()
                    conv.add_user(obs["text"], obs.get("images") or [])
                    tgt = self.policy.tokenizer(target, add_special_tokens=False)["input_ids"] + [eos]
                    seqs.append(conv.ids + tgt)
                    masks.append([0] * len(conv.ids) + [1] * len(tgt))
                    vision.append(conv.vision)
                inputs, mask = self.policy.make_inputs(seqs, masks, vision)
                self.policy.model.train()
                logp, mask = self.policy.log_prob(inputs)[0], mask.to(self.policy.device)
                loss = -(logp * mask).sum() / mask.sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.learner.params, self.cfg.algo.max_grad_norm)
                opt.step()
                loss_val = float(loss.detach())
                advance(f"nll {loss_val:.3f}")
        env.close()
        self.metrics.log(0, {"warmup/nll": loss_val})
        return {"warmup/nll": loss_val}

    # -------------------------------------------------------------------------------------------------------- steps
    def collect(self, draw: int = 0) -> list[Trajectory]:
        """Roll out ``prompts_per_step`` prompts x ``group_size`` samples with the current policy (``draw``: the
        index of this rollout batch within the step, > 0 only when dynamic sampling draws again)."""
        a = self.cfg.algo
        rng = np.random.default_rng([self.cfg.seed, 2, self.step, draw])
        seeds = rng.integers(0, 2**31 - 1, size=a.prompts_per_step).tolist()
        torch.manual_seed(step_seed(self.cfg.seed, 3, self.step, draw))
        self.policy.model.eval()
        return self.collector.collect(seeds, a.group_size, self.sampling)

    def collect_scored(self) -> tuple[list[Trajectory], torch.Tensor, dict[str, float]]:
        """Collect and score; with ``algo.dynamic_sampling`` (DAPO) draw again until ``prompts_per_step`` groups with
        unequal rewards are kept (at most ``max_sampling_batches`` draws)."""
        a = self.cfg.algo
        if not a.dynamic_sampling:
            trajs = self.collect()
            return (trajs, *self.score(trajs))
        draws = iter(range(a.max_sampling_batches))

        def sample() -> tuple[torch.Tensor, torch.Tensor, list[Trajectory]]:
            trajs = self.collect(next(draws))
            return self.score(trajs)[0], torch.tensor([t.group_id for t in trajs]), trajs

        out = filters.DynamicSampler(sample, a.prompts_per_step, a.max_sampling_batches)()
        trajs = [t for part in out.payloads for t in part]
        for t, g in zip(trajs, out.group_ids.tolist()):
            t.group_id = g  # dense ids across draws
        stats = self.score(trajs)[1] if trajs else {}
        stats.update({"dynamic_sampling/keep_rate": out.keep_rate, "dynamic_sampling/draws": float(out.num_batches)})
        return trajs, out.rewards, stats

    def score(self, trajs: list[Trajectory]) -> tuple[torch.Tensor, dict[str, float]]:
        """Episode returns ``[B]`` and per-reward-function mean/std (from the envs' ``reward_parts``)."""
        rewards = torch.tensor([t.reward for t in trajs], dtype=torch.float32)
        stats = {"reward/mean": float(rewards.mean()), "reward/std": float(rewards.std(unbiased=False)),
                 "success": float(np.mean([t.success for t in trajs]))}  # fmt: skip
        parts: dict[str, list[float]] = {}
        for t in trajs:
            for name, value in (t.info.get("reward_parts") or {}).items():
                parts.setdefault(name, []).append(float(value))
        for name, values in parts.items():
            stats[f"reward/{name}/mean"] = float(np.mean(values))
            stats[f"reward/{name}/std"] = float(np.std(values))
        lengths = torch.tensor([t.response_length for t in trajs])
        stats["response_length"] = float(lengths.float().mean())
        a = self.cfg.algo
        if a.overlong_cache:  # DAPO soft overlong punishment over the last overlong_cache tokens of the budget
            penalty = filters.overlong_penalty(lengths, self.sampling.max_new_tokens, a.overlong_cache, a.overlong_penalty)
            rewards = rewards + penalty
            stats["reward/overlong/mean"] = float(penalty.mean())
        return rewards, stats

    def make_batch(self, trajs: list[Trajectory], rewards: torch.Tensor, group_ids: torch.Tensor,
                   adv: torch.Tensor | None = None) -> Batch:  # fmt: skip
        """Collate trajectories with everything the update needs: reference log-probs (KL), the critic's values
        (``old_values``) and VPPO token weights, when configured. ``adv``: precomputed outcome advantages."""
        a = self.cfg.algo
        inputs, mask, old = self.policy.collate(trajs)
        adv = adv if adv is not None else torch.zeros(len(trajs))  # token-level ones are set by advantage()
        batch = Batch(model_inputs=inputs, mask=mask, old_logp=old, advantages=adv, rewards=rewards, group_ids=group_ids)
        with torch.no_grad():
            if self.ref_policy is not None:
                batch.ref_logp = self.ref_policy.log_prob(batch)[0].cpu()
            if self.policy.critic is not None:
                self.policy.critic.eval()
                batch.old_values = (self.policy.value(batch) * mask.to(self.policy.device)).cpu()
        if a.vppo_top_frac > 0:  # VPPO: gradient only on the most image-dependent tokens, rows scaled by dependency
            rng = np.random.default_rng([self.cfg.seed, 5, self.step])
            patch = int(getattr(self.policy.encoder.image_processor, "patch_size", 14))
            dep = visual_dependency(self.policy, trajs, rng, patch=patch, p=a.vppo_mask_prob)
            batch.token_weights = vppo_weights(dep, mask, top_frac=a.vppo_top_frac).cpu()
        return batch

    def advantage(self, batch: Batch) -> dict[str, float]:
        """Token-level advantages ``[B, L]`` for ``reinforce_pp*`` and ``gae`` (which also sets ``batch.returns``),
        with the KL to the reference folded into the token rewards when ``algo.kl_in_reward``."""
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
        gamma = a.gamma if a.gamma is not None else 1.0
        if a.advantage == "gae":
            batch.advantages, batch.returns = advantages.token_gae(batch.rewards, batch.old_values, batch.mask, gamma,
                                                                   a.lam, kl=kl_tok, kl_coef=coef)  # fmt: skip
        elif a.advantage == "reinforce_pp":
            batch.advantages = self.advantage_fn(batch.rewards, batch.mask, kl=kl_tok, kl_coef=coef, gamma=gamma)
        else:  # reinforce_pp_baseline
            batch.advantages = self.advantage_fn(batch.rewards, batch.group_ids, batch.mask, kl=kl_tok, kl_coef=coef,
                                                 gamma=gamma)  # fmt: skip
        return stats

    def update(self, batch: Batch) -> dict[str, float]:
        gen = torch.Generator().manual_seed(step_seed(self.cfg.seed, 4, self.step))
        return self.learner.update(batch, generator=gen)

    def train_step(self) -> dict[str, float]:
        """One RL step: collect -> score -> advantage -> update."""
        t0 = time.perf_counter()
        trajs, rewards, stats = self.collect_scored()
        t_collect = time.perf_counter() - t0
        if not trajs:  # dynamic sampling found no group with a learning signal: nothing to train on
            return {**stats, "skipped": 1.0}
        group_ids = torch.tensor([t.group_id for t in trajs], dtype=torch.long)
        stats["zero_std_groups"] = zero_std_fraction(rewards, group_ids)
        if advantages.FAMILY[self.cfg.algo.advantage] == "outcome":  # one advantage per sequence, before replay
            adv = self.advantage_fn(rewards, group_ids, eps=self.cfg.algo.adv_eps)
            if self.replay is not None:
                trajs, adv, replay_stats = self.replay.process(trajs, adv, group_ids)
                stats.update(replay_stats)
                rewards = torch.tensor([t.reward for t in trajs], dtype=torch.float32)
                group_ids = torch.tensor([t.group_id for t in trajs], dtype=torch.long)
            batch = self.make_batch(trajs, rewards, group_ids, adv)
        else:
            batch = self.make_batch(trajs, rewards, group_ids)
            stats.update(self.advantage(batch))
        t1 = time.perf_counter()
        stats.update(self.update(batch))
        stats.update({
            "tokens_per_s": self.collector.stats.tokens_per_s,
            "env_steps_per_s": self.collector.stats.env_steps_per_s,
            "time/collect_s": t_collect,
            "time/update_s": time.perf_counter() - t1,
        })  # fmt: skip
        return stats

    # --------------------------------------------------------------------------------------------------------- eval
    @torch.no_grad()
    def evaluate(self, n: int | None = None) -> dict[str, float]:
        """Greedy decoding on ``n`` held-out episodes (seeds 0..n-1 of the eval env): accuracy = mean success."""
        n = n or self.cfg.train.eval_size
        self.policy.model.eval()
        trajs = self.eval_collector.collect(list(range(n)), 1, SamplingParams(0.0, 1.0, 0, self.sampling.max_new_tokens))
        return {"eval/accuracy": float(np.mean([t.success for t in trajs])),
                "eval/reward": float(np.mean([t.reward for t in trajs]))}  # fmt: skip

    # ----------------------------------------------------------------------------------------------------------- fit
    def save(self) -> None:
        extra = {"summary": self.summary, "kl_coef": self.learner.kl_ctl.value}
        if self.policy.critic is not None:
            extra["critic"] = self.policy.critic.state_dict()
        ckpt.save_checkpoint(self.run_dir, self.step, self.policy, self.learner.optimizer, extra,
                             keep=self.cfg.train.keep_checkpoints)  # fmt: skip

    def fit(self) -> dict[str, Any]:
        """Warm-up (fresh runs only), evaluate, RL steps with periodic eval/checkpoints, final eval and summary."""
        tc = self.cfg.train
        start = time.perf_counter()
        before: dict[str, float] = {}
        if self.step == 0 and "accuracy_before_rl" not in self.summary:
            if self.warmup() and self.ref_policy is not None:  # KL is measured against the warmed-up policy
                self.ref_policy.model.load_state_dict(self.policy.model.state_dict())
                ckpt.save_policy(self.ref_policy, self.run_dir / "reference")  # resumed runs reload it
            if self.cfg.warmup.steps > 0 and self.policy.critic is not None:  # the critic starts from the same weights
                self.policy.critic.backbone.load_state_dict(self.policy.model.base_model.state_dict())
            before = self.evaluate()
            self.summary["accuracy_before_rl"] = before["eval/accuracy"]
            self.metrics.log(0, before)
            logger.info("held-out accuracy before RL: %.3f", before["eval/accuracy"])
        with self.progress.task("RL", tc.steps, completed=self.step) as advance:
            while self.step < tc.steps:
                stats = self.train_step()
                self.step += 1
                if tc.eval_every and self.step % tc.eval_every == 0 and self.step < tc.steps:
                    stats.update(self.evaluate())
                if self.step % max(tc.log_every, 1) == 0 or self.step == tc.steps:
                    self.metrics.log(self.step, stats)
                if tc.save_every and self.step % tc.save_every == 0 and self.step < tc.steps:
                    self.save()
                acc = f" eval {stats['eval/accuracy']:.2f}" if "eval/accuracy" in stats else ""
                advance(f"reward {stats.get('reward/mean', float('nan')):.2f} kl {stats.get('approx_kl', 0.0):.4f}{acc}")
        final = before if self.step == 0 and before else self.evaluate()  # no RL step ran: the warm-up eval is final
        if final is not before:
            self.metrics.log(self.step, final)
        self.summary.update({
            "accuracy_after_rl": final["eval/accuracy"],
            "eval_size": tc.eval_size,
            "steps": self.step,
            "minutes": self.summary.get("minutes", 0.0) + (time.perf_counter() - start) / 60,
            "peak_rss_mib": peak_rss_mib(),
        })  # fmt: skip
        self.save()
        (self.run_dir / "summary.json").write_text(json.dumps(self.summary, indent=2))
        plot_curves(self.metrics.path, self.run_dir / "curves.png")
        self.metrics.close()
        self.collector.close()
        self.eval_collector.close()
        return self.summary
