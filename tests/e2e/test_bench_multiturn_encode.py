"""The multi-turn encoding benchmark runs on a small setting: the incremental conversation builds the same ids as
re-encoding the history (asserted inside the script every turn) and its per-turn cost does not grow with the turn."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_multiturn_encode_bench_small(tiny_model_path, tmp_path):
    out = tmp_path / "mt.json"
    cmd = [sys.executable, str(ROOT / "scripts/bench/multiturn_encode.py"), "--turns", "8", "--images", "2",
           "--side", "224", "--repeats", "3", "--model-dir", str(tiny_model_path), "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r = json.loads(out.read_text())
    mmrl, rerender = r["mmrl_ms"], r["rerender_ms"]
    # re-encoding processes 2t images at turn t, mmrl 2: by turn 8 the baseline is several times the cost
    assert sum(rerender[-3:]) > 2.5 * sum(mmrl[-3:])
