"""VLM trainer wiring of token-level estimators (REINFORCE++), in-reward KL, PPO with a value model, and VPPO weights.

Each test runs one real train step of the tiny VLM (generation included), captures the batch handed to the learner and
recomputes what it should hold with plain numpy written here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mmrl.config import load_config
from mmrl.models import load_policy
from mmrl.policies.vlm import VLMCritic
from mmrl.trainer.loop import Trainer

ROOT = Path(__file__).resolve().parents[2]


def config(model_path, out_dir, *extra):
    return load_config(ROOT / "configs/quickstart.yaml", [
        f"model.path={model_path}", "model.build_tiny=false", f"train.output_dir={out_dir}", "train.steps=1",
        "warmup.steps=0", "algo.prompts_per_step=3", "algo.group_size=4", "algo.minibatch_size=6",
        "rollout.max_new_tokens=6", "threads=1", *extra,
    ])  # fmt: skip


def captured_step(trainer, monkeypatch, fake_rewards=True):
    """Run one train step; returns the batch given to the learner. Rewards are replaced by distinct values (the
    untrained model is almost never right, which would leave every advantage 0)."""
    seen = {}
    real_update = trainer.update
    monkeypatch.setattr(trainer, "update", lambda batch: seen.setdefault("batch", batch) and real_update(batch))
    if fake_rewards:
        real_score = trainer.score

        def score(trajs):
            stats = real_score(trajs)
            for t, r in zip(trajs, (torch.linspace(0.0, 1.0, len(trajs)) ** 2).tolist()):
                t.steps[-1].reward = r
            return stats

        monkeypatch.setattr(trainer, "score", score)
    stats = trainer.train_step()
    return seen["batch"], stats


def perturb(model, scale=0.05):
    """Move the policy away from the reference so that the KL is not zero."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))


def whiten(x, m):
    v = x[m]
    return np.where(m, (x - v.mean()) / np.sqrt(v.var(ddof=1) + 1e-8), 0.0)


def test_reinforce_pp_with_kl_in_reward(tiny_model_path, tmp_path, monkeypatch):
    trainer = Trainer(config(tiny_model_path, tmp_path, "algo.advantage=reinforce_pp", "algo.kl_coef=0.1",
                             "algo.kl_in_reward=true", "algo.kl_kind=k1"), show_progress=False)  # fmt: skip
    perturb(trainer.policy.model)
    batch, stats = captured_step(trainer, monkeypatch)
    m = batch.mask.numpy().astype(bool)
    # the reference log-probs are the base checkpoint's, recomputed here by an independently loaded copy
    base = load_policy(tiny_model_path, device="cpu")
    ref = (base.log_prob(batch.model_inputs)[0].detach() * batch.mask).numpy()
    np.testing.assert_allclose(batch.ref_logp.numpy() * m, ref, atol=1e-5)
    old = batch.old_logp.numpy()
    kl = np.where(m, old - ref, 0.0)
    assert np.abs(kl).max() > 1e-3  # the perturbation made the KL matter
    r = -0.1 * kl
    for b in range(len(r)):
        r[b, np.flatnonzero(m[b])[-1]] += float(batch.rewards[b])
    returns = np.flip(np.cumsum(np.flip(r, 1), 1), 1)  # gamma = 1
    np.testing.assert_allclose(batch.advantages.numpy(), whiten(returns, m), atol=1e-4)
    assert stats["kl_ref"] == pytest.approx(np.mean([kl[b][m[b]].mean() for b in range(len(m))]), abs=1e-5)
    assert "value_loss" not in stats and np.isfinite(stats["loss"])


def test_reinforce_pp_baseline_centres_rewards_per_group(tiny_model_path, tmp_path, monkeypatch):
    trainer = Trainer(config(tiny_model_path, tmp_path, "algo.advantage=reinforce_pp_baseline"), show_progress=False)
    batch, _ = captured_step(trainer, monkeypatch)
    m = batch.mask.numpy().astype(bool)
    rewards, groups = batch.rewards.numpy(), batch.group_ids.numpy()
    r = np.zeros(m.shape)
    for b in range(len(r)):
        r[b, np.flatnonzero(m[b])[-1]] = rewards[b] - rewards[groups == groups[b]].mean()
    returns = np.flip(np.cumsum(np.flip(r, 1), 1), 1)
    np.testing.assert_allclose(batch.advantages.numpy(), whiten(returns, m), atol=1e-4)


def test_ppo_with_a_value_model(tiny_model_path, tmp_path, monkeypatch):
    trainer = Trainer(config(tiny_model_path, tmp_path, "algo.advantage=gae", "algo.lam=0.9", "algo.gamma=0.99",
                             "algo.critic_lr=1e-3"), show_progress=False)  # fmt: skip
    critic = trainer.critic
    assert isinstance(critic, VLMCritic)
    assert {id(p) for p in critic.parameters()}.isdisjoint(id(p) for p in trainer.policy.model.parameters())
    assert [g["lr"] for g in trainer.learner.optimizer.param_groups] == [3e-4, 1e-3]
    with torch.no_grad():  # a non-zero head, so old values and the GAE recursion are not trivially 0
        critic.head.weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(2))
    policy_before = {k: v.clone() for k, v in trainer.policy.model.state_dict().items()}
    critic_before = {k: v.clone() for k, v in critic.state_dict().items()}
    batch, stats = captured_step(trainer, monkeypatch)
    m = batch.mask.numpy().astype(bool)
    v, rewards = batch.old_values.numpy(), batch.rewards.numpy()
    # old values: the head on the last hidden state of the sequence so far, recomputed here from an independently
    # loaded copy of the starting checkpoint (the critic's backbone before the update) through the full model
    base = load_policy(tiny_model_path, device="cpu")
    ids = batch.model_inputs["input_ids"]
    with torch.no_grad():
        hidden = base.model(input_ids=ids, attention_mask=batch.model_inputs["attention_mask"],
                            **base._vision_kwargs(batch.model_inputs["vision"], ids),
                            output_hidden_states=True).hidden_states[-1][:, :-1]  # fmt: skip
        expected = hidden @ critic_before["head.weight"][0] + critic_before["head.bias"][0]
    np.testing.assert_allclose(v, (expected * batch.mask).numpy(), atol=1e-5)
    assert np.abs(v[m]).max() > 1e-3
    adv = np.zeros(m.shape)
    ret = np.zeros(m.shape)
    for b in range(len(m)):  # GAE over the generated tokens, outcome on the last one, gamma 0.99, lam 0.9
        idx = np.flatnonzero(m[b])
        running = 0.0
        for j in reversed(range(len(idx))):
            t = idx[j]
            reward = rewards[b] if j == len(idx) - 1 else 0.0
            v_next = v[b, idx[j + 1]] if j + 1 < len(idx) else 0.0
            running = reward + 0.99 * v_next - v[b, t] + 0.99 * 0.9 * running
            adv[b, t], ret[b, t] = running, running + v[b, t]
    np.testing.assert_allclose(batch.advantages.numpy(), adv, atol=1e-5)
    np.testing.assert_allclose(batch.returns.numpy(), ret, atol=1e-5)
    assert np.isfinite(stats["value_loss"]) and "explained_variance" in stats and "critic_grad_norm" in stats
    # both models moved, each by its own optimizer group
    assert any(not torch.equal(policy_before[k], x) for k, x in trainer.policy.model.state_dict().items())
    assert any(not torch.equal(critic_before[k], x) for k, x in critic.state_dict().items())


def test_vppo_switch_sets_token_weights(tiny_model_path, tmp_path, monkeypatch):
    from mmrl.policies.vlm.vppo import visual_dependency, vppo_weights

    trainer = Trainer(config(tiny_model_path, tmp_path, "algo.vppo_top_frac=0.25", "algo.vppo_mask_prob=0.7"),
                      show_progress=False)  # fmt: skip
    seen = {}
    real_make_batch = trainer.make_batch
    monkeypatch.setattr(trainer, "make_batch",
                        lambda trajs: seen.setdefault("trajs", trajs) and real_make_batch(trajs))  # fmt: skip
    batch, stats = captured_step(trainer, monkeypatch)
    w, m = batch.token_weights, batch.mask.bool()
    n = m.sum(1)
    assert (w[~m] == 0).all() and (w >= 0).all()
    assert ((w > 0).sum(1) <= torch.ceil(0.25 * n)).all() and (w > 0).any()
    # the weights are VPPO's for the pre-update policy (the starting checkpoint, no warm-up) and the step's patch draws
    base = load_policy(tiny_model_path, device="cpu")
    dep = visual_dependency(base, seen["trajs"], np.random.default_rng([trainer.cfg.seed, 5, 0]), patch=14, p=0.7)
    torch.testing.assert_close(w, vppo_weights(dep, batch.mask, top_frac=0.25), atol=1e-4, rtol=1e-4)
    assert np.isfinite(stats["loss"])
