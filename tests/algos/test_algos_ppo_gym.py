"""PPO with a critic: value loss and explained variance by hand, the learner's critic and adaptive-KL paths, the
collector's terminated/truncated bootstrap rule against an independent computation, and a short CartPole run that
provably learns."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from mmrl.algos import losses
from mmrl.algos.advantages import masked_whiten
from mmrl.algos.kl import AdaptiveKLController
from mmrl.algos.learner import Learner
from mmrl.config import AlgoConfig
from mmrl.policies.mlp import CategoricalMLPPolicy, GaussianMLPPolicy, mlp_policy_for
from mmrl.rollout.gym_loop import GymCollector, make_vec_env
from mmrl.types import Batch


@pytest.fixture(autouse=True)
def _one_thread():
    """64-unit MLPs: one torch thread is fastest, and two threads on a busy 2-core machine are 10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------------------- value loss
def test_value_loss_clipped_matches_hand_computation():
    V = torch.tensor([[1.5], [0.0], [2.0], [-1.0]], requires_grad=True)  # new values
    V_old = torch.tensor([[1.0], [0.0], [1.0], [0.0]])
    R = torch.tensor([[3.0], [1.0], [0.0], [-2.0]])
    c = 0.2
    # row by row: V_clip = V_old + clip(V - V_old, -c, c); loss = max((V - R)^2, (V_clip - R)^2) / 2
    # 0: V_clip 1.2: max(2.25, 3.24) = 3.24   1: V_clip 0.0: max(1, 1) = 1
    # 2: V_clip 1.2: max(4, 1.44) = 4         3: V_clip -0.2: max(1, 3.24) = 3.24
    expected = 0.5 * (3.24 + 1.0 + 4.0 + 3.24) / 4
    loss, stats = losses.value_loss(V, R, torch.ones(4, 1), V_old, clip=c)
    assert loss.item() == pytest.approx(expected)
    assert stats["value_clipfrac"] == pytest.approx(0.5)  # rows 0 and 3 take the clipped branch
    loss.backward()
    # d/dV of the unclipped branch (V - R) / 4 on rows 1, 2; the clipped branch is constant in V beyond the clip
    torch.testing.assert_close(V.grad, torch.tensor([[0.0], [-1.0 / 4], [2.0 / 4], [0.0]]))


def test_value_loss_unclipped_masked_and_broadcast():
    V = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    R = torch.tensor([0.0, 1.0])  # [B] broadcast over L
    mask = torch.tensor([[1, 0], [1, 1]])
    loss, stats = losses.value_loss(V, R, mask)
    assert loss.item() == pytest.approx(0.5 * (1.0 + 4.0 + 9.0) / 3) and stats == {}
    with pytest.raises(ValueError, match="old_values"):
        losses.value_loss(V, R, mask, clip=0.2)


def test_explained_variance_matches_numpy():
    rng = np.random.default_rng(0)
    R = rng.normal(size=200)
    V = R + rng.normal(scale=0.5, size=200)
    expected = 1 - np.var(R - V) / np.var(R)
    assert losses.explained_variance(torch.tensor(V), torch.tensor(R)) == pytest.approx(expected)
    mask = torch.tensor(rng.random(200) < 0.5)
    m = mask.numpy()
    ev = losses.explained_variance(torch.tensor(V), torch.tensor(R), mask)
    assert ev == pytest.approx(1 - np.var(R[m] - V[m]) / np.var(R[m]))
    assert np.isnan(losses.explained_variance(torch.zeros(3), torch.ones(3)))


# ------------------------------------------------------------------------------------------------------- learner
def _gaussian_batch(policy: GaussianMLPPolicy, B: int = 16, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(B, 3, generator=g)
    actions, logp = policy.act(obs)
    values = policy.predict_values(obs)
    return Batch(model_inputs={"obs": obs, "actions": actions}, mask=torch.ones(B, 1), old_logp=logp.unsqueeze(-1),
                 advantages=torch.randn(B, generator=g), rewards=torch.zeros(B), group_ids=torch.arange(B),
                 returns=(values + 2 * obs[:, 0]).unsqueeze(-1), old_values=values.unsqueeze(-1))  # fmt: skip


def test_batch_select_carries_critic_fields():
    policy = GaussianMLPPolicy(3, 1)
    batch = _gaussian_batch(policy)
    sub = batch.select([3, 1])
    torch.testing.assert_close(sub.returns, batch.returns[[3, 1]])
    torch.testing.assert_close(sub.old_values, batch.old_values[[3, 1]])
    assert Batch(model_inputs={}, mask=batch.mask, old_logp=batch.old_logp, advantages=batch.advantages,
                 rewards=batch.rewards, group_ids=batch.group_ids).select([0]).returns is None  # fmt: skip


def test_learner_minibatch_loss_adds_the_value_term():
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(3, 1)
    batch = _gaussian_batch(policy)
    cfg = AlgoConfig(clip_low=0.2, clip_high=0.2, vf_coef=0.7, vf_clip=0.2, norm_adv=True, entropy_coef=0.01)
    loss, stats = Learner(policy, cfg).minibatch_loss(batch)
    # the same objective assembled by hand from the pure functions
    logp, mask, ent = policy.log_prob(batch, with_entropy=True)
    pg, _ = losses.ppo_clip(logp, batch.old_logp, masked_whiten(batch.advantages, torch.ones(16, dtype=torch.bool)),
                            mask, clip_low=0.2, clip_high=0.2)  # fmt: skip
    vl, _ = losses.value_loss(policy.value(batch), batch.returns, mask, batch.old_values, clip=0.2)
    expected = pg + 0.7 * vl - 0.01 * ent.mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert stats["value_loss"] == pytest.approx(vl.item(), rel=1e-6)


def test_learner_update_logs_critic_stats_and_fits_the_critic():
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(3, 1)
    batch = _gaussian_batch(policy, B=64)
    learner = Learner(policy, AlgoConfig(epochs=30, minibatch_size=16, lr=3e-3, vf_coef=1.0))
    first = learner.update(batch, generator=torch.Generator().manual_seed(0))
    assert {"value_loss", "explained_variance", "grad_norm", "approx_kl", "clipfrac", "entropy"} <= set(first)
    ev_before = losses.explained_variance(batch.old_values, batch.returns)
    assert first["explained_variance"] == pytest.approx(ev_before)
    with torch.no_grad():
        after = losses.explained_variance(policy.value(batch), batch.returns)
    assert after > 0.5 > ev_before  # the critic regressed onto the returns


def test_learner_refuses_returns_without_a_critic():
    class NoCritic:
        model = torch.nn.Linear(1, 1)

    batch = _gaussian_batch(GaussianMLPPolicy(3, 1))
    with pytest.raises(ValueError, match="no value"):
        Learner(NoCritic(), AlgoConfig()).update(batch)


def test_learner_adaptive_kl_coefficient_follows_the_controller():
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(3, 1)
    batch = _gaussian_batch(policy, B=8)
    batch.returns = batch.old_values = None
    batch.ref_logp = batch.old_logp - 0.5  # a reference far from the policy: KL above target
    cfg = AlgoConfig(kl_coef=0.1, kl_target=0.01, kl_horizon=100, epochs=1, minibatch_size=8, lr=0.0)
    learner = Learner(policy, cfg)
    stats = learner.update(batch)
    ref = AdaptiveKLController(0.1, 0.01, 100)
    ref.update(stats["kl_ref"], n_steps=8)
    assert stats["kl_coef"] == pytest.approx(ref.value) and ref.value > 0.1
    fixed = Learner(policy, AlgoConfig(kl_coef=0.1, epochs=1, minibatch_size=8, lr=0.0)).update(batch)
    assert fixed["kl_coef"] == 0.1


# --------------------------------------------------------------------------------------------- bootstrap rule
class _TinyEnv(gym.Env):
    """Deterministic episodes of ``horizon`` steps ending in termination or truncation; obs = 10 * episode + t."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, horizon: int, terminate: bool) -> None:
        self.horizon, self.terminate, self.episode, self.t = horizon, terminate, -1, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.episode, self.t = self.episode + 1, 0
        return np.array([10.0 * self.episode], np.float32), {}

    def step(self, action):
        self.t += 1
        end = self.t == self.horizon
        reward = float(self.t) + 0.5 * self.episode
        return (
            np.array([10.0 * self.episode + self.t], np.float32),
            reward,
            end and self.terminate,
            end and not self.terminate,
            {},
        )


class _FixedValues:
    """A stand-in policy whose critic is ``V(s) = 0.3 s + 1`` and whose actions are all 0."""

    @staticmethod
    def v(obs: float) -> float:
        return 0.3 * obs + 1.0

    def act(self, obs):
        return torch.zeros(obs.shape[0], dtype=torch.long), torch.zeros(obs.shape[0])

    def predict_values(self, obs):
        return 0.3 * obs[:, 0] + 1.0

    def env_action(self, actions):
        return actions.numpy()


def test_collector_bootstraps_truncation_not_termination():
    """4 steps x 2 envs, episodes of 2 steps: env 0 truncates, env 1 terminates. Rows per env: steps 1-2 of episode 0,
    the NEXT_STEP reset row (dropped), step 1 of episode 1 (cut by the rollout end: bootstrap from V(next obs))."""
    gamma, lam = 0.9, 0.8
    envs = gym.vector.SyncVectorEnv([lambda: _TinyEnv(2, terminate=False), lambda: _TinyEnv(2, terminate=True)])
    batch, _ = GymCollector(envs, _FixedValues(), num_steps=4, gamma=gamma, lam=lam, seed=0).collect()
    v = _FixedValues.v

    def reference(states: list[float], rewards: list[float], last_value: float) -> list[float]:
        """A_t = sum_l (gamma lam)^l delta_{t+l} within one segment; the segment's last delta bootstraps last_value."""
        nxt = states[1:] + [None]
        deltas = [
            r + gamma * (v(s2) if s2 is not None else last_value) - v(s) for s, r, s2 in zip(states, rewards, nxt)
        ]
        return [sum((gamma * lam) ** k * d for k, d in enumerate(deltas[t:])) for t in range(len(deltas))]

    # env 0: episode 0 states 0, 1 (rewards 1, 2) truncated with final obs 2 -> bootstrap V(2); episode 1 state 10
    # (reward 1.5) cut by the rollout end -> bootstrap V(11), the obs the collector holds
    env0 = reference([0.0, 1.0], [1.0, 2.0], v(2.0)) + reference([10.0], [1.5], v(11.0))
    # env 1: terminated -> V(final) = 0; episode 1 cut by the rollout end as above
    env1 = reference([0.0, 1.0], [1.0, 2.0], 0.0) + reference([10.0], [1.5], v(11.0))
    # batch rows are time-major over valid transitions: t0 (env0, env1), t1 (env0, env1), t3 (env0, env1)
    expected = torch.tensor([env0[0], env1[0], env0[1], env1[1], env0[2], env1[2]])
    assert len(batch) == 6
    torch.testing.assert_close(batch.model_inputs["obs"][:, 0], torch.tensor([0.0, 0.0, 1.0, 1.0, 10.0, 10.0]))
    torch.testing.assert_close(batch.advantages, expected)
    torch.testing.assert_close(batch.returns.squeeze(-1), expected + batch.old_values.squeeze(-1))
    torch.testing.assert_close(batch.old_values.squeeze(-1), torch.tensor([1.0, 1.0, 1.3, 1.3, 4.0, 4.0]))


# ------------------------------------------------------------------------------------------------------ learning
def test_ppo_learns_cartpole_quickly():
    """~20k env steps of PPO-GAE with the shared learner lift CartPole's return far above random (~22)."""
    torch.manual_seed(0)
    envs = make_vec_env("CartPole-v1", num_envs=4, gamma=0.99, norm_obs=False, norm_reward=True)
    policy = mlp_policy_for(envs.single_observation_space, envs.single_action_space)
    assert isinstance(policy, CategoricalMLPPolicy)
    cfg = AlgoConfig(epochs=4, minibatch_size=128, lr=2.5e-3, clip_low=0.2, clip_high=0.2, vf_coef=0.5,
                     max_grad_norm=0.5, norm_adv=True, entropy_coef=0.0)  # fmt: skip
    learner = Learner(policy, cfg)
    collector = GymCollector(envs, policy, num_steps=128, gamma=0.99, lam=0.95, seed=0)
    gen = torch.Generator().manual_seed(0)
    returns: list[float] = []
    for _ in range(40):
        batch, stats = collector.collect()
        learner.update(batch, generator=gen)
        returns += stats["episode_returns"]
    envs.close()
    assert np.mean(returns[:10]) < 40  # it starts random ...
    assert np.mean(returns[-10:]) > 120  # ... and learns: random play scores ~22
