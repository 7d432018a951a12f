"""Vision Matters augmentations: distractor concatenation, dominance-preserving mixup, random rotation."""

from __future__ import annotations

import numpy as np
import pytest

from envs.transforms import distractor_concat, mixup, random_rotation


def _img(seed, h, w):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_distractor_concat_shapes_and_content():
    a, d = _img(0, 28, 40), _img(1, 14, 21)
    h = distractor_concat(a, d, axis=1)
    assert h.shape == (28, 40 + 42, 3) and h.dtype == np.uint8
    np.testing.assert_array_equal(h[:, :40], a)
    v = distractor_concat(a, d, axis=0)
    assert v.shape == (28 + round(14 * 40 / 21), 40, 3)
    np.testing.assert_array_equal(v[:28], a)
    same = _img(2, 28, 10)
    np.testing.assert_array_equal(distractor_concat(a, same, axis=1)[:, 40:], same)  # no resize needed: exact
    np.testing.assert_array_equal(distractor_concat(a, d, 1), distractor_concat(a, d, 1))  # deterministic


def test_mixup_dominance_and_bounds():
    a, b = _img(3, 20, 30), _img(4, 20, 30)
    for alpha in (0.0, 0.1, 0.3, 0.5, 0.7, 0.95, 1.0):
        out = mixup(a, b, alpha)
        assert out.shape == a.shape and out.dtype == np.uint8
        ai, bi, oi = a.astype(int), b.astype(int), out.astype(int)
        assert (oi >= np.minimum(ai, bi)).all() and (oi <= np.maximum(ai, bi)).all()
        assert (np.abs(oi - ai) <= np.abs(oi - bi)).all()  # the original keeps weight >= 0.5
        lam = max(alpha, 1 - alpha)
        exact = lam * ai + (1 - lam) * bi
        assert (np.abs(oi - exact) <= 0.5 + 1e-9).all()  # nearest integer
        half = (ai + bi) % 2 == 1 if alpha == 0.5 else np.zeros_like(ai, bool)  # exact .5 only at lam = 0.5
        assert (np.abs(oi[half] - ai[half]) < np.abs(exact[half] - ai[half])).all()  # halves go toward the original
    np.testing.assert_array_equal(mixup(a, b, 0.3), mixup(a, b, 0.7))  # folded to the same dominant weight
    np.testing.assert_array_equal(mixup(a, b, 0.0), a)
    assert mixup(a, _img(5, 7, 9), 0.2).shape == a.shape  # other resized to the image


def test_random_rotation():
    a = _img(6, 32, 48)
    np.testing.assert_array_equal(random_rotation(a, 0.0, np.random.default_rng(0)), a)
    r1 = random_rotation(a, 30.0, np.random.default_rng(9))
    r2 = random_rotation(a, 30.0, np.random.default_rng(9))
    assert r1.shape == a.shape and r1.dtype == np.uint8
    np.testing.assert_array_equal(r1, r2)
    assert not np.array_equal(r1, a)
    # corners rotated out are filled: white by default, black when asked
    big = np.full((40, 40, 3), 128, np.uint8)
    seed = next(s for s in range(100) if abs(np.random.default_rng(s).uniform(-45, 45)) > 20)
    w = random_rotation(big, 45.0, np.random.default_rng(seed))
    k = random_rotation(big, 45.0, np.random.default_rng(seed), fill="black")
    assert (w[0, 0] == 255).all() and (k[0, 0] == 0).all()
    assert (w[20, 20] == 128).all() and (k[20, 20] == 128).all()  # the centre stays
    assert a.shape == (32, 48, 3)  # input untouched


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: distractor_concat(np.zeros((4, 4), np.uint8), _img(0, 4, 4), 1), "image"),
        (lambda: distractor_concat(_img(0, 4, 4), _img(0, 4, 4).astype(np.float32), 1), "distractor"),
        (lambda: distractor_concat(_img(0, 4, 4), _img(0, 4, 4), 2), "axis"),
        (lambda: mixup(_img(0, 4, 4), np.zeros((4, 4, 4), np.uint8), 0.2), "other"),
        (lambda: mixup(_img(0, 4, 4), _img(1, 4, 4), 1.2), "alpha"),
        (lambda: mixup([[0]], _img(1, 4, 4), 0.2), "image"),
        (lambda: random_rotation(_img(0, 4, 4), -1.0, np.random.default_rng(0)), "max_degrees"),
        (lambda: random_rotation(_img(0, 4, 4), float("nan"), np.random.default_rng(0)), "max_degrees"),
        (lambda: random_rotation(_img(0, 4, 4), 5.0, 3), "rng"),
        (lambda: random_rotation(_img(0, 4, 4), 5.0, np.random.default_rng(0), fill="red"), "fill"),
        (lambda: random_rotation(np.zeros((0, 4, 3), np.uint8), 5.0, np.random.default_rng(0)), "image"),
    ],
)
def test_bad_inputs_raise(call, name):
    with pytest.raises(ValueError, match=f"^{name} must") as info:
        call()
    assert "\n" not in str(info.value)
