"""DatasetVQAEnv's process-wide table cache: one parse and one copy of the rows per file, a changed file re-read, envs
independent of one another, and nothing handed out that reaches the shared rows."""

from __future__ import annotations

import io
import json
import os
import shutil
import threading
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

import rewards
from envs.vqa import DatasetVQAEnv, dataset
from envs.vqa.base import text_space
from envs.vqa.dataset import DatasetError

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "vqa"
ROW = {"prompt": "How many shapes?", "images": ["images/count_3.png"], "answer": "3"}
NESTED = {  # a row whose extra columns and answer choices are mutable containers, to check that nothing leaks out
    "prompt": "What colour is the circle?",
    "images": ["images/color_square.png"],
    "answer": "blue",
    "answer_choices": ["red", "green", "blue", "yellow"],
    "meta": {"tags": ["colour"], "size": [56, 56]},
}


@pytest.fixture(autouse=True)
def reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """An empty cache for each test (dropped after it), and the paths of the data files read, one entry per parse."""
    monkeypatch.setattr(dataset, "_TABLES", {})
    seen: list[Path] = []
    read = dataset._read_records

    def counting(path: Path, max_rows: int | None) -> Any:
        seen.append(path)
        return read(path, max_rows)

    monkeypatch.setattr(dataset, "_read_records", counting)
    return seen


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A copy of the fixture images under tmp_path/data/images, for data files written next to them."""
    shutil.copytree(ASSETS / "images", tmp_path / "data" / "images")
    return tmp_path / "data"


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def noise_parquet(path: Path, num_rows: int, side: int = 56) -> int:
    """A Parquet file of ``num_rows`` rows, each with its own embedded noise PNG; returns the image bytes in total."""
    rng = np.random.default_rng(0)
    rows, total = [], 0
    for i in range(num_rows):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buf, format="PNG")
        rows.append({"prompt": f"Question {i}?", "images": [{"bytes": buf.getvalue(), "path": None}], "answer": "1"})
        total += len(buf.getvalue())
    # no dictionary encoding or compression: the file is as big as the images it holds
    pq.write_table(pa.Table.from_pylist(rows), path, use_dictionary=False, compression="NONE")
    return total


def traced_bytes(build: Callable[[], Any]) -> tuple[int, Any]:
    """Python heap bytes still allocated after ``build()`` (tracemalloc), and what it returned."""
    tracemalloc.start()
    try:
        out = build()
        return tracemalloc.get_traced_memory()[0], out
    finally:
        tracemalloc.stop()


# ------------------------------------------------------------------------------------------------- one parse
def test_sixteen_envs_on_one_file_cost_the_memory_of_one(tmp_path, test_rewards, reads):
    path = tmp_path / "big.parquet"
    image_bytes = noise_parquet(path, 2500)  # ~23 MB of PNGs
    assert path.stat().st_size > 20e6

    def build(n: int) -> list[DatasetVQAEnv]:
        return [DatasetVQAEnv(path=str(path), rewards=test_rewards) for _ in range(n)]

    one, env = traced_bytes(lambda: build(1))
    assert len(reads) == 1 and one > image_bytes  # the measurement sees the parsed rows (so the test below can fail)
    del env
    dataset._TABLES.clear()  # the 16 pay for their own parse
    sixteen, envs16 = traced_bytes(lambda: build(16))
    assert len(reads) == 2  # the file was parsed once for all 16
    assert all(e.rows is envs16[0].rows for e in envs16)
    assert sixteen < 1.1 * one, f"16 envs: {sixteen / 2**20:.1f} MiB, 1 env: {one / 2**20:.1f} MiB"
    obs, _ = envs16[15].reset(options={"index": 2499})  # images still decode, lazily
    assert obs["images"][0].shape == (56, 56, 3)


def test_envs_built_in_threads_parse_once(data_dir, test_rewards, reads):
    path = write_jsonl(data_dir / "rows.jsonl", [ROW] * 50)
    built: list[DatasetVQAEnv] = []
    threads = [threading.Thread(target=lambda: built.append(DatasetVQAEnv(path=str(path), rewards=test_rewards)))
               for _ in range(8)]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(built) == 8 and len(reads) == 1 and all(e.rows is built[0].rows for e in built)


def test_the_same_file_by_another_name_is_shared(data_dir, test_rewards, reads, monkeypatch):
    path = write_jsonl(data_dir / "rows.jsonl", [ROW, NESTED])
    a = DatasetVQAEnv(path=str(path), rewards=test_rewards)
    monkeypatch.chdir(data_dir)
    (data_dir / "link.jsonl").symlink_to(path)
    b = DatasetVQAEnv(path="./link.jsonl", rewards=test_rewards)
    assert len(reads) == 1 and a.rows is b.rows


# ---------------------------------------------------------------------------------------------- a changed file
def test_a_rewritten_file_is_read_again(data_dir, test_rewards, reads):
    path = write_jsonl(data_dir / "rows.jsonl", [ROW])
    old = DatasetVQAEnv(path=str(path), rewards=test_rewards)
    write_jsonl(path, [{**ROW, "answer": "4"}, NESTED])  # a new size
    new = DatasetVQAEnv(path=str(path), rewards=test_rewards)
    assert len(reads) == 2 and new.num_rows == 2 and new.reset()[1]["answer"] == "4"
    assert old.num_rows == 1 and old.reset()[1]["answer"] == "3"  # an env keeps the rows it was built on

    st = path.stat()
    write_jsonl(path, [{**ROW, "answer": "5"}, NESTED])  # the same size: only the mtime tells
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert path.stat().st_size == st.st_size
    assert DatasetVQAEnv(path=str(path), rewards=test_rewards).reset()[1]["answer"] == "5"
    assert len(reads) == 3
    DatasetVQAEnv(path=str(path), rewards=test_rewards)  # unchanged since: shared
    assert len(reads) == 3


def test_a_bad_file_is_an_error_every_time_and_not_cached(data_dir, test_rewards, reads):
    path = write_jsonl(data_dir / "rows.jsonl", [ROW, {**ROW, "images": ["images/missing.png"]}])
    for _ in range(2):
        with pytest.raises(DatasetError) as err:
            DatasetVQAEnv(path=str(path), rewards=test_rewards)
        assert str(err.value).startswith(f"{path}, line 2: field 'images[0]': image file not found")
    assert len(reads) == 2 and dataset._TABLES == {}


# ------------------------------------------------------------------------------------------- options that differ
def test_max_rows_gets_its_own_table_and_prompt_suffix_shares_one(test_rewards, reads):
    path = str(ASSETS / "sample.jsonl")
    full = DatasetVQAEnv(path=path, rewards=test_rewards)
    two = DatasetVQAEnv(path=path, max_rows=2, rewards=test_rewards)
    assert (full.num_rows, two.num_rows, len(reads)) == (6, 2, 2)
    assert DatasetVQAEnv(path=path, max_rows=2, rewards=test_rewards).rows is two.rows and len(reads) == 2
    bare = DatasetVQAEnv(path=path, prompt_suffix="", rewards=test_rewards)
    assert bare.rows is full.rows and len(reads) == 2  # the suffix is added at reset: the rows are the same
    obs, _ = bare.reset(options={"index": 0})
    assert obs["text"] == "How many shapes are there?" and obs in bare.observation_space
    assert full.reset(options={"index": 0})[0]["text"].endswith("Answer with <answer>...</answer>.")


@pytest.mark.parametrize("suffix", ["", " Answer with <answer>...</answer>."])
def test_text_space_is_that_of_every_prompt(data_dir, test_rewards, suffix):
    # more distinct characters outside the longest prompt than it is long: they take several strings of samples
    prompts = ["これは質問ですか?", "Ünïcödé ASCII", "赤緑青黄紫橙桃灰黒白?", "一二三四五六七八九十"]
    path = write_jsonl(data_dir / "rows.jsonl", [{**ROW, "prompt": p} for p in prompts])
    env = DatasetVQAEnv(path=str(path), prompt_suffix=suffix, rewards=test_rewards)
    expected = text_space([p + suffix for p in prompts])  # from all the prompts, as a spec of the space
    space = env.observation_space["text"]
    assert (space.max_length, space.character_set) == (expected.max_length, expected.character_set)


# --------------------------------------------------------------------------------------- independent envs
AUGMENT = [{"name": "mixup", "p": 0.5}, {"name": "rotation", "p": 0.5}, {"name": "distractor", "p": 0.5}]


def _mutate_in_place(value: Any) -> None:
    """Change every list and dict inside ``value`` in place (what a careless caller or reward might do)."""
    if isinstance(value, dict):
        for v in value.values():
            _mutate_in_place(v)
        value["mutated"] = True
    elif isinstance(value, list):
        for v in value:
            _mutate_in_place(v)
        value.append("mutated")
    elif isinstance(value, np.ndarray) and value.flags.writeable:
        value[...] = 0


def _mutating_reward(completions: list[str], **columns: Any) -> list[float]:
    for values in columns.values():  # one list per column, one value per completion: the values are the row's
        for value in values:
            _mutate_in_place(value)
    return [0.0] * len(completions)


def _same(a: Any, b: Any) -> bool:
    """Equality of observations and infos (arrays compared by value)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and np.array_equal(a, b)
    return a == b


def test_two_envs_on_one_file_are_independent(data_dir, test_rewards, seen_columns):
    if "test_mutating_columns" not in rewards.names():
        rewards.register("test_mutating_columns")(_mutating_reward)
    path = write_jsonl(data_dir / "rows.jsonl", [ROW, NESTED, {**ROW, "images": ["images/position.png"]}])
    weights = {**test_rewards, "test_columns": 0.0}  # b's rewards record the columns they get
    a = DatasetVQAEnv(path=str(path), augment=AUGMENT, rewards={**weights, "test_mutating_columns": 0.0})
    b, reference = (DatasetVQAEnv(path=str(path), augment=AUGMENT, rewards=weights) for _ in range(2))
    assert a.rows is b.rows is reference.rows

    expected = [reference.reset(seed=s) for s in range(6)]  # seeds 1 and 4 show NESTED, augmented
    for seed, (obs_ref, info_ref) in enumerate(expected):
        # a runs ahead (resets, steps, augments, callers and rewards mutating all it hands out) before b's turn
        for s in range(seed, seed + 4):
            obs, info = a.reset(seed=s)
            _mutate_in_place([list(obs["images"]), info])
            _mutate_in_place(a.step(info_ref["solution"])[4])
        obs_b, info_b = b.reset(seed=seed)
        assert _same(obs_b, obs_ref) and _same(info_b, info_ref), f"seed {seed}"
        step_b = b.step(info_ref["solution"])[4]
        if seed % 3 == 1:  # NESTED: b's rewards got the row's columns as in the file, whatever a's rewards did
            assert seen_columns[-1]["meta"] == [NESTED["meta"]]
            assert seen_columns[-1]["answer_choices"] == [NESTED["answer_choices"]]
            assert step_b["meta"] == NESTED["meta"] and info_b["answer_choices"] == NESTED["answer_choices"]
        assert step_b["success"] is True
    fresh = DatasetVQAEnv(path=str(path), augment=AUGMENT, rewards=weights)
    assert all(_same(fresh.reset(seed=s), expected[s]) for s in range(6))


def test_rows_cannot_be_changed_through_an_env(test_rewards):
    env = DatasetVQAEnv(path=str(ASSETS / "sample.jsonl"), rewards=test_rewards)
    assert isinstance(env.rows, tuple) and isinstance(env.rows[0].images, tuple)
    with pytest.raises(AttributeError):
        env.rows[0].answer = "4"  # type: ignore[misc]
    with pytest.raises(ValueError):
        env._image_start[0] = 1
