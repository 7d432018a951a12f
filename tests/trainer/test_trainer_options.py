"""Trainer wiring of algorithm options: DAPO dynamic sampling, overlong shaping, selective replay, rejected options."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mmrl.config import ConfigError, load_config
from mmrl.policies.vlm import TurnRecord
from mmrl.trainer.loop import Trainer
from mmrl.types import Step, Trajectory

ROOT = Path(__file__).resolve().parents[2]


def config(model_path, out_dir, *extra):
    return load_config(ROOT / "configs/quickstart.yaml", [
        f"model.path={model_path}", "model.build_tiny=false", f"train.output_dir={out_dir}", "train.steps=1",
        "warmup.steps=0", "algo.prompts_per_step=2", "algo.group_size=2", "algo.minibatch_size=4",
        "rollout.max_new_tokens=8", *extra,
    ])  # fmt: skip


def fake(rewards, group_ids, lengths=None):
    """Trajectories with given rewards/groups; each response has `lengths[i]` tokens."""
    lengths = lengths or [3] * len(rewards)
    return [Trajectory([Step({"text": "q"}, "x", -0.5 * n, TurnRecord([1, 2], [], [], [5] * n, [-0.5] * n), reward=r,
                             terminated=True)], group_id=g)
            for r, g, n in zip(rewards, group_ids, lengths)]  # fmt: skip


@pytest.mark.parametrize("override, message", [
    ("model.history_images=1 algo.replay_capacity=8", "model.history_images: with a history window"),
    ("model.history_images=1 algo.vppo_top_frac=0.2", "model.history_images: with a history window"),
    ("model.max_context_tokens=512 rollout.horizon=8 algo.advantage=gae", "model.max_context_tokens: fixed-horizon"),
    ("algo.advantage=nope", "unknown"),
    ("algo.kl_in_reward=true algo.kl_coef=0.1", "algo.kl_in_reward: 'grpo' has one reward per sequence"),
    ("algo.kl_in_reward=true algo.kl_coef=0 algo.advantage=reinforce_pp", "algo.kl_in_reward: set algo.kl_coef > 0"),
    ("algo.replay_capacity=8 algo.advantage=gae", "algo.replay_capacity"),
    ("algo.tis_cap=2.0", "algo.tis_cap"),
    ("algo.vppo_top_frac=1.5", "algo.vppo_top_frac"),
    ("rollout.horizon=8", "rollout.horizon: fixed-horizon rollouts cut episodes"),
    ("policy.kind=mpl", "policy.kind: unknown policy family 'mpl' \\(did you mean 'mlp'\\?\\)"),
    ("env.id=nope-v0", "env.id: unknown env 'nope-v0'"),
    ("rewards.accuracyy=1.0", "rewards: unknown reward 'accuracyy'"),
    ("env.pool=threads", "env.pool: must be one of sync \\| async"),
])  # fmt: skip
def test_options_the_vlm_trainer_does_not_implement_are_one_line_errors(tiny_model_path, tmp_path, override, message):
    with pytest.raises((ConfigError, KeyError), match=message) as err:
        Trainer(config(tiny_model_path, tmp_path, *override.split()), show_progress=False)
    assert "\n" not in str(err.value)


def test_dynamic_sampling_keeps_only_groups_with_signal(tiny_model_path, tmp_path, monkeypatch):
    trainer = Trainer(config(tiny_model_path, tmp_path, "algo.dynamic_sampling=true", "algo.max_sampling_batches=3"),
                      show_progress=False)  # fmt: skip
    batches = iter([
        fake([1.0, 1.0, 0.0, 0.0], [0, 0, 1, 1]),  # both groups flat: nothing kept
        fake([1.0, 0.0, 0.5, 0.5], [0, 0, 1, 1]),  # group 0 kept
        fake([0.0, 0.0, 0.0, 1.0], [0, 0, 1, 1]),  # group 1 kept -> target of 2 groups reached
    ])  # fmt: skip
    monkeypatch.setattr(trainer, "collect", lambda draw=0: next(batches))
    trajs, stats = trainer.collect_scored()
    assert [t.reward for t in trajs] == [1.0, 0.0, 0.0, 1.0]
    assert [t.group_id for t in trajs] == [0, 0, 1, 1]
    assert stats["dynamic_sampling/draws"] == 3.0 and stats["dynamic_sampling/keep_rate"] == pytest.approx(2 / 6)


def test_overlong_penalty_follows_dapo(tiny_model_path, tmp_path):
    trainer = Trainer(config(tiny_model_path, tmp_path, "algo.overlong_cache=4", "algo.overlong_penalty=1.0"),
                      show_progress=False)  # fmt: skip
    # budget 8, window 4: lengths <= 4 unpunished, 6 -> -(6 - 4) / 4, 8 -> -1
    trajs = fake([1.0, 1.0, 1.0], [0, 0, 0], lengths=[4, 6, 8])
    stats = trainer.score(trajs)
    assert [t.reward for t in trajs] == pytest.approx([1.0, 0.5, 0.0])
    assert stats["reward/mean"] == pytest.approx(0.5) and stats["reward/overlong/mean"] == pytest.approx(-0.5)


def test_selective_replay_refills_zero_advantage_groups(tiny_model_path, tmp_path, monkeypatch):
    trainer = Trainer(config(tiny_model_path, tmp_path, "algo.replay_capacity=16", "algo.replay_max_zero_frac=0.4"),
                      show_progress=False)  # fmt: skip
    seen = {}
    monkeypatch.setattr(trainer, "update", lambda batch: seen.setdefault("batch", batch) and {})
    first = iter([fake([1.0, 0.0, 0.0, 0.0], [0, 0, 1, 1]), fake([0.0, 0.0, 1.0, 1.0], [0, 0, 1, 1])])
    monkeypatch.setattr(trainer, "collect", lambda draw=0: next(first))
    trainer.train_step()  # stores the two informative samples of group 0
    seen.clear()
    stats = trainer.train_step()  # both groups flat: replaced by replayed samples
    assert stats["ssr/replayed"] == 4.0
    adv = seen["batch"].advantages
    assert len(adv) == 4 and bool((adv != 0).all())


def test_zero_std_fraction_counts_flat_groups():
    from mmrl.trainer.loop import zero_std_fraction

    # group 0 flat, group 1 varied, group 2 a singleton (flat): 2 of 3 groups carry no signal
    rewards, groups = torch.tensor([1.0, 1.0, 0.0, 1.0, 5.0]), torch.tensor([7, 7, 3, 3, 9])
    assert zero_std_fraction(rewards, groups) == pytest.approx(2 / 3)


def test_judges_from_the_config_score_episodes(tiny_model_path, tmp_path):
    """A generative and a process judge declared in YAML become rewards of the run (here the tiny VLM judges itself)."""
    cfg = config(tiny_model_path, tmp_path, "rewards={accuracy: 1.0, grader: 0.5, prm: 0.25}",
                 f"judges={{grader: {{path: {tiny_model_path}, max_new_tokens: 4}}, "
                 f"prm: {{kind: process, path: {tiny_model_path}, aggregate: mean}}}}")  # fmt: skip
    trainer = Trainer(cfg, show_progress=False)
    trajs = trainer.collect()
    assert all(t.reward == 0.0 and "reward_parts" not in t.info for t in trajs)  # the envs deferred their rewards
    trainer.score(trajs)
    parts = [t.info["reward_parts"] for t in trajs]
    assert all(set(p) == {"accuracy", "grader", "prm"} for p in parts)
    # the untrained judge never writes a parseable score: the generative judge gives its minimum
    assert all(p["grader"] == 0.0 for p in parts)
    # the process judge reads p(+) / (p(+) + p(-)) after each step: strictly inside (0, 1) for any real logits
    prm = [p["prm"] for t, p in zip(trajs, parts) if t.steps[0].action.strip()]
    assert prm and all(0.0 < v < 1.0 for v in prm)
    for t, p in zip(trajs, parts):
        assert t.reward == pytest.approx(p["accuracy"] + 0.5 * p["grader"] + 0.25 * p["prm"])


@pytest.mark.parametrize("judges, message", [
    ("{j: {kind: oracle, path: PATH}}", "judges.j.kind"),
    ("{j: {path: /nonexistent}}", "judges.j.path"),
    ("{j: {path: PATH, mode: vibes}}", "judges.j.mode: must be one of score \\| compare"),
    ("{accuracy: {path: PATH}}", "taken by a built-in reward"),
])  # fmt: skip
def test_bad_judge_configs_are_one_line_errors(tiny_model_path, tmp_path, judges, message):
    with pytest.raises(ConfigError, match=message) as err:
        Trainer(config(tiny_model_path, tmp_path, "judges=" + judges.replace("PATH", str(tiny_model_path))),
                show_progress=False)  # fmt: skip
    assert "\n" not in str(err.value)


def test_a_judge_is_called_once_per_rollout_batch(tiny_model_path, tmp_path, monkeypatch):
    """The batched reward stage: a counting reward sees every episode of a rollout batch in one call."""
    import rewards
    from rewards import registry

    calls = []

    def counting_judge(completions, **columns):
        calls.append(len(completions))
        assert set(columns) >= {"answer", "question", "images"}  # what a judge reads
        return [0.5] * len(completions)

    monkeypatch.setitem(registry._REGISTRY, "counting_judge", counting_judge)  # registered for this test only

    trainer = Trainer(config(tiny_model_path, tmp_path, "rewards={accuracy: 1.0, counting_judge: 1.0}",
                             "algo.prompts_per_step=3", "algo.group_size=4", "rollout.batch_size=5"),
                      show_progress=False)  # fmt: skip
    stats = trainer.train_step()
    assert calls == [12]  # 12 episodes on a pool of 5 envs, one call
    assert stats["reward/counting_judge/mean"] == 0.5
    assert "counting_judge" in rewards.names()


def test_env_pools_are_sized_by_the_rollout_batch_not_by_samples_or_eval_episodes(tiny_model_path, tmp_path,
                                                                                  monkeypatch):  # fmt: skip
    import envs
    from mmrl.trainer import build

    made = []
    real_make = envs.make
    monkeypatch.setattr(build.envs, "make", lambda name, **kw: made.append(name) or real_make(name, **kw))
    cfg = config(tiny_model_path, tmp_path, "rollout.batch_size=3", "algo.prompts_per_step=2", "algo.group_size=4",
                 "train.eval_size=10", "train.eval_every=0")  # fmt: skip
    summary = Trainer(cfg, show_progress=False).fit()
    assert len(made) == 3 + 3  # one training pool and one eval pool of 3 envs for 8 samples a step and 10 eval episodes
    assert summary["eval_size"] == 10 and summary["env_steps"] == 8
