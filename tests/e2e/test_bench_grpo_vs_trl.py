"""The mmrl-vs-TRL GRPO benchmark script runs end to end on one RL step per system and checks both do the same work."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "bench" / "grpo_vs_trl.py"


def test_bench_grpo_vs_trl_one_step(tiny_model_path, tmp_path):
    out = tmp_path / "bench.json"
    # --in-process: both systems in one interpreter (one import of torch/transformers instead of three)
    cmd = [sys.executable, str(SCRIPT), "--steps", "1", "--skip", "0", "--repeats", "1", "--in-process",
           "--model-dir", str(tiny_model_path), "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| TRL `GRPOTrainer` |" in proc.stdout and "| mmrl `Trainer.train_step` |" in proc.stdout
    result = json.loads(out.read_text())
    checks = result["same_work"]
    assert checks["same_prompts_and_images"] and checks["same_counts"]
    for system in ("mmrl", "trl"):
        s = result["summary"][system]
        assert s["completions_per_step"] == [64]
        assert s["optimizer_steps_per_rl_step"] == [4]
        assert 1 <= s["max_completion_len"] <= 16
        assert s["step_s"] > s["rollout_s"] > 0 and s["peak_rss_mib"] > 0
    run = next(r for r in result["runs"] if r["system"] == "trl")
    assert run["config"]["gradient_checkpointing"] is False and run["config"]["num_iterations"] == 2
