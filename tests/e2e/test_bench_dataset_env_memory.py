"""The dataset-env memory benchmark runs on a tiny file and reports both variants, the per-env one holding more tables."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "bench" / "dataset_env_memory.py"
FIGURES = ("rss_added_mib", "rss_added_pool_released_mib", "peak_rss_added_mib", "traced_retained_mib",
           "traced_peak_mib", "seconds")  # fmt: skip


def test_bench_dataset_env_memory_small(tmp_path):
    out, data = tmp_path / "mem.json", tmp_path / "data" / "vqa.parquet"
    cmd = [sys.executable, str(SCRIPT), "--rows", "8", "--image-side", "32", "--envs", "1,2", "--repeats", "1",
           "--data", str(data), "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| shared (one table per file, current) | 2 |" in proc.stdout
    assert "| per env (previous behaviour) | 2 |" in proc.stdout
    assert data.is_file()  # --data keeps the generated file

    result = json.loads(out.read_text())
    assert "dataset_env_memory.py" in result["command"] and "--envs 1,2" in result["command"]
    assert result["machine"]["nproc"] >= 1 and result["machine"]["python"] and result["machine"]["pyarrow"]
    assert result["settings"]["rows"] == 8 and result["settings"]["envs"] == [1, 2]
    assert result["same_observations"] is True
    cells = {(r["variant"], r["envs"]): r for r in result["results"]}
    assert set(cells) == {(v, k) for v in ("shared", "per_env") for k in (1, 2)}
    for (variant, k), r in cells.items():
        assert all(math.isfinite(r[f]) for f in FIGURES), r
        assert r["seconds"] > 0 and r["traced_retained_mib"] > 0 and r["peak_reset"]
        assert r["tables"] == r["traced_tables"] == (1 if variant == "shared" else k)  # the variant does what it says
        assert r["rows"] == 8 and r["arrow_allocated_mib"] == 0  # the rows are Python objects: no Arrow buffer kept
    # tracemalloc counts Python objects exactly: a second env's own table (8 PNGs of ~3 kB) outweighs one env's state
    assert cells["shared", 2]["traced_retained_mib"] < cells["per_env", 2]["traced_retained_mib"]
