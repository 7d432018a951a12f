"""VPPO token perception: patch perturbation, visual dependency on the tiny VLM, and top-fraction token weights."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from mmrl.policies.vlm import SamplingParams
from mmrl.policies.vlm.vppo import perturb_image, visual_dependency, vppo_weights
from mmrl.types import Step, Trajectory

# ----------------------------------------------------------------------------------------------------- perturb_image


def _patch_blackened(out, patch):
    """Per grid patch: whether every pixel is 0 (input has no zero pixels, so this is exactly 'was dropped')."""
    h, w = out.shape[:2]
    gh, gw = math.ceil(h / patch), math.ceil(w / patch)
    return np.array(
        [
            [not out[i * patch : (i + 1) * patch, j * patch : (j + 1) * patch].any() for j in range(gw)]
            for i in range(gh)
        ]
    )


def test_perturb_image_fraction_and_untouched_patches():
    rng = np.random.default_rng(0)
    img = np.random.default_rng(1).integers(1, 256, (70, 60, 3), dtype=np.uint8)  # no zero pixel; ragged edges
    patch, p, fracs = 14, 0.3, []
    for _ in range(200):
        out = perturb_image(img, patch, p, rng=rng)
        assert out.shape == img.shape and out.dtype == np.uint8
        dropped = _patch_blackened(out, patch)  # [5, 5]
        fracs.append(dropped.mean())
        keep = ~np.repeat(np.repeat(dropped, patch, 0), patch, 1)[:70, :60]
        np.testing.assert_array_equal(out[keep], img[keep])  # untouched patches identical
        assert not out[~keep].any()
    assert abs(np.mean(fracs) - p) < 0.03  # 5000 Bernoulli(0.3) draws: sd ~ 0.0065
    assert img.min() >= 1  # input not modified


def test_perturb_image_deterministic_and_extremes():
    img = np.random.default_rng(2).integers(1, 256, (28, 42, 3), dtype=np.uint8)
    a = perturb_image(img, 14, 0.5, rng=np.random.default_rng(7))
    b = perturb_image(img, 14, 0.5, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(perturb_image(img, 14, 0.0, rng=np.random.default_rng(0)), img)
    assert not perturb_image(img, 14, 1.0, rng=np.random.default_rng(0)).any()
    with pytest.raises(ValueError, match="p must"):
        perturb_image(img, 14, 1.5, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="patch must"):
        perturb_image(img, 0, 0.5, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="image must"):
        perturb_image(img.astype(np.float32), 14, 0.5, rng=np.random.default_rng(0))


# ------------------------------------------------------------------------------------------------- visual_dependency


def _trajectories(policy):
    """Three single-turn episodes: one image, two images of different sizes, and no image."""
    rng = np.random.default_rng(3)
    imgs = [
        [rng.integers(0, 256, (56, 56, 3), dtype=np.uint8)],
        [rng.integers(0, 256, (56, 84, 3), dtype=np.uint8), rng.integers(0, 256, (84, 56, 3), dtype=np.uint8)],
        [],
    ]
    obs = [{"text": "What is in the picture?", "images": tuple(im)} for im in imgs]
    actions = policy.act(obs, SamplingParams(max_new_tokens=8))
    trajs = [Trajectory(steps=[Step(o, a.env_action, a.logp, a.record)]) for o, a in zip(obs, actions)]
    return trajs


@pytest.fixture(scope="module")
def trajectories(tiny_policy):
    torch.manual_seed(0)
    return _trajectories(tiny_policy)


def test_visual_dependency_properties(tiny_policy, trajectories):
    mask = tiny_policy.collate(trajectories).mask
    # the perturbation really changes the pixels of each image
    rng = np.random.default_rng(0)
    for img in trajectories[1].steps[0].record.images:
        assert not np.array_equal(perturb_image(img, 14, 0.5, rng=rng), img)
    dep = visual_dependency(tiny_policy, trajectories, np.random.default_rng(0), patch=14, p=0.5, clamp=10.0)
    assert dep.shape == mask.shape
    assert torch.isfinite(dep).all()
    assert (dep >= 0).all() and (dep <= 10.0).all()
    assert (dep[mask == 0] == 0).all()
    assert float(dep[0].max()) > 0 and float(dep[1].max()) > 0  # image rows depend on the image somewhere
    assert (dep[2] == 0).all()  # the row without images cannot depend on them
    # reproducible for a seeded rng
    again = visual_dependency(tiny_policy, trajectories, np.random.default_rng(0))
    torch.testing.assert_close(dep, again, rtol=0, atol=0)
    # a small clamp caps it
    assert float(visual_dependency(tiny_policy, trajectories, np.random.default_rng(0), clamp=1e-6).max()) <= 1e-6


def test_visual_dependency_zero_without_perturbation(tiny_policy, trajectories):
    dep = visual_dependency(tiny_policy, trajectories, np.random.default_rng(0), p=0.0)
    assert (dep == 0).all()


def test_visual_dependency_rejects_missing_processed_images(tiny_policy, trajectories):
    step = trajectories[0].steps[0]
    broken = Trajectory(steps=[dataclasses.replace(step, record=dataclasses.replace(step.record, vision=[]))])
    with pytest.raises(ValueError, match="processed"):
        visual_dependency(tiny_policy, [broken], np.random.default_rng(0))


# ------------------------------------------------------------------------------------------------------ vppo_weights


def _reference_weights(dep, mask, top_frac, scale):
    """Plain numpy: per row keep ceil(top_frac * n) masked tokens, highest first, earlier position on ties."""
    dep, mask = np.asarray(dep, np.float64), np.asarray(mask, bool)
    out = np.zeros_like(dep)
    for b in range(dep.shape[0]):
        idx = np.flatnonzero(mask[b])
        k = math.ceil(top_frac * len(idx))
        ranked = sorted(idx, key=lambda t: (-dep[b, t], t))
        out[b, ranked[:k]] = 1.0
    if scale:
        rows = [b for b in range(dep.shape[0]) if mask[b].any()]
        means = {b: dep[b, mask[b]].mean() for b in rows}
        big = np.mean(list(means.values()))
        for b in range(dep.shape[0]):
            out[b] *= (means[b] / big if big > 0 else 1.0) if b in means else 0.0
    return out


def test_vppo_weights_top_fraction_against_reference():
    g = np.random.default_rng(5)
    for _ in range(30):
        B, L = int(g.integers(1, 6)), int(g.integers(1, 25))
        dep = np.round(g.random((B, L)) * 3, 1)  # rounding creates ties
        mask = g.random((B, L)) < 0.7
        frac = float(g.choice([0.0, 0.1, 0.2, 0.5, 1.0]))
        w = vppo_weights(torch.tensor(dep, dtype=torch.float32), torch.tensor(mask), frac, scale_trajectory=False)
        ref = _reference_weights(np.float32(dep), mask, frac, scale=False)
        np.testing.assert_array_equal(w.numpy(), ref)
        np.testing.assert_array_equal(w.numpy().sum(1), [math.ceil(frac * n) for n in mask.sum(1)])
        ws = vppo_weights(torch.tensor(dep, dtype=torch.float32), torch.tensor(mask), frac, scale_trajectory=True)
        np.testing.assert_allclose(ws.numpy(), _reference_weights(np.float32(dep), mask, frac, scale=True), rtol=1e-5)


def test_vppo_weights_ties_and_scaling_by_hand():
    dep = torch.tensor([[1.0, 3.0, 3.0, 0.0, 2.0, 9.0], [0.5, 0.5, 0.5, 0.5, 0.0, 0.0], [0.0] * 6])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0], [0] * 6])
    w = vppo_weights(dep, mask, top_frac=0.4, scale_trajectory=False)
    # row 0: n=5, k=ceil(2.0)=2 -> the two 3.0s (position 5 is unmasked); row 1: n=4, k=ceil(1.6)=2 -> first two ties
    assert w.tolist() == [[0, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0], [0] * 6]
    ws = vppo_weights(dep, mask, top_frac=0.4, scale_trajectory=True)
    # row means over masked tokens: (1+3+3+0+2)/5 = 1.8 and 0.5; batch mean over rows with tokens = 1.15
    s0, s1 = 1.8 / 1.15, 0.5 / 1.15
    torch.testing.assert_close(ws, torch.tensor([[0, s0, s0, 0, 0, 0], [s1, s1, 0, 0, 0, 0], [0.0] * 6]))
    # no dependency anywhere: scale 1, not NaN
    z = vppo_weights(torch.zeros(2, 3), torch.ones(2, 3), top_frac=0.5)
    assert z.sum(1).tolist() == [2.0, 2.0]
    with pytest.raises(ValueError, match="top_frac"):
        vppo_weights(dep, mask, top_frac=1.5)
    with pytest.raises(ValueError, match="dependency and mask"):
        vppo_weights(dep, mask[:, :3])


def test_vppo_weights_on_real_dependency(tiny_policy, trajectories):
    mask = tiny_policy.collate(trajectories).mask
    dep = visual_dependency(tiny_policy, trajectories, np.random.default_rng(1))
    w = vppo_weights(dep, mask, top_frac=0.2, scale_trajectory=False)
    assert w.sum(1).tolist() == [math.ceil(0.2 * n) for n in mask.sum(1).tolist()]
    assert (w[mask == 0] == 0).all()
