"""Sampling filters: DAPO dynamic sampling and overlong shaping, and VL-Rethinker's selective sample replay.

No rollout code lives here: :class:`DynamicSampler` takes a callable that produces scored batches, and
:class:`SelectiveReplayBuffer` stores whatever per-sample records the learner hands it.

Example:
    >>> import torch
    >>> dynamic_sampling_mask(torch.tensor([1.0, 1.0, 0.0, 1.0]), torch.tensor([0, 0, 1, 1]))
    tensor([False, False,  True,  True])
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from mmrl.algos.advantages import GroupIds, group_index

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------- dynamic sampling
def dynamic_sampling_mask(rewards: Tensor, group_ids: GroupIds, tol: float = 0.0) -> Tensor:
    """DAPO dynamic sampling (https://arxiv.org/abs/2503.14476): keep groups whose rewards are not all equal.

    Args:
        rewards: ``[B]`` outcome rewards.
        group_ids: ``[B]`` group ids (any order; a singleton group is all-equal and dropped).
        tol: a group is kept when ``max - min > tol``.
    Returns:
        ``[B]`` bool, true for samples of kept groups.
    """
    inv, n = group_index(group_ids, rewards.device)
    hi = torch.full((n,), -torch.inf, dtype=rewards.dtype, device=rewards.device).scatter_reduce(
        0, inv, rewards, "amax"
    )
    lo = torch.full((n,), torch.inf, dtype=rewards.dtype, device=rewards.device).scatter_reduce(0, inv, rewards, "amin")
    return (hi - lo)[inv] > tol


def select(payload: Any, idx: Tensor) -> Any:
    """Restrict a per-sample payload to ``idx``: tensors/arrays along dim 0, lists and tuples by position, dicts per
    value (recursively); None stays None."""
    if payload is None:
        return None
    if isinstance(payload, dict):
        return {k: select(v, idx) for k, v in payload.items()}
    if isinstance(payload, (list, tuple)):
        return type(payload)(payload[i] for i in idx.tolist())
    return payload[idx]  # torch tensor or numpy array


@dataclass
class SampledBatch:
    """What :class:`DynamicSampler` returns: the kept samples of every batch it drew."""

    rewards: Tensor  # [B'] rewards of kept samples, source batches concatenated in arrival order
    group_ids: Tensor  # [B'] long dense group index 0..G'-1, unique across source batches
    payloads: list[Any] = field(default_factory=list)  # one per contributing batch, restricted with `select_fn`
    indices: list[Tensor] = field(default_factory=list)  # matching kept sample indices into each source batch
    num_batches: int = 0  # calls made to the sample function
    groups_seen: int = 0  # groups drawn in total
    groups_kept: int = 0  # groups returned (<= target_groups)
    full: bool = False  # reached target_groups within max_batches

    @property
    def keep_rate(self) -> float:
        """Fraction of drawn groups that had a learning signal (log it: it falls as the policy saturates)."""
        return self.groups_kept / max(self.groups_seen, 1)


class DynamicSampler:
    """Draw scored batches until ``target_groups`` groups with non-equal rewards are collected (DAPO).

    ``sample_fn()`` returns ``(rewards [B], group_ids [B], payload)``; the sampler keeps the groups that pass
    :func:`dynamic_sampling_mask`, stops after ``max_batches`` calls, and trims to exactly ``target_groups`` groups
    (earliest first). If the budget runs out it returns what it has with ``full=False`` and logs a warning; the trainer
    decides whether to train on a short batch.

    Example:
        >>> import torch
        >>> batches = iter([(torch.tensor([1., 1., 0., 1.]), torch.tensor([0, 0, 1, 1]), ["a", "b", "c", "d"])] * 3)
        >>> out = DynamicSampler(lambda: next(batches), target_groups=2)()
        >>> out.groups_kept, out.num_batches, out.payloads
        (2, 2, [['c', 'd'], ['c', 'd']])
    """

    def __init__(
        self,
        sample_fn: Callable[[], tuple[Tensor, GroupIds, Any]],
        target_groups: int,
        max_batches: int = 10,
        select_fn: Callable[[Any, Tensor], Any] = select,
        tol: float = 0.0,
    ) -> None:
        if target_groups < 1 or max_batches < 1:
            raise ValueError("target_groups and max_batches must be >= 1")
        self.sample_fn = sample_fn
        self.target_groups = target_groups
        self.max_batches = max_batches
        self.select_fn = select_fn
        self.tol = tol

    def __call__(self) -> SampledBatch:
        out = SampledBatch(rewards=torch.zeros(0), group_ids=torch.zeros(0, dtype=torch.long))  # filled below
        rewards: list[Tensor] = []
        groups: list[Tensor] = []
        while out.groups_kept < self.target_groups and out.num_batches < self.max_batches:
            r, gids, payload = self.sample_fn()
            out.num_batches += 1
            inv, n = group_index(gids, r.device)
            out.groups_seen += n
            keep = dynamic_sampling_mask(r, inv, self.tol)  # [B]
            kept_groups = torch.unique(inv[keep], sorted=False)
            # earliest-appearing groups first, trimmed to what is still needed
            dev = inv.device
            first = torch.full((n,), inv.numel(), dtype=torch.long, device=dev).scatter_reduce(
                0, inv, torch.arange(inv.numel(), device=dev), "amin"
            )  # [n] first sample index of each group
            kept_groups = kept_groups[torch.argsort(first[kept_groups])][: self.target_groups - out.groups_kept]
            if kept_groups.numel() == 0:
                continue
            remap = torch.full((n,), -1, dtype=torch.long, device=dev)
            remap[kept_groups] = torch.arange(kept_groups.numel(), device=dev) + out.groups_kept  # ids across batches
            idx = torch.nonzero(remap[inv] >= 0).squeeze(-1)  # [B_kept] sample indices, original order
            rewards.append(r[idx])
            groups.append(remap[inv[idx]])
            out.payloads.append(self.select_fn(payload, idx))
            out.indices.append(idx)
            out.groups_kept += kept_groups.numel()
        if rewards:
            out.rewards, out.group_ids = torch.cat(rewards), torch.cat(groups)
        out.full = out.groups_kept >= self.target_groups
        if not out.full:
            log.warning(
                "dynamic sampling kept %d of %d target groups after %d batches (keep rate %.2f)",
                out.groups_kept,
                self.target_groups,
                out.num_batches,
                out.keep_rate,
            )
        return out


# --------------------------------------------------------------------------------------------------- overlong shaping
def overlong_penalty(lengths: Tensor, max_length: int, cache_length: int, penalty: float = 1.0) -> Tensor:
    """DAPO soft overlong punishment (https://arxiv.org/abs/2503.14476, Eq. 13), a reward term ``<= 0``.

    With ``expected = max_length - cache_length``: 0 for ``len <= expected``; ``(expected - len) / cache_length *
    penalty`` (linear from 0 to ``-penalty``) for ``expected < len <= max_length``; ``-penalty`` beyond ``max_length``.

    Args:
        lengths: ``[B]`` response lengths in tokens.
        max_length: the generation budget L_max.
        cache_length: the soft punishment window L_cache (0 = hard penalty only past max_length).
        penalty: magnitude of the full penalty.
    Returns:
        ``[B]`` float penalties to add to the rewards.
    """
    n = lengths.to(torch.float32)
    expected = float(max_length - cache_length)
    ramp = (expected - n) / max(cache_length, 1) * penalty
    out = torch.where(n <= expected, torch.zeros_like(n), ramp)
    return torch.where(n > max_length, torch.full_like(n, -penalty), out)


# ------------------------------------------------------------------------------------------- selective sample replay
class SelectiveReplayBuffer:
    """Selective Sample Replay (VL-Rethinker https://arxiv.org/abs/2504.08837).

    Keeps recent samples with ``|adv| > threshold`` (FIFO, ``capacity``). When more than ``max_zero_frac`` of a batch's
    groups have all-zero advantages (no learning signal, "vanishing advantages"), their samples are replaced by samples
    replayed from the buffer, drawn with probability proportional to ``|adv| ** alpha``, so the batch keeps its size.
    Replayed samples carry the advantage they were stored with. A seeded ``torch.Generator`` makes replay deterministic.

    Example:
        >>> import torch
        >>> buf = SelectiveReplayBuffer(capacity=8, seed=0)
        >>> _ = buf.process(["a", "b", "c", "d"], torch.tensor([1.0, -1.0, 0.0, 0.0]), torch.tensor([0, 0, 1, 1]))
        >>> items, adv, stats = buf.process(["e", "f"], torch.tensor([0.0, 0.0]), torch.tensor([2, 2]))
        >>> sorted(items), stats["ssr/replayed"]
        (['a', 'b'], 2.0)
    """

    def __init__(
        self,
        capacity: int = 1024,
        threshold: float = 0.0,
        alpha: float = 1.0,
        max_zero_frac: float = 0.5,
        seed: int = 0,
    ) -> None:
        self.capacity = capacity
        self.threshold = threshold
        self.alpha = alpha
        self.max_zero_frac = max_zero_frac
        self.items: deque[Any] = deque(maxlen=capacity)
        self.advantages: deque[float] = deque(maxlen=capacity)
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.items)

    def add(self, items: Sequence[Any], advantages: Tensor) -> int:
        """Store the samples with ``|adv| > threshold`` (``advantages [B]``, one per item); returns how many."""
        keep = (advantages.abs() > self.threshold).tolist()
        for item, a, k in zip(items, advantages.tolist(), keep):
            if k:
                self.items.append(item)
                self.advantages.append(a)
        return sum(keep)

    def sample(self, n: int) -> tuple[list[Any], Tensor]:
        """Draw ``n`` stored samples with probability ``|adv|^alpha`` (without replacement when ``n <= len``)."""
        if n <= 0 or not self.items:
            return [], torch.zeros(0)
        adv = torch.tensor(list(self.advantages))
        probs = adv.abs().pow(self.alpha).clamp(min=1e-12)
        idx = torch.multinomial(probs, n, replacement=n > len(self.items), generator=self.generator)
        return [self.items[i] for i in idx.tolist()], adv[idx]

    def process(
        self, items: Sequence[Any], advantages: Tensor, group_ids: GroupIds
    ) -> tuple[list[Any], Tensor, dict[str, float]]:
        """One SSR step on a batch: replay if too many groups are zero-advantage, then store the informative samples.

        Args:
            items: ``B`` per-sample records (whatever the learner trains on).
            advantages: ``[B]`` advantages of the batch.
            group_ids: ``[B]`` group ids.
        Returns:
            ``(items', advantages' [B], stats)``: the batch with zero-advantage groups swapped for replayed samples (or
            unchanged), and ``ssr/zero_group_frac``, ``ssr/replayed``, ``ssr/buffer_size``.
        """
        inv, n = group_index(group_ids, advantages.device)
        informative = advantages.abs() > self.threshold  # [B]
        group_has_signal = (
            torch.zeros(n, dtype=torch.long, device=inv.device).index_add_(0, inv, informative.long()) > 0
        )
        zero_group = ~group_has_signal[inv]  # [B] sample belongs to an all-zero group
        zero_frac = float((~group_has_signal).float().mean()) if n else 0.0
        out_items, out_adv, replayed = list(items), advantages, 0
        if zero_frac > self.max_zero_frac and len(self.items) > 0:  # replay from earlier batches only
            keep = torch.nonzero(~zero_group).squeeze(-1)
            r_items, r_adv = self.sample(int(zero_group.sum()))
            out_items = [items[i] for i in keep.tolist()] + r_items
            out_adv = torch.cat([advantages[keep], r_adv.to(advantages.device, advantages.dtype)])
            replayed = len(r_items)
        self.add(items, advantages)
        stats = {"ssr/zero_group_frac": zero_frac, "ssr/replayed": float(replayed), "ssr/buffer_size": float(len(self))}
        return out_items, out_adv, stats
