"""The RGB action-chunk recipes end to end on tiny sizes on ManiSkill's PushCube-v1: rgb demonstrations from
``scripts/make_demos.py`` (images as the env renders them, the instruction beside them), then one BC step and one PPO +
GAE step through the real Trainer for the flow policy on pixels (``configs/maniskill_rgb_flow_ppo.yaml``) and the
pi0-style VLA (``configs/maniskill_pi0_ppo.yaml``, the offline tiny Qwen2.5-VL)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mmrl.config import load_config

ROOT = Path(__file__).resolve().parents[2]
H = 4  # chunk horizon of the tiny runs
SIDE = 32  # camera side of the tiny runs


@pytest.fixture(scope="module")
def demos(tmp_path_factory) -> Path:
    pytest.importorskip("mani_skill", reason="ManiSkill tests need the 'sim' extra")
    spec = importlib.util.spec_from_file_location("make_demos", ROOT / "scripts" / "make_demos.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path_factory.mktemp("demos") / "push_rgb.npz"
    stats = module.make_demos("PushCube-v1", H, episodes=1, out=out, obs_mode="rgb", image_size=SIDE)
    assert stats["successes"] == 1
    return out


def test_rgb_demonstrations_hold_the_rendered_images_and_the_instruction(demos):
    with np.load(demos, allow_pickle=False) as data:
        rgb, proprio, text, actions = data["obs.rgb"], data["obs.proprio"], data["obs.instruction"], data["actions"]
    n = len(actions)
    assert rgb.shape == (n, SIDE, SIDE, 3) and rgb.dtype == np.uint8 and rgb.std() > 0  # a rendered scene, not blank
    assert proprio.shape[0] == n and proprio.dtype == np.float32 and actions.shape == (n, H, 4)
    assert set(text.tolist()) == {"Push the blue cube to the red and white target."}


def _fit(config: str, demos: Path, tmp_path: Path, *extra: str) -> tuple[dict, list[dict]]:
    cfg = load_config(ROOT / "configs" / config, [
        f"policy.kwargs.demos={demos}", f"policy.kwargs.chunk={H}", f"env.kwargs.horizon={H}",
        f"env.kwargs.image_size={SIDE}", "policy.kwargs.hidden=[16]", "policy.kwargs.encoder_hidden=[16]",
        "policy.kwargs.feature_dim=8", "policy.kwargs.critic_hidden=[8]", "warmup.steps=1", "warmup.batch_size=4",
        "train.steps=1", "train.eval_size=1", "train.eval_every=0", "rollout.batch_size=1", "rollout.horizon=2",
        "algo.minibatch_size=2", "algo.epochs=1", "env.kwargs.max_episode_steps=8", f"train.output_dir={tmp_path}",
        *extra,
    ])  # fmt: skip
    from mmrl.trainer.loop import Trainer

    torch.manual_seed(0)
    summary = Trainer(cfg, show_progress=False).fit()
    rows = [json.loads(line) for line in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    return summary, rows


def _check(summary: dict, rows: list[dict]) -> None:
    assert summary["steps"] == 1 and summary["env_steps"] == 2  # chunk steps: 2 of the one env
    assert 0.0 <= summary["success_before_rl"] <= 1.0 and 0.0 <= summary["success_after_rl"] <= 1.0
    assert np.isfinite(rows[0]["warmup/bc_loss"])
    [rl] = [r for r in rows if "approx_kl" in r]
    assert np.isfinite(rl["value_loss"]) and rl["nonfinite_updates"] == 0


def test_rgb_flow_recipe_one_bc_and_one_ppo_step(demos, tmp_path):
    _check(*_fit("maniskill_rgb_flow_ppo.yaml", demos, tmp_path))


def test_pi0_recipe_one_bc_and_one_ppo_step(demos, tmp_path):
    _check(*_fit("maniskill_pi0_ppo.yaml", demos, tmp_path, f"model.path={tmp_path / 'tiny'}", "model.device=cpu"))
