"""kill -9 in the middle of a run, then ``train.resume=true``: the metrics equal those of the uninterrupted run.

Exact for episode rollouts (every VLM recipe: each step resets its envs from seeds). Fixed-horizon rollouts (PPO on
Gymnasium tasks) resume with fresh episodes and fresh reward-normalisation statistics, since an env's mid-episode state
is not checkpointed: the resumed run continues from the checkpoint's weights, optimizer and counters, not bit-exactly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TIMING = ("time/", "tokens_per_s", "env_steps_per_s")  # wall-clock figures differ between any two runs


def train(args: list[str]) -> subprocess.Popen:
    code = "import sys; from mmrl.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-c", code, "train", *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip


def rows(run: Path) -> list[dict]:
    out = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        out.append({k: v for k, v in row.items() if not k.startswith(TIMING)})
    return out


@pytest.mark.parametrize("recipe, extra, exact", [
    ("quickstart.yaml", ["rollout.max_new_tokens=4", "algo.prompts_per_step=2", "algo.group_size=2",
                         "algo.minibatch_size=4", "warmup.steps=2", "warmup.batch_size=2", "train.eval_size=4"], True),
    ("cartpole_ppo.yaml", ["rollout.horizon=32"], False),
])  # fmt: skip
def test_kill_9_then_resume_equals_the_uninterrupted_run(tiny_model_path, tmp_path, recipe, extra, exact):
    common = [str(ROOT / "configs" / recipe), "--no-progress", f"train.output_dir={tmp_path}", "train.steps=4",
              "train.save_every=1", "train.eval_every=2", "train.keep_checkpoints=5", "threads=1",
              f"model.path={tiny_model_path}", "model.build_tiny=false", *extra]  # fmt: skip
    straight = train([*common, "name=straight"])
    assert straight.wait(timeout=600) == 0, straight.stderr.read()

    victim = train([*common, "name=killed"])
    marker = tmp_path / "killed" / "checkpoints" / "step_000002"
    deadline = time.time() + 600
    while not marker.exists() and victim.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert victim.poll() is None, "the run ended before it could be killed"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    resumed = train([*common, "name=killed", "train.resume=true"])
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()
    killed, straight = rows(tmp_path / "killed"), rows(tmp_path / "straight")
    if exact:
        assert killed == straight
    else:  # the same rows up to the checkpoint, then every later step once, with the same counters
        assert [r for r in killed if r["step"] <= 2] == [r for r in straight if r["step"] <= 2]
        assert [r["step"] for r in killed] == [r["step"] for r in straight]
        assert [r.get("env_steps") for r in killed] == [r.get("env_steps") for r in straight]
