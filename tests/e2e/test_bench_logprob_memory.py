"""The log-prob memory benchmark runs on a small setting and shows the response-only pass adding less memory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_logprob_memory_bench_small(tiny_model_path, tmp_path):
    out = tmp_path / "mem.json"
    cmd = [sys.executable, str(ROOT / "scripts/bench/logprob_memory.py"), "--image", "112", "--response", "8",
           "--batch", "2", "--model-dir", str(tiny_model_path), "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    response, full = json.loads(out.read_text())
    assert response["variant"] == "response" and full["variant"] == "full"
    assert response["seq_len"] == full["seq_len"] > response["response_tokens"] == 8
    assert 0 < response["added_peak_mib"] < full["added_peak_mib"]  # a [2, 48, 151936] fp32 logits tensor is ~55 MiB
