"""DatasetVQAEnv on datasets as users have them: EasyR1, R1-V, verl, TRL and LLaMA-Factory / ShareGPT rows, each from a
Parquet file written by the ``datasets`` library (embedded images) and from JSON/JSONL with paths; ``<image>``
placeholders placing images; image paths confined to the data directory; lazy Parquet images.

Expected pixels come from PIL reading the fixture PNGs, expected texts are written out here.
"""

from __future__ import annotations

import json
import logging
import shutil
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from envs.vqa import DatasetVQAEnv, dataset
from envs.vqa.dataset import DatasetError
from envs.vqa.schemas import EmbeddedImage
from mmrl.config import ConfigError

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "vqa"
THREE, ONE = "images/count_3.png", "images/count_1.png"  # two different pictures: a swap is visible
SUFFIX = " Answer with <answer>...</answer>."


def pixels(name: str) -> np.ndarray:
    return np.asarray(Image.open(ASSETS / name).convert("RGB"))


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    shutil.copytree(ASSETS / "images", tmp_path / "data" / "images")
    return tmp_path / "data"


# Two rows per schema as the projects write them: image entries are paths relative to the data file; the Parquet
# variant casts the image column to datasets' Image feature and embeds the bytes.
SCHEMA_ROWS: dict[str, tuple[str, str, list[dict[str, Any]]]] = {  # name -> (schema logged, image column, rows)
    "easyr1": ("flat", "images", [
        {"problem": "<image>How many shapes?", "answer": "3", "images": [THREE]},
        {"problem": "<image>How many shapes?", "answer": "1", "images": [ONE]},
    ]),
    "r1v": ("flat", "image", [
        {"image": THREE, "problem": "How many shapes?", "solution": "<think>count</think><answer> 3 </answer>"},
        {"image": ONE, "problem": "How many shapes?", "solution": "<answer>1</answer>"},
    ]),
    "verl": ("verl", "images", [
        {"data_source": "shapes", "prompt": [{"role": "user", "content": "<image>How many shapes?"}],
         "images": [THREE], "ability": "count", "reward_model": {"style": "rule", "ground_truth": "3"},
         "extra_info": {"split": "train", "index": 0}},
        {"data_source": "shapes", "prompt": [{"role": "user", "content": "<image>How many shapes?"}],
         "images": [ONE], "ability": "count", "reward_model": {"style": "rule", "ground_truth": "1"},
         "extra_info": {"split": "train", "index": 1}},
    ]),
    "trl": ("trl", "image", [
        {"prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "How many shapes?"}]}],
         "image": THREE, "solution": "3"},
        {"prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "How many shapes?"}]}],
         "image": ONE, "solution": "1"},
    ]),
    "llamafactory": ("sharegpt", "images", [
        {"messages": [{"role": "user", "content": "<image>How many shapes?"}, {"role": "assistant", "content": "3"}],
         "images": [THREE]},
        {"messages": [{"role": "user", "content": "<image>How many shapes?"}, {"role": "assistant", "content": "1"}],
         "images": [ONE]},
    ]),
    "sharegpt": ("sharegpt", "images", [
        {"conversations": [{"from": "human", "value": "<image>How many shapes?"}, {"from": "gpt", "value": "3"}],
         "images": [THREE]},
        {"conversations": [{"from": "human", "value": "<image>How many shapes?"}, {"from": "gpt", "value": "1"}],
         "images": [ONE]},
    ]),
}  # fmt: skip


def write_json(path: Path, rows: list[Any]) -> Path:
    """JSONL (one row a line), or a JSON array for a .json path (LLaMA-Factory's files)."""
    if path.suffix == ".json":
        path.write_text(json.dumps(rows))
    else:
        path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def write_hf_parquet(path: Path, rows: list[dict[str, Any]], image_column: str, image_root: Path) -> Path:
    """``rows`` through ``datasets``: the image column cast to Image (a list of them for "images") holding each
    image's bytes, as a Hub dataset stores them (a path given to ``datasets`` would be stored as a path)."""
    import datasets

    def embedded(name: str) -> dict[str, Any]:
        return {"bytes": (image_root / name).read_bytes(), "path": Path(name).name}

    datasets.disable_progress_bars()
    rows = [
        {**r, image_column: [embedded(p) for p in r[image_column]] if isinstance(r[image_column], list)
         else embedded(r[image_column])}
        for r in rows
    ]  # fmt: skip
    feature = datasets.Sequence(datasets.Image()) if image_column == "images" else datasets.Image()
    datasets.Dataset.from_list(rows).cast_column(image_column, feature).to_parquet(str(path))
    assert pq.read_table(path).column(image_column).null_count == 0
    return path


@pytest.mark.parametrize("name", list(SCHEMA_ROWS))
@pytest.mark.parametrize("form", ["parquet", "json"])
def test_each_schema_loads_from_datasets_parquet_and_from_json(name, form, data_dir, tmp_path, test_rewards, caplog):
    schema, image_column, rows = SCHEMA_ROWS[name]
    if form == "parquet":  # written from a copy of the images that is then deleted: the bytes must be embedded
        shutil.copytree(data_dir / "images", tmp_path / "gone" / "images")
        path = write_hf_parquet(data_dir / f"{name}.parquet", rows, image_column, tmp_path / "gone")
        shutil.rmtree(tmp_path / "gone")
    else:
        path = write_json(data_dir / (f"{name}.json" if schema == "sharegpt" else f"{name}.jsonl"), rows)
    with caplog.at_level(logging.INFO, logger="envs.vqa.dataset"):
        env = DatasetVQAEnv(path=str(path), rewards=test_rewards)
    assert f"dataset {path}: schema {schema}" in caplog.text
    question = "How many shapes?" if name == "r1v" else "<image>How many shapes?"  # R1-V's rows have no placeholder
    for index, (answer, image) in enumerate([("3", THREE), ("1", ONE)]):
        obs, info = env.reset(options={"index": index})
        assert obs["text"] == question + SUFFIX and info["answer"] == answer
        assert len(obs["images"]) == 1 and np.array_equal(obs["images"][0], pixels(image))
        assert obs in env.observation_space
    if schema == "verl":  # the other columns reach the rewards and info as they are
        assert info["data_source"] == "shapes" and info["extra_info"] == {"split": "train", "index": 1}
        assert info["reward_model"] == {"style": "rule", "ground_truth": "1"} and info["ability"] == "count"
    assert env.step("<think>x</think><answer>1</answer>")[4]["success"] is True


def test_placeholders_put_images_where_they_stand(data_dir, test_rewards):
    two = "images/color_square.png"
    rows = [
        {"problem": "Compare <image> with <image>: which has more shapes?", "images": [ONE, THREE], "answer": "2"},
        {"prompt": [{"role": "user", "content": [{"type": "text", "text": "Left "}, {"type": "image"},
                                                 {"type": "text", "text": " right "}, {"type": "image"}]}],
         "images": [THREE, two], "answer": "right"},
        {"messages": [{"role": "system", "content": "Be brief."},
                      {"role": "user", "content": "Earlier <image>"}, {"role": "assistant", "content": "ok"},
                      {"role": "user", "content": "Now <image> and <image>?"}, {"role": "assistant", "content": "no"}],
         "images": [ONE, two, THREE]},
    ]  # fmt: skip
    flat = DatasetVQAEnv(path=str(write_json(data_dir / "a.jsonl", rows[:1])), prompt_suffix="", rewards=test_rewards)
    obs, _ = flat.reset()
    assert obs["text"] == rows[0]["problem"]
    assert [np.array_equal(a, pixels(b)) for a, b in zip(obs["images"], [ONE, THREE])] == [True, True]

    trl = DatasetVQAEnv(path=str(write_json(data_dir / "b.jsonl", rows[1:2])), prompt_suffix="", rewards=test_rewards)
    obs, _ = trl.reset()
    assert obs["text"] == "Left <image> right <image>"  # parts joined as Qwen's template renders them
    assert [np.array_equal(a, pixels(b)) for a, b in zip(obs["images"], [THREE, two])] == [True, True]

    # multi-turn: the last user turn is the question, with the images of its own placeholders (the 2nd and 3rd)
    chat = DatasetVQAEnv(path=str(write_json(data_dir / "c.json", rows[2:])), prompt_suffix="", rewards=test_rewards)
    obs, info = chat.reset()
    assert obs["text"] == "Now <image> and <image>?" and info["answer"] == "no" and info["system"] == "Be brief."
    assert [np.array_equal(a, pixels(b)) for a, b in zip(obs["images"], [two, THREE])] == [True, True]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"problem": "<image> vs <image>?", "images": [THREE], "answer": "3"}, "2 <image> placeholder(s) but the row has 1"),
        ({"problem": "What is <image>?", "answer": "3"}, "1 <image> placeholder(s) but the row has 0"),
        ({"prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "?"}]}],
          "image": THREE, "answer": "3"}, "2 <image> placeholder(s) but the row has 1"),
        ({"problem": "<video> and <video>?", "videos": ["v.mp4"], "answer": "3"},
         "2 <video> placeholder(s) but the row has 1 video(s)"),
        ({"messages": [{"role": "user", "content": "<image>How many?"}], "images": [THREE]}, "no assistant turn"),
        ({"prompt": [{"role": "assistant", "content": "hi"}], "answer": "3"}, "has no user turn"),
        ({"data_source": "x", "prompt": [{"role": "user", "content": "Hi"}], "reward_model": {"style": "rule"}},
         "missing field 'reward_model.ground_truth'"),
    ],
)  # fmt: skip
def test_a_row_that_does_not_fit_is_a_one_line_error(data_dir, test_rewards, row, message):
    path = write_json(data_dir / "bad.jsonl", [row, row])
    with pytest.raises(DatasetError) as err:
        DatasetVQAEnv(path=str(path), rewards=test_rewards)
    text = str(err.value)
    assert "\n" not in text and f"{path}, line 1: " in text and message in text, text


def test_placeholder_mismatch_in_parquet_names_the_row(data_dir, test_rewards):
    rows = [{"problem": "<image>How many?", "images": [THREE], "answer": "3"}] * 2
    rows.append({"problem": "<image><image>How many?", "images": [THREE], "answer": "3"})
    path = write_hf_parquet(data_dir / "bad.parquet", rows, "images", data_dir)
    with pytest.raises(DatasetError, match=r"bad\.parquet, row 2: the question has 2 <image> placeholder"):
        DatasetVQAEnv(path=str(path), rewards=test_rewards)


# ---------------------------------------------------------------------------------------------------- image paths
def test_image_paths_are_confined_to_the_data_directory(data_dir, tmp_path, test_rewards):
    outside = tmp_path / "outside.png"
    shutil.copy(ASSETS / THREE, outside)
    (data_dir / "images" / "escape.png").symlink_to(outside)
    (data_dir / "images" / "inside.png").symlink_to(data_dir / ONE)  # a symlink that stays inside is fine
    good = {"problem": "How many?", "images": [THREE], "answer": "3"}
    for entry in ["../outside.png", str(outside), "images/escape.png", "images/../../outside.png"]:
        path = write_json(data_dir / "rows.jsonl", [good, {**good, "images": [entry]}])
        with pytest.raises(DatasetError) as err:
            DatasetVQAEnv(path=str(path), rewards=test_rewards)
        text = str(err.value)
        assert "\n" not in text and f"{path}, line 2: field 'images[0]': image path" in text, text
        assert "leads out of the data directory" in text and "allow_outside_root" in text
        env = DatasetVQAEnv(path=str(path), allow_outside_root=True, rewards=test_rewards)
        assert np.array_equal(env.reset(options={"index": 1})[0]["images"][0], pixels(THREE))
    inside = [good, {**good, "images": ["images/inside.png", "./images/../" + THREE, str(data_dir / ONE)]}]
    env = DatasetVQAEnv(path=str(write_json(data_dir / "in.jsonl", inside)), rewards=test_rewards)
    assert [np.array_equal(a, pixels(b)) for a, b in zip(env.reset(options={"index": 1})[0]["images"],
                                                         [ONE, THREE, ONE])] == [True] * 3  # fmt: skip


# ------------------------------------------------------------------------------------------------------ options
def test_column_names_and_a_forced_schema(data_dir, test_rewards):
    rows = [{"query": "How many?", "label": "3", "pics": [THREE], "prompt": "ignored", "images": [ONE]}]
    env = DatasetVQAEnv(path=str(write_json(data_dir / "a.jsonl", rows)), prompt_key="query", answer_key="label",
                        image_key="pics", prompt_suffix="", rewards=test_rewards)  # fmt: skip
    obs, info = env.reset()
    assert obs["text"] == "How many?" and info["answer"] == "3" and np.array_equal(obs["images"][0], pixels(THREE))
    assert info["prompt"] == "ignored" and info["images"] == [ONE]  # other columns pass on as they are

    verl = [{"prompt": [{"role": "user", "content": "How many?"}], "extra_info": {"answer": "3"}, "reward_model": {}}]
    env = DatasetVQAEnv(path=str(write_json(data_dir / "v.jsonl", verl)), answer_key="extra_info.answer",
                        rewards=test_rewards)  # fmt: skip
    assert env.reset()[1]["answer"] == "3"

    dialog = [{"dialog": [{"role": "user", "content": "How many?"}, {"role": "assistant", "content": "3"}]}]
    path = write_json(data_dir / "d.jsonl", dialog)
    with pytest.raises(DatasetError, match="line 1: missing field 'answer'"):  # detected as TRL: answer in a column
        DatasetVQAEnv(path=str(path), prompt_key="dialog", rewards=test_rewards)
    env = DatasetVQAEnv(path=str(path), prompt_key="dialog", schema="sharegpt", rewards=test_rewards)
    assert env.reset()[1]["answer"] == "3"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"schema": "alpaca"}, "schema: must be one of auto | flat | verl | trl | sharegpt, got 'alpaca'"),
        ({"prompt_key": " "}, "prompt_key: must be a column name or null"),
        ({"image_key": ""}, "image_key: must be a column name or null"),
    ],
)
def test_option_errors_name_the_option(test_rewards, kwargs, message):
    with pytest.raises(ConfigError) as err:
        DatasetVQAEnv(path=str(ASSETS / "sample.jsonl"), rewards=test_rewards, **kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_schema_is_logged_once_per_file(data_dir, test_rewards, caplog, monkeypatch):
    monkeypatch.setattr(dataset, "_TABLES", {})
    path = write_json(data_dir / "a.jsonl", SCHEMA_ROWS["verl"][2])
    with caplog.at_level(logging.INFO, logger="envs.vqa.dataset"):
        for _ in range(3):
            DatasetVQAEnv(path=str(path), rewards=test_rewards)
    assert caplog.text.count("schema verl") == 1


# ---------------------------------------------------------------------------------------------------- lazy images
def noise_rows(count: int, side: int = 64) -> tuple[list[dict[str, Any]], list[np.ndarray]]:
    rng = np.random.default_rng(0)
    rows, expected = [], []
    for i in range(count):
        image = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
        buf = pa.BufferOutputStream()
        Image.fromarray(image).save(buf, format="PNG")  # type: ignore[arg-type]
        rows.append({"prompt": f"Question {i}?", "images": [{"bytes": buf.getvalue().to_pybytes(), "path": None}],
                     "answer": str(i)})  # fmt: skip
        expected.append(image)
    return rows, expected


@pytest.mark.parametrize("column", ["images", "image"])  # a list of image structs, or one struct (TRL, R1-V)
def test_parquet_images_in_small_row_groups_are_read_when_visited(data_dir, test_rewards, monkeypatch, column):
    monkeypatch.setattr(dataset, "_TABLES", {})
    rows, expected = noise_rows(30)
    if column == "image":
        rows = [{"prompt": r["prompt"], "image": r["images"][0], "answer": r["answer"]} for r in rows]
    path = data_dir / "lazy.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=8)  # 4 groups: 8, 8, 8, 6 rows
    pq.write_table(pa.Table.from_pylist(rows), data_dir / "whole.parquet")  # the same rows in one group
    held = {}
    for name in ("lazy", "whole"):
        tracemalloc.start()
        env = DatasetVQAEnv(path=str(data_dir / f"{name}.parquet"), shuffle=True, seed=1, rewards=test_rewards)
        held[name] = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
    image_bytes = sum(len((r.get("image") or r["images"][0])["bytes"]) for r in rows)  # ~12 kB of PNG per row
    assert held["whole"] - held["lazy"] > 0.9 * image_bytes, (held, image_bytes)  # the lazy table holds no image
    env = DatasetVQAEnv(path=str(path), shuffle=True, seed=1, rewards=test_rewards)
    assert all(isinstance(ref, EmbeddedImage) for row in env.rows for ref in row.images)
    seen = set()
    for _ in range(30):  # a shuffled pass crosses the groups in every order
        obs, info = env.reset()
        seen.add(info["row_index"])
        assert np.array_equal(obs["images"][0], expected[int(info["answer"])])
    assert seen == set(range(30))
    one = DatasetVQAEnv(path=str(path), max_rows=10, rewards=test_rewards)  # max_rows inside the 2nd group
    assert np.array_equal(one.reset(options={"index": 9})[0]["images"][0], expected[9])

    pq.write_table(pa.Table.from_pylist(rows[::-1]), path, row_group_size=8)  # rewritten under the env
    with pytest.raises(DatasetError, match=r"lazy\.parquet, row 3: .*the data file changed since it was loaded"):
        env.reset(options={"index": 3})  # its refs point into the old file: never the new file's bytes
    again = DatasetVQAEnv(path=str(path), rewards=test_rewards)  # a new env reads the new file
    assert np.array_equal(again.reset(options={"index": 3})[0]["images"][0], expected[26])


def test_one_row_group_is_read_whole(data_dir, test_rewards, monkeypatch):
    monkeypatch.setattr(dataset, "_TABLES", {})
    rows, expected = noise_rows(5)
    path = data_dir / "eager.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    env = DatasetVQAEnv(path=str(path), rewards=test_rewards)
    assert all(isinstance(ref, bytes) for row in env.rows for ref in row.images)
    assert np.array_equal(env.reset(options={"index": 4})[0]["images"][0], expected[4])
