"""PPO with a critic: value loss and explained variance by hand, the learner's critic and adaptive-KL paths, the
collector + trainer's terminated/truncated bootstrap rule against an independent computation, and short CartPole and
Pendulum runs through the one Trainer that provably learn."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from mmrl.algos import losses
from mmrl.algos.advantages import masked_whiten
from mmrl.algos.kl import AdaptiveKLController
from mmrl.algos.learner import Learner
from mmrl.config import AlgoConfig, load_config
from mmrl.policies.base import Action, SamplingParams
from mmrl.policies.mlp import GaussianMLPPolicy
from mmrl.policies.mlp.policy import MLPCritic
from mmrl.rollout.collector import Collector
from mmrl.rollout.pool import EnvPool
from mmrl.trainer.logging import read_metrics
from mmrl.trainer.loop import Trainer
from mmrl.types import Batch

ROOT = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models on a busy 2-core machine: one torch thread is fastest


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
def _gaussian_batch(policy: GaussianMLPPolicy, critic: MLPCritic, B: int = 16, seed: int = 0) -> Batch:
    """``B`` rows of one step each (``L = 1``), returns = V + 2 * obs_0."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(B, 3, generator=g)
    acts = policy.act(list(obs.numpy()), SamplingParams())
    batch = Batch(model_inputs={"obs": obs.unsqueeze(1), "actions": torch.stack([a.record[1] for a in acts]).unsqueeze(1)},
                  mask=torch.ones(B, 1), old_logp=torch.tensor([[a.logp] for a in acts]),
                  advantages=torch.randn(B, generator=g), rewards=torch.zeros(B), group_ids=torch.arange(B))  # fmt: skip
    with torch.no_grad():
        values = critic.value(batch)  # [B, 1]
    batch.returns, batch.old_values = values + 2 * obs[:, :1], values
    return batch


def test_batch_select_carries_critic_fields():
    batch = _gaussian_batch(GaussianMLPPolicy(3, 1), MLPCritic(3))
    sub = batch.select([3, 1])
    torch.testing.assert_close(sub.returns, batch.returns[[3, 1]])
    torch.testing.assert_close(sub.old_values, batch.old_values[[3, 1]])
    assert Batch(model_inputs={}, mask=batch.mask, old_logp=batch.old_logp, advantages=batch.advantages,
                 rewards=batch.rewards, group_ids=batch.group_ids).select([0]).returns is None  # fmt: skip


def test_learner_minibatch_loss_adds_the_value_term():
    torch.manual_seed(0)
    policy, critic = GaussianMLPPolicy(3, 1), MLPCritic(3)
    batch = _gaussian_batch(policy, critic)
    cfg = AlgoConfig(clip_low=0.2, clip_high=0.2, vf_coef=0.7, vf_clip=0.2, norm_adv=True, entropy_coef=0.01)
    loss, stats = Learner(policy, cfg, critic=critic).minibatch_loss(batch)
    # the same objective assembled by hand from the pure functions
    logp, mask, ent = policy.log_prob(batch, with_entropy=True)
    pg, _ = losses.ppo_clip(logp, batch.old_logp, masked_whiten(batch.advantages, torch.ones(16, dtype=torch.bool)),
                            mask, clip_low=0.2, clip_high=0.2)  # fmt: skip
    vl, _ = losses.value_loss(critic.value(batch), batch.returns, mask, batch.old_values, clip=0.2)
    expected = pg + 0.7 * vl - 0.01 * ent.mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert stats["value_loss"] == pytest.approx(vl.item(), rel=1e-6)


def test_learner_update_logs_critic_stats_and_fits_the_critic():
    torch.manual_seed(0)
    policy, critic = GaussianMLPPolicy(3, 1), MLPCritic(3)
    batch = _gaussian_batch(policy, critic, B=64)
    learner = Learner(policy, AlgoConfig(epochs=30, minibatch_size=16, lr=3e-3, vf_coef=1.0), critic=critic)
    assert len(learner.optimizer.param_groups) == 2  # the critic is its own group (algo.critic_lr)
    first = learner.update(batch, generator=torch.Generator().manual_seed(0))
    assert {"value_loss", "explained_variance", "grad_norm", "critic_grad_norm", "approx_kl", "clipfrac",
            "entropy"} <= set(first)  # fmt: skip
    ev_before = losses.explained_variance(batch.old_values, batch.returns)
    assert first["explained_variance"] == pytest.approx(ev_before)
    with torch.no_grad():
        after = losses.explained_variance(critic.value(batch), batch.returns)
    assert after > 0.5 > ev_before  # the critic regressed onto the returns


def test_learner_refuses_returns_without_a_critic():
    batch = _gaussian_batch(GaussianMLPPolicy(3, 1), MLPCritic(3))
    with pytest.raises(ValueError, match="no critic"):
        Learner(GaussianMLPPolicy(3, 1), AlgoConfig()).update(batch)


def test_learner_adaptive_kl_coefficient_follows_the_controller():
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(3, 1)
    batch = _gaussian_batch(policy, MLPCritic(3), B=8)
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


class _ZeroPolicy(GaussianMLPPolicy):
    """The MLP family's collate with a constant action 0 (the env ignores actions)."""

    def act(self, observations, params, states=None):
        return [Action(0, 0.0, (torch.as_tensor(np.asarray(o, np.float32)), torch.zeros(1))) for o in observations]


class _FixedCritic(MLPCritic):
    """``V(s) = 0.3 s + 1``."""

    @staticmethod
    def v(obs: float) -> float:
        return 0.3 * obs + 1.0

    def value(self, batch):
        return 0.3 * batch.model_inputs["obs"][..., 0] + 1.0

    def final_value(self, batch):
        return 0.3 * batch.model_inputs["final_obs"][:, 0] + 1.0


def test_trainer_bootstraps_truncation_and_cuts_not_termination():
    """3 steps x 2 envs, episodes of 2 steps: env 0 truncates, env 1 terminates; the step after each episode starts a
    new one that the rollout's end cuts (bootstrap from V(next obs)). No autoreset dummy row enters the batch."""
    gamma, lam = 0.9, 0.8
    fns = [lambda: _TinyEnv(2, terminate=False), lambda: _TinyEnv(2, terminate=True)]
    pool = EnvPool(lambda: fns.pop(0)(), num_envs=2)
    trajs = Collector(_ZeroPolicy(1, 1), pool).fragments(3, SamplingParams(), seed=0)
    cfg = load_config(ROOT / "configs/cartpole_ppo.yaml", [f"algo.gamma={gamma}", f"algo.lam={lam}"])
    trainer = Trainer.__new__(Trainer)  # the advantage stage alone, on a stand-in critic
    trainer.cfg, trainer.critic, trainer.ref_policy = cfg, _FixedCritic(1), None
    trainer.family = type("F", (), {"token_weights": None})
    trainer.policy, trainer.step = _ZeroPolicy(1, 1), 0
    batch = trainer.make_batch(trajs)
    trainer.advantage(batch)
    v = _FixedCritic.v

    def reference(states: list[float], rewards: list[float], last_value: float) -> list[float]:
        """A_t = sum_l (gamma lam)^l delta_{t+l} within one segment; the segment's last delta bootstraps last_value."""
        nxt = states[1:] + [None]
        deltas = [
            r + gamma * (v(s2) if s2 is not None else last_value) - v(s) for s, r, s2 in zip(states, rewards, nxt)
        ]
        return [sum((gamma * lam) ** k * d for k, d in enumerate(deltas[t:])) for t in range(len(deltas))]

    # rows in the order trajectories end: env 0's episode 0 (states 0, 1, rewards 1, 2, truncated -> V(2)), env 1's
    # episode 0 (terminated -> 0), then the open fragments: state 10, reward 1.5, cut -> V(11) (the obs held now)
    expected = [reference([0.0, 1.0], [1.0, 2.0], v(2.0)), reference([0.0, 1.0], [1.0, 2.0], 0.0),
                reference([10.0], [1.5], v(11.0)), reference([10.0], [1.5], v(11.0))]  # fmt: skip
    assert [len(t) for t in trajs] == [2, 2, 1, 1] and [t.env_index for t in trajs] == [0, 1, 0, 1]
    assert batch.bootstrap_mask.tolist() == [1.0, 0.0, 1.0, 1.0]
    for row, exp in enumerate(expected):
        torch.testing.assert_close(batch.advantages[row, : len(exp)], torch.tensor(exp))
        torch.testing.assert_close(batch.returns[row, : len(exp)], torch.tensor(exp) + batch.old_values[row, : len(exp)])
    pool.close()


# ------------------------------------------------------------------------------------------------------ learning
@pytest.mark.parametrize("seed", [0, 1])
def test_ppo_learns_cartpole_through_the_trainer(tmp_path, seed):
    """24 rollouts (12k env steps) of configs/cartpole_ppo.yaml through the one Trainer lift CartPole's return far above
    random play (~22)."""
    cfg = load_config(ROOT / "configs/cartpole_ppo.yaml", [f"seed={seed}", f"train.output_dir={tmp_path}",
                                                            "train.steps=24", "train.eval_every=0", "train.save_every=0"])  # fmt: skip
    summary = Trainer(cfg, show_progress=False).fit()
    rows = [r for r in read_metrics(cfg.run_dir / "metrics.jsonl") if "episode/return_mean" in r]
    assert rows[0]["episode/return_mean"] < 40  # it starts random ...
    assert rows[-1]["episode/return_recent"] > 120 and summary["return_after_rl"] > 120  # ... and learns
    assert summary["env_steps"] == 24 * 4 * 128


# ------------------------------------------------------------------------------------------- top-entropy selection
class _LogitsPolicy:
    """A free ``[B, L, V]`` logits table: per-position entropies that differ, log-probs with grad."""

    def __init__(self, logits: torch.Tensor, actions: torch.Tensor) -> None:
        self.logits = torch.nn.Parameter(logits)
        self.actions = actions

    def parameters(self):
        return [self.logits]

    def train(self, mode=True):
        return self

    def log_prob(self, batch, with_entropy=False):
        logits = self.logits[batch.model_inputs["rows"]]
        dist = torch.distributions.Categorical(logits=logits)
        return dist.log_prob(self.actions[batch.model_inputs["rows"]]), batch.mask, dist.entropy() if with_entropy else None


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean"])
def test_top_entropy_selection_weights_tokens_and_keeps_the_normaliser(agg):
    """``algo.top_entropy_q``: the loss of the selected tokens, divided by what the loss divides by without the
    selection (every masked token), as TRL multiplies its per-token loss by the entropy mask. Ratio 1 (on-policy), so
    each token's PPO loss is ``-A``."""
    g = torch.Generator().manual_seed(0)
    B, L, V = 3, 5, 4
    logits = torch.randn(B, L, V, generator=g) * torch.linspace(0.1, 3.0, L)[:, None]  # entropy varies along a row
    actions = torch.randint(0, V, (B, L), generator=g)
    policy = _LogitsPolicy(logits, actions)
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.float32)
    adv = torch.tensor([1.0, -2.0, 0.5])
    with torch.no_grad():
        old = policy.log_prob(Batch({"rows": torch.arange(B)}, mask, mask, adv, adv, torch.arange(B)))[0]
    batch = Batch({"rows": torch.arange(B)}, mask, old, adv, torch.zeros(B), torch.arange(B))
    cfg = AlgoConfig(top_entropy_q=0.4, agg=agg)
    loss, _ = Learner(policy, cfg).minibatch_loss(batch)
    # by hand, in numpy: entropies, the 0.6 quantile of the 13 masked ones, the selection, the aggregation
    p = torch.softmax(logits, -1).numpy().astype(np.float64)
    ent = -(p * np.log(p)).sum(-1)
    m = mask.numpy().astype(bool)
    top = (ent >= np.quantile(ent[m], 0.6)) & m
    assert 0 < top.sum() < m.sum()
    per_token = np.where(top, -adv.numpy()[:, None], 0.0)
    if agg == "token-mean":
        expected = per_token.sum() / m.sum()  # the normaliser counts every masked token, selected or not
    else:
        expected = np.mean(per_token.sum(1) / m.sum(1))
    assert loss.item() == pytest.approx(expected, rel=1e-5)
