"""DatasetVQAEnv: JSONL and Parquet rows, aliases, relative paths, eager row validation, lazy images, ordering."""

from __future__ import annotations

import importlib.util
import io
import json
import shutil
from pathlib import Path

import gymnasium as gym
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from gymnasium.utils.env_checker import check_env
from PIL import Image

import envs
from envs.vqa import DatasetVQAConfig, DatasetVQAEnv, parquet
from envs.vqa.dataset import DatasetError
from mmrl.config import ConfigError

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "vqa"
JSONL, PARQUET = ASSETS / "sample.jsonl", ASSETS / "sample.parquet"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A copy of the fixture images under tmp_path/data/images, for writing custom (bad) rows next to them."""
    shutil.copytree(ASSETS / "images", tmp_path / "data" / "images")
    return tmp_path / "data"


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


GOOD = {"prompt": "How many shapes?", "images": ["images/count_3.png"], "answer": "3"}


# --------------------------------------------------------------------------------------------------- loading rows
def test_jsonl_and_parquet_load_the_same_rows(test_rewards):
    a = DatasetVQAEnv(path=str(JSONL), rewards=test_rewards)
    b = DatasetVQAEnv(path=str(PARQUET), rewards=test_rewards)
    assert a.num_rows == b.num_rows == 6
    for i in range(a.num_rows):
        (oa, ia), (ob, ib) = a.reset(options={"index": i}), b.reset(options={"index": i})
        assert oa["text"] == ob["text"] and ia == ib
        assert len(oa["images"]) == len(ob["images"])
        assert all(np.array_equal(x, y) for x, y in zip(oa["images"], ob["images"]))
        assert oa in a.observation_space and ob in b.observation_space


def test_rows_aliases_and_images(test_rewards):
    env = DatasetVQAEnv(path=str(JSONL), rewards=test_rewards)
    obs, info = env.reset(options={"index": 0})
    assert obs["text"] == "How many shapes are there? Answer with <answer>...</answer>."
    assert info["answer"] == "3" and info["solution"].endswith("<answer>3</answer>")
    expected = np.asarray(Image.open(ASSETS / "images" / "count_3.png").convert("RGB"))
    assert obs["images"][0].dtype == np.uint8 and np.array_equal(obs["images"][0], expected)
    obs, info = env.reset(options={"index": 1})  # problem + image aliases
    assert obs["text"].startswith("What colour is the square?") and len(obs["images"]) == 1 and info["answer"] == "red"
    obs, info = env.reset(options={"index": 2})  # question + solution "<answer> left </answer>"
    assert obs["text"].startswith("Is the circle left") and info["answer"] == "left"
    obs, _ = env.reset(options={"index": 3})
    assert len(obs["images"]) == 2
    obs, _ = env.reset(options={"index": 4})
    assert obs["images"] == () and obs in env.observation_space
    _, info = env.reset(options={"index": 5})
    assert info["answer_choices"] == ["red", "green", "blue", "yellow"]


def test_image_paths_are_relative_to_the_data_file(data_dir, tmp_path, monkeypatch, test_rewards):
    path = write_jsonl(data_dir / "rows.jsonl", [GOOD, {**GOOD, "images": [str(data_dir / "images" / "count_1.png")]}])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    env = DatasetVQAEnv(path=str(path), rewards=test_rewards)
    assert env.reset(options={"index": 0})[0]["images"][0].shape == (56, 56, 3)
    assert env.reset(options={"index": 1})[0]["images"][0].shape == (56, 56, 3)  # absolute paths work too


def test_extra_columns_reach_rewards_and_info(test_rewards, seen_columns):
    env = DatasetVQAEnv(path=str(JSONL), rewards={**test_rewards, "test_columns": 0.0})
    obs, info = env.reset(options={"index": 0})
    assert info["data_source"] == "shapes" and info["image_size"] == [56, 56] and info["row_index"] == 0
    _, _, _, _, step_info = env.step(info["solution"])
    assert step_info["data_source"] == "shapes" and step_info["image_size"] == [56, 56]
    cols = dict(seen_columns[-1])
    # model judges get the question and the images the policy saw
    assert cols.pop("question") == [obs["text"]]
    [images] = cols.pop("images")
    assert len(images) == len(obs["images"]) and all(np.array_equal(a, b) for a, b in zip(images, obs["images"]))
    assert cols == {"answer": ["3"], "require_tags": [True], "data_source": ["shapes"], "image_size": [[56, 56]]}
    env.reset(options={"index": 5})
    env.step("")
    assert seen_columns[-1]["answer_choices"] == [["red", "green", "blue", "yellow"]]


def test_shadowed_alias_goes_to_rewards_only(data_dir, test_rewards, seen_columns):
    path = write_jsonl(data_dir / "rows.jsonl", [{**GOOD, "solution": "Three shapes: <answer>3</answer>"}])
    env = DatasetVQAEnv(path=str(path), rewards={**test_rewards, "test_columns": 0.0})
    _, info = env.reset()
    assert info["answer"] == "3" and info["solution"] == "<think>The answer is 3.</think><answer>3</answer>"
    env.step("<answer>3</answer>")
    assert seen_columns[-1]["solution"] == ["Three shapes: <answer>3</answer>"]


def test_numeric_answers_and_hf_image_structs(data_dir, test_rewards):
    png = (data_dir / "images" / "count_1.png").read_bytes()
    rows = [
        {"question": "How many?", "images": [{"bytes": png, "path": None}], "answer": "1"},
        {"question": "How many?", "images": [{"bytes": None, "path": "images/count_3.png"}], "answer": "3"},
    ]
    path = data_dir / "hf.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    env = DatasetVQAEnv(path=str(path), rewards=test_rewards)
    assert env.reset()[0]["images"][0].shape == (56, 56, 3)
    assert env.reset()[0]["images"][0].shape == (56, 56, 3)
    path = write_jsonl(data_dir / "num.jsonl", [{"prompt": "2+2?", "answer": 4}])
    env = DatasetVQAEnv(path=str(path), rewards=test_rewards)
    assert env.reset()[1]["answer"] == "4"
    assert env.step("<answer>4.0</answer>")[4]["success"] is True  # numbers compare by value


def test_a_line_break_character_inside_a_json_string_stays_in_its_row(data_dir, test_rewards):
    prompt = "Two lines:\u2028one\x85two\x0cthree. How many shapes?"  # no JSON line ends, though str.splitlines splits
    path = data_dir / "rows.jsonl"
    path.write_text(json.dumps({**GOOD, "prompt": prompt}, ensure_ascii=False) + "\r\n" + json.dumps(GOOD) + "\n")
    env = DatasetVQAEnv(path=str(path), prompt_suffix="", rewards=test_rewards)
    assert env.num_rows == 2 and env.reset()[0]["text"] == prompt


def test_parquet_rows_are_read_in_batches(data_dir, test_rewards, monkeypatch):
    monkeypatch.setattr(parquet, "PARQUET_BATCH_ROWS", 2)
    rows = [{**GOOD, "answer": str(i)} for i in range(5)]
    path = data_dir / "rows.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    env = DatasetVQAEnv(path=str(path), rewards=test_rewards)
    assert [env.reset()[1]["answer"] for _ in range(5)] == ["0", "1", "2", "3", "4"]
    assert DatasetVQAEnv(path=str(path), max_rows=3, rewards=test_rewards).num_rows == 3  # across a batch boundary
    pq.write_table(pa.Table.from_pylist([*rows[:3], {**GOOD, "images": ["images/missing.png"]}]), path)
    with pytest.raises(DatasetError, match=r"rows\.parquet, row 3: field 'images\[0\]': image file not found"):
        DatasetVQAEnv(path=str(path), rewards=test_rewards)
    (data_dir / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DatasetError, match=r"broken\.parquet: cannot read Parquet"):
        DatasetVQAEnv(path=str(data_dir / "broken.parquet"), rewards=test_rewards)


# ------------------------------------------------------------------------------------------------------ bad rows
@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"images": ["images/count_3.png"], "answer": "3"}, "line 2: missing field 'prompt'"),
        ({"prompt": "How many?", "images": ["images/count_3.png"]}, "line 2: missing field 'answer'"),
        ({**GOOD, "images": "images/count_3.png"}, "line 2: field 'images' must be a list"),
        (
            {**GOOD, "images": ["images/count_3.png", "images/missing.png"]},
            "line 2: field 'images[1]': image file not found",
        ),
        ({**GOOD, "image": "nope.png", "images": None}, "line 2: field 'image': image file not found"),
        ({**GOOD, "images": [3]}, "line 2: field 'images[0]' must be an image path"),
        ({**GOOD, "prompt": ["a", "b"]}, "line 2: field 'prompt' must be a string"),
        ({**GOOD, "answer": {"a": 1}}, "line 2: field 'answer' must be a string or number"),
        ({**GOOD, "answer_choices": "abc"}, "line 2: field 'answer_choices' must be a list"),
        ({**GOOD, "success": True}, "line 2: column 'success' clashes"),
        ([1, 2], "line 2: a row must be an object"),
        ('{"prompt": "unterminated', "line 2: invalid JSON"),
    ],
)
def test_bad_jsonl_row_is_a_one_line_error(data_dir, test_rewards, row, message):
    path = write_jsonl(data_dir / "bad.jsonl", [GOOD, row, GOOD])
    with pytest.raises(DatasetError) as err:
        DatasetVQAEnv(path=str(path), rewards=test_rewards)
    text = str(err.value)
    assert "\n" not in text and str(path) in text and message in text


def test_bad_parquet_row_names_the_row(data_dir, test_rewards):
    rows = [GOOD, {**GOOD, "images": ["images/missing.png"]}]
    path = data_dir / "bad.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    with pytest.raises(DatasetError, match=r"bad\.parquet, row 1: field 'images\[0\]': image file not found"):
        DatasetVQAEnv(path=str(path), rewards=test_rewards)


def test_bad_files_and_config(tmp_path, test_rewards):
    with pytest.raises(ConfigError, match="path"):
        DatasetVQAEnv(rewards=test_rewards)
    with pytest.raises(DatasetError, match="not found"):
        DatasetVQAEnv(path=str(tmp_path / "none.jsonl"), rewards=test_rewards)
    (tmp_path / "rows.csv").write_text("prompt,answer\n")
    with pytest.raises(DatasetError, match="unknown data format"):
        DatasetVQAEnv(path=str(tmp_path / "rows.csv"), rewards=test_rewards)
    with pytest.raises(DatasetError, match="no rows"):
        DatasetVQAEnv(path=str(write_jsonl(tmp_path / "empty.jsonl", [])), rewards=test_rewards)
    with pytest.raises(ConfigError, match="did you mean 'shuffle'"):
        DatasetVQAEnv(path=str(JSONL), shufle=True)


def test_images_are_opened_lazily(data_dir, test_rewards):
    (data_dir / "images" / "broken.png").write_bytes(b"not a png")
    path = write_jsonl(data_dir / "rows.jsonl", [GOOD, {**GOOD, "images": ["images/broken.png"]}])
    env = DatasetVQAEnv(path=str(path), rewards=test_rewards)  # loads: the file exists
    env.reset()
    _, info = env.reset()  # the broken row is found only now, and skipped (tests/envs/test_vqa_dataset_bad_rows.py)
    assert info["row_index"] == 0 and info["bad_rows"] == 1
    assert [s.split(": cannot")[0] for s in info["skipped"]] == [f"{path}, line 2: field 'images[0]'"]
    with pytest.raises(DatasetError, match=r"line 2: field 'images\[0\]': cannot read image"):
        env.reset(options={"index": 1})  # asked for by index: an error


# ------------------------------------------------------------------------------------------ actions and the API
@pytest.mark.parametrize("action", ["", "3", "<answer>", "<think>x</think>", "\ud800 garbage", "<answer>" * 1000])
def test_malformed_action_scores_the_minimum(test_rewards, action):
    env = DatasetVQAEnv(path=str(JSONL), rewards=test_rewards)
    env.reset(options={"index": 0})
    _, reward, terminated, truncated, info = env.step(action)
    assert reward == 0.0 and terminated and not truncated and info["success"] is False


def test_step_semantics(test_rewards):
    env = DatasetVQAEnv(path=str(JSONL), rewards=test_rewards)
    with pytest.raises(gym.error.ResetNeeded):
        env.step("<answer>3</answer>")
    _, info = env.reset(options={"index": 0})
    obs, reward, terminated, truncated, info = env.step(info["solution"])
    assert (reward, terminated, truncated, info["success"]) == (1.5, True, False, True)
    assert info["parsed_answer"] == "3" and info["reward_parts"] == {"test_exact": 1.0, "test_format": 1.0}
    assert obs in env.observation_space
    with pytest.raises(gym.error.ResetNeeded):
        env.step("<answer>3</answer>")


def test_order_shuffle_seed_and_index(test_rewards):
    env = DatasetVQAEnv(path=str(JSONL), rewards=test_rewards)
    assert [env.reset()[1]["row_index"] for _ in range(8)] == [0, 1, 2, 3, 4, 5, 0, 1]
    assert [env.reset(seed=4)[1]["row_index"], env.reset()[1]["row_index"]] == [4, 5]
    assert env.reset(options={"index": 2})[1]["row_index"] == 2 and env.reset()[1]["row_index"] == 0  # index: no move
    with pytest.raises(IndexError):
        env.reset(options={"index": 6})
    with pytest.raises(ValueError, match="unknown keys"):
        env.reset(options={"task": "count"})

    shuffled = [DatasetVQAEnv(path=str(JSONL), shuffle=True, seed=3, rewards=test_rewards) for _ in range(2)]
    runs = [[e.reset()[1]["row_index"] for _ in range(12)] for e in shuffled]
    assert runs[0] == runs[1]  # seeded
    assert sorted(runs[0][:6]) == sorted(runs[0][6:]) == list(range(6))  # each pass visits every row once
    assert runs[0][:6] != list(range(6)) or runs[0][6:] != list(range(6))
    other = DatasetVQAEnv(path=str(JSONL), shuffle=True, seed=4, rewards=test_rewards)
    assert [other.reset()[1]["row_index"] for _ in range(12)] != runs[0]


def test_max_rows_and_resize(test_rewards):
    env = DatasetVQAEnv(path=str(PARQUET), max_rows=3, image_size=[28, 42], rewards=test_rewards)
    assert env.num_rows == 3
    obs, _ = env.reset(options={"index": 0})
    assert obs["images"][0].shape == (28, 42, 3) and obs in env.observation_space
    assert env.observation_space["images"].feature_space.shape == (28, 42, 3)
    assert DatasetVQAEnv(path=str(JSONL), max_rows=2, rewards=test_rewards).num_rows == 2


def test_registry_config_object_and_render(test_rewards):
    env = envs.make("dataset_vqa", path=str(JSONL), rewards=test_rewards)
    obs, _ = env.reset(options={"index": 3})
    assert np.array_equal(env.render(), obs["images"][0])
    env = DatasetVQAEnv(DatasetVQAConfig(path=str(JSONL), prompt_suffix="", rewards=test_rewards))
    assert env.reset()[0]["text"] == "How many shapes are there?"


@pytest.mark.parametrize("path", [JSONL, PARQUET])
@pytest.mark.filterwarnings("ignore:.*not having a spec")
def test_gymnasium_env_checker(test_rewards, path):
    check_env(DatasetVQAEnv(path=str(path), rewards=test_rewards))
    check_env(DatasetVQAEnv(path=str(path), image_size=56, rewards=test_rewards))


def test_fixtures_script_reproduces_committed_assets(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "make_vqa_fixtures", ASSETS.parents[1] / "scripts" / "make_vqa_fixtures.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    written = module.write_fixtures(tmp_path)
    for path in written:
        committed = ASSETS / path.relative_to(tmp_path)
        if path.suffix == ".parquet":
            assert pq.read_table(path).to_pylist() == pq.read_table(committed).to_pylist()
        else:
            assert path.read_bytes() == committed.read_bytes(), path.name
    assert sum(p.stat().st_size for p in ASSETS.rglob("*") if p.is_file()) < 50_000
    assert Image.open(io.BytesIO((ASSETS / "images" / "count_3.png").read_bytes())).size == (56, 56)
