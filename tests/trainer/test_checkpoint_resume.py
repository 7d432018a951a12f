"""Checkpoint save -> resume replays the same next step (same loss), and the saved policy loads like any checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mmrl.config import load_config
from mmrl.models import load_policy
from mmrl.trainer import checkpoint as ckpt
from mmrl.trainer.loop import Trainer

ROOT = Path(__file__).resolve().parents[2]


def small_config(model_path, out_dir, name, steps, extra=()):
    return load_config(ROOT / "configs/quickstart.yaml", [
        f"name={name}", f"model.path={model_path}", "model.build_tiny=false", f"train.output_dir={out_dir}",
        f"train.steps={steps}", "train.eval_every=0", "train.save_every=1", "train.eval_size=8", "warmup.steps=2",
        "warmup.batch_size=4", "algo.prompts_per_step=2", "algo.group_size=4", "algo.minibatch_size=4",
        "rollout.max_new_tokens=8", *extra,
    ])  # fmt: skip


def rows(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def step_row(run_dir, step):
    return next(r for r in rows(run_dir) if r["step"] == step and "loss" in r)


@pytest.mark.parametrize("extra", [
    [],
    ["algo.kl_coef=0.05", "algo.kl_target=0.001", "algo.kl_horizon=10"],
    # PPO with a value model and an adaptive KL in the rewards: the critic and its optimizer state are restored too
    ["algo.advantage=gae", "algo.norm_adv=true", "algo.kl_coef=0.05", "algo.kl_in_reward=true", "algo.kl_target=0.001",
     "algo.kl_horizon=10"],
])  # fmt: skip
def test_resume_gives_the_same_next_step_loss(tiny_model_path, tmp_path, extra):
    straight = small_config(tiny_model_path, tmp_path, "straight", 2, extra)
    Trainer(straight, show_progress=False).fit()

    interrupted = small_config(tiny_model_path, tmp_path, "resumed", 1, extra)
    Trainer(interrupted, show_progress=False).fit()
    assert [p.name for p in ckpt.list_checkpoints(interrupted.run_dir)] == ["step_000001"]
    resumed = small_config(tiny_model_path, tmp_path, "resumed", 2, [*extra, "train.resume=true"])
    trainer = Trainer(resumed, show_progress=False)
    assert trainer.step == 1
    assert trainer.learner.optimizer.state_dict()["state"], "optimizer state was not restored"
    trainer.fit()

    a, b = step_row(straight.run_dir, 2), step_row(resumed.run_dir, 2)
    assert a["loss"] == pytest.approx(b["loss"], abs=1e-6)
    if extra:  # the adaptive KL coefficient moved during step 1 and was restored from the checkpoint
        assert a["kl_coef"] == pytest.approx(b["kl_coef"], rel=1e-9) and a["kl_coef"] != 0.05
    assert a["reward/mean"] == pytest.approx(b["reward/mean"], abs=1e-9)
    if "value_loss" in a:
        assert a["value_loss"] == pytest.approx(b["value_loss"], abs=1e-6)
    assert [r["step"] for r in rows(resumed.run_dir) if "loss" in r] == [1, 2]  # no duplicated step rows
    # the final policies are identical
    pa = load_policy(ckpt.latest_checkpoint(straight.run_dir), device="cpu").model.state_dict()
    pb = load_policy(ckpt.latest_checkpoint(resumed.run_dir), device="cpu").model.state_dict()
    assert all(torch.allclose(pa[k], pb[k], atol=1e-6) for k in pa)


def test_checkpoints_are_rotated_and_complete(tiny_model_path, tmp_path):
    cfg = small_config(tiny_model_path, tmp_path, "rot", 3, ["train.keep_checkpoints=2"])
    Trainer(cfg, show_progress=False).fit()
    names = [p.name for p in ckpt.list_checkpoints(cfg.run_dir)]
    assert names == ["step_000002", "step_000003"]
    state = ckpt.load_trainer_state(ckpt.latest_checkpoint(cfg.run_dir))
    assert state["step"] == 3 and {"python", "numpy", "torch"} <= set(state["rng"])
