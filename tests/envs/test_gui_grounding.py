"""GuiGroundingEnv and the synthetic screens: coordinate conventions against formulas written out here, oracle and
off-target answers scored by the real rewards, the ScreenSpot-format file source (both bbox formats, bad rows, paths
leaving the directory), seeding, splits and the Gymnasium API."""

from __future__ import annotations

import doctest
import hashlib
import json
import math
import re
import shutil
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from PIL import Image

import envs.gui.grounding as grounding_module
import envs.gui.screens as screens_module
from envs.gui.grounding import GuiGroundingEnv
from envs.gui.screens import BACKGROUND, LEVELS, generate_screen
from envs.vqa.dataset import DatasetError
from mmrl.config import ConfigError

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "assets" / "gui" / "screenspot_fixture"
CONVENTIONS = ("pixel", "qwen2_5_vl", "qwen2_vl", "qwen3_vl", "normalized")
SIZES = ([112, 112], [240, 320], [300, 200])  # [height, width]
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def resized(height: int, width: int, min_pixels: int = 56 * 56, max_pixels: int = 28 * 28 * 1280) -> tuple[int, int]:
    """Qwen2.5-VL's smart_resize, written out from the model card's rule (sides multiples of 28, pixels in range)."""
    h, w = round(height / 28) * 28, round(width / 28) * 28
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h, w = max(28, math.floor(height / beta / 28) * 28), max(28, math.floor(width / beta / 28) * 28)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h, w = math.ceil(height * beta / 28) * 28, math.ceil(width * beta / 28) * 28
    return h, w


def to_convention(x: float, y: float, convention: str, width: int, height: int, **pixels: int) -> tuple[float, float]:
    """Original pixels -> the convention, from REFERENCE.md's definitions (independent of rewards.coords)."""
    if convention == "pixel":
        return x, y
    if convention == "qwen2_5_vl":
        h_r, w_r = resized(height, width, **pixels)
        return x * w_r / width, y * h_r / height
    if convention in ("qwen2_vl", "qwen3_vl"):
        return x / width * 1000, y / height * 1000
    return x / width, y / height


def numbers(text: str) -> list[float]:
    return [float(v) for v in NUMBER.findall(text.split("<answer>")[1].replace("bbox_2d", ""))]


# ------------------------------------------------------------------------------------------------------------ screens
@pytest.mark.parametrize("difficulty", [1, 2, 3])
def test_screens_elements_are_drawn_inside_their_boxes(difficulty):
    level = LEVELS[difficulty]
    for seed in range(15):
        screen = generate_screen(np.random.default_rng(seed), 320, 240, difficulty)
        body = [e for e in screen.elements if e.kind not in ("menu", "menu_item")]
        assert level.count[0] - 2 <= len(body) <= level.count[1]  # an element may find no room (rare)
        if level.distinct_kinds:
            assert len({e.kind for e in body}) == len(body)
        for i, e in enumerate(screen.elements):
            x1, y1, x2, y2 = e.box
            assert 0 <= x1 < x2 <= 320 and 0 <= y1 < y2 <= 240
            patch = screen.image[y1:y2, x1:x2].reshape(-1, 3)  # [h*w, 3]
            assert (np.abs(patch.astype(int) - patch[0].astype(int)).sum(axis=1) > 60).any(), e  # something drawn
            for other in screen.elements[i + 1 :]:  # no two elements overlap
                ox1, oy1, ox2, oy2 = other.box
                assert x2 <= ox1 or ox2 <= x1 or y2 <= oy1 or oy2 <= y1, (e, other)
        # outside every element and chrome the level-1 screen is plain background
        if difficulty == 1:
            mask = np.ones((240, 320), bool)
            for e in screen.elements:
                x1, y1, x2, y2 = e.box
                mask[y1:y2, x1:x2] = False
            assert (screen.image[mask] == BACKGROUND).all()


def test_screens_are_seeded():
    a = generate_screen(np.random.default_rng(7), 320, 240, 3)
    b = generate_screen(np.random.default_rng(7), 320, 240, 3)
    c = generate_screen(np.random.default_rng(8), 320, 240, 3)
    assert a.elements == b.elements and np.array_equal(a.image, b.image)
    assert a.elements != c.elements


# -------------------------------------------------------------------------------------------------------- conventions
@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize("hw", SIZES, ids=str)
def test_oracle_point_is_the_box_centre_in_the_convention(convention, hw):
    env = GuiGroundingEnv(image_size=hw, coordinate_convention=convention, difficulty=2, seed=0)
    h, w = hw
    for seed in range(10):
        obs, info = env.reset(seed=seed)
        x1, y1, x2, y2 = info["bbox"]
        want = to_convention((x1 + x2) / 2, (y1 + y2) / 2, convention, w, h)
        got = numbers(info["solution"])
        tol = 0.5 if float(got[0]).is_integer() and float(got[1]).is_integer() else 0.005
        assert len(got) == 2 and all(abs(g - v) <= tol + 1e-9 for g, v in zip(got, want)), (got, want)
        # and back: the env's frame maps the convention to the same pixels as the inverse formula
        frame = env.frame(w, h)
        sx, sy = to_convention(1.0, 1.0, convention, w, h)
        assert frame.to_pixels(got) == pytest.approx((got[0] / sx, got[1] / sy))
        _, reward, _, _, step_info = env.step(info["solution"])
        assert step_info["success"] and step_info["reward_parts"]["hit"] == 1.0


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_the_prompt_states_the_coordinate_range(convention):
    env = GuiGroundingEnv(image_size=[240, 320], coordinate_convention=convention, seed=0)
    text = env.reset()[0]["text"]
    expected = {"pixel": "320x240", "qwen2_5_vl": "{1}x{0}".format(*resized(240, 320)), "qwen2_vl": "0-1000",
                "qwen3_vl": "0-1000", "normalized": "0-1 "}[convention]  # fmt: skip
    assert expected in text


def test_qwen2_5_vl_uses_the_configured_pixel_range():
    env = GuiGroundingEnv(image_size=[240, 320], coordinate_convention="qwen2_5_vl", min_pixels=112 * 112,
                          max_pixels=112 * 112, seed=0)  # fmt: skip
    obs, info = env.reset(seed=1)
    h_r, w_r = resized(240, 320, 112 * 112, 112 * 112)
    assert (h_r, w_r) == (84, 112) and f"{w_r}x{h_r}" in obs["text"]
    x1, y1, x2, y2 = info["bbox"]
    want = to_convention(
        (x1 + x2) / 2, (y1 + y2) / 2, "qwen2_5_vl", 320, 240, min_pixels=112 * 112, max_pixels=112 * 112
    )
    assert numbers(info["solution"]) == pytest.approx(want, abs=0.5)
    assert env.step(info["solution"])[4]["success"]


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_a_point_outside_the_target_scores_zero(convention):
    env = GuiGroundingEnv(image_size=[240, 320], coordinate_convention=convention, difficulty=2, seed=0)
    for seed in range(10):
        obs, info = env.reset(seed=seed)
        x1, y1, x2, y2 = info["bbox"]
        # the image corner farthest from the box centre is outside it
        px = 1.0 if (x1 + x2) / 2 > 160 else 319.0
        py = 1.0 if (y1 + y2) / 2 > 120 else 239.0
        x, y = to_convention(px, py, convention, 320, 240)
        _, reward, terminated, _, step_info = env.step(f"<answer>click({x:.3f}, {y:.3f})</answer>")
        assert terminated and not step_info["success"] and step_info["reward_parts"]["hit"] == 0.0
        assert reward == pytest.approx(0.1)  # format_answer only


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_box_answers_score_the_box_rewards(convention):
    weights = {"hit": 1.0, "iou": 1.0, "box_size": 1.0, "gaussian_coverage": 1.0, "gaussian_point": 1.0}
    env = GuiGroundingEnv(image_size=[240, 320], coordinate_convention=convention, answer_type="box",
                          rewards=weights, difficulty=2, seed=0)  # fmt: skip
    for seed in range(5):
        obs, info = env.reset(seed=seed)
        assert '"bbox_2d"' in obs["text"]
        x1, y1, x2, y2 = info["bbox"]
        want = [*to_convention(x1, y1, convention, 320, 240), *to_convention(x2, y2, convention, 320, 240)]
        assert numbers(info["solution"]) == pytest.approx(want, abs=0.0051)  # two decimals
        parts = env.step(info["solution"])[4]["reward_parts"]
        assert parts["hit"] == 1.0 and parts["iou"] > 0.9 and parts["gaussian_coverage"] > 0.9
        assert parts["box_size"] > 0.12 and parts["gaussian_point"] > 0.95


def test_defer_rewards_hands_the_convention_to_the_trainer():
    env = GuiGroundingEnv(image_size=[240, 320], coordinate_convention="qwen2_vl", defer_rewards=True, seed=0)
    obs, info = env.reset()
    _, reward, _, _, step_info = env.step(info["solution"])
    cols = step_info["reward_columns"]
    assert reward == 0.0 and step_info["success"] and "reward_parts" not in step_info
    assert cols["coordinate_convention"] == "qwen2_vl" and cols["image_size"] == [320, 240]
    assert json.loads(cols["answer"]) == pytest.approx(info["bbox"])


def test_malformed_answers_score_the_minimum():
    env = GuiGroundingEnv(seed=0)
    for text in ["", "click", "<answer>click(1e999, 5)</answer>", "<answer>" + "(" * 50_000, "<answer>click(5, 5)",
                 "<answer>click(1, 1) click(100, 100)</answer>", None]:  # fmt: skip
        env.reset(seed=0)
        if text is None:
            with pytest.raises(TypeError):
                env.step(3)  # type: ignore[arg-type]
            continue
        _, reward, terminated, _, info = env.step(text)
        assert terminated and info["reward_parts"]["hit"] == 0.0 and reward <= 0.1 and not info["success"]


# --------------------------------------------------------------------------------------------------------- synthetic
def test_seeding_and_difficulty():
    env = GuiGroundingEnv(image_size=[240, 320], difficulty=3, seed=0)
    a, ia = env.reset(seed=5)
    b, ib = env.reset(seed=5)
    c, _ = env.reset(seed=6)
    assert a["text"] == b["text"] and np.array_equal(a["images"][0], b["images"][0]) and ia["bbox"] == ib["bbox"]
    assert not np.array_equal(a["images"][0], c["images"][0])
    easy = GuiGroundingEnv(difficulty=1, seed=0)
    counts = {d: [] for d in (1, 3)}
    for seed in range(20):
        counts[1].append(len(easy.reset(seed=seed)[1]["elements"]))
        counts[3].append(len(env.reset(seed=seed)[1]["elements"]))
        kinds = [e["kind"] for e in easy.reset(seed=seed)[1]["elements"]]
        assert len(set(kinds)) == len(kinds)  # level 1: the kind alone names the target
    assert max(counts[1]) <= 3 < min(counts[3])


def test_train_and_eval_screens_are_disjoint():
    digests = {}
    for split in ("train", "eval"):
        env = GuiGroundingEnv(difficulty=1, split=split, seed=0)
        digests[split] = {hashlib.sha256(env.reset(seed=s)[0]["images"][0].tobytes()).hexdigest() for s in range(150)}
    assert len(digests["train"]) > 30 and not digests["train"] & digests["eval"]


@pytest.mark.filterwarnings("ignore:.*not having a spec")
def test_gymnasium_env_checker():
    check_env(GuiGroundingEnv(difficulty=3, image_size=[120, 160]))
    check_env(GuiGroundingEnv(source="file", path=str(FIXTURE / "screenspot_synthetic.json")))


def test_gymnasium_env_checker_with_spec():
    gym.register(id="mmrl_test/GuiGrounding-v0", entry_point="envs.gui.grounding:GuiGroundingEnv")
    try:
        check_env(gym.make("mmrl_test/GuiGrounding-v0", difficulty=2).unwrapped)
    finally:
        gym.registry.pop("mmrl_test/GuiGrounding-v0")


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        ({"source": "web"}, "source"),
        ({"answer_type": "polygon"}, "answer_type"),
        ({"coordinate_convention": "qwen9"}, "coordinate_convention"),
        ({"difficulty": 4}, "difficulty"),
        ({"image_size": 32}, "image_size"),
        ({"split": "test"}, "split"),
        ({"min_pixels": 10}, "min_pixels"),
        ({"prompt_template": "{nope}"}, "prompt_template"),
        ({"rewards": {"no_such_reward": 1.0}}, "no_such_reward"),
        ({"source": "file"}, "path"),
        (
            {"source": "file", "path": str(FIXTURE / "screenspot_synthetic.json"), "bbox_format": "cxcywh"},
            "bbox_format",
        ),
        ({"colour": "red"}, "colour"),
    ],
)
def test_config_errors_name_the_argument(kwargs, names):
    with pytest.raises((ConfigError, KeyError)) as err:
        GuiGroundingEnv(**kwargs)
    assert names in str(err.value) and "\n" not in str(err.value)


# -------------------------------------------------------------------------------------------------------------- files
def test_fixture_files_give_the_same_targets_in_both_bbox_formats():
    rows = json.loads((FIXTURE / "screenspot_synthetic.json").read_text())
    v1 = GuiGroundingEnv(source="file", path=str(FIXTURE / "screenspot_synthetic.json"), bbox_format="xywh")
    pro = GuiGroundingEnv(source="file", path=str(FIXTURE / "screenspot_synthetic_xyxy.jsonl"), bbox_format="xyxy")
    assert len(v1.rows) == len(pro.rows) == len(rows)
    for i, row in enumerate(rows):
        obs, info = v1.reset(seed=i)
        _, info_pro = pro.reset(seed=i)
        x, y, w, h = row["bbox"]
        assert info["bbox"] == [x, y, x + w, y + h] == info_pro["bbox"]
        assert info["instruction"] == row["instruction"] and row["instruction"] in obs["text"]
        assert info["data_type"] == row["data_type"] == info_pro["data_type"]
        assert info["platform"] == row["data_source"] == info_pro["platform"]
        with Image.open(FIXTURE / row["img_filename"]) as img:
            assert np.array_equal(obs["images"][0], np.asarray(img.convert("RGB")))
        assert v1.step(info["solution"])[4]["success"]
        v1.reset(seed=i)
        assert not v1.step("<answer>click(0, 0)</answer>")[4]["success"]  # the fixture has no target at the corner


def test_normalized_xyxy_boxes(tmp_path):
    shutil.copytree(FIXTURE / "images", tmp_path / "images")
    rows = json.loads((FIXTURE / "screenspot_synthetic.json").read_text())
    with_sizes = [json.loads(line) for line in (FIXTURE / "screenspot_synthetic_xyxy.jsonl").read_text().splitlines()]
    norm = []
    for row, pro in zip(rows, with_sizes):
        (w, h), (x1, y1, x2, y2) = pro["img_size"], pro["bbox"]
        norm.append({**row, "bbox": [x1 / w, y1 / h, x2 / w, y2 / h]})
    (tmp_path / "norm.json").write_text(json.dumps(norm))
    env = GuiGroundingEnv(source="file", path=str(tmp_path / "norm.json"), bbox_format="xyxy_normalized")
    for i, pro in enumerate(with_sizes):
        obs, info = env.reset(seed=i)
        assert info["bbox"] == pytest.approx(pro["bbox"]) and env.step(info["solution"])[4]["success"]


def _write(tmp_path: Path, rows: list) -> str:
    shutil.copytree(FIXTURE / "images", tmp_path / "data" / "images", dirs_exist_ok=True)
    path = tmp_path / "data" / "rows.json"
    path.write_text(json.dumps(rows))
    return str(path)


GOOD = {"img_filename": "images/screen_0.png", "bbox": [1, 2, 30, 20], "instruction": "Click OK", "data_type": "text"}


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ({**GOOD, "img_filename": "../outside.png"}, "leaves the image directory"),
        ({**GOOD, "img_filename": "/etc/hostname"}, "leaves the image directory"),
        ({**GOOD, "img_filename": "images/missing.png"}, "not found"),
        ({**GOOD, "img_filename": 3}, "img_filename"),
        ({**GOOD, "instruction": "  "}, "instruction"),
        ({**GOOD, "bbox": [1, 2, 3]}, "bbox"),
        ({**GOOD, "bbox": [1, 2, -3, 4]}, "bbox"),
        ({**GOOD, "bbox": [1, 2, "3", 4]}, "bbox"),
        ({**GOOD, "bbox": [1, 2, float("nan"), 4]}, "bbox"),
        ("not an object", "JSON object"),
    ],
)
def test_bad_rows_are_one_line_errors_naming_the_row(tmp_path, row, field):
    (tmp_path / "outside.png").write_bytes((FIXTURE / "images" / "screen_0.png").read_bytes())
    path = _write(tmp_path, [GOOD, row])
    with pytest.raises(DatasetError) as err:
        GuiGroundingEnv(source="file", path=path)
    msg = str(err.value)
    assert field in msg and "row 1" in msg and "\n" not in msg


def test_a_symlink_out_of_the_directory_is_refused(tmp_path):
    (tmp_path / "secret.png").write_bytes((FIXTURE / "images" / "screen_0.png").read_bytes())
    path = _write(tmp_path, [{**GOOD, "img_filename": "images/link.png"}])
    (tmp_path / "data" / "images" / "link.png").symlink_to(tmp_path / "secret.png")
    with pytest.raises(DatasetError, match="leaves the image directory"):
        GuiGroundingEnv(source="file", path=path)


def test_an_undecodable_image_is_skipped_and_counted(tmp_path):
    path = _write(tmp_path, [{**GOOD, "img_filename": "images/broken.png"}, GOOD])
    (tmp_path / "data" / "images" / "broken.png").write_bytes(b"not a png")
    env = GuiGroundingEnv(source="file", path=path)
    obs, info = env.reset(seed=0)
    assert info["row_index"] == 1 and info["bad_rows"] == 1
    (tmp_path / "data" / "images" / "screen_0.png").write_bytes(b"broken too")
    with pytest.raises(DatasetError, match="no row's image decodes"):
        env.reset()


def test_image_dir_is_where_paths_start(tmp_path):
    shutil.copytree(FIXTURE / "images", tmp_path / "screenspot_imgs")
    rows = [{**GOOD, "img_filename": "screen_0.png"}]
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "rows.jsonl").write_text(json.dumps(rows[0]) + "\n")
    env = GuiGroundingEnv(source="file", path=str(tmp_path / "annotations" / "rows.jsonl"),
                          image_dir=str(tmp_path / "screenspot_imgs"))  # fmt: skip
    obs, info = env.reset(seed=0)
    assert info["bbox"] == [1, 2, 31, 22] and obs["images"][0].shape == (120, 160, 3)
    with pytest.raises(DatasetError, match="line 1"):  # relative to the annotation file, it does not exist
        GuiGroundingEnv(source="file", path=str(tmp_path / "annotations" / "rows.jsonl"))


def test_file_order_shuffle_and_seed(tmp_path):
    path = str(FIXTURE / "screenspot_synthetic.json")
    plain = GuiGroundingEnv(source="file", path=path)
    assert [plain.reset()[1]["row_index"] for _ in range(4)] == [0, 1, 2, 3]
    assert plain.reset(seed=7)[1]["row_index"] == 7 and plain.reset()[1]["row_index"] == 8
    shuffled = GuiGroundingEnv(source="file", path=path, shuffle=True, seed=3)
    order = [shuffled.reset()[1]["row_index"] for _ in range(len(shuffled.rows))]
    assert sorted(order) == list(range(len(shuffled.rows))) and order != sorted(order)
    again = GuiGroundingEnv(source="file", path=path, shuffle=True, seed=3)
    assert [again.reset()[1]["row_index"] for _ in range(len(order))] == order


def test_doctests():
    for module in (grounding_module, screens_module):
        assert doctest.testmod(module, raise_on_error=True).attempted >= 1
