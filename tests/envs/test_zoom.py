"""ZoomVQAEnv: crops match an independent computation of the box in every coordinate convention (read back from an
image whose pixels encode their own coordinates), bad zooms are error turns and the episode goes on, the oracle's
zoom-then-answer always succeeds, the no-tool baseline is one turn, deferred rewards score as the env does, the ground
truth matches the pixels, seeding and splits, the Gymnasium API."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
import envs.vqa.zoom as zoom_module
from envs.vqa.zoom import ZoomVQAEnv, oracle_action
from mmrl.config import ConfigError
from mmrl.trainer.scoring import RewardStage
from mmrl.types import Step, Trajectory

QWEN = {"coordinate_convention": "qwen2_5_vl", "min_pixels": 3136, "max_pixels": 3136}
# (convention kwargs, original pixels per unit of the convention on a 224 x 224 image), worked out by hand:
# qwen2_5_vl with 56*56 pixels resizes 224 -> 56 (4 px per unit); qwen2_vl is 0-1000; normalized is 0-1.
SCALES = [({"coordinate_convention": "pixel"}, 1.0), (QWEN, 4.0),
          ({"coordinate_convention": "qwen2_vl"}, 224 / 1000), ({"coordinate_convention": "normalized"}, 224.0)]  # fmt: skip
PAD_BLUE = 128  # the coordinate image's blue is 255 everywhere: blue 128 is the env's grey padding


def coordinate_image(size: int = 224) -> np.ndarray:
    """RGB ``[size, size, 3]`` whose pixel ``(y, x)`` is ``(x, y, 255)``."""
    ys, xs = np.mgrid[0:size, 0:size]
    return np.stack([xs, ys, np.full_like(xs, 255)], axis=-1).astype(np.uint8)


def zoom_on(env: ZoomVQAEnv, image: np.ndarray, action: str):
    """Reset, swap the scene for ``image`` (the env crops its episode's original image), then zoom with ``action``."""
    env.reset(seed=0)
    env._episode.images[0] = image
    return env.step(action)


@pytest.mark.parametrize(("kwargs", "scale"), SCALES)
@pytest.mark.parametrize("box", [(10.2, 20.7, 90.0, 60.3), (100, 0, 224, 224), (-30, 200.5, 50, 400)])
def test_the_crop_is_the_box_in_original_pixels(kwargs, scale, box):
    env = ZoomVQAEnv(seed=0, resample="nearest", **kwargs)
    written = [f"{v / scale:.6f}" for v in box]  # what the model writes, in its convention
    obs, reward, terminated, truncated, info = zoom_on(env, coordinate_image(), f"zoom({', '.join(written)})")
    box = [float(v) * scale for v in written]
    left, top = max(0, math.floor(box[0])), max(0, math.floor(box[1]))
    right, bottom = min(224, math.ceil(box[2])), min(224, math.ceil(box[3]))
    assert info["zoom_box"] == [left, top, right, bottom] and info["error"] is None
    assert (reward, terminated, truncated) == (0.0, False, False)
    [crop] = obs["images"]
    content = crop[..., 2] == 255
    rows, cols = np.flatnonzero(content.any(1)), np.flatnonzero(content.any(0))
    # nearest-neighbour enlargement shows every source column and row, and nothing else
    assert set(np.unique(crop[content][:, 0])) == set(range(left, right))
    assert set(np.unique(crop[content][:, 1])) == set(range(top, bottom))
    # aspect ratio kept: the content is the crop scaled by min(224 / w, 224 / h), centred, the rest is padding
    w, h = right - left, bottom - top
    s = min(224 / w, 224 / h)
    assert (len(cols), len(rows)) == (round(w * s), round(h * s))
    assert cols[0] == (224 - len(cols)) // 2 and rows[0] == (224 - len(rows)) // 2
    assert np.all(crop[~content] == 128) and content.sum() == len(rows) * len(cols)


def test_a_json_box_zooms_like_the_call():
    env = ZoomVQAEnv(seed=0, resample="nearest")
    a = zoom_on(env, coordinate_image(), "<answer>zoom(8, 16, 120, 100)</answer>")
    b = zoom_on(env, coordinate_image(), '{"bbox_2d": [8, 16, 120, 100]}')
    assert a[4]["zoom_box"] == b[4]["zoom_box"] == [8, 16, 120, 100]
    np.testing.assert_array_equal(a[0]["images"][0], b[0]["images"][0])


@pytest.mark.parametrize(
    ("action", "message"),
    [
        ("zoom(1, 2)", "four numbers"),
        ("zoom(1, 2, 3, four)", "four numbers"),
        ('{"bbox_2d": [1, 2, 3]}', "four numbers"),
        ("zoom(50, 10, 40, 90)", "empty box"),
        ("zoom(10, 10, 10, 90)", "empty box"),
        ("zoom(300, 300, 400, 400)", "outside the image"),
        ("zoom(-50, 0, 0, 90)", "outside the image"),
        ("zoom(1e400, 0, 5, 5)", "finite"),
        ("circle", "expected <answer>shape</answer> or zoom"),
        ("", "expected <answer>shape</answer> or zoom"),
    ],
)
def test_bad_zooms_are_error_turns_and_the_episode_goes_on(action, message):
    env = ZoomVQAEnv(seed=0, max_steps=3)
    env.reset(seed=5)
    obs, reward, terminated, truncated, info = env.step(action)
    assert obs["text"].startswith("Error: ") and message in obs["text"] and obs["images"] == ()
    assert (reward, terminated, truncated, info["success"], info["zooms"]) == (0.0, False, False, False, 0)
    assert env.observation_space.contains(obs)
    for _ in range(2):  # the oracle still zooms and answers
        obs, reward, terminated, truncated, info = env.step(oracle_action(env))
    assert (reward, terminated, info["success"], info["zooms"]) == (1.0, True, True, 1)


def test_zooms_past_max_zooms_are_errors_and_max_steps_truncates():
    env = ZoomVQAEnv(seed=0, max_zooms=1, max_steps=3)
    env.reset(seed=1)
    env.step("zoom(0, 0, 100, 100)")
    obs, reward, terminated, truncated, info = env.step("zoom(0, 0, 50, 50)")
    assert "no zooms left" in obs["text"] and obs["images"] == () and info["zooms"] == 1
    obs, reward, terminated, truncated, info = env.step("still thinking")
    assert (reward, terminated, truncated, info["success"]) == (0.0, False, True, False)
    with pytest.raises(Exception, match="reset"):
        env.step("<answer>circle</answer>")


@pytest.mark.parametrize(("kwargs", "scale"), SCALES)
def test_the_oracle_zooms_on_the_mark_then_answers(kwargs, scale):
    env = ZoomVQAEnv(seed=0, **kwargs)
    for seed in range(20):
        obs, info = env.reset(seed=seed)
        assert "zoom(" in obs["text"] and info["solution"] == oracle_action(env)
        x0, y0, x1, y1 = info["mark"]["box"]
        obs, reward, terminated, _, step_info = env.step(oracle_action(env))
        assert step_info["solution"] == oracle_action(env) == f"<answer>{info['answer']}</answer>"
        left, top, right, bottom = step_info["zoom_box"]
        assert left <= x0 and top <= y0 and x1 < right and y1 < bottom  # the whole mark is in the crop
        assert (right - left, bottom - top) == (112, 112)  # its quadrant: the mark shown twice as large
        obs, reward, terminated, truncated, info = env.step(oracle_action(env))
        assert (reward, terminated, truncated, info["success"], info["zooms"]) == (1.0, True, False, True, 1)


def test_the_answer_is_what_the_pixels_show():
    """The mark's kind from its pixels: the filled fraction of its box is 1 (square), pi/4 (circle) or 1/2 (triangle)."""
    env = ZoomVQAEnv(seed=0)
    fractions = {"square": 1.0, "circle": math.pi / 4, "triangle": 0.5}
    for seed in range(30):
        obs, info = env.reset(seed=seed)
        x0, y0, x1, y1 = info["mark"]["box"]
        ink = np.any(obs["images"][0] != 255, axis=-1)  # the background is white
        assert ink.sum() == ink[y0 : y1 + 1, x0 : x1 + 1].sum() > 0  # one mark, inside its box
        filled = ink.sum() / ((x1 - x0 + 1) * (y1 - y0 + 1))
        assert min(fractions, key=lambda k: abs(fractions[k] - filled)) == info["answer"]
        cx0, cy0, cx1, cy1 = info["cell"]
        assert cx0 <= x0 and cy0 <= y0 and x1 < cx1 and y1 < cy1


def test_with_a_cue_every_cell_holds_a_mark_and_the_question_names_the_answers_cell():
    """The cell is read back from the question's words (rows and columns from 1) and cut out by hand (224 / 4 = 56 px
    cells); its ink's filled fraction gives the answer; every other cell holds a mark too; the oracle's crop shows the
    named cell only, enlarged 4 times."""
    import re

    env = ZoomVQAEnv(seed=0, cue=True, grid=4, mark_size=[0.18, 0.22], **QWEN)
    fractions = {"square": 1.0, "circle": math.pi / 4, "triangle": 0.5}
    kinds = set()
    for seed in range(20):
        obs, info = env.reset(seed=seed)
        row, col = map(int, re.search(r"in row (\d), column (\d) of the 4 x 4 grid\?", obs["text"]).groups())
        ink = np.any(obs["images"][0] != 255, axis=-1)
        cells = [ink[56 * r : 56 * (r + 1), 56 * c : 56 * (c + 1)] for r in range(4) for c in range(4)]
        assert all(cell.any() for cell in cells) and sum(cell.sum() for cell in cells) == ink.sum()
        target = cells[4 * (row - 1) + col - 1]
        ys, xs = np.nonzero(target)
        filled = target.sum() / ((xs.max() - xs.min() + 1) * (ys.max() - ys.min() + 1))
        assert min(fractions, key=lambda k: abs(fractions[k] - filled)) == info["answer"]
        kinds.add(info["answer"])
        crop = env.step(oracle_action(env))[0]["images"][0]
        assert abs(np.any(crop < 200, axis=-1).sum() / 16 - target.sum()) < 0.1 * target.sum()  # 4 x 4 the area
        assert env.step(oracle_action(env))[4]["success"]
    assert kinds == set(fractions)


def test_without_the_tool_one_turn_ends_the_episode():
    env = ZoomVQAEnv(seed=0, tool=False)
    obs, info = env.reset(seed=3)
    assert "zoom" not in obs["text"] and info["solution"] == f"<answer>{info['answer']}</answer>"
    obs, reward, terminated, truncated, step_info = env.step("zoom(0, 0, 100, 100)")  # not a tool here: an answer
    assert (reward, terminated, step_info["success"], obs["images"]) == (0.0, True, False, ())
    env.reset(seed=3)
    assert env.step(oracle_action(env))[1:3] == (1.0, True)


def test_deferred_rewards_score_as_the_env_does():
    weights = {"accuracy": 1.0, "format_answer": 0.1}
    scoring, deferred = ZoomVQAEnv(seed=0, rewards=weights), ZoomVQAEnv(seed=0, rewards=weights, defer_rewards=True)
    stage = RewardStage(weights)
    for answer in ("<answer>circle</answer>", "<answer>square</answer>", "<think>a</think><answer>triangle</answer>"):
        rewards = []
        for env in (scoring, deferred):
            obs, _ = env.reset(seed=7)
            first = env.step("zoom(0, 0, 112, 112)")
            last = env.step(answer)
            assert "reward_columns" not in first[4]
            rewards.append((first, last))
        (_, scored), (zoomed, last) = rewards
        assert last[1] == 0.0 and last[4]["reward_columns"]["answer"] == scored[4]["answer"]
        steps = [Step(obs, "zoom(0, 0, 112, 112)", 0.0, None, 0, zoomed[1], False, False, zoomed[4]),
                 Step({}, answer, 0.0, None, 0, last[1], True, False, last[4])]  # fmt: skip
        traj = Trajectory(steps=steps, group_id=0)
        stage([traj])
        assert (
            traj.reward == pytest.approx(scored[1]) and traj.steps[-1].info["reward_parts"] == scored[4]["reward_parts"]
        )


def test_the_tool_bonus_goes_to_correct_answers_after_a_zoom():
    env = ZoomVQAEnv(seed=0, rewards={"accuracy": 1.0, "format_answer": 0.1}, tool_bonus=0.5, max_steps=3)
    wrong = {"circle": "square", "square": "triangle", "triangle": "circle"}
    for zoom, correct, expected in [(True, True, 1.6), (False, True, 1.1), (True, False, 0.1), (False, False, 0.1)]:
        _, info = env.reset(seed=2)
        if zoom:
            env.step("zoom(0, 0, 50, 50)")  # anywhere: the bonus rewards a zoom followed by a correct answer
        _, reward, terminated, _, info = env.step(
            f"<answer>{info['answer'] if correct else wrong[info['answer']]}</answer>"
        )
        assert terminated and reward == pytest.approx(expected)
        assert info["reward_parts"]["tool_bonus"] == (0.5 if zoom and correct else 0.0)
    with pytest.raises(ConfigError, match="tool_bonus"):
        ZoomVQAEnv(tool_bonus=0.5, defer_rewards=True)


def test_random_solutions_teach_the_formats_only():
    env = ZoomVQAEnv(seed=0, solution="random", **QWEN)
    cells = {"zoom(0, 0, 28, 28)", "zoom(28, 0, 56, 28)", "zoom(0, 28, 28, 56)", "zoom(28, 28, 56, 56)"}
    solutions = [env.reset(seed=s)[1]["solution"] for s in range(200)]
    zooms = [s for s in solutions if s.startswith("zoom(")]
    assert set(zooms) == cells and 70 < len(zooms) < 130
    assert {s for s in solutions if not s.startswith("zoom(")} == {
        f"<answer>{k}</answer>" for k in ("circle", "square", "triangle")
    }
    for s in range(20):  # every turn that goes on has a next target; after the one zoom allowed it is an answer
        _, info = env.reset(seed=s)
        _, _, terminated, _, info = env.step("oops")  # an error turn
        assert not terminated and info["solution"].startswith(("zoom(", "<answer>"))
        _, _, terminated, _, info = env.step("zoom(0, 0, 28, 28)")
        assert not terminated and info["zooms"] == 1 and info["solution"].startswith("<answer>")
    no_tool = ZoomVQAEnv(seed=0, solution="random", tool=False)
    assert all(no_tool.reset(seed=s)[1]["solution"].startswith("<answer>") for s in range(50))


def test_locate_solutions_teach_where_to_zoom_not_the_answer():
    env = ZoomVQAEnv(seed=0, solution="locate", **QWEN)
    truths = []
    for s in range(60):
        _, info = env.reset(seed=s)
        assert info["solution"] == oracle_action(env) and info["solution"].startswith("zoom(")
        answer = env.step(info["solution"])[4]["solution"]
        truths.append(answer == f"<answer>{info['answer']}</answer>")
    assert 10 < sum(truths) < 35  # random answers: right about a third of the time


def test_seeding_and_splits():
    a, b = ZoomVQAEnv(seed=0), ZoomVQAEnv(seed=99)
    (oa, ia), (ob, ib) = a.reset(seed=11), b.reset(seed=11)
    np.testing.assert_array_equal(oa["images"][0], ob["images"][0])
    assert oa["text"] == ob["text"] and ia == ib
    assert a.reset(seed=12)[1]["mark"] != ia["mark"]
    scenes = {}
    for split in ("train", "eval"):
        env = ZoomVQAEnv(seed=0, split=split)
        scenes[split] = {repr(env.reset(seed=s)[1]["mark"]) for s in range(300)}
    assert not scenes["train"] & scenes["eval"]


@pytest.mark.parametrize("kwargs", [{"grid": 0}, {"mark_size": [0.3, 0.6]}, {"mark_size": [0.1]}, {"resample": "box"},
                                    {"coordinate_convention": "pixels"}, {"max_pixels": 100}, {"max_steps": 0},
                                    {"solution": "expert"}, {"image_size": 16}, {"unknown": 1}])  # fmt: skip
def test_config_errors_name_the_argument(kwargs):
    with pytest.raises(ConfigError, match=next(iter(kwargs))):
        ZoomVQAEnv(**kwargs)


@pytest.mark.filterwarnings("ignore:.*not having a spec")
@pytest.mark.parametrize("kwargs", [{}, {"tool": False}, {"zoom_size": [112, 168], **QWEN},
                                    {"cue": True, "grid": 4, "mark_size": [0.18, 0.22], **QWEN}])  # fmt: skip
def test_gymnasium_api(kwargs):
    check_env(ZoomVQAEnv(**kwargs))
    env = envs.make("zoom_vqa", seed=0, **kwargs)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    if env.config.tool:
        obs = env.step(oracle_action(env))[0]
        assert env.observation_space.contains(obs) and obs["images"][0].shape[:2] == env.zoom_hw
        np.testing.assert_array_equal(env.render(), obs["images"][0])


def test_doctests():
    assert doctest.testmod(zoom_module, raise_on_error=True).attempted >= 1
