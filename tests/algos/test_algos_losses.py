"""Policy losses, aggregation, TIS and entropy against plain-Python loops, hand-worked numbers and analytic gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmrl.algos import losses


# ----------------------------------------------------------------------------------------------------- references
def ref_agg(mat, mask, mode, constant=None, sample_weights=None):
    """The four aggregation formulas written as loops."""
    B, L = len(mat), len(mat[0])
    w = sample_weights if sample_weights is not None else [1.0] * B
    rows = [[w[i] * mat[i][t] if mask[i][t] else 0.0 for t in range(L)] for i in range(B)]
    if mode == "token-mean":
        n = sum(sum(1 for t in range(L) if mask[i][t]) for i in range(B))
        return sum(map(sum, rows)) / (constant if constant is not None else max(n, 1))
    if mode == "seq-mean-token-mean":
        per_seq = [sum(rows[i]) / max(sum(1 for t in range(L) if mask[i][t]), 1) for i in range(B)]
        return sum(per_seq) / (constant if constant is not None else B)
    if mode == "seq-mean-token-sum":
        return sum(map(sum, rows)) / (constant if constant is not None else B)
    return sum(map(sum, rows)) / (B * (constant if constant is not None else L))


def ref_ppo_token(logp, old, adv, clip_low, clip_high, dual_clip=None):
    """One token of the PPO clip loss, straight from the paper's formula."""
    rho = math.exp(logp - old)
    loss = -min(rho * adv, min(max(rho, 1 - clip_low), 1 + clip_high) * adv)
    if dual_clip is not None and adv < 0:
        loss = min(loss, -dual_clip * adv)
    return loss


def _batch(seed=0, B=4, L=6, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    old = -torch.rand(B, L, generator=gen, dtype=dtype) * 3
    logp = old + 0.4 * torch.randn(B, L, generator=gen, dtype=dtype)
    mask = torch.rand(B, L, generator=gen) > 0.3
    mask[:, 0] = True
    adv = torch.randn(B, generator=gen, dtype=dtype)
    return logp, old, adv, mask


# ---------------------------------------------------------------------------------------------------------- agg
@pytest.mark.parametrize("mode", losses.AGG_MODES)
@pytest.mark.parametrize("constant", [None, 64.0])
def test_agg_matches_loops(mode, constant):
    gen = torch.Generator().manual_seed(1)
    mat = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [0, 1, 0, 1, 0]], dtype=torch.bool)
    sw = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    for weights in (None, sw):
        got = losses.agg(mat, mask, mode, constant=constant, sample_weights=weights)
        want = ref_agg(mat.tolist(), mask.tolist(), mode, constant, None if weights is None else weights.tolist())
        assert float(got) == pytest.approx(want, rel=1e-12)
    with pytest.raises(KeyError, match="token-mean"):
        losses.agg(mat, mask, "token-sum")


def test_agg_hand_worked():
    # mat [[1, 2, x], [3, x, x]] (x masked): token-mean 6/3 = 2; seq-mean-token-mean (1.5 + 3)/2 = 2.25;
    # seq-mean-token-sum (3 + 3)/2 = 3; seq-mean-token-sum-norm 6 / (2 * 3) = 1 (constant = L = 3).
    mat = torch.tensor([[1.0, 2.0, float("nan")], [3.0, float("inf"), -float("inf")]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    got = [float(losses.agg(mat, mask, m)) for m in losses.AGG_MODES]
    assert got == [2.0, 2.25, 3.0, 1.0]


# ------------------------------------------------------------------------------------------------------- ppo_clip
@pytest.mark.parametrize("dual_clip", [None, 3.0])
@pytest.mark.parametrize("mode", losses.AGG_MODES)
def test_ppo_clip_matches_token_formula(dual_clip, mode):
    logp, old, adv, mask = _batch()
    logp = logp * 1.5  # push some ratios outside the clip range
    loss, stats = losses.ppo_clip(logp, old, adv, mask, 0.2, 0.28, dual_clip=dual_clip, agg=mode)
    B, L = mask.shape
    mat = [[ref_ppo_token(float(logp[i, t]), float(old[i, t]), float(adv[i]), 0.2, 0.28, dual_clip)
            for t in range(L)] for i in range(B)]  # fmt: skip
    assert float(loss) == pytest.approx(ref_agg(mat, mask.tolist(), mode), rel=1e-10)
    ratios = [math.exp(float(logp[i, t] - old[i, t])) for i in range(B) for t in range(L) if mask[i, t]]
    assert stats["ratio_max"] == pytest.approx(max(ratios))
    assert stats["ratio_mean"] == pytest.approx(sum(ratios) / len(ratios))
    # approx_kl = mean((rho - 1) - log rho) over masked tokens (k3 of KL(old || new))
    assert stats["approx_kl"] == pytest.approx(sum(r - 1 - math.log(r) for r in ratios) / len(ratios))
    assert all(isinstance(v, float) for v in stats.values())


def test_ppo_clip_analytic_gradient_and_clip_regions():
    # token   ratio  A    branch                                    d loss / d logp (token-mean, N = 6)
    # t0      1.1    +1   unclipped                                 -1.1 / 6
    # t1      1.5    +1   clipped at 1.28 (zero grad)               0
    # t2      0.5    +1   unclipped (min picks 0.5 < 0.8)           -0.5 / 6
    # t3      0.5    -1   clipped at 0.8 (zero grad)                0
    # t4      1.5    -1   unclipped (loss 1.5 < dual bound 3)       +1.5 / 6
    # t5      4.0    -1   dual-clipped: loss bounded by 3 (zero)    0 with dual clip, +4 / 6 without
    ratio = torch.tensor([[1.1, 1.5, 0.5, 0.5, 1.5, 4.0]], dtype=torch.float64)
    adv = torch.tensor([[1.0, 1.0, 1.0, -1.0, -1.0, -1.0]], dtype=torch.float64)
    old = torch.full_like(ratio, -1.0)
    mask = torch.ones_like(ratio, dtype=torch.bool)
    for dual, g5, dual_frac in ((3.0, 0.0, 1 / 6), (None, 4.0 / 6, None)):
        logp = (old + ratio.log()).requires_grad_(True)
        loss, stats = losses.ppo_clip(logp, old, adv, mask, 0.2, 0.28, dual_clip=dual)
        loss.backward()
        want = torch.tensor([[-1.1 / 6, 0.0, -0.5 / 6, 0.0, 1.5 / 6, g5]], dtype=torch.float64)
        torch.testing.assert_close(logp.grad, want)
        assert stats["clipfrac"] == pytest.approx(2 / 6)
        if dual is not None:
            assert stats["dual_clipfrac"] == pytest.approx(dual_frac)
            # value: -(1.1) - 1.28 - 0.5 + 0.8 + 1.5 + 3 = 2.42, / 6
            assert loss.item() == pytest.approx((-1.1 - 1.28 - 0.5 + 0.8 + 1.5 + 3.0) / 6)
        else:
            assert "dual_clipfrac" not in stats
    with pytest.raises(ValueError, match="dual_clip"):
        losses.ppo_clip(old, old, adv, mask, dual_clip=0.5)


@pytest.mark.parametrize("name", ["ppo_clip", "gspo", "cispo"])
def test_masked_tokens_contribute_exactly_zero(name):
    logp, old, adv, mask = _batch(seed=3)
    adv_tok = adv.unsqueeze(-1).expand_as(logp).clone()
    fn = losses.get(name)
    clean_logp = logp.clone().requires_grad_(True)
    clean, _ = fn(clean_logp, old, adv_tok, mask, agg="seq-mean-token-mean")
    clean.backward()
    # garbage (NaN, +-inf, huge) everywhere outside the mask: logp, old_logp, adv, token weights, behaviour weight
    junk = torch.tensor([float("nan"), float("inf"), -float("inf"), 1e30])
    fill = junk[torch.arange(mask.numel()) % 4].reshape(mask.shape).to(logp.dtype)
    dirty_logp = torch.where(mask, logp, fill).requires_grad_(True)
    dirty, stats = fn(
        dirty_logp, torch.where(mask, old, fill), torch.where(mask, adv_tok, fill), mask, agg="seq-mean-token-mean",
        token_weights=torch.where(mask, torch.ones_like(fill), fill),
        behaviour_weight=torch.where(mask, torch.ones_like(fill), fill),
    )  # fmt: skip
    dirty.backward()
    assert dirty.item() == pytest.approx(clean.item(), rel=1e-12)
    assert torch.isfinite(dirty_logp.grad).all()
    assert (dirty_logp.grad[~mask] == 0).all()
    torch.testing.assert_close(dirty_logp.grad, clean_logp.grad)
    assert all(math.isfinite(v) for v in stats.values())


def test_token_weights_sample_weights_behaviour_weight():
    logp, old, adv, mask = _batch(seed=4)
    gen = torch.Generator().manual_seed(5)
    tw = torch.rand(logp.shape, generator=gen, dtype=logp.dtype)
    bw = torch.rand(logp.shape, generator=gen, dtype=logp.dtype) * 2
    sw = torch.rand(logp.shape[0], generator=gen, dtype=logp.dtype)
    got, stats = losses.ppo_clip(logp, old, adv, mask, agg="seq-mean-token-sum-norm", agg_constant=64,
                                 token_weights=tw, behaviour_weight=bw, sample_weights=sw)  # fmt: skip
    B, L = mask.shape
    mat = [[ref_ppo_token(float(logp[i, t]), float(old[i, t]), float(adv[i]), 0.2, 0.28) * float(tw[i, t] * bw[i, t])
            for t in range(L)] for i in range(B)]  # fmt: skip
    want = ref_agg(mat, mask.tolist(), "seq-mean-token-sum-norm", 64, sw.tolist())
    assert float(got) == pytest.approx(want, rel=1e-10)
    assert stats["behaviour_weight_mean"] == pytest.approx(float(bw[mask].mean()))


def test_adv_per_token_equals_broadcast():
    logp, old, adv, mask = _batch(seed=6)
    a, _ = losses.ppo_clip(logp, old, adv, mask)
    b, _ = losses.ppo_clip(logp, old, adv.unsqueeze(-1).expand_as(logp), mask)
    assert float(a) == float(b)


# ---------------------------------------------------------------------------------------------------------- gspo
def test_gspo_sequence_ratio_value_and_gradient():
    logp, old, adv, mask = _batch(seed=7, dtype=torch.float64)
    logp = old + 1e-3 * torch.randn(logp.shape, generator=torch.Generator().manual_seed(8), dtype=logp.dtype)
    logp = logp.requires_grad_(True)
    loss, stats = losses.gspo(logp, old, adv, mask, clip_low=3e-4, clip_high=4e-4)
    loss.backward()
    # reference: s_i = exp(mean_t (logp - old)); L = mean_i -min(s_i A_i, clip(s_i) A_i), autograd through s_i
    ref_logp = logp.detach().clone().requires_grad_(True)
    terms = []
    for i in range(mask.shape[0]):
        sel = mask[i]
        s = torch.exp((ref_logp[i][sel] - old[i][sel]).mean())
        terms.append(-torch.minimum(s * adv[i], s.clamp(1 - 3e-4, 1 + 4e-4) * adv[i]))
    ref = torch.stack(terms).mean()
    ref.backward()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-12)
    torch.testing.assert_close(logp.grad, ref_logp.grad)
    assert 0.0 <= stats["clipfrac"] <= 1.0
    with pytest.raises(ValueError, match="dual_clip"):
        losses.gspo(logp, old, adv, mask, dual_clip=3.0)


# --------------------------------------------------------------------------------------------------------- cispo
def test_cispo_value_and_gradient():
    # tokens: ratio 1.0 (weight 1), 2.0 (truncated to 1.5 with clip_high 0.5), 0.5 (no lower bound: 0.5); A = 2
    ratio = torch.tensor([[1.0, 2.0, 0.5]], dtype=torch.float64)
    old = torch.tensor([[-1.0, -2.0, -0.5]], dtype=torch.float64)
    logp = (old + ratio.log()).requires_grad_(True)
    adv = torch.tensor([2.0], dtype=torch.float64)
    mask = torch.ones(1, 3, dtype=torch.bool)
    loss, stats = losses.cispo(logp, old, adv, mask, clip_low=None, clip_high=0.5)
    w = torch.tensor([[1.0, 1.5, 0.5]], dtype=torch.float64)
    assert loss.item() == pytest.approx(float((-w * 2.0 * logp.detach()).mean()))
    loss.backward()
    torch.testing.assert_close(logp.grad, -w * 2.0 / 3)  # every token keeps a gradient: -w A / N
    assert stats["clipfrac"] == pytest.approx(1 / 3)
    loss2, stats2 = losses.cispo(logp, old, adv, mask, clip_low=0.2, clip_high=0.5)  # lower bound 0.8 on t2
    assert loss2.item() == pytest.approx(float((-torch.tensor([[1.0, 1.5, 0.8]]) * 2.0 * logp.detach()).mean()))
    assert stats2["clipfrac"] == pytest.approx(2 / 3)


def test_loss_registry():
    assert losses.names() == ["cispo", "gspo", "ppo_clip"]
    with pytest.raises(KeyError) as e:
        losses.get("ppo")
    assert "ppo_clip" in str(e.value) and "\n" not in str(e.value)


# -------------------------------------------------------------------------------------------------------------- TIS
def test_tis_weight():
    old = torch.tensor([[-1.0, -1.0, -1.0, -1.0]])
    rollout = torch.tensor([[-1.5, -0.5, -3.0, float("nan")]])
    # exp(0.5) = 1.6487; exp(-0.5) = 0.6065; exp(2) = 7.39 -> capped at 2; NaN (unscored) -> 1
    w = losses.tis_weight(old, rollout, cap=2.0)
    torch.testing.assert_close(w, torch.tensor([[math.exp(0.5), math.exp(-0.5), 2.0, 1.0]]))
    mask = torch.tensor([[1, 1, 0, 1]])
    torch.testing.assert_close(losses.tis_weight(old, rollout, 2.0, mask), torch.tensor([[math.exp(0.5),
                               math.exp(-0.5), 1.0, 1.0]]))  # fmt: skip
    seq = losses.tis_weight(old, rollout, 2.0, mask, level="sequence")  # exp(0.5 - 0.5 + 0) = 1 on every token
    torch.testing.assert_close(seq, torch.ones(1, 4))
    assert not losses.tis_weight(old.requires_grad_(True), rollout).requires_grad


# ---------------------------------------------------------------------------------------------------------- entropy
def test_entropy_from_logits_against_naive():
    gen = torch.Generator().manual_seed(9)
    logits = torch.randn(2, 3, 11, generator=gen, dtype=torch.float64) * 3
    p = logits.softmax(-1).numpy()
    naive = -(p * np.log(p)).sum(-1)
    np.testing.assert_allclose(losses.entropy_from_logits(logits).numpy(), naive, rtol=1e-10)
    # large logits stay finite and exact: [1000, 1000] -> log 2; a -inf logit is an excluded token
    big = torch.tensor([[[1000.0, 1000.0, -float("inf")]]], requires_grad=True)
    ent = losses.entropy_from_logits(big)
    torch.testing.assert_close(ent.detach(), torch.tensor([[math.log(2)]]))
    ent.sum().backward()  # the entropy bonus needs a finite gradient, -inf logits included
    assert torch.isfinite(big.grad).all()
    # dH/dz_k = -p_k (log p_k + H): at the uniform pair it is 0; compare with autograd of the naive formula
    z = (torch.randn(4, 7, generator=gen, dtype=torch.float64) * 5).requires_grad_(True)
    losses.entropy_from_logits(z).sum().backward()
    z2 = z.detach().clone().requires_grad_(True)
    (-(z2.softmax(-1) * z2.log_softmax(-1)).sum(-1)).sum().backward()
    torch.testing.assert_close(z.grad, z2.grad)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0, 5, allow_nan=False, width=32), min_size=2, max_size=40), st.sampled_from([0.2, 0.5, 0.9]))
def test_top_entropy_mask_matches_numpy_quantile(values, q):
    ent = torch.tensor(values + [100.0]).reshape(1, -1)
    mask = torch.ones_like(ent, dtype=torch.bool)
    mask[0, -1] = False  # a masked-out huge value must not move the threshold nor be selected
    keep = losses.top_entropy_mask(ent, mask, top_q=q)
    thr = np.quantile(np.array(values, dtype=np.float32), 1 - q)
    want = (np.array(values + [100.0], dtype=np.float32) >= np.float32(thr)) & mask.numpy()[0]
    # ties within float rounding of the threshold may go either way
    close = np.isclose(np.array(values + [100.0]), thr, rtol=1e-6, atol=1e-6)
    assert ((keep.numpy()[0] == want) | close).all()
    assert not keep[0, -1]
    assert losses.top_entropy_mask(ent, mask, top_q=1.0).equal(mask)
