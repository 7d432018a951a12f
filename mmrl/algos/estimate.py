"""The one signature through which the trainer calls every advantage estimator, for any policy family.

:class:`AdvantageInputs` holds everything an estimator may read; :data:`ESTIMATE` maps each estimator name the trainer
accepts to a function of it (the trainer never branches on an estimator's name or family). Turns that are rows of their
own (history windows) are packed into whole episodes first (:func:`pack_episodes`). The estimators themselves are the
pure functions of :mod:`mmrl.algos.advantages`.

Example:
    >>> x = AdvantageInputs(torch.tensor([1.0, 0.0]), torch.zeros(2, 1), torch.ones(2, 1), torch.tensor([0, 0]))
    >>> ESTIMATE["grpo"](x)[0]
    tensor([ 0.7071, -0.7071])
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass

import torch
from torch import Tensor

from mmrl.algos.advantages import _REGISTRY, gigpo, reinforce_pp, reinforce_pp_baseline, step_episode, token_gae


@dataclass
class AdvantageInputs:
    """Everything an estimator may read, for any policy family; the trainer fills what the run has."""

    rewards: Tensor  # [B] row returns (outcome estimators)
    step_rewards: Tensor  # [B, L] each step's reward on its last position (token/step-level estimators)
    mask: Tensor  # [B, L] trained positions
    group_ids: Tensor  # [B] GRPO groups
    values: Tensor | None = None  # [B, L] critic values at rollout time (gae)
    bootstrap: Tensor | None = None  # [B] value after each row's last position where its return goes on, else 0 (gae)
    kl: Tensor | None = None  # [B, L] per-position KL to the reference, subtracted from the rewards with kl_coef
    kl_coef: float = 0.0  # in-reward KL coefficient
    gamma: float | None = None  # discount; None = 1.0 (the token estimators' default)
    lam: float = 0.95  # GAE lambda
    eps: float = 1e-6  # std epsilon of group normalisation
    steps: Tensor | None = None  # [B, L] long: env step (turn) of each position within its row's episode, -1 elsewhere (step estimators)
    anchors: list[list[Hashable]] | None = None  # per row: the anchor key of each of its steps, indexed by step id (gigpo)


Estimate = Callable[[AdvantageInputs], tuple[Tensor, Tensor | None]]  # -> (advantages [B] or [B, L], returns or None)


def _gamma(x: AdvantageInputs) -> float:
    return 1.0 if x.gamma is None else x.gamma


def _outcome(fn: Callable[..., Tensor]) -> Estimate:
    return lambda x: (fn(x.rewards, x.group_ids, eps=x.eps), None)


def _per_step(fn: Callable[..., Tensor], anchored: bool) -> Estimate:
    """A step estimator (:func:`gigpo`, :func:`step_episode`) on ``[B, L]`` rows: each row an episode whose positions
    carry their env step in ``x.steps``. Step ``k`` of row ``b`` gets the reward summed over its positions and the
    anchor key ``x.anchors[b][k]``; the ``[S]`` step advantages are broadcast back over each step's positions."""

    def estimate(x: AdvantageInputs) -> tuple[Tensor, None]:
        if x.steps is None or (anchored and x.anchors is None):
            raise ValueError("step-level advantages need the env step of every position (a multi-turn policy's collate)")
        m = x.mask.bool()
        where = torch.full(x.steps.shape, -1, dtype=torch.long, device=x.steps.device)  # [B, L] step index s
        traj, keys, rewards = [], [], []
        for b in range(x.steps.shape[0]):
            for k in x.steps[b][m[b]].unique().tolist():  # the row's steps in time order
                on = m[b] & (x.steps[b] == k)
                where[b][on] = len(traj)
                traj.append(b)
                rewards.append(x.step_rewards[b][on].sum())
                keys.append(x.anchors[b][k] if x.anchors is not None else k)
        if not traj:
            return torch.zeros_like(x.step_rewards), None
        kw = {} if x.gamma is None else {"gamma": x.gamma}
        args = (x.rewards, x.group_ids, torch.stack(rewards))
        index = torch.tensor(traj, dtype=torch.long, device=x.steps.device)
        adv = fn(*args, keys, index, eps=x.eps, **kw) if anchored else fn(*args, index, eps=x.eps, **kw)  # [S]
        return torch.where(where >= 0, adv[where.clamp(min=0)], torch.zeros((), dtype=adv.dtype)), None

    return estimate


# name -> the estimator called through one signature: the trainer never branches on an estimator's name or family.
ESTIMATE: dict[str, Estimate] = {
    **{name: _outcome(_REGISTRY[name]) for name in ("grpo", "dr_grpo", "mean_only", "rloo")},
    "reinforce_pp": lambda x: (reinforce_pp(x.step_rewards, x.mask, x.kl, x.kl_coef, _gamma(x)), None),
    "reinforce_pp_baseline": lambda x: (
        reinforce_pp_baseline(x.rewards, x.group_ids, x.mask, x.kl, x.kl_coef, _gamma(x)), None),
    "gae": lambda x: token_gae(x.step_rewards, x.values, x.mask, _gamma(x), x.lam, x.kl, x.kl_coef, x.bootstrap),
    "gigpo": _per_step(gigpo, anchored=True),
    "step_episode": _per_step(step_episode, anchored=False),
}
CRITIC = frozenset({"gae"})  # estimators that need a value model
PER_POSITION_REWARDS = frozenset({"reinforce_pp", "reinforce_pp_baseline", "gae"})  # can take KL in the rewards


def pack_episodes(x: AdvantageInputs, episode_ids: Tensor) -> tuple[AdvantageInputs, Callable[[Tensor], Tensor]]:
    """Rows that are turns of one episode (``episode_ids [B]``, a turn per row in time order) packed into one row per
    episode, so that every estimator sees whole episodes: an episode's trained positions are its rows' masked
    positions concatenated in row order, its reward and group those of its rows, its bootstrap its last row's.

    Returns the packed inputs and ``unpack``, which takes an estimator's ``[E]`` or ``[E, Lp]`` output back to the rows
    (``[B]``: each row its episode's value; ``[B, L]``: each position its packed value).
    """
    episodes, inv = torch.unique(episode_ids, return_inverse=True)  # [E], [B]
    E, m = episodes.numel(), x.mask.bool()
    src_row, src_pos, dst_e, dst_j = [], [], [], []
    fill = [0] * E
    first, last = [-1] * E, [-1] * E
    for b in range(m.shape[0]):
        e = int(inv[b])
        first[e] = b if first[e] < 0 else first[e]
        last[e] = b
        pos = m[b].nonzero().flatten().tolist()
        src_row += [b] * len(pos)
        src_pos += pos
        dst_e += [e] * len(pos)
        dst_j += range(fill[e], fill[e] + len(pos))
        fill[e] += len(pos)
    Lp = max(fill + [1])
    rows, cols = torch.tensor(src_row, dtype=torch.long), torch.tensor(src_pos, dtype=torch.long)
    ee, jj = torch.tensor(dst_e, dtype=torch.long), torch.tensor(dst_j, dtype=torch.long)

    def pack(t: Tensor | None) -> Tensor | None:
        if t is None:
            return None
        out = torch.full((E, Lp), -1 if t.dtype == torch.long else 0, dtype=t.dtype, device=t.device)  # [E, Lp]
        out[ee, jj] = t[rows, cols]
        return out

    firsts, lasts = torch.tensor(first), torch.tensor(last)
    anchors = None
    if x.anchors is not None:
        anchors = [[] for _ in range(E)]
        for b, keys in enumerate(x.anchors):
            anchors[int(inv[b])] += list(keys)
    packed = AdvantageInputs(
        rewards=x.rewards[firsts], step_rewards=pack(x.step_rewards), mask=pack(x.mask), group_ids=x.group_ids[firsts],
        values=pack(x.values), bootstrap=None if x.bootstrap is None else x.bootstrap[lasts], kl=pack(x.kl),
        kl_coef=x.kl_coef, gamma=x.gamma, lam=x.lam, eps=x.eps, steps=pack(x.steps), anchors=anchors,
    )  # fmt: skip

    def unpack(t: Tensor) -> Tensor:
        if t.dim() == 1:
            return t[inv]  # [B]: each turn its episode's advantage
        out = torch.zeros(x.mask.shape, dtype=t.dtype, device=t.device)  # [B, L]
        out[rows, cols] = t[ee, jj]
        return out

    return packed, unpack
