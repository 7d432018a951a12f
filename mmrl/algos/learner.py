"""The one update loop shared by every algorithm and every policy family.

The learner sees a :class:`~mmrl.types.Batch` (log-prob tensors ``[B, L]`` with masks and advantages) and a policy that
recomputes ``log_prob(batch)`` with grad; it never sees model-specific inputs. The advantage estimator and the policy
loss are looked up by name in their registries (:mod:`mmrl.algos.advantages`, :mod:`mmrl.algos.losses`).

Example:
    >>> learner = Learner(policy, AlgoConfig(loss="ppo_clip", epochs=2))
    >>> stats = learner.update(batch)
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

import torch

from mmrl.algos import losses
from mmrl.config import AlgoConfig
from mmrl.types import Batch

logger = logging.getLogger(__name__)


class Learner:
    """PPO-style epochs of minibatch updates over one rollout batch."""

    def __init__(self, policy: Any, cfg: AlgoConfig, parameters: list[torch.nn.Parameter] | None = None) -> None:
        self.policy = policy
        self.cfg = cfg
        self.loss_fn = losses.get(cfg.loss)
        params = parameters if parameters is not None else [p for p in policy.model.parameters() if p.requires_grad]
        self.params = params
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

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
        """Policy loss + KL-to-reference + entropy bonus on one minibatch (the method's math in one place)."""
        cfg = self.cfg
        logp, mask, entropy = self.policy.log_prob(mb, with_entropy=True)  # [B, L] each
        train_mask = mask
        if cfg.top_entropy_q < 1.0:  # "80/20": only the highest-entropy tokens get gradient
            train_mask = losses.top_entropy_mask(entropy.detach(), mask, cfg.top_entropy_q)
        token_weights = mb.token_weights.to(logp.device) if mb.token_weights is not None else None
        loss, stats = self.loss_fn(logp, mb.old_logp.to(logp.device), mb.advantages.to(logp.device), train_mask,
                                   token_weights=token_weights, **self.loss_kwargs())  # fmt: skip
        ent = losses.agg(entropy, mask, cfg.agg, cfg.agg_constant)
        stats["entropy"] = float(ent.detach())
        if cfg.entropy_coef:
            loss = loss - cfg.entropy_coef * ent
        if cfg.kl_coef and not cfg.kl_in_reward:
            kl = losses.agg(losses.kl(logp, mb.ref_logp.to(logp.device), cfg.kl_kind), mask, cfg.agg, cfg.agg_constant)
            loss = loss + cfg.kl_coef * kl
            stats["kl_ref"] = float(kl.detach())
        stats["loss"] = float(loss.detach())
        return loss, stats

    def update(self, batch: Batch, generator: torch.Generator | None = None) -> dict[str, float]:
        """``cfg.epochs`` passes over ``batch`` in shuffled minibatches; returns the mean of each diagnostic."""
        if self.cfg.kl_coef and batch.ref_logp is None:
            raise ValueError("algo.kl_coef > 0 but the batch has no ref_logp (the trainer computes it)")
        self.policy.model.train()
        sums: dict[str, float] = defaultdict(float)
        count = 0
        B = len(batch)
        mb_size = min(self.cfg.minibatch_size, B)
        for _ in range(self.cfg.epochs):
            perm = torch.randperm(B, generator=generator)
            for lo in range(0, B, mb_size):
                mb = batch.select(perm[lo : lo + mb_size])
                loss, stats = self.minibatch_loss(mb)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm)
                self.optimizer.step()
                stats["grad_norm"] = float(grad_norm)
                for k, v in stats.items():
                    sums[k] += v
                count += 1
        return {k: v / max(count, 1) for k, v in sums.items()}
