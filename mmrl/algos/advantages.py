"""Advantage estimators: small pure functions on tensors, in a name registry.

Select one by name (``algo.advantage`` in YAML) with :func:`get`. Each estimator belongs to one *family*, which fixes its
call signature (:data:`FAMILY` maps every registered name to its family):

- ``outcome`` (one scalar reward per sequence): ``fn(rewards [B], group_ids [B], **kw) -> adv [B]``.
  Names: ``grpo``, ``dr_grpo``, ``rloo``, ``mean_only``. Every one accepts ``eps`` so a trainer may pass the same keywords
  to all of them; the learner broadcasts ``adv [B]`` over the sequence's tokens.
- ``token`` (per-token returns over a ``[B, L]`` response mask): ``reinforce_pp(rewards, mask, kl=None, kl_coef=0.0,
  gamma=1.0, eps=1e-8) -> adv [B, L]`` and ``reinforce_pp_baseline(rewards, group_ids, mask, kl=None, kl_coef=0.0,
  gamma=1.0, eps=1e-8) -> adv [B, L]``.
- ``time`` (critic-based, time-major rollouts): ``gae(rewards [T, N], values [T+1, N], dones [T, N], gamma, lam)
  -> (adv [T, N], returns [T, N])``. :func:`token_gae` applies it along the generated tokens of ``[B, L]`` sequences
  (PPO with a value model on a VLM).
- ``step`` (multi-turn agents, one advantage per env step): ``gigpo(...)`` and ``step_episode(...) -> adv [S]``; see
  their docstrings for the flat step layout.

Group ids may be any integer tensor ``[B]`` (any order, any group sizes), a ``[B, K]`` tensor of composite keys, or a
sequence of hashables (e.g. prompt strings). Samples alone in their group carry no learning signal and get advantage 0.

Std convention: group std is the *sample* std (Bessel's correction, divide by G - 1), as TRL's ``GRPOTrainer`` computes it
(``trl.trainer.utils.nanstd``) and verl (``torch.std``); pass ``unbiased=False`` for the population std (divide by G).

Example:
    >>> import torch
    >>> from mmrl.algos import advantages
    >>> advantages.get("grpo")(torch.tensor([1.0, 0.0, 0.0, 1.0]), torch.tensor([0, 0, 1, 1]))
    tensor([ 0.7071, -0.7071, -0.7071,  0.7071])
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar

import torch
from torch import Tensor

F = TypeVar("F", bound=Callable[..., Any])
GroupIds = Tensor | Sequence[Hashable]

# -------------------------------------------------------------------------------------------------------------- registry
_REGISTRY: dict[str, Callable[..., Any]] = {}
FAMILIES = ("outcome", "token", "time", "step")  # call signatures, see the module docstring
FAMILY: dict[str, str] = {}  # estimator name -> its family


def register(name: str, family: str) -> Callable[[F], F]:
    """Decorator registering an advantage estimator under ``name`` in ``family``."""

    if family not in FAMILIES:
        raise ValueError(f"unknown estimator family '{family}'; known: {', '.join(FAMILIES)}")

    def deco(fn: F) -> F:
        if name in _REGISTRY:
            raise KeyError(f"advantage estimator '{name}' is already registered")
        _REGISTRY[name] = fn
        FAMILY[name] = family
        return fn

    return deco


def get(name: str) -> Callable[..., Any]:
    """The estimator registered as ``name``; an unknown name is a one-line KeyError listing the known ones."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown advantage estimator '{name}'; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def names(family: str | None = None) -> list[str]:
    """Registered estimator names, optionally only those of one family."""
    return sorted(n for n in _REGISTRY if family is None or FAMILY[n] == family)


# ------------------------------------------------------------------------------------------------------ tensor helpers
def group_index(group_ids: GroupIds, device: torch.device | None = None) -> tuple[Tensor, int]:
    """Map group ids to dense indices ``0..n-1``.

    Args:
        group_ids: ``[B]`` tensor, ``[B, K]`` tensor (rows are composite keys), or a sequence of hashables.
    Returns:
        ``(inv [B] long, n)``: ``inv[i]`` is the dense index of sample i's group, ``n`` the number of groups.
    """
    if isinstance(group_ids, Tensor):
        if group_ids.numel() == 0:
            return torch.zeros(0, dtype=torch.long, device=group_ids.device), 0
        dim = 0 if group_ids.dim() == 2 else None  # [B, K] composite keys are unique rows
        uniq, inv = torch.unique(group_ids, return_inverse=True, dim=dim)
        return inv.reshape(-1).long(), int(uniq.shape[0])
    table: dict[Hashable, int] = {}
    inv_list = [table.setdefault(g, len(table)) for g in group_ids]
    return torch.tensor(inv_list, dtype=torch.long, device=device), len(table)


def group_stats(x: Tensor, inv: Tensor, n: int, unbiased: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """Per-group mean, std and count of ``x [B]`` for dense group index ``inv [B]``.

    Returns ``(mean [n], std [n], count [n])``; the std of a singleton group is 0. Two passes (centre, then square)
    keep the variance accurate for large rewards.
    """
    count = torch.bincount(inv, minlength=n).to(x.dtype)  # [n]
    mean = torch.zeros(n, dtype=x.dtype, device=x.device).index_add_(0, inv, x) / count.clamp(min=1)
    sq = torch.zeros(n, dtype=x.dtype, device=x.device).index_add_(0, inv, (x - mean[inv]) ** 2)
    denom = (count - 1) if unbiased else count
    std = (sq / denom.clamp(min=1)).sqrt()
    return mean, std, count


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of ``x`` over positions where ``mask`` is true (0 where nothing is masked in); garbage outside is ignored."""
    m = mask.bool()
    xs = torch.where(m, x, torch.zeros((), dtype=x.dtype, device=x.device))
    if dim is None:
        return xs.sum() / m.sum().clamp(min=1)
    return xs.sum(dim) / m.sum(dim).clamp(min=1)


def masked_whiten(x: Tensor, mask: Tensor, eps: float = 1e-8) -> Tensor:
    """Whiten ``x [B, L]`` over all masked positions of the batch: ``(x - mean) / sqrt(var + eps)``.

    ``var`` is the sample variance (Bessel's correction) of the masked values, as in verl's ``masked_whiten``; positions
    outside the mask are set to 0.
    """
    m = mask.bool()
    n = m.sum()
    mean = masked_mean(x, m)
    var = masked_mean((x - mean) ** 2, m) * n / (n - 1).clamp(min=1)
    out = (x - mean) * torch.rsqrt(var + eps)
    return torch.where(m, out, torch.zeros((), dtype=x.dtype, device=x.device))


def last_token_rewards(rewards: Tensor, mask: Tensor) -> Tensor:
    """Place one outcome reward per sequence on its last masked token.

    Args:
        rewards: ``[B]`` outcome rewards.
        mask: ``[B, L]`` response mask (true on model tokens).
    Returns:
        ``[B, L]`` token rewards, zero everywhere except each row's last masked token (rows with no masked token: all 0).
    """
    m = mask.bool()
    L = m.shape[-1]
    last = L - 1 - m.flip(-1).long().argmax(-1)  # [B] index of the last true position
    out = torch.zeros(m.shape, dtype=rewards.dtype, device=rewards.device)
    out.scatter_(1, last.unsqueeze(1), rewards.unsqueeze(1))
    return torch.where(m.any(-1, keepdim=True), out, torch.zeros_like(out))


def discounted_cumsum(x: Tensor, gamma: float) -> Tensor:
    """Reverse discounted cumulative sum along the last dim: ``y_t = sum_{k >= t} gamma^(k - t) x_k``.

    ``gamma == 1`` is one flipped cumsum. Otherwise it is a reverse loop over the last dim: the closed form
    ``gamma^-t * cumsum(gamma^k x_k)`` overflows for long sequences, so the loop is the numerically safe choice.
    """
    if gamma == 1.0:
        return x.flip(-1).cumsum(-1).flip(-1)
    out = torch.empty_like(x)
    running = torch.zeros_like(x[..., 0])
    for t in reversed(range(x.shape[-1])):
        running = x[..., t] + gamma * running
        out[..., t] = running
    return out


def _group_relative(x: Tensor, inv: Tensor, n: int, scale: bool | str, eps: float, unbiased: bool = True) -> Tensor:
    """``x - mean_g`` (optionally divided by the group or batch std + eps); singleton groups get 0."""
    mean, std, count = group_stats(x, inv, n, unbiased)
    adv = x - mean[inv]
    if scale in (True, "group"):
        denom = std[inv] + eps
    elif scale == "batch":  # PPO-Lite / TRL scale_rewards="batch": group baseline, whole-batch std
        denom = (x.std(unbiased=unbiased) if x.numel() > 1 else torch.zeros((), dtype=x.dtype)) + eps
    elif scale in (False, "none"):
        denom = torch.ones((), dtype=x.dtype, device=x.device)
    else:
        raise ValueError(f"scale must be True/'group', 'batch' or False/'none', got {scale!r}")
    adv = adv / torch.where(denom > 0, denom, 1.0)  # zero-std group with eps = 0: 0 / 0 -> 0, not NaN
    return torch.where(count[inv] > 1, adv, torch.zeros_like(adv))


# ------------------------------------------------------------------------------------------------- outcome estimators
@register("grpo", "outcome")
def grpo(
    rewards: Tensor, group_ids: GroupIds, scale: bool | str = True, eps: float = 1e-6, unbiased: bool = True
) -> Tensor:
    """GRPO (DeepSeekMath https://arxiv.org/abs/2402.03300): ``A_i = (r_i - mean_g r) / (std_g r + eps)``.

    Args:
        rewards: ``[B]`` outcome rewards.
        group_ids: ``[B]`` group of each sample (same prompt); any order, any group sizes.
        scale: True/"group" divides by the group std, "batch" by the std of the whole batch (PPO-Lite
            https://arxiv.org/abs/2508.08221), False/"none" only centres (Dr.GRPO).
        eps: added to the std. TRL uses 1e-4, verl 1e-6 (our default).
        unbiased: sample std (G - 1, TRL's and verl's choice) if True, population std (G) if False.
    Returns:
        ``[B]`` advantages; 0 for singleton groups.
    """
    inv, n = group_index(group_ids, rewards.device)
    return _group_relative(rewards, inv, n, scale, eps, unbiased)


@register("dr_grpo", "outcome")
def dr_grpo(rewards: Tensor, group_ids: GroupIds, eps: float = 1e-6) -> Tensor:
    """Dr.GRPO (https://arxiv.org/abs/2503.20783): ``A_i = r_i - mean_g r`` (no std). ``eps`` is unused.

    Shapes: ``rewards [B]``, ``group_ids [B]`` -> ``[B]``. Pair with ``agg="seq-mean-token-sum-norm"`` in the loss.
    """
    inv, n = group_index(group_ids, rewards.device)
    return _group_relative(rewards, inv, n, False, eps)


@register("mean_only", "outcome")
def mean_only(rewards: Tensor, group_ids: GroupIds, eps: float = 1e-6) -> Tensor:
    """GUI-G1 (https://arxiv.org/abs/2505.15810): ``A_i = r_i - mean_g r``; same numbers as :func:`dr_grpo`.

    Shapes: ``rewards [B]``, ``group_ids [B]`` -> ``[B]``. ``eps`` is unused. GUI-G1 pairs it with
    ``agg="seq-mean-token-sum-norm"``, ``agg_constant=64`` and per-sample difficulty ``sample_weights``.
    """
    inv, n = group_index(group_ids, rewards.device)
    return _group_relative(rewards, inv, n, False, eps)


@register("rloo", "outcome")
def rloo(rewards: Tensor, group_ids: GroupIds, eps: float = 1e-6) -> Tensor:
    """RLOO (Ahmadian et al. 2024 https://arxiv.org/abs/2402.14740): leave-one-out baseline.

    ``A_i = r_i - mean_{j != i} r_j = G / (G - 1) * (r_i - mean_g r)``. Shapes: ``[B]``, ``[B]`` -> ``[B]``; singleton
    groups get 0; ``eps`` is unused.
    """
    inv, n = group_index(group_ids, rewards.device)
    mean, _, count = group_stats(rewards, inv, n)
    g = count[inv]  # [B] size of each sample's group
    adv = g / (g - 1).clamp(min=1) * (rewards - mean[inv])
    return torch.where(g > 1, adv, torch.zeros_like(adv))


# --------------------------------------------------------------------------------------------------- token estimators
@register("reinforce_pp", "token")
def reinforce_pp(
    rewards: Tensor,
    mask: Tensor,
    kl: Tensor | None = None,
    kl_coef: float = 0.0,
    gamma: float = 1.0,
    eps: float = 1e-8,
) -> Tensor:
    """REINFORCE++ (Hu 2025 https://arxiv.org/abs/2501.03262): per-token return with KL in the reward, batch-whitened.

    ``r_t = outcome * [t is last token] - kl_coef * kl_t``; ``G_t = sum_{k >= t} gamma^(k-t) r_k`` over every position
    (rewards outside the mask are zeroed first, so env tokens between turns carry the return through);
    ``A = whiten(G)`` over all masked tokens of the batch (:func:`masked_whiten`).

    Args:
        rewards: ``[B]`` outcome rewards (put on each row's last masked token) or ``[B, L]`` token rewards.
        mask: ``[B, L]`` response mask.
        kl: optional ``[B, L]`` per-token KL to the reference (e.g. ``mmrl.algos.kl.kl(logp, ref, "k1")``).
        kl_coef: coefficient of the KL penalty in the reward.
        gamma: discount per token (1.0 in the paper).
        eps: added to the variance when whitening.
    Returns:
        ``[B, L]`` advantages, 0 outside the mask.
    """
    m = mask.bool()
    r = rewards if rewards.dim() == 2 else last_token_rewards(rewards, m)
    if kl is not None and kl_coef != 0.0:
        r = r - kl_coef * kl
    r = torch.where(m, r, torch.zeros((), dtype=r.dtype, device=r.device))
    return masked_whiten(discounted_cumsum(r, gamma), m, eps)


@register("reinforce_pp_baseline", "token")
def reinforce_pp_baseline(
    rewards: Tensor,
    group_ids: GroupIds,
    mask: Tensor,
    kl: Tensor | None = None,
    kl_coef: float = 0.0,
    gamma: float = 1.0,
    eps: float = 1e-8,
) -> Tensor:
    """REINFORCE++-baseline: subtract the group mean of the outcome rewards, then :func:`reinforce_pp`.

    Args:
        rewards: ``[B]`` outcome rewards.
        group_ids: ``[B]`` group ids (singleton groups get a centred reward of 0).
        mask, kl, kl_coef, gamma, eps: as in :func:`reinforce_pp`.
    Returns:
        ``[B, L]`` advantages, 0 outside the mask.
    """
    centred = dr_grpo(rewards, group_ids)  # [B] r - mean_g r
    return reinforce_pp(centred, mask, kl=kl, kl_coef=kl_coef, gamma=gamma, eps=eps)


# ---------------------------------------------------------------------------------------------------- critic (GAE)
@register("gae", "time")
def gae(
    rewards: Tensor, values: Tensor, dones: Tensor, gamma: float = 0.99, lam: float = 0.95
) -> tuple[Tensor, Tensor]:
    """Generalised Advantage Estimation (Schulman et al. 2015 https://arxiv.org/abs/1506.02438), CleanRL style.

    ``delta_t = r_t + gamma V_{t+1} (1 - done_t) - V_t``; ``A_t = delta_t + gamma lam (1 - done_t) A_{t+1}``;
    ``returns = A + V``. ``done_t`` means the episode ended with step t (so ``V_{t+1}`` is the next episode's first
    value and is not bootstrapped). For a time-limit truncation, either pass ``done = 0`` (bootstrap into the next row)
    or fold ``gamma * V(final_obs)`` into ``r_t`` and pass ``done = 1``.

    Args:
        rewards: ``[T, N]`` rewards of N parallel envs over T steps.
        values: ``[T + 1, N]`` value estimates; the last row bootstraps past the rollout.
        dones: ``[T, N]`` episode-ended flags (bool or 0/1).
        gamma: discount.
        lam: GAE lambda.
    Returns:
        ``(advantages [T, N], returns [T, N])``.
    """
    T = rewards.shape[0]
    notdone = 1.0 - dones.to(rewards.dtype)  # [T, N]
    adv = torch.zeros_like(rewards)
    lastgaelam = torch.zeros_like(rewards[0])  # [N]
    for t in reversed(range(T)):  # the one intended Python loop: the recursion runs backwards in time
        delta = rewards[t] + gamma * values[t + 1] * notdone[t] - values[t]
        lastgaelam = delta + gamma * lam * notdone[t] * lastgaelam
        adv[t] = lastgaelam
    return adv, adv + values[:T]


def token_gae(
    rewards: Tensor,
    values: Tensor,
    mask: Tensor,
    gamma: float = 1.0,
    lam: float = 0.95,
    kl: Tensor | None = None,
    kl_coef: float = 0.0,
    bootstrap: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """:func:`gae` along the masked positions of each row: the generated tokens of a sequence (PPO with a value model,
    as verl's critic path), or the env steps of an MLP's trajectory.

    The masked tokens of a row, in order, form one episode: env/prompt tokens between turns are skipped (they are not
    actions), so ``V_{t+1}`` of a turn's last token is the value at the next turn's first generated token, and the
    row's last masked token ends the episode (``done``, no bootstrap). Token rewards are
    ``outcome * [t is last] - kl_coef * kl_t`` as in :func:`reinforce_pp`.

    Args:
        rewards: ``[B]`` outcome rewards (put on each row's last masked token) or ``[B, L]`` token rewards.
        values: ``[B, L]`` critic values ``V(s_t)`` at the log-prob positions (the context token ``t+1`` is drawn from).
        mask: ``[B, L]`` response mask.
        gamma: discount per generated token (1.0 in verl/OpenRLHF).
        lam: GAE lambda (1.0 = Monte Carlo returns minus the value baseline).
        kl: optional ``[B, L]`` per-token KL to the reference, subtracted from the rewards with ``kl_coef``.
        kl_coef: coefficient of the in-reward KL penalty.
        bootstrap: optional ``[B]`` value of what follows each row's last masked position, for rows whose return goes
            on (a time-limit truncation, a fixed-horizon fragment; 0 where the episode terminated). Folded into the last
            reward as ``r += gamma * bootstrap`` with the row still done there: the rule stated in :func:`gae`.
    Returns:
        ``(advantages [B, L], returns [B, L])``, 0 outside the mask.
    """
    m = mask.bool()
    r = rewards if rewards.dim() == 2 else last_token_rewards(rewards, m)
    if kl is not None and kl_coef != 0.0:
        r = r - kl_coef * kl
    if bootstrap is not None:
        r = r + gamma * last_token_rewards(bootstrap.to(r.dtype), m)
    zero = torch.zeros((), dtype=r.dtype, device=r.device)
    order = torch.sort((~m).to(torch.int8), dim=1, stable=True).indices  # [B, L] masked positions first, in order
    packed_m = m.gather(1, order)  # [B, L] a prefix of n_b trues per row
    packed_r = torch.where(packed_m, r.gather(1, order), zero)
    packed_v = torch.where(packed_m, values.to(r.dtype).gather(1, order), zero)
    last = (m.sum(1, keepdim=True) - 1).clamp(min=0)  # [B, 1] index of each row's final packed token
    dones = torch.arange(m.shape[1], device=m.device).unsqueeze(0) >= last  # [B, L] done at the end and after it
    next_v = torch.cat([packed_v, torch.zeros_like(packed_v[:, :1])], dim=1)  # [B, L + 1]
    adv, ret = gae(packed_r.T, next_v.T, dones.T, gamma, lam)  # time-major [L, B]
    out_adv, out_ret = torch.zeros_like(r), torch.zeros_like(r)
    out_adv.scatter_(1, order, torch.where(packed_m, adv.T, zero))  # unpack to the original positions
    out_ret.scatter_(1, order, torch.where(packed_m, ret.T, zero))
    return out_adv, out_ret


# ------------------------------------------------------------------------------------------------- step estimators
def step_returns(step_rewards: Tensor, step_traj_index: Tensor, gamma: float) -> Tensor:
    """Discounted return of every step within its trajectory: ``R_s = sum_{k >= s, same traj} gamma^(k-s) r_k``.

    Args:
        step_rewards: ``[S]`` reward of each env step, all trajectories flattened.
        step_traj_index: ``[S]`` long, trajectory of each step; a trajectory's steps appear in time order (they may be
            interleaved with other trajectories' steps).
    Returns:
        ``[S]`` discounted step returns.
    """
    S = step_rewards.shape[0]
    if S == 0:
        return step_rewards.clone()
    traj, inv = torch.unique(step_traj_index, return_inverse=True)  # dense trajectory index
    order = torch.sort(inv, stable=True).indices  # [S] steps grouped by trajectory, time order kept
    counts = torch.bincount(inv, minlength=traj.numel())  # [N] steps per trajectory
    starts = torch.cumsum(counts, 0) - counts  # [N]
    pos = torch.empty_like(order)
    pos[order] = torch.arange(S, device=order.device) - starts[inv[order]]  # [S] time index within trajectory
    dense = torch.zeros(traj.numel(), int(counts.max()), dtype=step_rewards.dtype, device=step_rewards.device)
    dense[inv, pos] = step_rewards  # [N, Tmax], zero padding after each trajectory ends
    return discounted_cumsum(dense, gamma)[inv, pos]


def step_positions(step_traj_index: Tensor) -> Tensor:
    """``[S]`` time index of each step within its trajectory (0 for the first step), given steps in time order."""
    _, inv = torch.unique(step_traj_index, return_inverse=True)
    order = torch.sort(inv, stable=True).indices
    counts = torch.bincount(inv)
    starts = torch.cumsum(counts, 0) - counts
    pos = torch.empty_like(order)
    pos[order] = torch.arange(order.numel(), device=order.device) - starts[inv[order]]
    return pos


def _step_group_index(group_ids: GroupIds, step_traj_index: Tensor, step_keys: Sequence[Hashable] | Tensor) -> Tensor:
    """Dense index of the step groups: steps sharing their trajectory's group and the same key."""
    ginv, _ = group_index(group_ids, step_traj_index.device)  # [N]
    step_group = ginv[step_traj_index].tolist()  # [S] episode group of each step
    keys = step_keys.tolist() if isinstance(step_keys, Tensor) else list(step_keys)
    if len(keys) != len(step_group):
        raise ValueError(f"got {len(keys)} step keys for {len(step_group)} steps")
    keys = [tuple(k) if isinstance(k, list) else k for k in keys]  # rows of a [S, K] key tensor
    inv, _ = group_index(list(zip(step_group, keys)), step_traj_index.device)
    return inv


@register("gigpo", "step")
def gigpo(
    episode_returns: Tensor,
    group_ids: GroupIds,
    step_rewards: Tensor,
    step_anchor_keys: Sequence[Hashable] | Tensor,
    step_traj_index: Tensor,
    gamma: float = 0.95,
    w: float = 1.0,
    scale: bool = False,
    eps: float = 1e-6,
) -> Tensor:
    """GiGPO (Feng et al. 2025 https://arxiv.org/abs/2505.10978): ``A_s = A_ep[traj(s)] + w * A_step[s]``.

    ``A_ep`` is group-relative on the episode returns of the group's trajectories. ``A_step`` is group-relative on the
    discounted step returns (:func:`step_returns`) among the steps of one episode group whose anchor key (the
    observation they acted on) is identical: steps alone in their anchor group get ``A_step = 0``.

    Layout: N trajectories, S env steps in total (flattened). Step s belongs to trajectory ``step_traj_index[s]``; a
    trajectory's steps appear in time order.

    Args:
        episode_returns: ``[N]`` return of each trajectory (usually the sum of its step rewards, or the task success).
        group_ids: ``[N]`` episode group of each trajectory (same task and seed).
        step_rewards: ``[S]`` reward of each step.
        step_anchor_keys: ``S`` hashables (e.g. the observation text, or a hash of text + image bytes) or an ``[S]`` /
            ``[S, K]`` tensor; equal keys within one episode group form a step group.
        step_traj_index: ``[S]`` long, index into ``episode_returns`` of each step's trajectory.
        gamma: discount of the step returns (0.95 in the paper).
        w: weight of the step-level advantage (1.0 in the paper).
        scale: divide both levels by their group's std + eps (the paper's mean-std form); the default False only
            centres, as verl-agent's default ``mode="mean_norm"``.
        eps: added to the std when ``scale``.
    Returns:
        ``[S]`` advantage of each step (the learner broadcasts it over that step's tokens).
    """
    ginv, gn = group_index(group_ids, episode_returns.device)
    a_ep = _group_relative(episode_returns, ginv, gn, scale, eps)  # [N]
    ret = step_returns(step_rewards, step_traj_index, gamma)  # [S]
    sinv = _step_group_index(group_ids, step_traj_index, step_anchor_keys)  # [S]
    a_step = _group_relative(ret, sinv, int(sinv.max()) + 1 if sinv.numel() else 0, scale, eps)  # [S]
    return a_ep[step_traj_index] + w * a_step


@register("step_episode", "step")
def step_episode(
    episode_returns: Tensor,
    group_ids: GroupIds,
    step_rewards: Tensor,
    step_traj_index: Tensor,
    gamma: float = 0.5,
    w_ep: float = 1.0,
    w_step: float = 1.0,
    scale: bool = False,
    eps: float = 1e-6,
    step_keys: Sequence[Hashable] | Tensor | None = None,
) -> Tensor:
    """UI-S1 semi-online RL (Lu et al. 2025 https://arxiv.org/abs/2509.11543): ``A = w_ep A_ep + w_step A_step``.

    ``A_ep`` is group-relative on episode returns; ``A_step`` is group-relative on discounted step returns among the
    steps at the same time index t of the group's trajectories (in semi-online rollouts, step t of every trajectory in a
    group follows the same expert-patched history; pass ``step_keys`` to group steps differently). By default both
    levels only subtract the mean.

    Args:
        episode_returns: ``[N]`` return of each trajectory.
        group_ids: ``[N]`` episode group of each trajectory.
        step_rewards: ``[S]`` reward of each step (steps flattened; a trajectory's steps in time order).
        step_traj_index: ``[S]`` long, trajectory of each step.
        gamma: discount of the step returns (0.5 is a short-horizon default; UI-S1 ablates the discount, tune per task).
        w_ep, w_step: weights of the episode and step advantages.
        scale: also divide by the group std + eps.
        eps: added to the std when ``scale``.
        step_keys: optional ``S`` hashables grouping steps within an episode group (default: the step's time index).
    Returns:
        ``[S]`` advantage of each step.
    """
    ginv, gn = group_index(group_ids, episode_returns.device)
    a_ep = _group_relative(episode_returns, ginv, gn, scale, eps)  # [N]
    ret = step_returns(step_rewards, step_traj_index, gamma)  # [S]
    keys = step_positions(step_traj_index) if step_keys is None else step_keys
    sinv = _step_group_index(group_ids, step_traj_index, keys)  # step groups: (episode group, t)
    a_step = _group_relative(ret, sinv, int(sinv.max()) + 1 if sinv.numel() else 0, scale, eps)  # [S]
    return w_ep * a_ep[step_traj_index] + w_step * a_step
