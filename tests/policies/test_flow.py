"""Flow-matching policies: each estimator's chain log-prob against ``torch.distributions.Normal`` of the transitions
written here from REFERENCE.md, Flow-SDE's hybrid rule and its noise-free limit against an ODE integrated here,
gradients, granularity and executed-part slicing, recompute through collate / learner view, GAE over env steps on the
collated layout, behaviour cloning on a toy expert, and flow + diffusion policies through the real Trainer (BC warm-up,
PPO + GAE, KL to the reference, RLOO, checkpoint and resume) on a chunk env."""

from __future__ import annotations

import doctest
import importlib
import json
import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch.distributions import Normal

from mmrl.algos import estimate
from mmrl.config import ConfigError, load_config
from mmrl.policies import base
from mmrl.policies.base import SamplingParams
from mmrl.policies.diffusion.family import FAMILY as DIFFUSION
from mmrl.policies.flow import ActionExpert, ChunkPolicy, FlowNoise, FlowSDE, behaviour_clone
from mmrl.policies.flow.family import FAMILY as FLOW
from mmrl.policies.flow.family import build_chunk_policy, config, load_demos
from mmrl.trainer.loop import Trainer
from mmrl.types import Batch, Step, Trajectory

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models on a busy 2-core machine: one torch thread is fastest


def _expert(H: int = 3, A: int = 2, F: int = 5) -> ActionExpert:
    torch.manual_seed(1)
    return ActionExpert(chunk=H, action_dim=A, feature_dim=F, hidden=[32, 32])


def _ode(expert: ActionExpert, x: torch.Tensor, feats: torch.Tensor, K: int, start: int = 0, stop: int | None = None):
    """Euler steps k = start..stop-1 of dx/dt = v from t = 1 - start/K toward 0, written independently here."""
    for k in range(start, K if stop is None else stop):
        t = torch.full((x.shape[0],), 1.0 - k / K)
        x = x - (1.0 / K) * expert(x, t, feats)[0]
    return x


# ------------------------------------------------------------------------------------------------------ estimators
def test_flow_noise_chain_logp_is_the_sum_of_normal_transitions():
    K, sig_lo, sig_hi = 4, 0.1, 0.6
    est = FlowNoise(_expert(), steps=K, sigma_min=sig_lo, sigma_max=sig_hi)
    feats = torch.randn(6, 5)
    with torch.no_grad():
        actions, record, elem = est.sample(feats)
    chain = record["chain"]  # [N, K+1, H, A]
    assert chain.shape == (6, K + 1, 3, 2) and elem.shape == (6, K + 1, 3, 2)
    torch.testing.assert_close(actions, chain[:, -1])
    # the reference: log N(x_1; 0, I) + sum_k log N(x_{k+1}; x_k - v / K, sigma_k^2), sigma from the noise head
    ref = Normal(0.0, 1.0).log_prob(chain[:, 0]).sum((1, 2))
    with torch.no_grad():
        for k in range(K):
            t = 1.0 - k / K
            v, h = est.expert(chain[:, k], torch.full((6,), t), feats)
            std = sig_lo + (sig_hi - sig_lo) * torch.sigmoid(est.noise_head(h)).view(6, 3, 2)
            assert bool((std >= sig_lo).all() and (std <= sig_hi).all())
            ref = ref + Normal(chain[:, k] - v / K, std).log_prob(chain[:, k + 1]).sum((1, 2))
        recomputed, entropy = est.log_prob(feats, record)
    torch.testing.assert_close(elem.sum((1, 2, 3)), ref, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(recomputed.sum((1, 2, 3)), ref, atol=1e-4, rtol=1e-5)
    # entropy: the prior's plus each step's Gaussian entropy
    assert entropy.shape == elem.shape
    torch.testing.assert_close(entropy[:, 0], Normal(0.0, torch.ones(6, 3, 2)).entropy())


def _sde_reference(expert: ActionExpert, x_k, x_next, k, feats, K: int, a: float) -> torch.Tensor:
    """log N(x_next; mu, std^2) of the Flow-SDE step from REFERENCE.md, written out here (t = 1 guarded at 1 - 1/K)."""
    delta = 1.0 / K
    t = 1.0 - k.float() / K  # [N]
    v = expert(x_k, t, feats)[0]
    t3 = t.view(-1, 1, 1)
    sigma = a * torch.sqrt(t3 / (1.0 - torch.where(t3 == 1.0, torch.full_like(t3, 1.0 - delta), t3)))
    mu = x_k - delta * v - (sigma**2 * delta / (2 * t3)) * (x_k + (1 - t3) * v)
    return Normal(mu, (sigma * math.sqrt(delta)).expand_as(mu)).log_prob(x_next)


def test_flow_sde_one_random_stochastic_step_and_its_normal_logp():
    K, a = 5, 0.5
    est = FlowSDE(_expert(), steps=K, noise_level=a)
    feats = torch.randn(64, 5)
    torch.manual_seed(3)
    with torch.no_grad():
        actions, rec, elem = est.sample(feats)
        ref = _sde_reference(est.expert, rec["x_k"], rec["x_next"], rec["k"], feats, K, a)
        recomputed, _ = est.log_prob(feats, rec)
        # hybrid: ODE from the noise up to k*, the recorded stochastic step, ODE after it
        for i in range(64):
            k = int(rec["k"][i])
            before = _ode(est.expert, rec["x1"][i : i + 1], feats[i : i + 1], K, 0, k)
            torch.testing.assert_close(before, rec["x_k"][i : i + 1], atol=1e-5, rtol=1e-5)
            after = _ode(est.expert, rec["x_next"][i : i + 1], feats[i : i + 1], K, k + 1)
            torch.testing.assert_close(after, actions[i : i + 1], atol=1e-5, rtol=1e-5)
    assert elem.shape == (64, 1, 3, 2) and set(rec["k"].tolist()) == set(range(K))  # every step gets drawn
    assert bool((rec["k"] == 0).any())  # the guarded t = 1 step is among them
    torch.testing.assert_close(elem[:, 0], ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(recomputed[:, 0], ref, atol=1e-5, rtol=1e-5)
    assert bool(torch.isfinite(ref).all())


def test_flow_sde_with_noise_level_zero_is_the_ode_sample():
    K = 6
    est = FlowSDE(_expert(), steps=K, noise_level=0.0)
    feats = torch.randn(8, 5)
    with torch.no_grad():
        actions, rec, _ = est.sample(feats)
        torch.testing.assert_close(actions, _ode(est.expert, rec["x1"], feats, K), atol=1e-5, rtol=1e-5)
        # and the deterministic (evaluation) sampler is the ODE from the prior's mode
        mode, _, _ = est.sample(feats, deterministic=True)
        torch.testing.assert_close(mode, _ode(est.expert, torch.zeros(8, 3, 2), feats, K), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("estimator", ["flow_noise", "flow_sde"])
def test_gradients_reach_the_expert_the_noise_head_and_the_encoder(estimator):
    policy = _policy(estimator=estimator)
    obs = [np.random.default_rng(i).normal(size=3).astype(np.float32) for i in range(4)]
    batch = policy.learner_view(policy.collate([_traj(policy, obs)]))
    logp, _, _ = policy.log_prob(batch)
    logp.sum().backward()
    sampler = policy.model.sampler
    assert sampler.expert.out.weight.grad.abs().sum() > 0
    assert policy.model.encoder.state[0].weight.grad.abs().sum() > 0
    if estimator == "flow_noise":
        assert sampler.noise_head.weight.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------------- policy layout
def _policy(estimator="flow_noise", granularity="chunk", chunk=4, action_shape=(2, 2), action_dim=3, steps=3):
    cfg = load_config(None, ["policy.kind=flow", f"policy.kwargs.estimator={estimator}", f"policy.kwargs.steps={steps}",
                             f"policy.kwargs.granularity={granularity}", f"policy.kwargs.chunk={chunk}",
                             f"policy.kwargs.action_dim={action_dim}", "policy.kwargs.hidden=[32, 32]",
                             "policy.kwargs.feature_dim=8", "policy.kwargs.encoder_hidden=[16]"])  # fmt: skip
    torch.manual_seed(0)
    return FLOW.build(cfg, gym.spaces.Box(-1, 1, (3,)), gym.spaces.Box(-2.0, 2.0, action_shape))


def _traj(policy: ChunkPolicy, observations, group_id: int = 0) -> Trajectory:
    """Act on each observation in turn (one env), rewards 0.1 k, truncated at the end."""
    steps = []
    for k, o in enumerate(observations):
        [a] = policy.act([o], SamplingParams())
        steps.append(Step(o, a.env_action, a.logp, a.record, reward=0.1 * k))
    steps[-1].truncated = True
    return Trajectory(steps, group_id=group_id, final_observation=observations[0])


@pytest.mark.parametrize("estimator", ["flow_noise", "flow_sde"])
def test_granularity_positions_sum_to_the_executed_chunk_logp(estimator):
    """Chunk 4 x 3 model dims; the env takes [2, 2]: only actions 0-1 and dims 0-1 count."""
    obs = [np.random.default_rng(i).normal(size=3).astype(np.float32) for i in range(3)]
    torch.manual_seed(5)
    first = _policy(estimator, "chunk")
    traj = _traj(first, obs)
    chunk_batch = first.collate([traj])
    feats = first.model.encoder(first.model.encoder.inputs(obs))
    rec = {k: torch.stack([s.record["rec"][k] for s in traj.steps]) for k in traj.steps[0].record["rec"]}
    with torch.no_grad():
        elem, _ = first.model.sampler.log_prob(feats, rec)  # [3, S, 4, 3]
    executed = elem[:, :, :2, :2].sum((1, 2, 3))  # [3] the reference: executed actions and env dims only
    assert not torch.allclose(executed, elem.sum((1, 2, 3)))  # the slice matters
    torch.testing.assert_close(torch.tensor([s.logp for s in traj.steps]), executed, atol=1e-4, rtol=1e-5)
    sizes = {"chunk": 1, "action": 2, "dim": 4, "step": elem.shape[1]}
    for granularity, P in sizes.items():
        policy = _policy(estimator, granularity)  # the same weights (same seed), another position layout
        policy.model.load_state_dict(first.model.state_dict())
        batch = policy.collate([traj])  # records made by `first`: the layout is the learner's, not the actor's
        batch.mask = torch.ones(1, 3 * P)
        with torch.no_grad():
            logp, _, _ = policy.log_prob(batch)
        assert logp.shape == (1, 3 * P)
        torch.testing.assert_close(logp.view(3, P).sum(-1), executed, atol=1e-4, rtol=1e-5)
        if granularity == "action":  # action j: its two env dims over every chain term
            torch.testing.assert_close(logp.view(3, 2), elem[:, :, :2, :2].sum((1, 3)), atol=1e-4, rtol=1e-5)
        if granularity == "dim":
            torch.testing.assert_close(logp.view(3, 4), elem[:, :, :2, :2].sum(1).flatten(1), atol=1e-4, rtol=1e-5)
    assert chunk_batch.old_logp.shape == (1, 3)
    if estimator == "flow_noise":  # the env received the executed part, scaled from [-1, 1] to [-2, 2] and clipped
        x0 = rec["chain"][0, -1]  # [4, 3] the first step's chunk
        np.testing.assert_allclose(traj.steps[0].action, np.clip(2.0 * x0[:2, :2].numpy(), -2, 2), rtol=1e-5)


@pytest.mark.parametrize("granularity", ["chunk", "action", "dim"])
def test_a_chunk_cut_by_the_episode_end_counts_only_the_actions_that_ran(granularity):
    """The env ran 1 of the 2 executed actions of the last chunk (``info["executed"]``, as envs.sim.chunk reports)."""
    obs = [np.random.default_rng(i).normal(size=3).astype(np.float32) for i in range(2)]
    policy = _policy("flow_noise", granularity)
    traj = _traj(policy, obs)
    traj.steps[-1].info["executed"] = 1
    feats = policy.model.encoder(policy.model.encoder.inputs(obs))
    with torch.no_grad():
        elem, _ = policy.model.sampler.log_prob(
            feats, {"chain": torch.stack([s.record["rec"]["chain"] for s in traj.steps])}
        )
    view = policy.learner_view(policy.collate([traj]))
    with torch.no_grad():
        logp, mask, _ = policy.log_prob(view)
    torch.testing.assert_close(logp, view.old_logp, atol=1e-5, rtol=1e-5)
    ran = [elem[0, :, :2, :2], elem[1, :, :1, :2]]  # step 0 ran both actions, step 1 only the first
    torch.testing.assert_close((logp * mask).sum(-1), torch.stack([r.sum() for r in ran]), atol=1e-4, rtol=1e-5)
    expected_mask = {"chunk": [[1.0], [1.0]], "action": [[1, 1], [1, 0]], "dim": [[1, 1, 1, 1], [1, 1, 0, 0]]}
    torch.testing.assert_close(mask, torch.tensor(expected_mask[granularity], dtype=torch.float32))
    assert traj.steps[1].logp == pytest.approx(float(elem[1, :, :2, :2].sum()), abs=1e-4)  # at act time: both


@pytest.mark.parametrize(("estimator", "granularity"), [("flow_noise", "chunk"), ("flow_noise", "dim"),
                                                        ("flow_sde", "action"), ("flow_noise", "step")])  # fmt: skip
def test_recompute_through_collate_and_learner_view_equals_rollout_logps(estimator, granularity):
    policy = _policy(estimator, granularity)
    rng = np.random.default_rng(0)
    trajs = [
        _traj(policy, [rng.normal(size=3).astype(np.float32) for _ in range(n)], g) for g, n in enumerate([4, 2, 3])
    ]
    batch = policy.collate(trajs)
    B, L = batch.mask.shape
    P = L // 4
    assert (B, L) == (3, 4 * P)
    # the mask marks each real step's last position, where its reward sits
    expected_mask = torch.zeros(3, 4, P)
    for i, n in enumerate([4, 2, 3]):
        expected_mask[i, :n, -1] = 1
    torch.testing.assert_close(batch.mask, expected_mask.view(3, L))
    torch.testing.assert_close(batch.step_rewards.view(3, 4, P)[..., -1], torch.tensor([[0, .1, .2, .3], [0, .1, 0, 0],
                                                                                         [0, .1, .2, 0]]))  # fmt: skip
    with torch.no_grad():
        logp, _, _ = policy.log_prob(batch)
    keep = batch.mask.view(3, 4, P)[..., -1].bool()
    torch.testing.assert_close(logp.view(3, 4, P)[keep], batch.old_logp.view(3, 4, P)[keep], atol=1e-5, rtol=1e-5)
    # the learner's view: one row per env step, P positions, the step's advantage on each
    batch.advantages = torch.arange(3 * L, dtype=torch.float32).view(3, L) * batch.mask
    view = policy.learner_view(batch)
    assert view.mask.shape == (9, P) and bool((view.mask == 1).all())
    logp_v, _, ent = policy.log_prob(view.select([8, 0, 4]), with_entropy=True)
    torch.testing.assert_close(logp_v.detach(), view.old_logp[[8, 0, 4]], atol=1e-5, rtol=1e-5)
    assert ent.shape == logp_v.shape
    step_adv = batch.advantages.view(3, 4, P)[..., -1][keep]  # [9]
    torch.testing.assert_close(view.advantages, step_adv.unsqueeze(-1).expand(9, P))
    torch.testing.assert_close(torch.tensor([s.logp for t in trajs for s in t.steps]), view.old_logp.sum(-1))


def test_gae_on_the_collated_layout_runs_over_env_steps():
    """The trainer's GAE on a collated chunk batch (P = 4 positions per step) equals GAE over env steps computed here
    (CleanRL's recursion written out; truncated rows bootstrap from V(final observation)), on every step's positions."""
    policy = _policy("flow_noise", "dim")
    critic = FLOW.critic(None, policy)
    rng = np.random.default_rng(0)
    lengths = [4, 2, 3]
    trajs = [_traj(policy, [rng.normal(size=3).astype(np.float32) for _ in range(n)], g) for g, n in enumerate(lengths)]
    trajs[1].steps[-1].truncated, trajs[1].steps[-1].terminated = False, True  # row 1 ends the MDP: no bootstrap
    batch = policy.collate(trajs)
    gamma, lam = 0.9, 0.8
    with torch.no_grad():
        values = critic.value(batch) * batch.mask  # as Trainer.make_batch
        final = critic.final_value(batch) * batch.bootstrap_mask
        inputs = [policy.model.encoder.inputs([s.observation for s in t.steps]) for t in trajs]
        v_steps = [critic.head(critic.encoder(x)).squeeze(-1) for x in inputs]  # V(s_t) of each row's steps
    adv, _ = estimate.ESTIMATE["gae"](estimate.AdvantageInputs(
        rewards=batch.rewards, step_rewards=batch.step_rewards, mask=batch.mask, group_ids=batch.group_ids,
        values=values, bootstrap=final, gamma=gamma, lam=lam))  # fmt: skip
    view_adv = policy.learner_view(Batch(**{**batch.__dict__, "advantages": adv})).advantages  # [9, 4]
    expected = []
    for i, t in enumerate(trajs):
        r = [s.reward for s in t.steps]
        v = v_steps[i].tolist() + [float(final[i])]  # V(s_0..s_n), then the bootstrap (0 if terminated)
        a, out = 0.0, []
        for k in reversed(range(len(r))):
            a = r[k] + gamma * v[k + 1] - v[k] + gamma * lam * a
            out.append(a)
        expected += out[::-1]
    torch.testing.assert_close(view_adv, torch.tensor(expected).unsqueeze(-1).expand(9, 4), atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------- behaviour cloning
def _toy_expert(obs: np.ndarray) -> np.ndarray:
    """Chunks [N, 2, 1] of the toy expert: (0.8 s0 - 0.5 s1, then its negative), in env units (bounds +-2)."""
    a = 0.8 * obs[:, 0] - 0.5 * obs[:, 1]
    return np.stack([a, -a], 1)[:, :, None].astype(np.float32)


def test_behaviour_cloning_loss_decreases_and_imitates_the_expert():
    cfg = load_config(None, ["policy.kind=flow", "policy.kwargs.chunk=2", "policy.kwargs.hidden=[64, 64]",
                             "policy.kwargs.feature_dim=16", "policy.kwargs.encoder_hidden=[32]"])  # fmt: skip
    torch.manual_seed(0)
    policy = FLOW.build(cfg, gym.spaces.Box(-1, 1, (2,)), gym.spaces.Box(-2.0, 2.0, (2, 1)))
    obs = np.random.default_rng(0).uniform(-1, 1, (512, 2)).astype(np.float32)
    losses = behaviour_clone(policy, list(obs), _toy_expert(obs), steps=600, batch_size=128, lr=3e-3)
    assert np.mean(losses[-50:]) < 0.5 * np.mean(losses[:50])
    test = np.random.default_rng(1).uniform(-1, 1, (64, 2)).astype(np.float32)
    acts = np.stack([a.env_action for a in policy.act(list(test), SamplingParams(temperature=0.0))])  # [64, 2, 1]
    err = np.abs(acts - _toy_expert(test)).mean()
    untrained = np.abs(_toy_expert(test)).mean()  # the error of always answering 0
    assert err < 0.25 * untrained, (err, untrained)


@pytest.mark.parametrize("kind", ["flow", "diffusion"])
def test_families_meet_the_contracts(kind):
    family = {"flow": FLOW, "diffusion": DIFFUSION}[kind]
    cfg = load_config(None, [f"policy.kind={kind}", "policy.kwargs.hidden=[8]"])
    policy = family.build(cfg, gym.spaces.Box(-1, 1, (3,)), gym.spaces.Box(-1, 1, (2,)))
    assert isinstance(policy, base.Policy) and isinstance(family.critic(cfg, policy), base.Critic)
    assert family.warmup is not None


@pytest.mark.parametrize("module", ["flow.estimators", "flow.expert", "diffusion.sampler", "encoders"])
def test_docstring_examples(module):
    result = doctest.testmod(
        importlib.import_module(f"mmrl.policies.{module}"), optionflags=doctest.NORMALIZE_WHITESPACE
    )
    assert result.attempted > 0 and result.failed == 0


# ------------------------------------------------------------------------------------------------------ config
@pytest.mark.parametrize(("override", "key"), [
    ("policy.kwargs.estimator=flow_ode", "policy.kwargs.estimator"),
    ("policy.kwargs.granularity=token", "policy.kwargs.granularity"),
    ("policy.kwargs.steps=0", "policy.kwargs.steps"),
    ("policy.kwargs.sigma_min=0.9", "policy.kwargs.sigma_max"),
    ("policy.kwargs.noise_level=0", "policy.kwargs.noise_level"),
    ("policy.kwargs.n_exec=3", "policy.kwargs.n_exec"),
    ("policy.kwargs.hiden=[8]", "policy.kwargs.hiden"),
    ("policy.kwargs.chunk=two", "policy.kwargs.chunk"),
])  # fmt: skip
def test_bad_options_are_one_line_config_errors(override, key):
    cfg = load_config(None, ["policy.kind=flow", override])
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as e:
        config(cfg)
    assert "\n" not in str(e.value)


def test_env_mismatch_is_a_config_error():
    c = config(load_config(None, ["policy.kind=flow", "policy.kwargs.chunk=1"]))
    with pytest.raises(ConfigError, match="chunk"):  # the env takes 2 actions per step, the chunk holds 1
        build_chunk_policy(
            c, gym.spaces.Box(-1, 1, (3,)), gym.spaces.Box(-1, 1, (2, 2)), lambda e: FlowNoise(e, 2), None
        )
    with pytest.raises(ConfigError, match="action space"):
        FLOW.build(load_config(None, ["policy.kind=flow"]), gym.spaces.Box(-1, 1, (3,)), gym.spaces.Discrete(3))


def test_demonstration_files(tmp_path):
    good = tmp_path / "dict.npz"
    rgb = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    np.savez(good, **{"obs.state": np.ones((5, 2), np.float32), "obs.rgb": rgb, "actions": np.zeros((5, 3, 1))})
    observations, chunks = load_demos(str(good), ["state", "rgb"])
    assert len(observations) == 5 and chunks.shape == (5, 3, 1)
    np.testing.assert_array_equal(observations[2]["rgb"], rgb[2])
    with pytest.raises(ConfigError, match="lacks obs.proprio"):
        load_demos(str(good), ["proprio"])
    with pytest.raises(ConfigError, match="no demonstration file"):
        load_demos(str(tmp_path / "missing.npz"), [""])
    for name, content in [("bad.npz", b"not a zip"), ("cut.npz", good.read_bytes()[:200])]:
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ConfigError, match="not a readable .npz"):
            load_demos(str(tmp_path / name), [""])
    np.savez(tmp_path / "objects.npz", obs=np.array([{"a": 1}], dtype=object), actions=np.zeros((1, 1)))
    with pytest.raises(ConfigError, match="not a readable .npz"):  # pickled objects are refused, never loaded
        load_demos(str(tmp_path / "objects.npz"), [""])


# ---------------------------------------------------------------------------------------- through the real Trainer
class ChunkReachEnv(gym.Env):
    """Observation ``[g, 0.25 step]`` with a target ``g ~ U(-1.5, 1.5)``; the action is a chunk ``[2, 1]`` (bounds
    +-2); reward ``-mean_i (a_i - g)^2``; success when every action is within 0.3 of ``g``. Four steps (time limit)."""

    observation_space = gym.spaces.Box(-2.0, 2.0, (2,), np.float32)
    action_space = gym.spaces.Box(-2.0, 2.0, (2, 1), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.g, self.t = float(self.np_random.uniform(-1.5, 1.5)), 0
        return self._obs(), {}

    def _obs(self):
        return np.array([self.g, 0.25 * self.t], np.float32)

    def step(self, action):
        err = np.asarray(action, np.float32).reshape(2) - self.g
        self.t += 1
        return self._obs(), -float(np.mean(err**2)), False, False, {"success": bool(np.abs(err).max() < 0.3)}


gym.register("MMRLChunkReach-v0", entry_point=ChunkReachEnv, max_episode_steps=4)


@pytest.fixture
def chunk_families():
    """Register both families as ``policy.kind`` (as base.py will), restoring the registry afterwards."""
    before = {k: base._FAMILIES.get(k) for k in ("flow", "diffusion")}
    base.register("flow", "mmrl.policies.flow.family:FAMILY")
    base.register("diffusion", "mmrl.policies.diffusion.family:FAMILY")
    yield
    for k, entry in before.items():
        if entry is None:
            base._FAMILIES.pop(k, None)
        else:
            base._FAMILIES[k] = entry


def _demos(path, bias: float = 0.0):
    """256 demonstrations of the expert that answers ``g + bias`` with both actions."""
    obs = np.stack([np.random.default_rng(0).uniform(-1.5, 1.5, 256), np.zeros(256)], 1).astype(np.float32)
    np.savez(path, obs=obs, actions=np.repeat(obs[:, :1, None] + bias, 2, axis=1))
    return path


def _reach_config(tmp_path, kind: str, kwargs: str, demos, *extra):
    return load_config(None, [
        "name=reach", f"policy.kind={kind}", f"policy.kwargs={kwargs}", "policy.kwargs.chunk=2",
        "policy.kwargs.hidden=[64, 64]", "policy.kwargs.feature_dim=16", "policy.kwargs.encoder_hidden=[32]",
        "policy.kwargs.critic_hidden=[32]", f"policy.kwargs.demos={demos}", "env.id=MMRLChunkReach-v0",
        "env.max_turns=null", "rewards={}", f"train.output_dir={tmp_path}", "train.steps=3", "train.eval_every=0",
        "train.save_every=0", "train.eval_size=8", "threads=1", "algo.advantage=gae", "algo.gamma=0.9",
        "algo.lam=0.9", "rollout.horizon=4", "rollout.batch_size=4", "algo.minibatch_size=8", "algo.epochs=2",
        "algo.lr=3e-4", "algo.norm_adv=true", "algo.critic_lr=1e-3", "warmup.steps=300", "warmup.batch_size=64",
        "warmup.lr=3e-3", *extra,
    ])  # fmt: skip


@pytest.mark.parametrize(("kind", "kwargs"), [
    ("flow", "{estimator: flow_noise, granularity: chunk, steps: 4}"),
    ("flow", "{estimator: flow_sde, granularity: action, steps: 4, noise_level: 0.3}"),
    ("diffusion", "{sampler: ddpm, granularity: step, steps: 6}"),
    ("diffusion", "{sampler: ddim, granularity: dim, steps: 6, ddim_steps: 3}"),
])  # fmt: skip
def test_bc_then_ppo_gae_through_the_trainer_and_resume(tmp_path, chunk_families, kind, kwargs):
    demos = _demos(tmp_path / "demos.npz")
    # per-position KL to the reference (the warmed-up policy) on the action-granularity run
    kl = ["algo.kl_coef=0.01"] if "granularity: action" in kwargs else []

    def cfg(*extra):
        return _reach_config(tmp_path, kind, kwargs, demos, *kl, *extra)

    torch.manual_seed(0)
    summary = Trainer(cfg(), show_progress=False).fit()
    # the cloned policy reaches the target far better than one answering 0 (mean g^2 over U(-1.5, 1.5) is 0.75)
    assert summary["return_before_rl"] > -0.5, summary
    assert np.isfinite(summary["return_after_rl"]) and summary["steps"] == 3
    rows = [json.loads(line) for line in (tmp_path / "reach" / "metrics.jsonl").read_text().splitlines()]
    assert "warmup/bc_loss" in rows[0]
    rl = [r for r in rows if "approx_kl" in r]
    assert len(rl) == 3 and all(np.isfinite(r["value_loss"]) and r["nonfinite_updates"] == 0 for r in rl)
    assert all("explained_variance" in r for r in rl)
    if kl:
        assert all(np.isfinite(r["kl_ref"]) and r["kl_ref"] >= 0 for r in rl)
    # the checkpoint went through the family's save and comes back through its build
    resumed = Trainer(cfg("train.resume=true", "train.steps=4"), show_progress=False)
    assert resumed.step == 3
    weights = load_file(str(tmp_path / "reach" / "checkpoints" / "step_000003" / "model.safetensors"))
    for k, v in resumed.policy.model.state_dict().items():
        torch.testing.assert_close(v, weights[k])
    resumed.close()


def test_outcome_advantages_over_whole_episodes_through_the_trainer(tmp_path, chunk_families):
    """RLOO over groups of whole episodes (no critic): each row's advantage reaches all of its steps' positions."""
    cfg = _reach_config(tmp_path, "flow", "{estimator: flow_noise, granularity: action, steps: 3}",
                        _demos(tmp_path / "demos.npz"), "algo.advantage=rloo", "rollout.horizon=0",
                        "algo.prompts_per_step=2", "algo.group_size=4", "rollout.batch_size=4", "algo.norm_adv=false",
                        "warmup.steps=0", "train.steps=2")  # fmt: skip
    torch.manual_seed(0)
    summary = Trainer(cfg, show_progress=False).fit()
    rows = [json.loads(line) for line in (tmp_path / "reach" / "metrics.jsonl").read_text().splitlines()]
    assert summary["steps"] == 2 and all(np.isfinite(r["loss"]) for r in rows if "loss" in r)


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "kwargs"), [
    ("flow", "{estimator: flow_noise, steps: 4}"),
    ("flow", "{estimator: flow_sde, steps: 4, granularity: action}"),
    ("diffusion", "{sampler: ddpm, steps: 6}"),
])  # fmt: skip
def test_ppo_improves_a_biased_bc_policy(tmp_path, chunk_families, kind, kwargs):
    """BC on an expert that overshoots every target by 0.6, then 20 PPO + GAE steps: the return climbs from about
    -1.9 (4 steps x 0.6^2 and the cloning error) toward 0 (measured: flow_noise -1.85 -> -0.05, flow_sde -1.85 ->
    -0.26, ddpm -1.97 -> -0.01)."""
    cfg = _reach_config(tmp_path, kind, kwargs, _demos(tmp_path / "demos.npz", bias=0.6), "train.steps=20",
                        "train.eval_size=16", "rollout.horizon=8", "rollout.batch_size=8", "algo.minibatch_size=16",
                        "algo.epochs=4", "algo.lr=1e-3")  # fmt: skip
    torch.manual_seed(0)
    summary = Trainer(cfg, show_progress=False).fit()
    assert summary["return_before_rl"] < -1.2
    assert summary["return_after_rl"] > summary["return_before_rl"] + 1.0, summary


def test_the_reevaluation_script_replays_the_bc_policy_and_reads_the_final_checkpoint(tmp_path, chunk_families):
    """scripts/bench/reeval_runs.py: the warm-up replayed from the run's config.json reproduces the run's own step-0
    figure, and the last checkpoint its final one (same policy, same eval seeds)."""
    spec = importlib.util.spec_from_file_location("reeval_runs", ROOT / "scripts/bench/reeval_runs.py")
    reeval = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reeval)
    demos = _demos(tmp_path / "demos.npz", bias=0.2)
    cfg = _reach_config(tmp_path, "flow", "{estimator: flow_sde, granularity: action, steps: 4}", demos)
    torch.manual_seed(0)
    Trainer(cfg, show_progress=False).fit()
    run = tmp_path / "reach"
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in logged if "eval/success" in r]
    assert [r["step"] for r in evals] == [0, 3]
    [same] = reeval.main([str(run), "--episodes", "8"])  # the run's own eval size: every figure reproduced
    assert same["start_success"] == evals[0]["eval/success"] and same["final_success"] == evals[1]["eval/success"]
    assert same["start_return"] == pytest.approx(evals[0]["eval/return"], abs=1e-9)
    assert same["final_return"] == pytest.approx(evals[1]["eval/return"], abs=1e-9)
    [more] = reeval.main([str(run), "--episodes", "20", "--out", str(tmp_path / "r.json")])
    assert more["episodes"] == 20 and more["replayed_first"] == more["logged_first"] == evals[0]["eval/success"]
    assert json.loads((tmp_path / "r.json").read_text()) == [more]
