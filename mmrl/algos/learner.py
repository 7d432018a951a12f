"""The one update loop shared by every algorithm and every policy family.

The learner sees a :class:`~mmrl.types.Batch` (log-prob tensors ``[B, L]`` with masks and advantages) and a policy that
recomputes ``log_prob(batch)`` with grad; it never sees model-specific inputs. The advantage estimator and the policy
loss are looked up by name in their registries (:mod:`mmrl.algos.advantages`, :mod:`mmrl.algos.losses`).

PPO with a critic: the critic (:class:`mmrl.policies.base.Critic`) is passed in explicitly. When the batch carries
``returns`` (and ``old_values`` for value clipping and explained variance), the loss gains
``vf_coef * value_loss(critic.value(mb), returns)`` (:func:`mmrl.algos.losses.value_loss`); the critic is optimised in
its own parameter group at ``algo.critic_lr`` and gradient-clipped on its own, as a separate model. With ``algo.kl_target``
the KL-to-reference coefficient adapts (:class:`mmrl.algos.kl.AdaptiveKLController`, starting from ``algo.kl_coef``)
after every update from the measured ``kl_ref``; with ``algo.kl_in_reward`` the trainer measures the KL and calls
``learner.kl_ctl.update(mean_kl, n_steps)`` itself, reading the coefficient from ``learner.kl_ctl.value``.

Example:
    >>> learner = Learner(policy, AlgoConfig(loss="ppo_clip", epochs=2), critic=None)
    >>> stats = learner.update(batch)
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

import torch

from mmrl.algos import losses
from mmrl.algos.advantages import masked_whiten
from mmrl.algos.kl import AdaptiveKLController, FixedKLController
from mmrl.config import AlgoConfig
from mmrl.types import Batch

logger = logging.getLogger(__name__)


class Learner:
    """PPO-style epochs of minibatch updates over one rollout batch."""

    def __init__(self, policy: Any, cfg: AlgoConfig, critic: Any = None) -> None:
        self.policy = policy
        self.critic = critic
        self.cfg = cfg
        self.loss_fn = losses.get(cfg.loss)
        params = [p for p in policy.parameters() if p.requires_grad]
        self.params = params
        self.critic_params = [p for p in critic.parameters() if p.requires_grad] if critic is not None else []
        groups = [{"params": params}]
        if self.critic_params:
            groups.append({"params": self.critic_params, "lr": cfg.critic_lr if cfg.critic_lr is not None else cfg.lr})
        self.optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.kl_ctl: FixedKLController | AdaptiveKLController = (
            FixedKLController(cfg.kl_coef) if cfg.kl_target is None
            else AdaptiveKLController(cfg.kl_coef, cfg.kl_target, cfg.kl_horizon)
        )  # fmt: skip

    def loss_kwargs(self) -> dict[str, Any]:
        """Options of the configured loss; clips left as None fall back to the loss's own defaults."""
        cfg = self.cfg
        kw: dict[str, Any] = {"agg": cfg.agg, "agg_constant": cfg.agg_constant, "dual_clip": cfg.dual_clip}
        if cfg.clip_low is not None:
            kw["clip_low"] = cfg.clip_low
        if cfg.clip_high is not None:
            kw["clip_high"] = cfg.clip_high
        return kw

    def minibatch_loss(self, mb: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        """Policy loss + value loss + KL-to-reference + entropy bonus on one minibatch (the method's math in one place)."""
        cfg = self.cfg
        logp, mask, entropy = self.policy.log_prob(mb, with_entropy=True)  # [B, L] each
        token_weights = mb.token_weights.to(logp.device) if mb.token_weights is not None else None
        if cfg.top_entropy_q < 1.0:  # "80/20": only the highest-entropy tokens get gradient; the normaliser stays `mask`
            top = losses.top_entropy_mask(entropy.detach(), mask, cfg.top_entropy_q).to(logp.dtype)  # [B, L] 0/1
            token_weights = top if token_weights is None else token_weights * top
        adv = mb.advantages.to(logp.device)  # [B] or [B, L]
        if cfg.norm_adv:  # per-minibatch whitening, as CleanRL's norm_adv
            adv_mask = mask.bool().any(-1) if adv.dim() == 1 else mask  # [B] sequences or [B, L] tokens
            adv = masked_whiten(adv, adv_mask)
        loss, stats = self.loss_fn(logp, mb.old_logp.to(logp.device), adv, mask,
                                   token_weights=token_weights, **self.loss_kwargs())  # fmt: skip
        if mb.returns is not None:  # critic: (V - R)^2 / 2, optionally clipped around V_old (CleanRL clip_vloss)
            values = self.critic.value(mb)  # [B, L]
            old_values = mb.old_values.to(values.device) if mb.old_values is not None else None
            v_loss, v_stats = losses.value_loss(values, mb.returns.to(values.device), mask, old_values, cfg.vf_clip,
                                                cfg.agg, cfg.agg_constant)  # fmt: skip
            loss = loss + cfg.vf_coef * v_loss
            stats.update(v_stats, value_loss=float(v_loss.detach()))
        ent = losses.agg(entropy, mask, cfg.agg, cfg.agg_constant)
        stats["entropy"] = float(ent.detach())
        if cfg.entropy_coef:
            loss = loss - cfg.entropy_coef * ent
        if cfg.kl_coef and not cfg.kl_in_reward:
            kl = losses.agg(losses.kl(logp, mb.ref_logp.to(logp.device), cfg.kl_kind), mask, cfg.agg, cfg.agg_constant)
            loss = loss + self.kl_ctl.value * kl
            stats["kl_ref"] = float(kl.detach())
        stats["loss"] = float(loss.detach())
        return loss, stats

    def update(self, batch: Batch, generator: torch.Generator | None = None) -> dict[str, float]:
        """``cfg.epochs`` passes over ``batch`` in shuffled minibatches; returns the mean of each diagnostic.

        A minibatch whose loss or gradient norm is not finite is skipped: no optimizer step, so weights and optimizer
        state stay as they were. ``nonfinite_updates`` counts them; the diagnostics average the finite ones.
        """
        if self.cfg.kl_coef and batch.ref_logp is None:
            raise ValueError("algo.kl_coef > 0 but the batch has no ref_logp (the trainer computes it)")
        if batch.returns is not None and self.critic is None:
            raise ValueError("the batch carries returns but the learner has no critic")
        self.policy.train()
        if self.critic is not None:
            self.critic.train()
        sums: dict[str, float] = defaultdict(float)
        count = skipped = 0
        B = len(batch)
        mb_size = min(self.cfg.minibatch_size, B)
        for _ in range(self.cfg.epochs):
            perm = torch.randperm(B, generator=generator)
            for lo in range(0, B, mb_size):
                mb = batch.select(perm[lo : lo + mb_size])
                loss, stats = self.minibatch_loss(mb)
                self.optimizer.zero_grad(set_to_none=True)
                if not torch.isfinite(loss):  # NaN / inf: no backward, no step
                    skipped += 1
                    continue
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm)
                finite = bool(torch.isfinite(grad_norm))
                if self.critic_params:  # clipped on its own, as a separate model would be
                    critic_norm = torch.nn.utils.clip_grad_norm_(self.critic_params, self.cfg.max_grad_norm)
                    stats["critic_grad_norm"] = float(critic_norm)
                    finite = finite and bool(torch.isfinite(critic_norm))
                if not finite:  # clipping cannot repair a NaN / inf gradient: skip the step
                    self.optimizer.zero_grad(set_to_none=True)
                    skipped += 1
                    continue
                self.optimizer.step()
                stats["grad_norm"] = float(grad_norm)
                for k, v in stats.items():
                    sums[k] += v
                count += 1
        out = {k: v / max(count, 1) for k, v in sums.items()}
        out["nonfinite_updates"] = float(skipped)
        if batch.returns is not None and batch.old_values is not None:  # critic quality before this update
            m = batch.mask.bool().any(-1) if batch.returns.dim() == 1 else batch.mask
            out["explained_variance"] = losses.explained_variance(batch.old_values, batch.returns, m)
        if self.cfg.kl_coef and not self.cfg.kl_in_reward and "kl_ref" in out:
            self.kl_ctl.update(out["kl_ref"], n_steps=B)  # adaptive coefficient (a no-op when fixed)
        if self.cfg.kl_coef:
            out["kl_coef"] = self.kl_ctl.value
        return out
