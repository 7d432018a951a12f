"""The token-VLA recipe (``configs/maniskill_token_vla_grpo.yaml``) end to end on tiny sizes: demonstrations from the
scripted expert on the recipe's 64 px camera, then one BC step and one GRPO step on PushCube-v1 (rgb) through the real
Trainer; the actions the env received are bin centres of the recipe's 256 bins."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mmrl.config import load_config

ROOT = Path(__file__).resolve().parents[2]
H = 4  # the recipe's chunk



@pytest.fixture(scope="module")
def demos(tmp_path_factory) -> Path:
    """One expert episode on the recipe's camera, cut into chunk rows by ``scripts/make_demos.py``'s own rule."""
    pytest.importorskip("mani_skill", reason="ManiSkill tests need the 'sim' extra")
    from envs.sim.maniskill import ManiSkillEnv

    spec = importlib.util.spec_from_file_location("make_demos", ROOT / "scripts" / "make_demos.py")
    make_demos = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_demos)
    env = ManiSkillEnv(task="PushCube-v1", obs_mode="rgb", image_size=64)
    try:
        demo = make_demos.run_expert(env, 10_000, 0.0, np.random.default_rng(0))
    finally:
        env.close()
    assert demo.success
    obs, chunks = make_demos.chunk_rows(demo, H, H)
    out = tmp_path_factory.mktemp("demos") / "push_rgb.npz"
    np.savez(out, actions=chunks, **{f"obs.{k}": v for k, v in obs.items()})
    return out


def test_token_vla_recipe_one_bc_and_one_grpo_step(demos, tiny_model_path, tmp_path):
    from mmrl.trainer.loop import Trainer

    cfg = load_config(ROOT / "configs" / "maniskill_token_vla_grpo.yaml", [
        f"model.path={tiny_model_path}", "model.build_tiny=false", f"policy.kwargs.demos={demos}",
        f"env.kwargs.horizon={H}", "env.kwargs.max_episode_steps=8", "warmup.steps=1", "warmup.batch_size=2",
        "train.steps=1", "train.eval_size=1", "train.eval_every=0", "rollout.batch_size=1", "algo.prompts_per_step=1",
        "algo.group_size=2", "algo.minibatch_size=4", "algo.epochs=1", f"train.output_dir={tmp_path}",
    ])  # fmt: skip
    torch.manual_seed(0)
    trainer = Trainer(cfg, show_progress=False)
    trajs = trainer.collect()  # what the GRPO step will see: a group of 2 episodes of 2 chunk steps
    assert len(trajs) == 2 and all(len(t) == 2 for t in trajs)
    width = 2.0 / 256  # the recipe's bins over PushCube's [-1, 1] action bounds
    for step in (s for t in trajs for s in t.steps):
        assert step.action.shape == (H, 4) and len(step.record.response_ids) == H * 4
        np.testing.assert_allclose((step.action + 1.0) / width % 1.0, 0.5, atol=1e-4)  # every value a bin centre
        assert "proprio: " in trainer.policy.prompt(step.observation)["text"]
    summary = trainer.fit()
    assert summary["steps"] == 1 and 0.0 <= summary["success_after_rl"] <= 1.0
    rows = [json.loads(line) for line in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert np.isfinite(rows[0]["warmup/bc_loss"])
    [rl] = [r for r in rows if "approx_kl" in r]
    assert np.isfinite(rl["loss"]) and rl["nonfinite_updates"] == 0
