"""Policy losses: a per-token surrogate matrix, then one aggregation step, in a name registry.

Every registered loss has the same call (select by name, ``algo.loss`` in YAML, with :func:`get`)::

    loss, stats = fn(logp, old_logp, adv, mask, *, clip_low, clip_high, dual_clip=None, agg="token-mean",
                     agg_constant=None, sample_weights=None, token_weights=None, behaviour_weight=None)

- ``logp [B, L]`` (with grad), ``old_logp [B, L]`` (behaviour log-probs recomputed by the trainer), ``mask [B, L]``
  (true on model tokens); ``adv`` is ``[B]`` (broadcast over tokens) or ``[B, L]``.
- ``token_weights [B, L]`` multiplies the per-token loss before aggregation (e.g. :func:`top_entropy_mask`, VPPO's
  perception mask); ``behaviour_weight [B, L]`` is the rollout/trainer mismatch correction (:func:`tis_weight`), applied
  the same way; ``sample_weights [B]`` scales whole sequences (GUI-G1 difficulty weights). None of them changes the
  normaliser of :func:`aggregate` (alias ``agg``), exactly as TRL multiplies its entropy mask and vLLM IS ratio into ``per_token_loss``.
- Tokens outside ``mask`` contribute exactly 0 to the loss and its gradient, whatever ``logp`` / ``adv`` hold there.
- ``stats`` holds python floats: ``clipfrac``, ``approx_kl``, ``ratio_mean``, ``ratio_max`` (plus ``dual_clipfrac`` with
  dual clip, ``behaviour_weight_mean`` with a behaviour weight).
- The log-ratio is clamped to [-20, 20] before ``exp`` (as verl) so one wild token cannot overflow the batch.

TRL ``GRPOTrainer.loss_type`` in these terms: ``grpo`` = ppo_clip + ``seq-mean-token-mean``; ``bnpo`` and ``dapo``
(one process, no accumulation) = ppo_clip + ``token-mean``; ``dr_grpo`` = ppo_clip + ``seq-mean-token-sum-norm`` with
``agg_constant = max_completion_length``; ``cispo`` = :func:`cispo` + ``token-mean`` with ``clip_high = epsilon_high - 1``;
``importance_sampling_level="sequence"`` with ``grpo`` = :func:`gspo`.

Example:
    >>> import torch
    >>> from mmrl.algos import losses
    >>> logp = torch.zeros(2, 3, requires_grad=True)
    >>> loss, stats = losses.get("ppo_clip")(logp, torch.zeros(2, 3), torch.tensor([1.0, -1.0]), torch.ones(2, 3))
    >>> loss.item(), stats["clipfrac"]
    (0.0, 0.0)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import Tensor

from mmrl.algos.advantages import masked_mean
from mmrl.algos.kl import kl  # noqa: F401  (re-exported: losses.kl(logp, ref_logp, kind))

F = TypeVar("F", bound=Callable[..., Any])
LOG_RATIO_CLAMP = 20.0  # exp(20) ~ 5e8: large enough never to bind on sane data, small enough never to overflow

# -------------------------------------------------------------------------------------------------------------- registry
_REGISTRY: dict[str, Callable[..., tuple[Tensor, dict[str, float]]]] = {}


def register(name: str) -> Callable[[F], F]:
    """Decorator registering a policy loss under ``name``."""

    def deco(fn: F) -> F:
        if name in _REGISTRY:
            raise KeyError(f"policy loss '{name}' is already registered")
        _REGISTRY[name] = fn
        return fn

    return deco


def get(name: str) -> Callable[..., tuple[Tensor, dict[str, float]]]:
    """The loss registered as ``name``; an unknown name is a one-line KeyError listing the known ones."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown policy loss '{name}'; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def names() -> list[str]:
    """Registered loss names."""
    return sorted(_REGISTRY)


# ----------------------------------------------------------------------------------------------------------- aggregation
AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")


def aggregate(
    mat: Tensor,
    mask: Tensor,
    mode: str = "token-mean",
    constant: float | None = None,
    sample_weights: Tensor | None = None,
) -> Tensor:
    """Reduce a per-token loss matrix ``mat [B, L]`` over ``mask [B, L]`` to a scalar.

    =========================  ============================================  ==========================================
    mode                       value                                         ``constant`` (None = default)
    =========================  ============================================  ==========================================
    token-mean                 ``sum_{i,t} m L / constant``                  total masked tokens (DAPO); pass the token
                                                                             count of the whole accumulated batch to
                                                                             normalise micro-batches globally
    seq-mean-token-mean        ``sum_i (sum_t m L / sum_t m) / constant``    B (GRPO)
    seq-mean-token-sum         ``sum_i sum_t m L / constant``                B
    seq-mean-token-sum-norm    ``sum_{i,t} m L / (B * constant)``            L, the mask width (Dr.GRPO uses the max
                                                                             generation length, GUI-G1 64)
    =========================  ============================================  ==========================================

    ``sample_weights [B]`` multiplies each sequence's row first (the normaliser is unchanged). Positions outside the
    mask are exactly 0, even if ``mat`` holds NaN/inf there. Rows with no masked token count as sequences (as TRL).
    """
    m = mask.bool()
    x = torch.where(m, mat, torch.zeros((), dtype=mat.dtype, device=mat.device))  # [B, L]
    if sample_weights is not None:
        x = x * sample_weights.to(x.dtype).unsqueeze(-1)
    B, L = m.shape
    if mode == "token-mean":
        return x.sum() / (m.sum().clamp(min=1) if constant is None else constant)
    if mode == "seq-mean-token-mean":
        return (x.sum(-1) / m.sum(-1).clamp(min=1)).sum() / (B if constant is None else constant)
    if mode == "seq-mean-token-sum":
        return x.sum() / (B if constant is None else constant)
    if mode == "seq-mean-token-sum-norm":
        return x.sum() / (B * (L if constant is None else constant))
    raise KeyError(f"unknown aggregation mode '{mode}'; known: {', '.join(AGG_MODES)}")


agg = aggregate  # the verl-style short name; inside the losses the parameter ``agg`` (a mode name) shadows it


# ------------------------------------------------------------------------------------------------------------ helpers
def _zero(x: Tensor) -> Tensor:
    return torch.zeros((), dtype=x.dtype, device=x.device)


def _prepare(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Sanitise inputs: ``(m [B, L] bool, logp, log_ratio, adv [B, L])``, all exactly 0 outside the mask."""
    m = mask.bool()
    lp = torch.where(m, logp, _zero(logp))  # garbage outside the mask never reaches exp() or the gradient
    log_ratio = torch.where(m, logp - old_logp.to(logp.dtype), _zero(logp))
    log_ratio = log_ratio.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    a = adv.unsqueeze(-1).expand_as(logp) if adv.dim() == 1 else adv  # [B] -> [B, L]
    a = torch.where(m, a.to(logp.dtype), _zero(logp))
    return m, lp, log_ratio, a


def _weighted(mat: Tensor, m: Tensor, token_weights: Tensor | None, behaviour_weight: Tensor | None) -> Tensor:
    """Multiply the per-token loss by the optional token weights and (stop-gradient) behaviour weight, masked."""
    if token_weights is not None:
        mat = mat * torch.where(m, token_weights.to(mat.dtype), _zero(mat))
    if behaviour_weight is not None:
        mat = mat * torch.where(m, behaviour_weight.detach().to(mat.dtype), _zero(mat))
    return mat


@torch.no_grad()
def _ratio_stats(ratio: Tensor, log_ratio: Tensor, m: Tensor, behaviour_weight: Tensor | None) -> dict[str, Tensor]:
    """Diagnostics shared by every loss, as 0-d tensors (:func:`_floats` turns them into python floats at once)."""
    stats = {
        # approx KL(old || new), k3 estimator as in CleanRL's ppo.py (Schulman, http://joschu.net/blog/kl-approx.html)
        "approx_kl": masked_mean((ratio - 1) - log_ratio, m),
        "ratio_mean": masked_mean(ratio, m),
        "ratio_max": ratio.masked_fill(~m, -math.inf).max().clamp(min=0.0) if m.numel() else _zero(ratio),
    }
    if behaviour_weight is not None:
        stats["behaviour_weight_mean"] = masked_mean(behaviour_weight.to(ratio.dtype), m)
    return stats


def _floats(stats: dict[str, Tensor]) -> dict[str, float]:
    """One device sync for all diagnostics instead of one ``.item()`` each."""
    return dict(zip(stats, torch.stack([v.detach().double() for v in stats.values()]).tolist()))


def _no_dual(name: str, dual_clip: float | None) -> None:
    if dual_clip is not None:
        raise ValueError(f"dual_clip is only supported by ppo_clip, not {name}")


# ------------------------------------------------------------------------------------------------------------- losses
@register("ppo_clip")
def ppo_clip(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.28,
    dual_clip: float | None = None,
    agg: str = "token-mean",
    agg_constant: float | None = None,
    sample_weights: Tensor | None = None,
    token_weights: Tensor | None = None,
    behaviour_weight: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Token-level PPO clip (Schulman et al. 2017 https://arxiv.org/abs/1707.06347) with clip-higher and dual clip.

    ``L_t = -min(rho_t A, clip(rho_t, 1 - clip_low, 1 + clip_high) A)``, ``rho_t = exp(logp_t - old_logp_t)``.
    Clip-higher (``clip_high > clip_low``) is DAPO's (https://arxiv.org/abs/2503.14476). With ``dual_clip = c > 1`` (Ye
    et al. 2020 https://arxiv.org/abs/1912.09729), tokens with ``A < 0`` have their loss bounded by ``-c A``.

    Args:
        logp, old_logp: ``[B, L]``; adv: ``[B]`` or ``[B, L]``; mask: ``[B, L]``.
        clip_low, clip_high: ratio clip epsilons.
        dual_clip: the dual-clip constant c (None = off).
        agg, agg_constant, sample_weights: see :func:`aggregate` (alias ``agg``).
        token_weights, behaviour_weight: ``[B, L]`` per-token multipliers (see the module docstring).
    Returns:
        ``(loss scalar, stats)``; ``stats["clipfrac"]`` is the fraction of masked tokens whose clipped branch is active
        (zero gradient), ``stats["dual_clipfrac"]`` the fraction bounded by the dual clip.
    """
    m, _, log_ratio, a = _prepare(logp, old_logp, adv, mask)
    ratio = torch.exp(log_ratio)  # [B, L]
    pg1 = -a * ratio
    pg2 = -a * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    mat = torch.maximum(pg1, pg2)  # = -min(rho A, clip(rho) A)
    stats = _ratio_stats(ratio, log_ratio, m, behaviour_weight)
    stats["clipfrac"] = masked_mean((pg2 > pg1).to(ratio.dtype), m)
    if dual_clip is not None:
        if dual_clip <= 1.0:
            raise ValueError(f"dual_clip must be > 1, got {dual_clip}")
        pg3 = -a * dual_clip
        dual = (a < 0) & (pg3 < mat)  # loss above -c A: bounded, zero gradient
        stats["dual_clipfrac"] = masked_mean(dual.to(ratio.dtype), m)
        mat = torch.where(a < 0, torch.minimum(pg3, mat), mat)
    mat = _weighted(mat, m, token_weights, behaviour_weight)
    return aggregate(mat, m, agg, agg_constant, sample_weights), _floats(stats)


@register("gspo")
def gspo(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    clip_low: float = 3e-4,
    clip_high: float = 4e-4,
    dual_clip: float | None = None,
    agg: str = "seq-mean-token-mean",
    agg_constant: float | None = None,
    sample_weights: Tensor | None = None,
    token_weights: Tensor | None = None,
    behaviour_weight: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """GSPO (Zheng et al. 2025 https://arxiv.org/abs/2507.18071): clip the sequence-level ratio.

    ``s_i = exp(mean_t m_t (logp_t - old_logp_t))`` (length-normalised). Written in the GSPO-token form
    ``s_{i,t} = sg[s_i] * exp(logp_t - sg[logp_t])`` (value ``s_i``, gradient ``s_i * grad logp_t``), so that with the
    default ``agg="seq-mean-token-mean"`` value and gradient equal the sequence-level objective
    ``-mean_i min(s_i A_i, clip(s_i) A_i)``, and a ``[B, L]`` advantage gives GSPO-token. The clip epsilons are tiny
    (3e-4 / 4e-4 in the paper) because ``s_i`` is a per-token geometric mean. Arguments as :func:`ppo_clip`.
    """
    _no_dual("gspo", dual_clip)
    m, lp, log_ratio, a = _prepare(logp, old_logp, adv, mask)
    seq_log_ratio = log_ratio.sum(-1) / m.sum(-1).clamp(min=1)  # [B]
    log_s = lp - lp.detach() + seq_log_ratio.detach().unsqueeze(-1)  # [B, L], value log s_i
    ratio = torch.exp(log_s.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))
    pg1 = -a * ratio
    pg2 = -a * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    mat = torch.maximum(pg1, pg2)
    stats = _ratio_stats(torch.exp(log_ratio), log_ratio, m, behaviour_weight)  # token-ratio diagnostics
    stats["clipfrac"] = masked_mean((pg2 > pg1).to(ratio.dtype), m)
    stats["seq_ratio_mean"] = masked_mean(ratio.detach(), m)
    mat = _weighted(mat, m, token_weights, behaviour_weight)
    return aggregate(mat, m, agg, agg_constant, sample_weights), _floats(stats)


@register("cispo")
def cispo(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    clip_low: float | None = None,
    clip_high: float = 4.0,
    dual_clip: float | None = None,
    agg: str = "token-mean",
    agg_constant: float | None = None,
    sample_weights: Tensor | None = None,
    token_weights: Tensor | None = None,
    behaviour_weight: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """CISPO (MiniMax-M1 https://arxiv.org/abs/2506.13585): clip the IS weight, not the update.

    ``L_t = -sg[clip(rho_t, 1 - clip_low, 1 + clip_high)] * A * logp_t``: every token keeps a gradient (REINFORCE with a
    truncated, stop-gradient importance weight). MiniMax-M1 sets no lower bound (``clip_low=None``). TRL's
    ``epsilon_high`` for ``loss_type="cispo"`` is the absolute cap, i.e. ``1 + clip_high`` (TRL recommends 5.0, after
    ScaleRL https://arxiv.org/abs/2510.13786). ``stats["clipfrac"]`` is the fraction of tokens whose weight was
    truncated. Other arguments as :func:`ppo_clip`.
    """
    _no_dual("cispo", dual_clip)
    m, lp, log_ratio, a = _prepare(logp, old_logp, adv, mask)
    ratio = torch.exp(log_ratio)
    lo = None if clip_low is None else 1.0 - clip_low
    weight = ratio.clamp(min=lo, max=1.0 + clip_high).detach()  # [B, L], stop-gradient
    mat = -weight * a * lp
    stats = _ratio_stats(ratio, log_ratio, m, behaviour_weight)
    stats["clipfrac"] = masked_mean((weight != ratio.detach()).to(ratio.dtype), m)
    mat = _weighted(mat, m, token_weights, behaviour_weight)
    return aggregate(mat, m, agg, agg_constant, sample_weights), _floats(stats)


# -------------------------------------------------------------------------------------------------------------- critic
def value_loss(
    values: Tensor,
    returns: Tensor,
    mask: Tensor,
    old_values: Tensor | None = None,
    clip: float | None = None,
    agg: str = "token-mean",
    agg_constant: float | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Critic regression loss ``(V - R)^2 / 2`` with optional PPO value clipping, aggregated like the policy loss.

    With ``clip = c`` (CleanRL ``ppo_continuous_action.py``, ``clip_vloss``): ``V_clip = V_old + clip(V - V_old, -c, c)``
    and the per-position loss is ``max((V - R)^2, (V_clip - R)^2) / 2`` (pessimistic: the clipped branch only ever
    raises the loss, so the value cannot move further than ``c`` from ``V_old`` on positions it already overshoots).

    Args:
        values: ``[B, L]`` critic predictions (with grad).
        returns: ``[B, L]`` (or ``[B]``, broadcast) regression targets, e.g. GAE ``A + V_old``.
        mask: ``[B, L]`` positions that count.
        old_values: ``[B, L]`` (or ``[B]``) values recorded at rollout time; required when ``clip`` is set.
        clip: value clip range c (None = off).
        agg, agg_constant: see :func:`aggregate`.
    Returns:
        ``(loss scalar, stats)``; ``stats["value_clipfrac"]`` is the fraction of positions where the clipped branch is
        the larger one (only with ``clip``).

    Example:
        >>> import torch
        >>> loss, _ = value_loss(torch.tensor([[2.0]]), torch.tensor([[0.0]]), torch.ones(1, 1))
        >>> loss.item()
        2.0
    """
    m = mask.bool()
    R = _broadcast(returns, values)  # [B, L]
    unclipped = (values - R) ** 2  # [B, L]
    stats: dict[str, Tensor] = {}
    if clip is None:
        mat = unclipped
    else:
        if old_values is None:
            raise ValueError("value clipping needs old_values (the critic's values at rollout time)")
        V_old = _broadcast(old_values, values)  # [B, L]
        v_clipped = V_old + (values - V_old).clamp(-clip, clip)
        clipped = (v_clipped - R) ** 2
        mat = torch.maximum(unclipped, clipped)
        stats["value_clipfrac"] = masked_mean((clipped > unclipped).to(values.dtype), m)
    loss = 0.5 * aggregate(mat, m, agg, agg_constant)
    return loss, _floats(stats) if stats else {}


@torch.no_grad()
def explained_variance(values: Tensor, returns: Tensor, mask: Tensor | None = None) -> float:
    """``1 - Var[R - V] / Var[R]`` over the masked positions (population variances, as CleanRL's ``np.var``).

    ``values``, ``returns`` and the optional ``mask`` share one shape (``[B]`` or ``[B, L]``).

    1 is a perfect critic, 0 no better than a constant, negative worse than a constant; NaN when ``Var[R] = 0``.

    Example:
        >>> import torch
        >>> round(explained_variance(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 4.0])), 4)  # 1 - (6/27) / (42/27)
        0.8571
    """
    R, V = returns.double(), values.double()  # same shape, [B] or [B, L]
    if mask is not None:
        R, V = R[mask.bool()], V[mask.bool()]  # [N] masked positions
    var_r = R.var(unbiased=False) if R.numel() else R.new_zeros(())
    if var_r == 0:
        return float("nan")
    return float(1.0 - (R - V).var(unbiased=False) / var_r)


def _broadcast(x: Tensor, like: Tensor) -> Tensor:
    """``[B]`` -> ``[B, L]`` like ``like`` (a per-sequence quantity on every position); ``[B, L]`` stays."""
    x = x.to(device=like.device, dtype=like.dtype)
    return x.unsqueeze(-1).expand_as(like) if x.dim() == like.dim() - 1 else x


# ----------------------------------------------------------------------------------------- rollout/trainer mismatch
@torch.no_grad()
def tis_weight(
    old_logp_trainer: Tensor, rollout_logp: Tensor, cap: float = 2.0, mask: Tensor | None = None, level: str = "token"
) -> Tensor:
    """Truncated importance sampling weight ``min(pi_old_trainer / pi_rollout, cap)`` for engine mismatch.

    When a fast engine (vLLM) samples and the trainer recomputes ``old_logp``, the two disagree slightly; pass the result
    as ``behaviour_weight`` to any loss (Yao et al. 2025, "Your efficient RL framework secretly brings you off-policy RL
    training" https://fengyao.notion.site/off-policy-rl; TRL's ``vllm_importance_sampling_mode="token_truncate"``).

    Args:
        old_logp_trainer: ``[B, L]`` behaviour log-probs recomputed by the trainer.
        rollout_logp: ``[B, L]`` log-probs reported by the rollout engine (NaN where it could not score: weight 1).
        cap: truncation C (2.0 in the TIS post).
        mask: optional ``[B, L]``; outside it the weight is 1.
        level: ``token`` (per-token ratio) or ``sequence`` (product over the sequence's masked tokens, broadcast).
    Returns:
        ``[B, L]`` weights in ``[0, cap]``, without gradient.
    """
    diff = torch.nan_to_num(old_logp_trainer - rollout_logp, nan=0.0)  # [B, L]
    if mask is not None:
        diff = torch.where(mask.bool(), diff, _zero(diff))
    if level == "sequence":
        diff = diff.sum(-1, keepdim=True).expand_as(diff)
    elif level != "token":
        raise KeyError(f"unknown TIS level '{level}'; known: token, sequence")
    return torch.exp(diff.clamp(max=math.log(cap)))


# ------------------------------------------------------------------------------------------------------------ entropy
def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy of the softmax over the last dim: ``[B, L, V] -> [B, L]``.

    ``H = logsumexp(z) - sum softmax(z) z`` with ``z`` shifted by its max, stable for large logits; ``-inf`` logits (filtered vocab) contribute 0.
    Memory hazard: materialises a ``[B, L, V]`` softmax; chunk over B or L for large vocabularies.
    """
    z = logits - logits.amax(-1, keepdim=True).detach()  # [B, L, V] shift: H is shift-invariant, the terms stay small
    p = torch.softmax(z, dim=-1)
    z_safe = torch.where(p > 0, z, torch.zeros((), dtype=z.dtype, device=z.device))  # 0 * -inf -> 0, grad included
    return torch.logsumexp(z, dim=-1) - (p * z_safe).sum(-1)


@torch.no_grad()
def top_entropy_mask(entropy: Tensor, mask: Tensor, top_q: float = 0.2) -> Tensor:
    """Keep only the top-``top_q`` quantile of token entropy among masked tokens ("Beyond the 80/20 rule",
    https://arxiv.org/abs/2506.01939): ``[B, L] -> [B, L]`` bool.

    Threshold = the ``1 - top_q`` quantile (linear interpolation, as ``torch.quantile``) of the masked entropies;
    tokens with entropy ``>=`` threshold and inside the mask are kept, matching TRL's ``get_high_entropy_mask``. Pass
    the result (as float) as ``token_weights``. ``top_q >= 1`` keeps every masked token.
    """
    m = mask.bool()
    if top_q >= 1.0:
        return m.clone()
    vals = entropy[m].float().sort().values  # [N] sort instead of torch.quantile, which caps inputs at 16M elements
    if vals.numel() == 0:
        return torch.zeros_like(m)
    pos = (1.0 - top_q) * (vals.numel() - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    threshold = vals[lo] + (vals[hi] - vals[lo]) * (pos - lo)
    return (entropy.float() >= threshold) & m
