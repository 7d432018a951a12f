"""Diffusion policies (DPPO): the cosine schedule against numpy, every DDPM / DDIM step's log-prob against
``torch.distributions.Normal`` with the scheduler's formulas written out here (DDPM also in its epsilon form), recompute
through collate / learner view, gradients, behaviour cloning on a toy expert, config errors. The run through the real
Trainer is in ``test_flow.py`` (one chunk env, both families)."""

from __future__ import annotations

import copy
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch.distributions import Normal

from mmrl.config import ConfigError, load_config
from mmrl.policies.base import SamplingParams
from mmrl.policies.diffusion import DiffusionSampler, cosine_alpha_bar
from mmrl.policies.diffusion.family import FAMILY, config
from mmrl.policies.flow import ActionExpert, behaviour_clone
from mmrl.types import Step, Trajectory

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models on a busy 2-core machine: one torch thread is fastest


def _alpha_bar(K: int) -> np.ndarray:
    """Cosine schedule (Nichol & Dhariwal, s = 0.008, betas capped at 0.999), step by step in numpy."""
    f = [math.cos((k / K + 0.008) / 1.008 * math.pi / 2) ** 2 for k in range(K + 1)]
    ab = [1.0]
    for k in range(1, K + 1):
        ab.append(ab[-1] * (1 - min(1 - f[k] / f[k - 1], 0.999)))
    return np.array(ab)


def test_cosine_schedule_matches_numpy():
    for K in (1, 5, 20, 100):
        np.testing.assert_allclose(cosine_alpha_bar(K).numpy(), _alpha_bar(K), rtol=1e-12)
    assert _alpha_bar(20)[-1] < 1e-3  # the schedule ends in (nearly) pure noise


def _sampler(**kw) -> DiffusionSampler:
    torch.manual_seed(1)
    return DiffusionSampler(ActionExpert(chunk=3, action_dim=2, feature_dim=5, hidden=[32, 32]), **kw)


def _check(sampler: DiffusionSampler, reference, feats: torch.Tensor) -> None:
    """The sampled chain's step log-probs (at sampling and recomputed) equal ``reference(expert, i, x)``'s Normal, the
    reference evaluated in float64 (an untrained denoiser's first DDPM mean is ~30 x, so float32 rounding alone is
    ~1e-4 of the log-prob there)."""
    expert64 = copy.deepcopy(sampler.expert).double()
    with torch.no_grad():
        _, rec, elem = sampler.sample(feats)
        recomputed, entropy = sampler.log_prob(feats, rec)
        chain = rec["chain"].double()  # [N, M+1, H, A]
        for i in range(chain.shape[1] - 1):
            dist = reference(expert64, i, chain[:, i], feats.double())
            ref = dist.log_prob(chain[:, i + 1]).float()  # [N, H, A]
            torch.testing.assert_close(elem[:, i], ref, atol=1e-3, rtol=1e-4)
            torch.testing.assert_close(recomputed[:, i], ref, atol=1e-3, rtol=1e-4)
            torch.testing.assert_close(entropy[:, i], dist.entropy().float(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("clip_x0", [0.0, 1.0])
def test_ddpm_step_logps_are_the_posterior_normals(clip_x0):
    K, min_std = 8, 0.05
    s = _sampler(steps=K, kind="ddpm", min_std=min_std, clip_x0=clip_x0)
    ab = torch.tensor(_alpha_bar(K), dtype=torch.float64)
    feats = torch.randn(6, 5)

    def reference(expert: ActionExpert, i: int, x: torch.Tensor, feats: torch.Tensor) -> Normal:
        k = K - i  # sampling step i goes from k to k - 1
        beta = 1 - ab[k] / ab[k - 1]
        eps = expert(x, torch.full((x.shape[0],), k / K, dtype=x.dtype), feats)[0]
        var = beta * (1 - ab[k - 1]) / (1 - ab[k])  # posterior variance (Ho et al. 2020, eq. 7)
        std = torch.clamp(var.sqrt(), min=min_std).expand_as(x)
        if clip_x0 == 0:  # the epsilon form of the posterior mean (Ho et al. eq. 11)
            mean = (x - beta / (1 - ab[k]).sqrt() * eps) / (1 - beta).sqrt()
        else:  # the x0 form, with the clean estimate clipped
            x0 = ((x - (1 - ab[k]).sqrt() * eps) / ab[k].sqrt()).clamp(-clip_x0, clip_x0)
            mean = ab[k - 1].sqrt() * beta / (1 - ab[k]) * x0 + (1 - beta).sqrt() * (1 - ab[k - 1]) / (1 - ab[k]) * x
        return Normal(mean, std)

    _check(s, reference, feats)
    assert float(s.sched_std[-1]) == pytest.approx(
        0.0, abs=1e-6
    )  # the last step's own std is 0: the clip makes it stochastic


@pytest.mark.parametrize(("eta", "clip_x0"), [(1.0, 0.0), (0.0, 0.0), (0.5, 1.0)])
def test_ddim_step_logps_are_normals_of_the_ddim_update(eta, clip_x0):
    K, M, min_std = 12, 4, 0.1
    s = _sampler(steps=K, kind="ddim", ddim_steps=M, eta=eta, min_std=min_std, clip_x0=clip_x0)
    ab = torch.tensor(_alpha_bar(K), dtype=torch.float64)
    feats = torch.randn(6, 5)

    def reference(expert: ActionExpert, i: int, x: torch.Tensor, feats: torch.Tensor) -> Normal:
        k, prev = K - i * K // M, K - (i + 1) * K // M  # 12 -> 9 -> 6 -> 3 -> 0
        eps = expert(x, torch.full((x.shape[0],), k / K, dtype=x.dtype), feats)[0]
        x0 = (x - (1 - ab[k]).sqrt() * eps) / ab[k].sqrt()
        if clip_x0:
            x0 = x0.clamp(-clip_x0, clip_x0)
            eps = (x - ab[k].sqrt() * x0) / (1 - ab[k]).sqrt()
        sigma = eta * ((1 - ab[prev]) / (1 - ab[k]) * (1 - ab[k] / ab[prev])).sqrt()  # Song et al. 2021, eq. 16
        mean = ab[prev].sqrt() * x0 + (1 - ab[prev] - sigma**2).sqrt() * eps
        return Normal(mean, torch.clamp(sigma, min=min_std).expand_as(x))

    _check(s, reference, feats)


def test_deterministic_sampling_takes_the_means_from_zero_noise():
    s = _sampler(steps=6, kind="ddim", ddim_steps=3, eta=0.0)
    feats = torch.randn(4, 5)
    with torch.no_grad():
        a1, rec, _ = s.sample(feats, deterministic=True)
        a2, _, _ = s.sample(feats, deterministic=True)
        assert bool((rec["chain"][:, 0] == 0).all())
        torch.testing.assert_close(a1, a2)
        for i in range(3):
            mean, _ = s.step_mean_std(rec["chain"][:, i], torch.full((4,), i), feats)
            torch.testing.assert_close(rec["chain"][:, i + 1], mean)


# ------------------------------------------------------------------------------------------------------ policy
def _policy(sampler="ddpm", granularity="step", extra=()):
    cfg = load_config(None, ["policy.kind=diffusion", f"policy.kwargs.sampler={sampler}", "policy.kwargs.steps=6",
                             f"policy.kwargs.granularity={granularity}", "policy.kwargs.chunk=3",
                             "policy.kwargs.hidden=[32, 32]", "policy.kwargs.feature_dim=8",
                             "policy.kwargs.encoder_hidden=[16]", *extra])  # fmt: skip
    torch.manual_seed(0)
    return FAMILY.build(cfg, gym.spaces.Box(-1, 1, (3,)), gym.spaces.Box(-1.0, 1.0, (2,)))


@pytest.mark.parametrize(("sampler", "granularity", "P"), [("ddpm", "step", 6), ("ddim", "chunk", 1),
                                                           ("ddpm", "dim", 2)])  # fmt: skip
def test_recompute_equals_rollout_logps_and_gradients_flow(sampler, granularity, P):
    extra = ["policy.kwargs.ddim_steps=2"] if sampler == "ddim" else []
    policy = _policy(sampler, granularity, extra)
    rng = np.random.default_rng(0)
    trajs = []
    for n in (3, 2):
        steps = []
        for _ in range(n):
            o = rng.normal(size=3).astype(np.float32)
            [a] = policy.act([o], SamplingParams())
            assert a.env_action.shape == (2,) and bool(np.abs(a.env_action).max() <= 1.0)
            steps.append(Step(o, a.env_action, a.logp, a.record, reward=1.0))
        trajs.append(Trajectory(steps, final_observation=o))
    batch = policy.collate(trajs)
    assert batch.mask.shape == (2, 3 * P)
    view = policy.learner_view(batch)
    assert view.old_logp.shape == (5, P)
    logp, mask, entropy = policy.log_prob(view, with_entropy=True)
    torch.testing.assert_close(logp.detach(), view.old_logp, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logp.detach().sum(-1), torch.tensor([s.logp for t in trajs for s in t.steps]),
                               atol=1e-4, rtol=1e-5)  # fmt: skip
    assert entropy.shape == logp.shape and bool((mask == 1).all())
    logp.sum().backward()
    assert policy.model.sampler.expert.out.weight.grad.abs().sum() > 0
    assert policy.model.encoder.state[0].weight.grad.abs().sum() > 0


def test_behaviour_cloning_imitates_a_toy_expert():
    cfg = load_config(None, ["policy.kind=diffusion", "policy.kwargs.chunk=2", "policy.kwargs.steps=10",
                             "policy.kwargs.hidden=[64, 64]", "policy.kwargs.feature_dim=16",
                             "policy.kwargs.encoder_hidden=[32]"])  # fmt: skip
    torch.manual_seed(0)
    policy = FAMILY.build(cfg, gym.spaces.Box(-1, 1, (2,)), gym.spaces.Box(-2.0, 2.0, (2, 1)))
    obs = np.random.default_rng(0).uniform(-1, 1, (512, 2)).astype(np.float32)

    def expert(o):  # [N, 2, 1]: (s0 + 0.5 s1, then 0.5 s0) in env units
        return np.stack([o[:, 0] + 0.5 * o[:, 1], 0.5 * o[:, 0]], 1)[:, :, None].astype(np.float32)

    losses = behaviour_clone(policy, list(obs), expert(obs), steps=600, batch_size=128, lr=3e-3)
    assert np.mean(losses[-50:]) < 0.5 * np.mean(losses[:50])
    test = np.random.default_rng(1).uniform(-1, 1, (64, 2)).astype(np.float32)
    acts = np.stack([a.env_action for a in policy.act(list(test), SamplingParams(temperature=0.0))])  # [64, 2, 1]
    assert np.abs(acts - expert(test)).mean() < 0.25 * np.abs(expert(test)).mean()


@pytest.mark.parametrize(("override", "key"), [
    ("policy.kwargs.sampler=ddim2", "policy.kwargs.sampler"),
    ("policy.kwargs.ddim_steps=3", "policy.kwargs.ddim_steps"),  # does not divide steps=10
    ("policy.kwargs.min_std=0", "policy.kwargs.min_std"),
    ("policy.kwargs.eta=-1", "policy.kwargs.eta"),
    ("policy.kwargs.granularity=token", "policy.kwargs.granularity"),
    ("policy.kwargs.estimator=flow_sde", "policy.kwargs.estimator"),  # a flow option
])  # fmt: skip
def test_bad_options_are_one_line_config_errors(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as e:
        config(load_config(None, ["policy.kind=diffusion", override]))
    assert "\n" not in str(e.value)
