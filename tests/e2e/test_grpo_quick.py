"""A short end-to-end GRPO run on the tiny model: the loss is computed, the weights change, and every artefact exists."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from mmrl.cli import main
from mmrl.models import load_policy

ROOT = Path(__file__).resolve().parents[2]


def test_grpo_end_to_end_via_cli(tiny_model_path, tmp_path, capsys):
    args = ["train", str(ROOT / "configs/quickstart.yaml"), "--no-progress", "name=e2e",
                 f"model.path={tiny_model_path}", "model.build_tiny=false", f"train.output_dir={tmp_path}",
                 "train.steps=3", "train.eval_every=2", "train.eval_size=16", "train.save_every=1", "train.keep_checkpoints=3",
                 "warmup.steps=60", "warmup.batch_size=8", "warmup.lr=3e-3", "algo.prompts_per_step=4", "algo.group_size=4",
                 "algo.minibatch_size=8"]  # fmt: skip
    assert main(args) == 0
    run = tmp_path / "e2e"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3]
    for r in steps:
        for key in ("loss", "approx_kl", "clipfrac", "entropy", "grad_norm", "reward/mean", "zero_std_groups",
                    "tokens_per_s", "env_steps_per_s", "reward/accuracy/mean", "reward/format_answer/mean"):  # fmt: skip
            assert key in r, key
        assert r["entropy"] > 0
    assert any("eval/success" in r and "eval/return" in r for r in rows if r["step"] == 2)
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary) >= {"success_before_rl", "success_after_rl", "return_before_rl", "return_after_rl", "eval_size",
                            "minutes"}  # fmt: skip
    assert summary["eval_size"] == 16
    assert (run / "curves.png").stat().st_size > 1000
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    # RL steps 2 and 3 (after the warm-up) changed the weights
    before = load_policy(run / "checkpoints" / "step_000001", device="cpu").model.state_dict()
    after = load_policy(run / "checkpoints" / "step_000003", device="cpu").model.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) > len(before) // 2, "RL did not change most weight tensors"
    assert any(r["grad_norm"] > 0 and r["zero_std_groups"] < 1 for r in steps), "no step had a learning signal"
    assert "held-out success before RL" in capsys.readouterr().out
    # `mmrl eval` evaluates the run's latest checkpoint: the same greedy success the run reported last, and it leaves
    # every file of the run untouched (no config.json rewrite, no metrics, no reference model or checkpoint written)
    files = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in run.rglob("*") if p.is_file()}
    assert main(["eval", str(ROOT / "configs/quickstart.yaml"), *args[3:], "--json"]) == 0
    result = json.loads(capsys.readouterr().out)["results"][0]
    assert result["eval/success"] == summary["success_after_rl"] and result["eval/return"] == summary["return_after_rl"]
    assert result["checkpoint"].endswith("step_000003")
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in run.rglob("*") if p.is_file()} == files
