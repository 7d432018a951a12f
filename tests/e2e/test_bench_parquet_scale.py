"""The Parquet scale benchmark trains on a small generated file and reports peak RSS and the time to the first step;
the reader it measures keeps a large file's images in the file, whatever its row groups' size."""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from envs.vqa import dataset, parquet
from envs.vqa.dataset import DatasetVQAEnv
from envs.vqa.schemas import EmbeddedImage

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "bench" / "parquet_scale.py"
REWARDS = {"accuracy": 1.0}


def test_bench_parquet_scale_small(tiny_model_path, tmp_path):
    out = tmp_path / "scale.json"
    cmd = [sys.executable, str(SCRIPT), "--large-mb", "2", "--small-mb", "0", "--batch-size", "8", "--eval-size", "8",
           "--steps", "1", "--resets", "8", "--dir", str(tmp_path / "bench"), "--model", str(tiny_model_path),
           "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| large | 1.9 |" in proc.stdout  # 2 MB = 1.9 MiB: the file is the size asked for (noise PNGs)

    result = json.loads(out.read_text())
    assert "parquet_scale.py" in result["command"] and result["settings"]["batch_size"] == 8
    (large,) = result["results"]
    assert Path(large["file"]).is_file() and large["rows"] == large["load"]["rows"] > 30
    train = large["train"]
    assert train["steps"] == 1 and 0 < train["eval_before_rl_s"] <= train["first_step_s"] <= train["seconds"]
    # peak RSS: sampled and ru_maxrss agree with the trainer's own figure (torch + the tiny model: 0.2 to 4 GiB)
    assert 200 < train["peak_rss_mib"] < 4096 and train["peak_rss_mib"] >= train["trainer_peak_rss_mib"] > 200
    assert train["ru_maxrss_mib"] >= train["trainer_peak_rss_mib"] * 0.99
    load = large["load"]
    assert all(math.isfinite(v) and v >= 0 for v in load.values()) and load["peak_rss_mib"] >= load["baseline_rss_mib"]

    sys.path.insert(0, str(SCRIPT.parent))
    try:
        from parquet_scale import write_parquet
    finally:
        sys.path.remove(str(SCRIPT.parent))
    stamp = Path(large["file"]).stat().st_mtime_ns
    assert write_parquet(Path(large["file"]), 2, 128, 0, "easyr1") == Path(large["file"])  # generated once, reused
    assert Path(large["file"]).stat().st_mtime_ns == stamp


# ------------------------------------------------------------------------------------------------ the reader it measures
def noise_png(rng: np.random.Generator, side: int = 32) -> tuple[bytes, np.ndarray]:
    pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)  # [H, W, 3]
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue(), pixels


@pytest.mark.parametrize("layout", ["datasets", "one_big_group"])
def test_images_stay_in_a_file_of_any_row_group_size(tmp_path, monkeypatch, layout):
    """EasyR1 rows written by ``datasets``: the load leaves the image bytes unread (the statistics prove them present),
    a visit holds one slice of rows, and every row shows its own image, in shuffled and in file order."""
    import datasets

    monkeypatch.setattr(dataset, "_TABLES", {})
    monkeypatch.setattr(parquet, "EAGER_MAX_BYTES", 1)  # this small file behaves as a large one
    monkeypatch.setattr(parquet, "SLICE_BYTES", 3 * 32 * 32 * 3)  # slices of about 3 rows
    rng = np.random.default_rng(0)
    pngs, expected = zip(*(noise_png(rng) for _ in range(40)))
    rows = {"problem": [f"<image>Question {i}?" for i in range(40)], "answer": [str(i) for i in range(40)],
            "images": [[{"bytes": png, "path": f"{i}.png"}] for i, png in enumerate(pngs)]}  # fmt: skip
    datasets.disable_progress_bars()
    path = tmp_path / "rows.parquet"
    datasets.Dataset.from_dict(rows).cast_column("images", datasets.Sequence(datasets.Image())).to_parquet(str(path))
    if layout == "one_big_group":
        pq.write_table(pq.read_table(path), path, row_group_size=1000)
    assert pq.read_metadata(path).num_row_groups == 1

    with pq.ParquetFile(path) as file:
        columns, unread = parquet._columns_to_read(file, ["images"])
    assert unread == {"images"} and "images.list.element.bytes" not in columns
    env = DatasetVQAEnv(path=str(path), shuffle=True, seed=3, rewards=REWARDS)
    assert all(isinstance(ref, EmbeddedImage) for row in env.rows for ref in row.images)
    seen = set()
    for _ in range(40):
        obs, info = env.reset()
        seen.add(info["row_index"])
        assert np.array_equal(obs["images"][0], expected[int(info["answer"])])
        assert len(env._embedded._cached[2]) <= 4  # one slice of rows held, never the group
    assert seen == set(range(40))
    for i in range(40):  # file order: the open reader reads on
        assert np.array_equal(env.reset(options={"index": i})[0]["images"][0], expected[i])


def test_a_path_image_among_embedded_ones_is_still_a_path(tmp_path, monkeypatch):
    """One struct without bytes puts a null in the statistics: the bytes are read at load and the path is resolved."""
    import pyarrow as pa

    monkeypatch.setattr(dataset, "_TABLES", {})
    rng = np.random.default_rng(1)
    (png, pixels), (other, other_pixels) = noise_png(rng), noise_png(rng)
    (tmp_path / "file.png").write_bytes(other)
    rows = [{"problem": "<image>Which?", "answer": "a", "images": [{"bytes": png, "path": None}]},
            {"problem": "<image>Which?", "answer": "b", "images": [{"bytes": None, "path": "file.png"}]}] * 4  # fmt: skip
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "mixed.parquet", row_group_size=3)
    env = DatasetVQAEnv(path=str(tmp_path / "mixed.parquet"), rewards=REWARDS)
    assert isinstance(env.rows[0].images[0], EmbeddedImage) and env.rows[1].images[0] == str(tmp_path / "file.png")
    assert np.array_equal(env.reset(options={"index": 6})[0]["images"][0], pixels)
    assert np.array_equal(env.reset(options={"index": 7})[0]["images"][0], other_pixels)
