"""MLP actor-critic policies: log-probs and entropies against torch.distributions computed here, the learner contract."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch.distributions import Categorical, Independent, Normal

from mmrl.policies.mlp import CategoricalMLPPolicy, GaussianMLPPolicy, mlp_policy_for
from mmrl.types import Batch


def _batch(obs: torch.Tensor, actions: torch.Tensor) -> Batch:
    B = obs.shape[0]
    return Batch(model_inputs={"obs": obs, "actions": actions}, mask=torch.ones(B, 1), old_logp=torch.zeros(B, 1),
                 advantages=torch.zeros(B), rewards=torch.zeros(B), group_ids=torch.zeros(B, dtype=torch.long))  # fmt: skip


def test_gaussian_log_prob_and_entropy_match_independent_normal():
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(obs_dim=5, act_dim=3, hidden=(16, 16), log_std_init=-0.3)
    with torch.no_grad():  # make the mean and per-dim std non-trivial
        policy.model.actor[-1].weight.normal_()
        policy.model.log_std.copy_(torch.tensor([-1.0, 0.0, 0.5]))
    obs, actions = torch.randn(7, 5), torch.randn(7, 3) * 2
    logp, mask, entropy = policy.log_prob(_batch(obs, actions), with_entropy=True)
    assert logp.shape == mask.shape == entropy.shape == (7, 1) and bool((mask == 1).all())

    mean = policy.model.actor(obs).detach()
    ref = Independent(Normal(mean, torch.tensor([-1.0, 0.0, 0.5]).exp()), 1)
    torch.testing.assert_close(logp.squeeze(-1).detach(), ref.log_prob(actions))
    torch.testing.assert_close(entropy.squeeze(-1).detach(), ref.entropy())
    # closed form of one row: -sum((a - mu)^2 / (2 s^2) + log s + log(2 pi) / 2)
    s = torch.tensor([-1.0, 0.0, 0.5]).exp()
    hand = -(((actions[0] - mean[0]) ** 2) / (2 * s**2) + s.log() + 0.5 * np.log(2 * np.pi)).sum()
    torch.testing.assert_close(logp[0, 0].detach(), hand)

    logp.sum().backward()  # with grad into the actor mean and the log-std
    assert policy.model.log_std.grad is not None and policy.model.actor[0].weight.grad is not None


def test_gaussian_act_logp_is_the_density_of_the_unclipped_sample():
    torch.manual_seed(1)
    policy = GaussianMLPPolicy(3, 1, log_std_init=1.0, action_low=[-2.0], action_high=[2.0])
    obs = torch.randn(256, 3)
    actions, logp = policy.act(obs)
    assert actions.shape == (256, 1) and logp.shape == (256,)
    assert float(actions.abs().max()) > 2.0  # std e: some samples leave the bounds ...
    env_a = policy.env_action(actions)
    assert env_a.min() >= -2.0 and env_a.max() <= 2.0  # ... and are clipped only on the way to the env
    recomputed, _ = policy.log_prob(_batch(obs, actions))
    torch.testing.assert_close(recomputed.squeeze(-1).detach(), logp)
    mean_actions, _ = policy.act(obs, deterministic=True)
    torch.testing.assert_close(mean_actions, policy.model.actor(obs).detach())


def test_categorical_log_prob_entropy_and_value():
    torch.manual_seed(0)
    policy = CategoricalMLPPolicy(obs_dim=4, n_actions=3, hidden=(8,))
    with torch.no_grad():
        policy.model.actor[-1].weight.normal_()
    obs, actions = torch.randn(6, 4), torch.randint(0, 3, (6,))
    logp, mask, entropy = policy.log_prob(_batch(obs, actions), with_entropy=True)
    logits = policy.model.actor(obs).detach()
    torch.testing.assert_close(logp.squeeze(-1).detach(), torch.log_softmax(logits, -1)[torch.arange(6), actions])
    torch.testing.assert_close(entropy.squeeze(-1).detach(), Categorical(logits=logits).entropy())
    values = policy.value(_batch(obs, actions))
    assert values.shape == (6, 1) and values.requires_grad
    torch.testing.assert_close(policy.predict_values(obs), values.squeeze(-1).detach())


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


def test_docstring_examples():
    import doctest

    from mmrl.policies.mlp import policy as gaussian
    from mmrl.rollout import gym_loop

    for module in (gaussian, gym_loop):
        result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
        assert result.attempted > 0 and result.failed == 0, module.__name__
