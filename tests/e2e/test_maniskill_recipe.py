"""The ManiSkill action-chunk recipe end to end on tiny sizes: ``scripts/make_demos.py``'s chunking rule against rows
cut by hand, its demonstrations against a replay of the scripted expert, and the Flow-Noise recipe
(``configs/maniskill_flow_noise_ppo.yaml``) through the real Trainer: one BC step, one PPO + GAE step on PushCube-v1."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from envs.sim.experts import Demo
from mmrl.config import load_config

ROOT = Path(__file__).resolve().parents[2]
H = 4  # chunk horizon of the tiny runs


def _make_demos_module():
    spec = importlib.util.spec_from_file_location("make_demos", ROOT / "scripts" / "make_demos.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _demo(T: int) -> Demo:
    """A fake episode of ``T`` steps: state ``[t]`` at step ``t``, action ``[t, -t]``."""
    states = np.arange(T + 1, dtype=np.float32)[:, None]  # [T+1, 1]
    actions = np.stack([np.arange(T), -np.arange(T)], 1).astype(np.float32)  # [T, 2]
    return Demo(0, {"state": states}, actions, np.zeros(T), True, True, "")


@pytest.mark.parametrize(("T", "stride", "starts"), [(11, 4, [0, 4, 8]), (8, 4, [0, 4]), (6, 1, [0, 1, 2, 3, 4, 5])])
def test_chunk_rows_start_every_stride_and_pad_the_last_chunk(T, stride, starts):
    obs, chunks = _make_demos_module().chunk_rows(_demo(T), H, stride)
    np.testing.assert_array_equal(obs["state"][:, 0], starts)
    for row, s in zip(chunks, starts):
        taken = [min(s + j, T - 1) for j in range(H)]  # the actions from s on, the episode's last one repeated
        np.testing.assert_array_equal(row, [[t, -t] for t in taken])


# ---------------------------------------------------------------------------------------------------- on ManiSkill
@pytest.fixture(scope="module")
def demos(tmp_path_factory) -> Path:
    pytest.importorskip("mani_skill", reason="ManiSkill tests need the 'sim' extra")
    out = tmp_path_factory.mktemp("demos") / "push.npz"
    stats = _make_demos_module().make_demos("PushCube-v1", H, episodes=2, out=out, first_seed=10_000)
    assert stats["successes"] == 2
    return out


def test_demonstrations_replay_the_expert_chunk_by_chunk(demos):
    """Reset the env at the first demo's seed and run its recorded chunks: each row's observation is the simulator's
    at that chunk start, and every action is what the expert answers there."""
    from envs.sim.experts import expert_for
    from envs.sim.maniskill import ManiSkillEnv
    from mmrl.policies.flow.family import load_demos

    observations, chunks = load_demos(str(demos), ["state"])  # the warm-up's own reader
    assert chunks.shape[1:] == (H, 4) and chunks.dtype == np.float32
    env = ManiSkillEnv(task="PushCube-v1", obs_mode="state")
    try:
        obs, _ = env.reset(seed=10_000)
        expert, row, done = expert_for("PushCube-v1"), 0, False
        while not done:
            np.testing.assert_allclose(observations[row]["state"], obs["state"], atol=1e-5)
            for action in chunks[row]:
                np.testing.assert_allclose(action, expert(env, obs), atol=1e-6)
                obs, _, terminated, truncated, info = env.step(action)
                done = terminated or truncated
                if done:
                    break
            row += 1
        assert info["success"]
    finally:
        env.close()


def test_flow_recipe_one_bc_and_one_ppo_step(demos, tmp_path):
    cfg = load_config(ROOT / "configs" / "maniskill_flow_noise_ppo.yaml", [
        f"policy.kwargs.demos={demos}", f"policy.kwargs.chunk={H}", f"env.kwargs.horizon={H}",
        "policy.kwargs.hidden=[16]", "policy.kwargs.encoder_hidden=[16]", "policy.kwargs.feature_dim=8",
        "policy.kwargs.critic_hidden=[8]", "warmup.steps=1", "train.steps=1", "train.eval_size=1",
        "train.eval_every=0", "rollout.batch_size=1", "rollout.horizon=2", "algo.minibatch_size=2", "algo.epochs=1",
        f"train.output_dir={tmp_path}",
    ])  # fmt: skip
    from mmrl.trainer.loop import Trainer

    torch.manual_seed(0)
    summary = Trainer(cfg, show_progress=False).fit()
    assert summary["steps"] == 1 and summary["env_steps"] == 2  # chunk steps: 2 of the one env
    assert 0.0 <= summary["success_before_rl"] <= 1.0 and 0.0 <= summary["success_after_rl"] <= 1.0
    rows = [json.loads(line) for line in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert np.isfinite(rows[0]["warmup/bc_loss"])
    [rl] = [r for r in rows if "approx_kl" in r]
    assert np.isfinite(rl["value_loss"]) and rl["nonfinite_updates"] == 0
