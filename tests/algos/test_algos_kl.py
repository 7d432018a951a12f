"""KL estimators, KL controllers and KL-in-reward against hand-worked numbers."""

from __future__ import annotations

import math

import pytest
import torch

from mmrl.algos import kl as K
from mmrl.algos import losses


def test_estimators_hand_worked():
    # x = logp - ref = [0, 1, -1, 30]
    logp = torch.tensor([[0.0, 0.0, -2.0, 0.0]], dtype=torch.float64)
    ref = torch.tensor([[0.0, -1.0, -1.0, -30.0]], dtype=torch.float64)
    x = [0.0, 1.0, -1.0, 30.0]
    torch.testing.assert_close(K.kl(logp, ref, "k1"), torch.tensor([x], dtype=torch.float64))
    torch.testing.assert_close(K.kl(logp, ref, "k2"), torch.tensor([[v * v / 2 for v in x]], dtype=torch.float64))
    # k3 = exp(-x) - 1 + x: 0, e^-1 = 0.3679, e^1 - 2 = 0.7183, 29 + e^-30 -> clamped to 10
    k3 = [0.0, math.exp(-1.0), math.e - 2.0, 10.0]
    torch.testing.assert_close(K.kl(logp, ref, "k3"), torch.tensor([k3], dtype=torch.float64))
    torch.testing.assert_close(K.kl(logp, ref, "low_var_kl"), K.kl(logp, ref, "k3"))
    torch.testing.assert_close(K.kl(logp, ref, "mse"), K.kl(logp, ref, "k2"))
    # x = -30: exp(30) - 31 is huge -> clamped to +10 too
    assert float(K.kl(torch.tensor([[-30.0]]), torch.tensor([[0.0]]), "k3")) == 10.0
    assert losses.kl is K.kl
    with pytest.raises(KeyError, match="k3"):
        K.kl(logp, ref, "k4")


def test_kl_mask_zeroes_garbage_and_grad():
    logp = torch.tensor([[0.5, float("nan")]], requires_grad=True)
    ref = torch.tensor([[0.0, float("inf")]])
    out = K.kl(logp, ref, "k3", mask=torch.tensor([[1, 0]]))
    assert out[0, 1] == 0 and torch.isfinite(out).all()
    out.sum().backward()
    # d/dx (exp(-x) - 1 + x) = 1 - exp(-x)
    torch.testing.assert_close(logp.grad, torch.tensor([[1 - math.exp(-0.5), 0.0]]))


def test_controllers():
    fixed = K.FixedKLController(0.05)
    fixed.update(1.0, 100)
    assert fixed.value == 0.05
    ctl = K.AdaptiveKLController(init_kl_coef=0.2, target_kl=0.1, horizon=1000)
    ctl.update(current_kl=0.11, n_steps=100)  # error = 0.11/0.1 - 1 = 0.1 -> value *= 1 + 0.1 * 0.1 = 1.01
    assert ctl.value == pytest.approx(0.202)
    ctl.update(current_kl=0.0, n_steps=100)  # error clipped to -0.2 -> *= 0.98
    assert ctl.value == pytest.approx(0.202 * 0.98)
    ctl.update(current_kl=5.0, n_steps=1000)  # error clipped to +0.2 -> *= 1.2
    assert ctl.value == pytest.approx(0.202 * 0.98 * 1.2)


def test_kl_in_reward():
    # outcome [1, 2] on the last masked token; k1 per token = logp - ref
    logp = torch.tensor([[-1.0, -1.0, -1.0], [-1.0, -2.0, 0.0]])
    ref = torch.tensor([[-1.5, -1.0, -0.5], [-1.0, -1.0, 5.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    r, mean_kl = K.kl_in_reward(torch.tensor([1.0, 2.0]), logp, ref, mask, kl_coef=0.1, kind="k1")
    # row 0 kl [0.5, 0, -0.5] -> rewards [-0.05, 0, 1 + 0.05]; row 1 kl [0, -1, x] -> [0, 2 + 0.1, 0]
    torch.testing.assert_close(r, torch.tensor([[-0.05, 0.0, 1.05], [0.0, 2.1, 0.0]]))
    assert mean_kl == pytest.approx((0.0 + (-0.5)) / 2)  # per-sequence means 0 and -0.5
    tok = torch.zeros(2, 3)
    r2, _ = K.kl_in_reward(tok, logp, ref, mask, kl_coef=1.0)
    torch.testing.assert_close(r2, torch.tensor([[-0.5, 0.0, 0.5], [0.0, 1.0, 0.0]]))
