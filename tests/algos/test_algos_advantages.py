"""Advantage estimators against hand-worked numbers and independent plain-Python / numpy references."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmrl.algos import advantages as A


# ----------------------------------------------------------------------------------------------------- references
def ref_group_norm(rewards, groups, scale=True, eps=1e-6, ddof=1):
    """Plain-Python group normalisation: (r - mean_g) / (std_g + eps); singleton groups -> 0."""
    out = []
    for r, g in zip(rewards, groups):
        members = [x for x, h in zip(rewards, groups) if h == g]
        if len(members) == 1:
            out.append(0.0)
            continue
        mean = sum(members) / len(members)
        std = math.sqrt(sum((x - mean) ** 2 for x in members) / (len(members) - ddof))
        out.append((r - mean) / (std + eps) if scale else r - mean)
    return out


def ref_rloo(rewards, groups):
    """Leave-one-out baseline written literally: r_i - mean_{j != i} r_j."""
    out = []
    for i, (r, g) in enumerate(zip(rewards, groups)):
        others = [x for j, (x, h) in enumerate(zip(rewards, groups)) if h == g and j != i]
        out.append(r - sum(others) / len(others) if others else 0.0)
    return out


group_batches = st.lists(
    st.tuples(st.integers(0, 4), st.floats(-10, 10, allow_nan=False, width=32)), min_size=1, max_size=24
)


# --------------------------------------------------------------------------------------------------- outcome family
def test_grpo_hand_worked():
    # rewards [1, 0, 0, 1], groups [0, 0, 1, 1]: each group has mean 0.5 and sample std
    # sqrt(((0.5)^2 + (0.5)^2) / (2 - 1)) = sqrt(0.5) = 0.70711, so A = +-0.5 / 0.70711 = +-0.70711.
    adv = A.grpo(torch.tensor([1.0, 0.0, 0.0, 1.0]), torch.tensor([0, 0, 1, 1]), eps=0.0)
    s = 0.5 / math.sqrt(0.5)
    torch.testing.assert_close(adv, torch.tensor([s, -s, -s, s]))
    # population std: sqrt(0.25) = 0.5, so A = +-1
    adv = A.grpo(torch.tensor([1.0, 0.0, 0.0, 1.0]), torch.tensor([0, 0, 1, 1]), eps=0.0, unbiased=False)
    torch.testing.assert_close(adv, torch.tensor([1.0, -1.0, -1.0, 1.0]))


def test_grpo_uneven_groups_any_order_and_singletons():
    # groups: 7 -> {3, 1, 2} (mean 2, sample std 1), 2 -> {5} (singleton), 9 -> {4, 4} (zero std)
    rewards = torch.tensor([3.0, 5.0, 4.0, 1.0, 4.0, 2.0])
    gids = torch.tensor([7, 2, 9, 7, 9, 7])
    adv = A.grpo(rewards, gids, eps=0.0)
    torch.testing.assert_close(adv, torch.tensor([1.0, 0.0, 0.0, -1.0, 0.0, 0.0]))
    # string ids (a sequence of hashables) give the same answer
    adv_s = A.grpo(rewards, ["a", "b", "c", "a", "c", "a"], eps=0.0)
    torch.testing.assert_close(adv_s, adv)


def test_grpo_batch_scale_and_none():
    r = [1.0, 0.0, 3.0, 1.0]
    g = [0, 0, 1, 1]
    batch_std = float(np.std(r, ddof=1))
    # group means: 0.5, 2.0
    expected = [(1 - 0.5) / batch_std, (0 - 0.5) / batch_std, (3 - 2) / batch_std, (1 - 2) / batch_std]
    torch.testing.assert_close(A.grpo(torch.tensor(r), torch.tensor(g), scale="batch", eps=0.0), torch.tensor(expected))
    torch.testing.assert_close(
        A.grpo(torch.tensor(r), torch.tensor(g), scale="none"), torch.tensor([0.5, -0.5, 1, -1.0])
    )
    with pytest.raises(ValueError, match="scale"):
        A.grpo(torch.tensor(r), torch.tensor(g), scale="bogus")


def test_dr_grpo_mean_only_rloo_hand_worked():
    r = torch.tensor([1.0, 0.0, 0.0, 0.0, 2.0])
    g = torch.tensor([0, 0, 0, 0, 1])
    # group 0 mean 0.25: r - mean = [0.75, -0.25, -0.25, -0.25]; singleton -> 0
    torch.testing.assert_close(A.dr_grpo(r, g), torch.tensor([0.75, -0.25, -0.25, -0.25, 0.0]))
    torch.testing.assert_close(A.mean_only(r, g), A.dr_grpo(r, g))
    # RLOO: 1 - 0 = 1; 0 - 1/3 = -1/3 (= 4/3 * (r - mean))
    torch.testing.assert_close(A.rloo(r, g), torch.tensor([1.0, -1 / 3, -1 / 3, -1 / 3, 0.0]))


@settings(max_examples=60, deadline=None)
@given(group_batches)
def test_outcome_properties(batch):
    g = [x[0] for x in batch]
    r = [float(x[1]) for x in batch]
    rt, gt = torch.tensor(r, dtype=torch.float64), torch.tensor(g)
    np.testing.assert_allclose(A.grpo(rt, gt).numpy(), ref_group_norm(r, g), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(A.dr_grpo(rt, gt).numpy(), ref_group_norm(r, g, scale=False), atol=1e-9)
    rloo = A.rloo(rt, gt)
    np.testing.assert_allclose(rloo.numpy(), ref_rloo(r, g), atol=1e-9)
    for name in ("grpo", "dr_grpo", "rloo", "mean_only"):  # advantages sum to 0 within every group
        adv = A.get(name)(rt, gt)
        for k in set(g):
            assert abs(float(adv[gt == k].sum())) < 1e-6 * max(1.0, float(rt.abs().max()))
    for k in set(g):  # RLOO = G / (G - 1) * (r - mean)
        sel = gt == k
        n = int(sel.sum())
        if n > 1:
            torch.testing.assert_close(rloo[sel], n / (n - 1) * (rt[sel] - rt[sel].mean()))
    # permutation equivariance: shuffling the batch shuffles the advantages
    perm = torch.randperm(len(r))
    torch.testing.assert_close(A.grpo(rt[perm], gt[perm]), A.grpo(rt, gt)[perm])


def test_registry_and_families():
    assert set(A.names("outcome")) == {"grpo", "dr_grpo", "rloo", "mean_only"}
    assert set(A.names("token")) == {"reinforce_pp", "reinforce_pp_baseline"}
    assert A.names("time") == ["gae"] and set(A.names("step")) == {"gigpo", "step_episode"}
    r, g = torch.tensor([1.0, 0.0]), torch.tensor([0, 0])
    for name in A.names("outcome"):  # the uniform call a trainer uses
        assert A.get(name)(r, g, eps=1e-6).shape == (2,)
    with pytest.raises(KeyError) as e:
        A.get("gpro")
    msg = str(e.value)
    assert "\n" not in msg and "grpo" in msg and "rloo" in msg


# ------------------------------------------------------------------------------------------------------ token family
def ref_reinforce_pp(rewards, mask, kl=None, kl_coef=0.0, gamma=1.0, eps=1e-8):
    """numpy loops: outcome on the last masked token, KL penalty, discounted return, batch whitening."""
    rewards, mask = np.asarray(rewards, float), np.asarray(mask, bool)
    B, L = mask.shape
    tok = np.zeros((B, L))
    for i in range(B):
        idx = np.nonzero(mask[i])[0]
        if rewards.ndim == 1:
            if len(idx):
                tok[i, idx[-1]] = rewards[i]
        else:
            tok[i] = rewards[i]
    if kl is not None:
        tok = tok - kl_coef * np.asarray(kl)
    tok = tok * mask
    ret = np.zeros((B, L))
    for i in range(B):
        run = 0.0
        for t in reversed(range(L)):
            run = tok[i, t] + gamma * run
            ret[i, t] = run
    vals = ret[mask]
    mean, var = vals.mean(), vals.var(ddof=1)
    return np.where(mask, (ret - mean) / np.sqrt(var + eps), 0.0)


def test_reinforce_pp_matches_reference():
    gen = torch.Generator().manual_seed(0)
    B, L = 5, 7
    mask = torch.rand(B, L, generator=gen) > 0.3
    mask[:, 0] = True
    mask[3] = False  # an empty row
    rewards = torch.randn(B, generator=gen, dtype=torch.float64)
    kl = torch.randn(B, L, generator=gen, dtype=torch.float64)
    for gamma in (1.0, 0.9):
        out = A.reinforce_pp(rewards, mask, kl=kl, kl_coef=0.1, gamma=gamma)
        np.testing.assert_allclose(out.numpy(), ref_reinforce_pp(rewards, mask, kl, 0.1, gamma), atol=1e-10)
    tok = torch.randn(B, L, generator=gen, dtype=torch.float64)  # token-level rewards
    np.testing.assert_allclose(A.reinforce_pp(tok, mask).numpy(), ref_reinforce_pp(tok, mask), atol=1e-10)


def test_reinforce_pp_baseline_subtracts_group_mean():
    mask = torch.ones(4, 3, dtype=torch.bool)
    r = torch.tensor([1.0, 0.0, 3.0, 1.0], dtype=torch.float64)
    g = torch.tensor([0, 0, 1, 1])
    centred = [0.5, -0.5, 1.0, -1.0]  # group means 0.5 and 2.0
    np.testing.assert_allclose(
        A.reinforce_pp_baseline(r, g, mask).numpy(), ref_reinforce_pp(centred, mask.numpy()), atol=1e-10
    )


# -------------------------------------------------------------------------------------------------------------- GAE
def ref_gae_recursive(r, v, d, gamma, lam):
    """The definition, recursively: A_t = delta_t + gamma lam (1 - d_t) A_{t+1}, A_T = 0."""
    T, N = len(r), len(r[0])

    def adv(t, n):
        if t == T:
            return 0.0
        delta = r[t][n] + gamma * v[t + 1][n] * (1 - d[t][n]) - v[t][n]
        return delta + gamma * lam * (1 - d[t][n]) * adv(t + 1, n)

    return [[adv(t, n) for n in range(N)] for t in range(T)]


def test_gae_matches_recursive_definition_with_dones():
    rng = random.Random(0)
    T, N = 9, 3
    r = [[rng.uniform(-1, 1) for _ in range(N)] for _ in range(T)]
    v = [[rng.uniform(-1, 1) for _ in range(N)] for _ in range(T + 1)]
    d = [[0] * N for _ in range(T)]
    d[2][0] = d[5][0] = d[4][1] = d[8][2] = 1  # episodes end mid-rollout
    adv, ret = A.gae(torch.tensor(r), torch.tensor(v), torch.tensor(d, dtype=torch.bool), gamma=0.97, lam=0.9)
    expected = torch.tensor(ref_gae_recursive(r, v, d, 0.97, 0.9))
    torch.testing.assert_close(adv, expected)
    torch.testing.assert_close(ret, expected + torch.tensor(v)[:T])


def test_gae_lambda_one_is_discounted_return_minus_value():
    # lam = 1, no dones: A_t = sum_k gamma^k r_{t+k} + gamma^(T-t) V_T - V_t
    r = torch.tensor([[1.0], [2.0], [3.0]])
    v = torch.tensor([[0.5], [0.25], [0.0], [4.0]])
    adv, _ = A.gae(r, v, torch.zeros(3, 1), gamma=0.5, lam=1.0)
    torch.testing.assert_close(adv[:, 0], torch.tensor([1 + 1 + 0.75 + 0.5 - 0.5, 2 + 1.5 + 1.0 - 0.25, 3 + 2.0]))


def ref_token_gae(rewards, values, mask, gamma, lam, kl=None, kl_coef=0.0):
    """Plain-loop GAE over each row's masked tokens: outcome on the last one, KL on each, env tokens skipped."""
    B, L = len(mask), len(mask[0])
    adv = [[0.0] * L for _ in range(B)]
    ret = [[0.0] * L for _ in range(B)]
    for b in range(B):
        idx = [t for t in range(L) if mask[b][t]]
        running = 0.0
        for j in reversed(range(len(idx))):
            t = idx[j]
            r = (rewards[b] if j == len(idx) - 1 else 0.0) - (kl_coef * kl[b][t] if kl is not None else 0.0)
            v_next = values[b][idx[j + 1]] if j + 1 < len(idx) else 0.0
            running = r + gamma * v_next - values[b][t] + gamma * lam * running
            adv[b][t], ret[b][t] = running, running + values[b][t]
    return adv, ret


def test_token_gae_hand_worked():
    # one row, tokens at positions 0, 1 (turn 1) and 3 (turn 2; position 2 is an env token), gamma = 1, lam = 0.5
    mask = torch.tensor([[1, 1, 0, 1]])
    values = torch.tensor([[0.2, 0.4, 9.0, 0.5]])
    adv, ret = A.token_gae(torch.tensor([1.0]), values, mask, gamma=1.0, lam=0.5)
    a3 = 1.0 - 0.5  # last token: r - V
    a1 = (0.5 - 0.4) + 0.5 * a3  # next value is the next *generated* token's (0.5), not the env token's (9.0)
    a0 = (0.4 - 0.2) + 0.5 * a1
    torch.testing.assert_close(adv, torch.tensor([[a0, a1, 0.0, a3]]))
    torch.testing.assert_close(ret, torch.tensor([[a0 + 0.2, a1 + 0.4, 0.0, a3 + 0.5]]))


@pytest.mark.parametrize("gamma,lam,kl_coef", [(1.0, 1.0, 0.0), (0.99, 0.95, 0.0), (1.0, 0.9, 0.1)])
def test_token_gae_matches_loop_reference(gamma, lam, kl_coef):
    rng = np.random.default_rng(3)
    B, L = 6, 11
    mask = rng.random((B, L)) < 0.6
    mask[0] = False  # a row with no generated token
    mask[1, :] = False
    mask[1, 4] = True  # a one-token response
    rewards, values, kl = rng.normal(size=B), rng.normal(size=(B, L)), rng.random((B, L))
    adv, ret = A.token_gae(torch.tensor(rewards), torch.tensor(values), torch.tensor(mask), gamma, lam,
                           kl=torch.tensor(kl), kl_coef=kl_coef)  # fmt: skip
    ref_adv, ref_ret = ref_token_gae(rewards.tolist(), values.tolist(), mask.tolist(), gamma, lam, kl.tolist(), kl_coef)
    torch.testing.assert_close(adv, torch.tensor(ref_adv, dtype=torch.float64))
    torch.testing.assert_close(ret, torch.tensor(ref_ret, dtype=torch.float64))


# ---------------------------------------------------------------------------------------------------- step family
def ref_step_returns(step_rewards, traj, gamma):
    out = [0.0] * len(step_rewards)
    for k in set(traj):
        idx = [i for i, t in enumerate(traj) if t == k]
        run = 0.0
        for i in reversed(idx):
            run = step_rewards[i] + gamma * run
            out[i] = run
    return out


def ref_two_level(ep_ret, groups, step_rewards, keys, traj, gamma, w_ep, w_step, scale):
    ep_adv = ref_group_norm(ep_ret, groups, scale=scale)
    rets = ref_step_returns(step_rewards, traj, gamma)
    step_group = [(groups[t], k) for t, k in zip(traj, keys)]
    step_adv = ref_group_norm(rets, step_group, scale=scale)
    return [w_ep * ep_adv[t] + w_step * s for t, s in zip(traj, step_adv)]


def test_step_returns_interleaved():
    # two trajectories interleaved step-major: traj 0 = [1, 0, 2], traj 1 = [0, 1]
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0])
    traj = torch.tensor([0, 1, 0, 1, 0])
    # gamma 0.5: traj 0 returns [1 + 0 + 0.5, 0 + 1, 2] = [1.5, 1, 2]; traj 1: [0.5, 1]
    torch.testing.assert_close(A.step_returns(rewards, traj, 0.5), torch.tensor([1.5, 0.5, 1.0, 1.0, 2.0]))
    torch.testing.assert_close(A.step_positions(traj), torch.tensor([0, 0, 1, 1, 2]))


def test_gigpo_hand_worked():
    # one group, two trajectories sharing the start observation "s0":
    #   traj 0: s0 -> s1 (success, episode return 1), step rewards [0, 1]
    #   traj 1: s0 -> s2 (failure, episode return 0), step rewards [0, 0]
    # episode level (mean only): [+0.5, -0.5]. Step returns (gamma 0.5): traj 0 [0.5, 1], traj 1 [0, 0].
    # anchor "s0" groups step 0 of both: returns [0.5, 0] -> [+0.25, -0.25]; s1, s2 are singletons -> 0.
    adv = A.gigpo(
        torch.tensor([1.0, 0.0]), torch.tensor([0, 0]), torch.tensor([0.0, 1.0, 0.0, 0.0]),
        ["s0", "s1", "s0", "s2"], torch.tensor([0, 0, 1, 1]), gamma=0.5, w=1.0,
    )  # fmt: skip
    torch.testing.assert_close(adv, torch.tensor([0.75, 0.5, -0.75, -0.5]))


def test_gigpo_and_step_episode_random_against_reference():
    rng = random.Random(1)
    n_traj, groups = 10, [0, 0, 0, 1, 1, 1, 1, 2, 2, 3]
    steps = []  # (traj, key) in step-major interleaved order
    lengths = [rng.randint(1, 4) for _ in range(n_traj)]
    for t in range(4):
        for k in range(n_traj):
            if t < lengths[k]:
                steps.append((k, f"obs{rng.randint(0, 2)}"))
    traj = [s[0] for s in steps]
    keys = [s[1] for s in steps]
    step_r = [rng.choice([0.0, 0.5, 1.0]) for _ in steps]
    ep = [sum(r for r, t in zip(step_r, traj) if t == k) for k in range(n_traj)]
    args = (torch.tensor(ep, dtype=torch.float64), torch.tensor(groups), torch.tensor(step_r, dtype=torch.float64))
    for scale in (False, True):
        out = A.gigpo(*args, keys, torch.tensor(traj), gamma=0.9, w=0.7, scale=scale)
        np.testing.assert_allclose(
            out.numpy(), ref_two_level(ep, groups, step_r, keys, traj, 0.9, 1.0, 0.7, scale), atol=1e-9
        )
        out = A.step_episode(*args, torch.tensor(traj), gamma=0.5, w_ep=0.3, w_step=1.2, scale=scale)
        positions = [traj[:i].count(t) for i, t in enumerate(traj)]  # time index of each step in its trajectory
        np.testing.assert_allclose(
            out.numpy(), ref_two_level(ep, groups, step_r, positions, traj, 0.5, 0.3, 1.2, scale), atol=1e-9
        )


def test_discounted_cumsum_long_sequence_is_finite():
    x = torch.ones(2, 5000)
    out = A.discounted_cumsum(x, 0.5)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[:, 0], torch.full((2,), 2.0))
