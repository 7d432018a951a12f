"""DatasetVQAEnv and bad data: rows refused at load (one line naming file, line/row and field), rows whose images do
not decode skipped at reset (counted in ``info["bad_rows"]``, located in ``info["skipped"]``), over-long prompts.

Every fixture is made here at run time: corrupt images are random bytes or the first half of a PNG, and "deleted"
images are removed after the env was built.
"""

from __future__ import annotations

import io
import json
import logging
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from envs.vqa import DatasetVQAEnv, dataset
from envs.vqa.dataset import DatasetError
from mmrl.config import ConfigError

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "vqa"
GOOD = {"prompt": "How many shapes?", "images": ["images/count_3.png"], "answer": "3"}
NOISE = np.random.default_rng(0).bytes(512)  # not any image format


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A copy of the fixture images under tmp_path/data/images, plus a corrupt (random bytes) and a truncated one."""
    images = tmp_path / "data" / "images"
    shutil.copytree(ASSETS / "images", images)
    (images / "noise.png").write_bytes(NOISE)
    png = (images / "count_3.png").read_bytes()
    (images / "truncated.png").write_bytes(png[: len(png) // 2])  # opens (the header is fine), fails to load
    return tmp_path / "data"


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def numbered(count: int, bad: dict[int, list[str]]) -> list[dict[str, Any]]:
    """``count`` good rows whose answer is their index, except those in ``bad`` (index -> image paths)."""
    return [{**GOOD, "images": bad.get(i, GOOD["images"]), "answer": str(i)} for i in range(count)]


def one_line(err: pytest.ExceptionInfo[BaseException], *parts: str) -> str:
    text = str(err.value)
    assert "\n" not in text, text
    for part in parts:
        assert part in text, text
    return text


# ------------------------------------------------------------------------------------------ decodable image modes
@pytest.mark.parametrize("mode", ["P", "RGBA", "L", "LA", "1", "I;16"])
@pytest.mark.filterwarnings("ignore:Palette images with Transparency")  # PIL's note on converting P with alpha
def test_images_of_any_mode_decode_as_rgb(data_dir, test_rewards, mode):
    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, (20, 30, 4), dtype=np.uint8), "RGBA").convert(mode)
    image.save(data_dir / "images" / "mode.png")
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    rows = [
        {**GOOD, "images": [{"bytes": None, "path": "images/mode.png"}]},
        {**GOOD, "images": [{"bytes": buf.getvalue(), "path": None}]},
    ]
    pq.write_table(pa.Table.from_pylist(rows), data_dir / "modes.parquet")
    expected = np.asarray(Image.open(data_dir / "images" / "mode.png").convert("RGB"))
    env = DatasetVQAEnv(path=str(data_dir / "modes.parquet"), rewards=test_rewards)
    for index in (0, 1):
        obs, info = env.reset()
        assert info["row_index"] == index and info["bad_rows"] == 0 and info["skipped"] == []
        assert obs["images"][0].dtype == np.uint8 and np.array_equal(obs["images"][0], expected)


# ------------------------------------------------------------------------------------------ skipped at reset
def test_corrupt_jsonl_image_is_skipped_with_one_warning(data_dir, test_rewards, caplog):
    path = write_jsonl(data_dir / "rows.jsonl", numbered(3, {1: ["images/noise.png"]}))
    env = DatasetVQAEnv(path=str(path), rewards=test_rewards)  # the file exists: the rows load
    with caplog.at_level(logging.WARNING, logger="envs.vqa.dataset"):
        infos = [env.reset()[1] for _ in range(3)]
    assert [i["row_index"] for i in infos] == [0, 2, 0]
    assert [i["bad_rows"] for i in infos] == [0, 1, 1]
    assert infos[0]["skipped"] == [] and infos[2]["skipped"] == []
    [where] = infos[1]["skipped"]
    assert where.startswith(f"{path}, line 2: field 'images[0]': cannot read image ") and "noise.png" in where
    assert "\n" not in where
    [record] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert str(path) in record.getMessage() and "line 2" in record.getMessage()


def test_corrupt_parquet_image_is_skipped_naming_the_row(data_dir, test_rewards):
    rows = [
        {**GOOD, "images": [{"bytes": None, "path": "images/count_3.png"}], "answer": "0"},
        {**GOOD, "images": [{"bytes": NOISE, "path": None}], "answer": "1"},  # embedded, not an image
        {**GOOD, "images": [{"bytes": b"<svg xmlns='http://www.w3.org/2000/svg'/>", "path": None}], "answer": "2"},
        {**GOOD, "images": [{"bytes": None, "path": "images/count_1.png"}], "answer": "3"},
    ]
    path = data_dir / "rows.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    env = DatasetVQAEnv(path=str(path), rewards=test_rewards)
    env.reset()
    obs, info = env.reset()
    assert info["row_index"] == 3 and info["bad_rows"] == 2 and obs["images"][0].shape == (56, 56, 3)
    assert [s.split(":")[0] for s in info["skipped"]] == [f"{path}, row 1", f"{path}, row 2"]
    assert all("field 'images[0]': cannot read image (embedded bytes)" in s for s in info["skipped"])


@pytest.mark.parametrize("broken", ["deleted", "truncated", "directory"])
def test_unreadable_image_file_is_skipped(data_dir, test_rewards, broken):
    (data_dir / "images" / "gone.png").write_bytes((data_dir / "images" / "count_1.png").read_bytes())
    (data_dir / "images" / "dir.png").mkdir()
    image = {"deleted": "images/gone.png", "truncated": "images/truncated.png", "directory": "images/dir.png"}[broken]
    path = write_jsonl(data_dir / "rows.jsonl", numbered(3, {1: ["images/count_1.png", image]}))
    if broken == "directory":  # not a file: refused at load, before any image is decoded
        with pytest.raises(DatasetError) as err:
            DatasetVQAEnv(path=str(path), rewards=test_rewards)
        one_line(err, str(path), "line 2", "field 'images[1]'")
        return
    env = DatasetVQAEnv(path=str(path), rewards=test_rewards)
    (data_dir / "images" / "gone.png").unlink()  # after load: the table checked it existed
    assert [env.reset(seed=1)[1]["row_index"] for _ in range(2)] == [2, 2]
    _, info = env.reset(seed=1)
    [where] = info["skipped"]
    assert where.startswith(f"{path}, line 2: field 'images[1]': cannot read image ") and info["bad_rows"] == 1


def test_explicit_index_of_a_bad_row_is_a_one_line_error(data_dir, test_rewards):
    path = write_jsonl(data_dir / "rows.jsonl", numbered(3, {1: ["images/noise.png"]}))
    env = DatasetVQAEnv(path=str(path), rewards=test_rewards)
    with pytest.raises(DatasetError) as err:
        env.reset(options={"index": 1})
    one_line(err, str(path), "line 2", "field 'images[0]'", "cannot read image")
    _, info = env.reset()  # the position did not move, nothing was skipped
    assert info["row_index"] == 0 and info["bad_rows"] == 0


@pytest.mark.parametrize("shuffle", [False, True])
def test_a_pass_over_ten_rows_with_two_bad_visits_every_good_row(data_dir, tmp_path, test_rewards, shuffle):
    shutil.copy(data_dir / "images" / "count_1.png", data_dir / "images" / "later_deleted.png")
    path = write_jsonl(
        data_dir / "rows.jsonl", numbered(10, {3: ["images/noise.png"], 7: ["images/later_deleted.png"]})
    )
    env = DatasetVQAEnv(path=str(path), shuffle=shuffle, seed=5, rewards=test_rewards)
    (data_dir / "images" / "later_deleted.png").unlink()
    infos = [env.reset()[1] for _ in range(8)]  # 8 good rows: one pass of the 10 positions
    assert sorted(int(i["answer"]) for i in infos) == [0, 1, 2, 4, 5, 6, 8, 9]
    assert infos[-1]["bad_rows"] == 2
    skipped = sorted(s for i in infos for s in i["skipped"])
    assert [s.split(": field")[0] for s in skipped] == [f"{path}, line 4", f"{path}, line 8"]
    again = [env.reset()[1] for _ in range(8)]  # the next pass skips them again; they are counted once
    assert sorted(int(i["answer"]) for i in again) == [0, 1, 2, 4, 5, 6, 8, 9] and again[-1]["bad_rows"] == 2


AUGMENT = [{"name": "mixup", "p": 1.0}, {"name": "rotation", "p": 0.5}]


def test_reset_seed_with_skips_is_deterministic(data_dir, test_rewards):
    bad = {1: ["images/noise.png"], 2: ["images/truncated.png"], 5: ["images/noise.png"]}
    path = write_jsonl(data_dir / "rows.jsonl", numbered(8, bad))
    # mixup draws other rows' images, bad ones among them: they are passed over without changing the randomness
    a, b = (DatasetVQAEnv(path=str(path), augment=AUGMENT, rewards=test_rewards) for _ in range(2))
    assert a.reset(seed=1)[1]["row_index"] == 3  # the next good position after 1
    for seed in [6, 1, 2, 5, 0, 1]:
        (oa, ia), (ob, ib) = a.reset(seed=seed), b.reset(seed=seed)
        assert ia["row_index"] == ib["row_index"] and oa["text"] == ob["text"] and ia["augment"] == ib["augment"]
        assert all(np.array_equal(x, y) for x, y in zip(oa["images"], ob["images"]))
    # the draws are those of a file without bad images: same rows, same augmentations applied
    clean = DatasetVQAEnv(path=str(write_jsonl(data_dir / "clean.jsonl", numbered(8, {}))), augment=AUGMENT,
                          rewards=test_rewards)  # fmt: skip
    mixed_from_bad = 0
    for seed in (s for s in range(40) if s % 8 not in bad):  # positions of good rows, over five passes
        (oa, ia), (oc, ic) = a.reset(seed=seed), clean.reset(seed=seed)
        assert ia["row_index"] == ic["row_index"] == seed % 8 and ia["augment"] == ic["augment"]
        assert oa["text"] == oc["text"] and oa["images"][0].shape == oc["images"][0].shape
        mixed_from_bad += bool(ia["skipped"])  # mixup drew a bad row's image and took the next one
    assert mixed_from_bad > 0
    first = DatasetVQAEnv(path=str(path), augment=AUGMENT, shuffle=True, rewards=test_rewards).reset(seed=4)
    second = DatasetVQAEnv(path=str(path), augment=AUGMENT, shuffle=True, rewards=test_rewards).reset(seed=4)
    assert first[1]["row_index"] == second[1]["row_index"] not in bad
    assert np.array_equal(first[0]["images"][0], second[0]["images"][0])


@pytest.mark.parametrize("shuffle", [False, True])
def test_every_row_bad_is_a_one_line_error(data_dir, test_rewards, shuffle):
    path = write_jsonl(data_dir / "rows.jsonl", numbered(4, {i: ["images/noise.png"] for i in range(4)}))
    env = DatasetVQAEnv(path=str(path), shuffle=shuffle, rewards=test_rewards)
    for seed in (None, 2, 3):
        with pytest.raises(DatasetError) as err:
            env.reset(seed=seed)
        one_line(err, str(path), "4 rows")


def test_no_decodable_other_image_is_a_one_line_error(data_dir, test_rewards):
    path = write_jsonl(data_dir / "rows.jsonl", [GOOD, {**GOOD, "images": ["images/noise.png"]}])
    env = DatasetVQAEnv(path=str(path), augment=[{"name": "mixup", "p": 1.0}], rewards=test_rewards)
    with pytest.raises(DatasetError) as err:
        env.reset(options={"index": 0})
    one_line(err, str(path), "line 1")


# ------------------------------------------------------------------------------------------ refused at load
@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({**GOOD, "prompt": ""}, "line 2: field 'prompt' is empty"),
        ({**GOOD, "prompt": " \n\t "}, "line 2: field 'prompt' is empty"),
        ({**GOOD, "prompt": None, "question": "  "}, "line 2: field 'question' is empty"),
        ('{"prompt": "How many?", "answer": NaN}', "line 2: field 'answer' must be a finite number, got nan"),
        ('{"prompt": "How many?", "answer": Infinity}', "line 2: field 'answer' must be a finite number, got inf"),
        ('{"prompt": "How many?", "answer": -Infinity}', "line 2: field 'answer' must be a finite number, got -inf"),
        ({**GOOD, "answer": ""}, "line 2: field 'answer' is empty"),
        ({**GOOD, "answer": "   "}, "line 2: field 'answer' is empty"),
        ({**GOOD, "answer": None, "solution": "<answer> </answer>"}, "line 2: field 'solution' is empty"),
        ({**GOOD, "answer": True}, "line 2: field 'answer' must be a string or number"),
        ({**GOOD, "answer": [3]}, "line 2: field 'answer' must be a string or number"),
        ({**GOOD, "images": [{"bytes": "iVBORw0KGgo=", "path": None}]}, "line 2: field 'images[0].bytes' must be"),
        ({**GOOD, "images": [{"bytes": 5, "path": None}]}, "line 2: field 'images[0].bytes' must be"),
        ({**GOOD, "images": None, "image": {"bytes": 1.5}}, "line 2: field 'image.bytes' must be"),
        (
            {**GOOD, "prompt": "x" * 1_000_000},
            "line 2: field 'prompt' has 1000000 characters, more than max_prompt_chars",
        ),
        ({**GOOD, "skipped": ["x"]}, "line 2: column 'skipped' clashes"),
        ({**GOOD, "bad_rows": 1}, "line 2: column 'bad_rows' clashes"),
        ({**GOOD, "truncated_rows": 1}, "line 2: column 'truncated_rows' clashes"),
        ('{"prompt": "How many?", "answer": ' + "1" * 5000 + "}", "line 2: invalid JSON"),
        ("[" * 100_000, "line 2: invalid JSON"),
    ],
)
def test_bad_jsonl_row_is_refused_at_load(data_dir, test_rewards, row, message):
    path = write_jsonl(data_dir / "bad.jsonl", [GOOD, row, GOOD])
    with pytest.raises(DatasetError) as err:
        DatasetVQAEnv(path=str(path), rewards=test_rewards)
    one_line(err, str(path), message)


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("answer", math.nan, "row 1: field 'answer' must be a finite number, got nan"),
        ("answer", math.inf, "row 1: field 'answer' must be a finite number, got inf"),
        ("answer", "", "row 1: field 'answer' is empty"),
        ("prompt", "   ", "row 1: field 'prompt' is empty"),
        ("images", [{"bytes": "not bytes", "path": None}], "row 1: field 'images[0].bytes' must be"),
    ],
)
def test_bad_parquet_row_is_refused_at_load(data_dir, test_rewards, column, value, message):
    good = {**GOOD, "answer": 3.0} if column == "answer" and not isinstance(value, str) else dict(GOOD)
    if column == "images":
        good["images"] = [{"bytes": "", "path": "images/count_3.png"}]  # the same struct type in every row
    path = data_dir / "bad.parquet"
    pq.write_table(pa.Table.from_pylist([good, {**good, column: value}, good]), path)
    with pytest.raises(DatasetError) as err:
        DatasetVQAEnv(path=str(path), rewards=test_rewards)
    one_line(err, str(path), message)


# ------------------------------------------------------------------------------------------ long prompts
def test_long_prompt_is_an_error_or_truncated(data_dir, test_rewards):
    long = "How many shapes? " + "x" * 1_000_000
    path = write_jsonl(data_dir / "rows.jsonl", [GOOD, {**GOOD, "prompt": long}, {**GOOD, "prompt": long[:300]}])
    with pytest.raises(DatasetError) as err:
        DatasetVQAEnv(path=str(path), rewards=test_rewards)
    one_line(err, str(path), "line 2", "field 'prompt'", "max_prompt_chars=20000", "long_prompts")
    with pytest.raises(DatasetError) as err:
        DatasetVQAEnv(path=str(path), max_prompt_chars=200, long_prompts="error", rewards=test_rewards)
    one_line(err, "line 2", "max_prompt_chars=200")

    env = DatasetVQAEnv(path=str(path), max_prompt_chars=200, long_prompts="truncate", rewards=test_rewards)
    assert env.truncated_rows == 2
    texts = []
    for _ in range(3):
        obs, info = env.reset()
        assert info["truncated_rows"] == 2 and obs in env.observation_space
        texts.append(obs["text"])
    suffix = env.config.prompt_suffix
    assert texts == [GOOD["prompt"] + suffix, long[:200] + suffix, long[:200] + suffix]
    assert env.observation_space["text"].max_length == 200 + len(suffix)

    for off in (0, None):  # no limit
        env = DatasetVQAEnv(path=str(path), max_prompt_chars=off, rewards=test_rewards)
        assert env.reset(seed=1)[0]["text"] == long + suffix and env.truncated_rows == 0
    clean = DatasetVQAEnv(path=str(ASSETS / "sample.jsonl"), rewards=test_rewards)
    _, info = clean.reset()
    assert (clean.truncated_rows, info["truncated_rows"], info["bad_rows"], info["skipped"]) == (0, 0, 0, [])
    info = clean.step(info["solution"])[4]
    assert not {"truncated_rows", "bad_rows", "skipped"} & set(info)  # reset-only keys


def test_envs_with_other_prompt_limits_do_not_share_a_table(data_dir, test_rewards):
    path = write_jsonl(data_dir / "rows.jsonl", [GOOD, {**GOOD, "prompt": "y" * 500}])
    cut = DatasetVQAEnv(path=str(path), max_prompt_chars=100, long_prompts="truncate", rewards=test_rewards)
    full = DatasetVQAEnv(path=str(path), rewards=test_rewards)
    assert cut.rows is not full.rows and full.reset(seed=1)[0]["text"].startswith("y" * 500)
    with pytest.raises(DatasetError, match="max_prompt_chars=100"):
        DatasetVQAEnv(path=str(path), max_prompt_chars=100, rewards=test_rewards)
    unlimited = DatasetVQAEnv(path=str(path), max_prompt_chars=None, rewards=test_rewards)
    assert DatasetVQAEnv(path=str(path), max_prompt_chars=0, rewards=test_rewards).rows is unlimited.rows  # 0 = null
    assert dataset.DatasetVQAConfig().max_prompt_chars == 20000


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"long_prompts": "cut"}, "long_prompts: must be one of error | truncate, got 'cut'"),
        ({"max_prompt_chars": -1}, "max_prompt_chars: must be an integer >= 0 or null"),
    ],
)
def test_prompt_limit_config_errors(test_rewards, kwargs, message):
    with pytest.raises(ConfigError) as err:
        DatasetVQAEnv(path=str(ASSETS / "sample.jsonl"), rewards=test_rewards, **kwargs)
    one_line(err, message)
