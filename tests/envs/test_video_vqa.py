"""SyntheticVideoVQAEnv: answers re-derived from the rendered frames, seeding, split disjointness, difficulty, the
Gymnasium API; video decoding and frame sampling."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from test_vqa_synthetic import check_clean_scene, components  # pixel ground truth shared with the image env's tests

from envs.vqa.dataset import DatasetVQAEnv
from envs.vqa.schemas import DatasetError
from envs.vqa.video import SyntheticVideoVQAEnv, decode_video, sample_indices
from mmrl.config import ConfigError

SEEDS = range(60)


def clip_of(obs) -> np.ndarray:
    (video,) = obs["videos"]
    assert video.dtype == np.uint8 and video.ndim == 4 and video.shape[3] == 3
    return video


def kind_per_frame(video: np.ndarray) -> list[list[dict]]:
    """The components of every frame (each frame is a clean scene: solid shapes, none on the border)."""
    out = []
    for frame in video:
        comps = components(frame)
        check_clean_scene(frame, comps)
        out.append(comps)
    return out


# ------------------------------------------------------------------------------------------------ pixel ground truth
@pytest.mark.parametrize("difficulty", [1, 2, 3])
def test_direction_answer_matches_the_motion(test_rewards, difficulty):
    env = SyntheticVideoVQAEnv(task="direction", difficulty=difficulty, rewards=test_rewards)
    seen = set()
    for seed in SEEDS:
        obs, info = env.reset(seed=seed)
        kind = re.fullmatch(r"Which way does the (\w+) move\?", info["question"]).group(1)
        frames = kind_per_frame(clip_of(obs))
        static = set.intersection(*({c["centroid"] for c in comps} for comps in frames))  # the distractors stay put
        moving = [[c for c in comps if c["centroid"] not in static] for comps in frames]
        assert all(len(m) == 1 for m in moving), (seed, moving)  # exactly one shape moves, in every frame
        assert moving[0][0]["kind"] == kind or difficulty == 3  # tiny level-3 shapes may misread their kind
        (x0, y0), (x1, y1) = moving[0][0]["centroid"], moving[-1][0]["centroid"]
        dx, dy = x1 - x0, y1 - y0
        expected = ("right" if dx > 0 else "left") if abs(dx) > abs(dy) else ("down" if dy > 0 else "up")
        assert min(abs(dx), abs(dy)) < 1e-6 and info["answer"] == expected, (seed, dx, dy, info["answer"])
        seen.add(expected)
    assert seen == ({"left", "right"} if difficulty == 1 else {"left", "right", "up", "down"})
    assert info["answer_choices"] == (["left", "right"] if difficulty == 1 else ["left", "right", "up", "down"])


@pytest.mark.parametrize("difficulty", [1, 2, 3])
def test_order_answer_matches_first_appearances(test_rewards, difficulty):
    env = SyntheticVideoVQAEnv(task="order", difficulty=difficulty, num_frames=6, rewards=test_rewards)
    seen = set()
    for seed in SEEDS:
        obs, info = env.reset(seed=seed)
        a, b = re.fullmatch(r"Does the (\w+) appear before or after the (\w+)\?", info["question"]).groups()
        frames = kind_per_frame(clip_of(obs))
        counts = [len(c) for c in frames]
        assert counts == sorted(counts) and counts[-1] - counts[0] >= 1  # shapes appear and stay
        boxes = [{c["box"] for c in comps} for comps in frames]
        new = [boxes[0]] + [boxes[t] - boxes[t - 1] for t in range(1, len(boxes))]  # what each frame adds
        objects = {o["kind"]: next(i for i, bx in enumerate(o["boxes"]) if bx) for o in info["objects"][:2]}
        for t, added in enumerate(new):  # every shape appears at the frame the env says (read from the pixels)
            for x, y, _, _ in added:
                (obj,) = [o for o in info["objects"] if o["boxes"][-1][:2] == [x, y]]
                assert next(i for i, bx in enumerate(obj["boxes"]) if bx) == t
        assert objects[a] != objects[b]
        assert info["answer"] == ("before" if objects[a] < objects[b] else "after")
        seen.add(info["answer"])
    assert seen == {"before", "after"}


@pytest.mark.parametrize("difficulty", [1, 2, 3])
def test_count_answer_needs_the_whole_clip(test_rewards, difficulty):
    env = SyntheticVideoVQAEnv(task="count", difficulty=difficulty, rewards=test_rewards)
    answers = set()
    for seed in SEEDS:
        obs, info = env.reset(seed=seed)
        kind = re.fullmatch(r"How many (\w+)s appear\?", info["question"]).group(1)
        frames = kind_per_frame(clip_of(obs))
        places = {}  # box -> kind, over all frames: a shape never moves, so a place is a shape
        for comps in frames:
            for c in comps:
                places[c["box"]] = c["kind"]
        if difficulty < 3:  # level 3's tiny shapes can misread their kind from pixels: count those from info instead
            n = len(places) if kind == "shape" else sum(k == kind for k in places.values())
        else:
            n = sum(o["kind"] == kind for o in info["objects"])
            assert len(places) == len(info["objects"])
        assert info["answer"] == str(n), (seed, info["question"], places)
        if n >= 2 and kind == "shape":  # no single frame shows them all
            assert max(len(c) for c in frames) < n
        answers.add(info["answer"])
    assert answers == {"1", "2", "3", "4"}


# -------------------------------------------------------------------------------------------------- difficulty
def test_difficulty_shrinks_shapes_and_adds_distractors(test_rewards):
    sizes, distractors = {}, {}
    for level in (1, 2, 3):
        env = SyntheticVideoVQAEnv(task="order", difficulty=level, seed=0, rewards=test_rewards)
        sides, extra = [], []
        for _ in range(40):
            _, info = env.reset()
            sides += [o["boxes"][-1][2] - o["boxes"][-1][0] + 1 for o in info["objects"]]
            extra.append(len(info["objects"]) - 2)
        sizes[level], distractors[level] = np.mean(sides), (min(extra), max(extra))
    assert sizes[1] > sizes[2] > sizes[3]
    assert distractors == {1: (0, 0), 2: (0, 1), 3: (1, 2)}


# ---------------------------------------------------------------------------------------------- seeding and splits
def _digest(obs) -> str:
    return hashlib.sha256(clip_of(obs).tobytes()).hexdigest()


def test_same_seed_same_clip_and_question(test_rewards):
    a = SyntheticVideoVQAEnv(task="mixed", difficulty=2, rewards=test_rewards)
    b = SyntheticVideoVQAEnv(task="mixed", difficulty=2, rewards=test_rewards)
    for seed in (0, 1, 7, 12345):
        b.reset(seed=seed + 1)  # a different history must not matter
        (oa, ia), (ob, ib) = a.reset(seed=seed), b.reset(seed=seed)
        assert _digest(oa) == _digest(ob) and oa["text"] == ob["text"] and ia == ib
    assert len({_digest(a.reset(seed=s)[0]) for s in range(20)}) == 20
    c, d = SyntheticVideoVQAEnv(seed=5, rewards=test_rewards), SyntheticVideoVQAEnv(seed=5, rewards=test_rewards)
    assert [_digest(c.reset()[0]) for _ in range(4)] == [_digest(d.reset()[0]) for _ in range(4)]


def test_train_and_eval_streams_are_disjoint(test_rewards):
    """One small shape moving left or right in small frames: few enough clips that independent streams would meet."""
    digests = {}
    for split in ("train", "eval"):
        env = SyntheticVideoVQAEnv(task="direction", image_size=24, num_frames=2, split=split, rewards=test_rewards)
        digests[split] = {_digest(env.reset(seed=s)[0]) for s in range(1500)}
    assert len(digests["train"]) > 100 and len(digests["eval"]) > 100
    assert not digests["train"] & digests["eval"]


# ------------------------------------------------------------------------------------------------- Gymnasium API
def test_reset_step_and_spaces(test_rewards):
    env = SyntheticVideoVQAEnv(task="mixed", num_frames=5, fps=4.0, image_size=[56, 84], rewards=test_rewards)
    with pytest.raises(gym.error.ResetNeeded, match="before reset"):
        env.step("<answer>left</answer>")
    obs, info = env.reset(seed=3)
    assert set(obs) == {"text", "images", "videos", "video_fps"} and obs in env.observation_space
    assert obs["images"] == () and clip_of(obs).shape == (5, 56, 84, 3) and float(obs["video_fps"][0]) == 4.0
    assert set(info) == {"answer", "answer_choices", "solution", "task", "question", "objects"}
    assert np.array_equal(env.render(), np.concatenate(list(clip_of(obs)), axis=1))
    obs2, reward, terminated, truncated, info2 = env.step(info["solution"])
    assert terminated and not truncated and reward == pytest.approx(1.5) and info2["success"] is True
    assert obs2 in env.observation_space and obs2 == {"text": "", "images": (), "videos": (), "video_fps": ()}
    with pytest.raises(gym.error.ResetNeeded, match="ended"):
        env.step(info["solution"])


@pytest.mark.parametrize("action", ["", "left", "<answer>", "<answer>left or right</answer>", "\x00" * 50, "x" * 5000])
def test_malformed_action_scores_the_minimum(test_rewards, action):
    env = SyntheticVideoVQAEnv(task="direction", seed=0, rewards=test_rewards)
    env.reset()
    _, reward, terminated, _, info = env.step(action)
    assert reward == 0.0 and terminated and info["success"] is False


@pytest.mark.filterwarnings("ignore:.*not having a spec")
def test_gymnasium_env_checker(test_rewards):
    check_env(SyntheticVideoVQAEnv(task="mixed", difficulty=3, rewards=test_rewards))


def test_vectorized_with_gymnasium(test_rewards):
    vec = gym.vector.SyncVectorEnv([lambda i=i: SyntheticVideoVQAEnv(seed=i, rewards=test_rewards) for i in range(3)])
    obs, info = vec.reset(seed=0)
    assert len(obs["videos"]) == 3 and obs in vec.observation_space
    _, reward, terminated, _, info = vec.step(tuple(info["solution"]))
    assert reward.tolist() == [1.5, 1.5, 1.5] and terminated.all()
    vec.close()


def test_config_errors_are_one_line(test_rewards):
    for kwargs, field in [({"task": "speed"}, "task"), ({"difficulty": 0}, "difficulty"), ({"num_frames": 1}, "num_frames"),
                          ({"fps": 0}, "fps"), ({"split": "test"}, "split"), ({"max_count": 9}, "max_count"),
                          ({"prompt_template": "{answer}"}, "prompt_template")]:  # fmt: skip
        with pytest.raises(ConfigError, match=field):
            SyntheticVideoVQAEnv(rewards=test_rewards, **kwargs)
    with pytest.raises(ConfigError, match="did you mean 'num_frames'"):
        SyntheticVideoVQAEnv(num_frame=4)


# ------------------------------------------------------------------------------------------ decoding and sampling
def test_sample_indices_follow_transformers_rule():
    """``arange(0, total, total / n)`` truncated, ``n`` from the duration and the target fps (transformers'
    ``Qwen2VLVideoProcessor.sample_frames`` without its temporal-patch rounding)."""
    for total, native, fps, cap in [(30, 30.0, 2.0, 32), (100, 25.0, 2.0, 32), (100, 25.0, 1.0, 3), (7, 2.0, 8.0, 32)]:
        n = min(max(round(total / native * fps), 1), cap, total)
        expected = np.arange(0, total, total / n).astype(np.int64)
        assert sample_indices(total, native, fps, cap).tolist() == expected.tolist()
    assert sample_indices(5, 10.0, None, 32).tolist() == [0, 1, 2, 3, 4]


def _write_clip(path, frames: np.ndarray, rate: int) -> None:
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("png", rate=rate)  # lossless: decoded frames equal the written ones
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "rgb24"
        for f in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(stream.encode(None))


def test_decode_paths_and_bytes(tmp_path):
    rng = np.random.default_rng(0)
    clip = rng.integers(0, 256, (10, 24, 32, 3), dtype=np.uint8)
    path = tmp_path / "clip.mov"
    _write_clip(path, clip, rate=10)
    video, fps = decode_video(str(path), fps=4.0, max_frames=32)  # 1 s at 10 fps -> 4 frames at 4 fps
    assert np.array_equal(video, clip[[0, 2, 5, 7]]) and fps == pytest.approx(4.0)
    video, fps = decode_video(path.read_bytes(), fps=None, max_frames=3)
    assert np.array_equal(video, clip[[0, 3, 6]]) and fps == pytest.approx(3.0)
    with pytest.raises(ValueError, match="cannot decode video") as e:
        decode_video(b"not a video")
    assert "\n" not in str(e.value)


def test_opencv_decodes_when_pyav_cannot(tmp_path, monkeypatch):
    import envs.vqa.video as video_module

    def no_pyav(source):
        raise ImportError("no module named av")

    clip = np.random.default_rng(1).integers(0, 256, (6, 24, 32, 3), dtype=np.uint8)
    path = tmp_path / "clip.mov"
    _write_clip(path, clip, rate=6)
    monkeypatch.setattr(video_module, "_decode_av", no_pyav)
    for source in (str(path), path.read_bytes()):
        video, fps = decode_video(source, fps=3.0)
        assert np.array_equal(video, clip[[0, 2, 4]]) and fps == pytest.approx(3.0)


# -------------------------------------------------------------------------------------------- dataset video rows
def _dataset_dir(tmp_path) -> tuple[Path, np.ndarray, np.ndarray]:
    """A data directory with two clips (10 frames at 10 fps, and 6 at 6 fps) under ``clips/``."""
    rng = np.random.default_rng(2)
    (tmp_path / "data" / "clips").mkdir(parents=True)
    a, b = rng.integers(0, 256, (10, 24, 32, 3), np.uint8), rng.integers(0, 256, (6, 16, 16, 3), np.uint8)
    _write_clip(tmp_path / "data" / "clips" / "a.mov", a, rate=10)
    _write_clip(tmp_path / "data" / "clips" / "b.mov", b, rate=6)
    return tmp_path / "data", a, b


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_dataset_video_rows_from_paths_and_chat_parts(tmp_path, test_rewards):
    data, a, b = _dataset_dir(tmp_path)
    rows = [
        {"problem": "What moves in <video>?", "videos": ["clips/a.mov"], "answer": "a"},
        {"prompt": [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Which?"}]}],
         "videos": ["clips/b.mov"], "answer": "b"},
    ]  # fmt: skip
    env = DatasetVQAEnv(path=str(_jsonl(data / "flat.jsonl", rows[:1])), video_fps=4.0, prompt_suffix="",
                        rewards=test_rewards)  # fmt: skip
    obs, info = env.reset()
    assert obs["text"] == "What moves in <video>?" and obs["images"] == () and obs in env.observation_space
    (frames,), (fps,) = obs["videos"], obs["video_fps"]
    assert np.array_equal(frames, a[[0, 2, 5, 7]]) and float(fps) == pytest.approx(4.0)  # 1 s at 4 fps
    out = env.step("<answer>a</answer>")
    assert out[0] == {"text": "", "images": (), "videos": (), "video_fps": ()} and out[0] in env.observation_space
    chat = DatasetVQAEnv(path=str(_jsonl(data / "chat.jsonl", rows[1:])), video_fps=None, video_max_frames=4,
                         prompt_suffix="", rewards=test_rewards)  # fmt: skip
    obs, _ = chat.reset()
    assert obs["text"] == "<video>Which?" and np.array_equal(obs["videos"][0], b[[0, 1, 3, 4]])
    assert float(obs["video_fps"][0]) == pytest.approx(4.0)  # 4 of 6 frames of a 1 s clip
    images_only = DatasetVQAEnv(path="assets/vqa/sample.jsonl", rewards=test_rewards)
    assert set(images_only.reset()[0]) == {"text", "images"}  # files without videos keep their observation


def test_dataset_embedded_video_bytes_and_bad_videos(tmp_path, test_rewards):
    import pyarrow as pa
    import pyarrow.parquet as pq

    data, a, _ = _dataset_dir(tmp_path)
    good = {"bytes": (data / "clips" / "a.mov").read_bytes(), "path": "a.mov"}
    bad = {"bytes": b"\x00not a video", "path": "x.mov"}
    table = pa.table({"problem": ["<video>Which?", "<video>And?", "<video>Then?"], "answer": ["x", "y", "z"],
                      "videos": [[bad], [good], [good]]})  # fmt: skip
    pq.write_table(table, data / "embedded.parquet")
    env = DatasetVQAEnv(path=str(data / "embedded.parquet"), video_fps=2.0, rewards=test_rewards)
    obs, info = env.reset()  # the first row does not decode: skipped and reported, the second shown
    assert info["row_index"] == 1 and info["bad_rows"] == 1 and "cannot read video" in info["skipped"][0]
    assert np.array_equal(obs["videos"][0], a[[0, 5]]) and obs in env.observation_space


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"problem": "<video> and <video>?", "videos": ["clips/a.mov"], "answer": "x"},
         "2 <video> placeholder(s) but the row has 1 video(s)"),
        ({"problem": "What is <video>?", "answer": "x"}, "1 <video> placeholder(s) but the row has 0 video(s)"),
        ({"problem": "Which?", "videos": ["../outside.mov"], "answer": "x"}, "video path '../outside.mov' leads out"),
        ({"problem": "Which?", "videos": ["clips/none.mov"], "answer": "x"}, "video file not found"),
        ({"problem": "Which?", "videos": "clips/a.mov", "answer": "x"}, "field 'videos' must be a list"),
    ],
)  # fmt: skip
def test_dataset_bad_video_rows_are_one_line_errors(tmp_path, test_rewards, row, message):
    data, _, _ = _dataset_dir(tmp_path)
    (tmp_path / "outside.mov").write_bytes((data / "clips" / "a.mov").read_bytes())
    path = _jsonl(data / "bad.jsonl", [row])
    with pytest.raises(DatasetError) as err:
        DatasetVQAEnv(path=str(path), rewards=test_rewards)
    assert "\n" not in str(err.value) and message in str(err.value), str(err.value)


# ---------------------------------------------------------------------------------------- plainer clips, examples
def test_grid_layout_keeps_each_path_in_its_token_cell(test_rewards):
    env = SyntheticVideoVQAEnv(task="direction", layout="grid", image_size=112, difficulty=2, kinds=["square"],
                               colors=["red"], rewards=test_rewards)  # fmt: skip
    for seed in range(40):
        obs, info = env.reset(seed=seed)
        for frame in clip_of(obs):
            for c in components(frame):  # every blob of every frame inside one 28-px cell
                x, y, w, h = c["box"]
                assert x // 28 == (x + w - 1) // 28 and y // 28 == (y + h - 1) // 28, (seed, c["box"])
                assert c["kind"] == "square" and [tuple(rgb) for rgb in c["colors"]] == [(220, 40, 40)]
        (x0, y0, _, _), (x1, y1, _, _) = info["objects"][0]["boxes"][0], info["objects"][0]["boxes"][-1]
        assert (x0 // 28, y0 // 28) == (x1 // 28, y1 // 28) and (x0, y0) != (x1, y1)  # moved, within its cell


def test_restrictions_are_validated(test_rewards):
    with pytest.raises(ConfigError, match="kinds: only the direction and count"):
        SyntheticVideoVQAEnv(task="order", kinds=["square"], rewards=test_rewards)
    with pytest.raises(ConfigError, match="colors"):
        SyntheticVideoVQAEnv(colors=["mauve"], rewards=test_rewards)
    with pytest.raises(ConfigError, match="layout: grid has 4 cells"):
        SyntheticVideoVQAEnv(task="count", layout="grid", max_count=5, rewards=test_rewards)
    with pytest.raises(ConfigError, match="layout: expected random or grid"):
        SyntheticVideoVQAEnv(layout="spiral", rewards=test_rewards)


def test_docstring_example_runs():
    import doctest

    import envs.vqa.video as module
    import rewards

    if "accuracy" not in rewards.names():
        pytest.skip("the accuracy reward is not registered")
    result = doctest.testmod(module)
    assert result.failed == 0 and result.attempted > 0
