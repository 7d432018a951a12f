"""MLP family: log-probs and entropies against torch.distributions computed here, act/collate, observation statistics
against Gymnasium's RunningMeanStd, save/load."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.wrappers.utils import RunningMeanStd
from torch.distributions import Categorical, Independent, Normal

from mmrl.policies.base import SamplingParams
from mmrl.policies.mlp import CategoricalMLPPolicy, GaussianMLPPolicy, mlp_policy_for
from mmrl.policies.mlp.policy import OBS_CLIP, MLPCritic
from mmrl.types import Batch, Step, Trajectory


def _batch(obs: torch.Tensor, actions: torch.Tensor) -> Batch:
    """Rows of L = 2 steps: ``obs [B, 2, D]``."""
    B, L = obs.shape[:2]
    return Batch(model_inputs={"obs": obs, "actions": actions}, mask=torch.ones(B, L), old_logp=torch.zeros(B, L),
                 advantages=torch.zeros(B), rewards=torch.zeros(B), group_ids=torch.zeros(B, dtype=torch.long))  # fmt: skip


def test_gaussian_log_prob_and_entropy_match_independent_normal():
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(obs_dim=5, act_dim=3, hidden=(16, 16), log_std_init=-0.3)
    std = torch.tensor([-1.0, 0.0, 0.5]).exp()
    with torch.no_grad():  # make the mean and per-dim std non-trivial
        policy.model.actor[-1].weight.normal_()
        policy.model.log_std.copy_(std.log())
    obs, actions = torch.randn(7, 2, 5), torch.randn(7, 2, 3) * 2
    logp, mask, entropy = policy.log_prob(_batch(obs, actions), with_entropy=True)
    assert logp.shape == mask.shape == entropy.shape == (7, 2) and bool((mask == 1).all())
    assert policy.log_prob(_batch(obs, actions))[2] is None  # no entropy unless asked

    mean = policy.model.actor(obs).detach()
    ref = Independent(Normal(mean, std), 1)
    torch.testing.assert_close(logp.detach(), ref.log_prob(actions))
    torch.testing.assert_close(entropy.detach(), ref.entropy())
    # closed form of one step: -sum((a - mu)^2 / (2 s^2) + log s + log(2 pi) / 2)
    hand = -(((actions[0, 1] - mean[0, 1]) ** 2) / (2 * std**2) + std.log() + 0.5 * np.log(2 * np.pi)).sum()
    torch.testing.assert_close(logp[0, 1].detach(), hand)

    logp.sum().backward()  # with grad into the actor mean and the log-std
    assert policy.model.log_std.grad is not None and policy.model.actor[0].weight.grad is not None


def test_gaussian_act_logp_is_the_density_of_the_unclipped_sample():
    torch.manual_seed(1)
    policy = GaussianMLPPolicy(3, 1, log_std_init=1.0, action_low=[-2.0], action_high=[2.0])
    obs = np.random.default_rng(0).normal(size=(256, 3)).astype(np.float32)
    actions = policy.act(list(obs), SamplingParams())
    sampled = torch.stack([a.record[1] for a in actions])  # [N, 1] what the learner trains on
    assert sampled.shape == (256, 1) and float(sampled.abs().max()) > 2.0  # std e: some samples leave the bounds ...
    env_a = np.stack([a.env_action for a in actions])
    assert env_a.min() >= -2.0 and env_a.max() <= 2.0  # ... and are clipped only on the way to the env
    mean = policy.model.actor(torch.as_tensor(obs)).detach()
    ref = Independent(Normal(mean, torch.full((1,), 1.0).exp()), 1).log_prob(sampled)
    torch.testing.assert_close(torch.tensor([a.logp for a in actions]), ref)
    greedy = policy.act(list(obs), SamplingParams(temperature=0.0))
    torch.testing.assert_close(torch.stack([a.record[1] for a in greedy]), mean)


def test_categorical_log_prob_entropy_and_critic():
    torch.manual_seed(0)
    policy = CategoricalMLPPolicy(obs_dim=4, n_actions=3, hidden=(8,))
    with torch.no_grad():
        policy.model.actor[-1].weight.normal_()
    obs, actions = torch.randn(6, 2, 4), torch.randint(0, 3, (6, 2))
    logp, mask, entropy = policy.log_prob(_batch(obs, actions), with_entropy=True)
    logits = policy.model.actor(obs).detach()
    ref = torch.log_softmax(logits, -1).gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(logp.detach(), ref)
    torch.testing.assert_close(entropy.detach(), Categorical(logits=logits).entropy())
    critic = MLPCritic(4, (8,))
    values = critic.value(_batch(obs, actions))
    assert values.shape == (6, 2) and values.requires_grad
    torch.testing.assert_close(values.detach(), critic.net(obs).squeeze(-1).detach())


def test_orthogonal_init_small_policy_head():
    policy = GaussianMLPPolicy(3, 2)
    head, hidden = policy.model.actor[-1].weight.detach(), policy.model.actor[0].weight.detach()
    assert float(head.norm()) < 0.05 and float(hidden.norm()) > 1.0  # gain 0.01 vs sqrt(2)
    linears = [m for m in policy.model.modules() if isinstance(m, torch.nn.Linear)]
    assert all(float(m.bias.detach().abs().max()) == 0.0 for m in linears)


def test_mlp_policy_for_spaces():
    pend, cart = gym.make("Pendulum-v1"), gym.make("CartPole-v1")
    p = mlp_policy_for(pend.observation_space, pend.action_space)
    assert isinstance(p, GaussianMLPPolicy) and np.allclose(p.action_high, [2.0])
    assert isinstance(mlp_policy_for(cart.observation_space, cart.action_space), CategoricalMLPPolicy)
    with pytest.raises(TypeError, match="no MLP policy"):
        mlp_policy_for(cart.observation_space, gym.spaces.MultiBinary(3))


def _trajectories(policy, rng, lengths, terminated):
    """Trajectories of raw observations acted on by ``policy``; each ends with a final observation."""
    trajs = []
    for n, term in zip(lengths, terminated):
        raw = rng.normal(3.0, 2.0, size=(n + 1, 3)).astype(np.float32)
        actions = policy.act(list(raw[:n]), SamplingParams())
        steps = [Step(raw[k], a.env_action, a.logp, a.record, reward=float(k)) for k, a in enumerate(actions)]
        steps[-1].terminated = term
        trajs.append(Trajectory(steps, final_observation=raw[n]))
    return trajs


def test_collate_rows_and_learner_view_and_the_observation_statistics():
    rng = np.random.default_rng(0)
    policy = GaussianMLPPolicy(3, 2, hidden=(8,), normalize_obs=True)
    warm = rng.normal(1.0, 4.0, size=(50, 3)).astype(np.float32)
    policy.model.obs_norm.update(torch.as_tensor(warm))
    reference = RunningMeanStd(shape=(3,))  # Gymnasium's own running statistics as the reference
    reference.update(warm.astype(np.float64))
    trajs = _trajectories(policy, rng, [4, 2, 3], [True, False, False])
    batch = policy.collate(trajs)
    assert batch.mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]]
    assert batch.bootstrap_mask.tolist() == [0.0, 1.0, 1.0]  # only the first row terminated
    assert batch.step_rewards[0].tolist() == [0.0, 1.0, 2.0, 3.0] and batch.rewards.tolist() == [6.0, 1.0, 3.0]
    # the final observations were normalised with the statistics the actions were sampled with ...
    expect = np.clip((trajs[1].final_observation - reference.mean) / np.sqrt(reference.var + 1e-8), -OBS_CLIP, OBS_CLIP)
    np.testing.assert_allclose(batch.model_inputs["final_obs"][1].numpy(), expect, rtol=1e-5, atol=1e-5)
    # ... and the statistics then absorbed the batch's raw observations, as Gymnasium's would
    reference.update(np.stack([s.observation for t in trajs for s in t.steps]).astype(np.float64))
    np.testing.assert_allclose(policy.model.obs_norm.mean.numpy(), reference.mean, rtol=1e-6)
    np.testing.assert_allclose(policy.model.obs_norm.var.numpy(), reference.var, rtol=1e-6)
    # the behaviour log-probs are recomputed exactly from the records
    logp = policy.log_prob(batch)[0].detach()
    torch.testing.assert_close(logp * batch.mask, batch.old_logp, atol=1e-5, rtol=1e-5)
    view = policy.learner_view(batch)  # one row per env step, in row-major order
    assert len(view) == 9 and view.mask.shape == (9, 1)
    assert view.step_rewards.squeeze(-1).tolist() == [0.0, 1.0, 2.0, 3.0, 0.0, 1.0, 0.0, 1.0, 2.0]
    torch.testing.assert_close(policy.log_prob(view)[0].detach().squeeze(-1), logp[batch.mask.bool()])


def test_save_and_load_round_trip(tmp_path):
    policy = GaussianMLPPolicy(3, 1, hidden=(8,), normalize_obs=True)
    policy.model.obs_norm.update(torch.randn(20, 3) * 5)
    policy.save(tmp_path / "p")
    again = GaussianMLPPolicy(3, 1, hidden=(8,), normalize_obs=True)
    again.load(tmp_path / "p")
    for a, b in zip(policy.model.state_dict().values(), again.model.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_docstring_examples():
    import doctest

    from mmrl.policies.mlp import policy as module

    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
