"""SyntheticVQAEnv: ground truth re-derived from the rendered pixels, seeding, split disjointness, Gymnasium API."""

from __future__ import annotations

import doctest
import hashlib
import importlib
import inspect
import re
from pathlib import Path

import cv2
import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import envs
from envs.vqa import SyntheticVQAConfig, SyntheticVQAEnv
from envs.vqa.render import MAX_JITTER, PALETTE, jitter_rgb
from mmrl.config import ConfigError

SEEDS = range(100)


# ------------------------------------------------------------------------------------------------ pixel ground truth
def components(image: np.ndarray) -> list[dict]:
    """Shapes found in ``image`` as 8-connected components of non-white pixels, classified by how much of their
    bounding box they fill (square ~1.0, circle ~0.75-0.85, triangle ~0.5-0.6)."""
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    mask = (image != 255).any(axis=-1).astype(np.uint8)
    n, labels, stats, centroids = cv2.connectedComponentsWithStats(mask, connectivity=8)
    out = []
    for i in range(1, n):
        x, y, w, h, area = (int(v) for v in stats[i])
        fill = area / (w * h)
        kind = "square" if fill > 0.92 else "circle" if fill > 0.64 else "triangle"
        colors = np.unique(image[labels == i], axis=0)
        out.append({"kind": kind, "centroid": tuple(centroids[i]), "colors": colors, "box": (x, y, w, h)})
    return out


def nearest_palette(rgb: np.ndarray) -> str:
    return min(PALETTE, key=lambda name: float(np.sum((rgb.astype(float) - np.array(PALETTE[name])) ** 2)))


def check_clean_scene(image: np.ndarray, comps: list[dict]) -> None:
    """Every shape is one solid colour and no shape touches the image border."""
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    assert (border == 255).all(), "a shape touches the image border"
    for c in comps:
        assert len(c["colors"]) == 1, "a component has several colours (overlap or anti-aliasing)"


@pytest.mark.parametrize("difficulty", [1, 2, 3])
def test_count_answer_matches_pixels(test_rewards, difficulty):
    env = SyntheticVQAEnv(task="count", difficulty=difficulty, rewards=test_rewards)
    answers = set()
    for seed in SEEDS:
        obs, info = env.reset(seed=seed)
        comps = components(obs["images"][0])
        check_clean_scene(obs["images"][0], comps)
        m = re.fullmatch(r"How many (\w+)s are there\?", info["question"])
        assert m, info["question"]
        kind = m.group(1)
        n = len(comps) if kind == "shape" else sum(c["kind"] == kind for c in comps)
        assert info["answer"] == str(n), (seed, info["question"], [c["kind"] for c in comps])
        assert info["answer"] in info["answer_choices"] == ["1", "2", "3", "4"]
        answers.add(info["answer"])
        if difficulty == 1:
            assert kind == "shape"
        else:
            assert kind in ("circle", "square", "triangle")
    assert answers == {"1", "2", "3", "4"}


@pytest.mark.parametrize("image_size", [112, 224, [56, 84], [96, 40]])
def test_count_at_other_image_sizes(test_rewards, image_size):
    env = SyntheticVQAEnv(task="count", difficulty=3, image_size=image_size, max_count=6, rewards=test_rewards)
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    assert env.observation_space["images"].feature_space.shape == (h, w, 3)
    for seed in range(30):
        obs, info = env.reset(seed=seed)
        assert obs["images"][0].shape == (h, w, 3) and obs in env.observation_space
        comps = components(obs["images"][0])
        check_clean_scene(obs["images"][0], comps)
        kind = re.fullmatch(r"How many (\w+)s are there\?", info["question"]).group(1)
        assert info["answer"] == str(sum(c["kind"] == kind for c in comps))


@pytest.mark.parametrize("difficulty", [1, 2, 3])
def test_color_answer_matches_pixels(test_rewards, difficulty):
    env = SyntheticVQAEnv(task="color", difficulty=difficulty, rewards=test_rewards)
    for seed in SEEDS:
        obs, info = env.reset(seed=seed)
        kind = re.fullmatch(r"What colour is the (\w+)\?", info["question"]).group(1)
        comps = components(obs["images"][0])
        check_clean_scene(obs["images"][0], comps)
        targets = [c for c in comps if c["kind"] == kind]
        assert len(targets) == 1, (seed, info["question"], [c["kind"] for c in comps])
        assert nearest_palette(targets[0]["colors"][0]) == info["answer"]
        assert info["answer_choices"] == list(PALETTE)[: 4 if difficulty == 1 else 6]


@pytest.mark.parametrize("difficulty", [1, 2, 3])
def test_position_answer_matches_pixels(test_rewards, difficulty):
    env = SyntheticVQAEnv(task="position", difficulty=difficulty, rewards=test_rewards)
    seen = set()
    for seed in SEEDS:
        obs, info = env.reset(seed=seed)
        m = re.fullmatch(r"Is the (\w+) (left or right of|above or below) the (\w+)\?", info["question"])
        a, relation, b = m.groups()
        comps = components(obs["images"][0])
        check_clean_scene(obs["images"][0], comps)
        (ca,) = [c["centroid"] for c in comps if c["kind"] == a]
        (cb,) = [c["centroid"] for c in comps if c["kind"] == b]
        if relation == "left or right of":
            expected = "left" if ca[0] < cb[0] else "right"
        else:
            expected = "above" if ca[1] < cb[1] else "below"
        assert info["answer"] == expected, (seed, info["question"])
        assert expected in info["answer_choices"] and len(info["answer_choices"]) == 2
        seen.add(expected)
    assert seen == {"left", "right", "above", "below"}


def test_jittered_colors_stay_nearest_to_their_name():
    """Level 3 jitters shades; even the extreme corners of the jitter cube keep their palette name."""
    rng = np.random.default_rng(0)
    for name, rgb in PALETTE.items():
        for signs in np.ndindex(2, 2, 2):
            corner = np.clip(np.array(rgb) + MAX_JITTER * (2 * np.array(signs) - 1), 0, 254)
            assert nearest_palette(corner) == name, (name, corner)
        for _ in range(20):
            assert nearest_palette(np.array(jitter_rgb(rng, rgb, MAX_JITTER))) == name


# ---------------------------------------------------------------------------------------------- seeding and splits
def _digest(obs) -> str:
    return hashlib.sha256(obs["images"][0].tobytes()).hexdigest()


def test_same_seed_same_scene_and_question(test_rewards):
    a = SyntheticVQAEnv(task="mixed", difficulty=2, rewards=test_rewards)
    b = SyntheticVQAEnv(task="mixed", difficulty=2, rewards=test_rewards)
    for seed in (0, 1, 7, 12345):
        b.reset(seed=seed + 1)  # a different history must not matter
        (oa, ia), (ob, ib) = a.reset(seed=seed), b.reset(seed=seed)
        assert oa["images"][0].tobytes() == ob["images"][0].tobytes()
        assert oa["text"] == ob["text"] and ia == ib
    assert len({_digest(a.reset(seed=s)[0]) for s in range(20)}) == 20


def test_unseeded_resets_continue_the_generator(test_rewards):
    a = SyntheticVQAEnv(seed=5, rewards=test_rewards)
    b = SyntheticVQAEnv(seed=5, rewards=test_rewards)
    run_a = [_digest(a.reset()[0]) for _ in range(5)]
    run_b = [_digest(b.reset()[0]) for _ in range(5)]
    assert run_a == run_b and len(set(run_a)) == 5
    c = SyntheticVQAEnv(rewards=test_rewards)  # no seed: fresh entropy
    first = _digest(c.reset(seed=9)[0])
    continued = [_digest(c.reset()[0]) for _ in range(3)]
    assert _digest(c.reset(seed=9)[0]) == first and [_digest(c.reset()[0]) for _ in range(3)] == continued


def test_train_and_eval_streams_are_disjoint(test_rewards):
    """Single-shape count scenes are few enough (~10^5) that independent streams would share some images."""
    digests = {}
    for split in ("train", "eval"):
        env = SyntheticVQAEnv(task="count", split=split, max_count=1, rewards=test_rewards)
        digests[split] = {_digest(env.reset(seed=s)[0]) for s in range(3000)}
    assert len(digests["train"]) > 2500 and len(digests["eval"]) > 2500
    assert not digests["train"] & digests["eval"]


# ------------------------------------------------------------------------------------------------- Gymnasium API
def test_reset_step_signatures_and_semantics(test_rewards):
    env = SyntheticVQAEnv(task="mixed", rewards=test_rewards)
    params = inspect.signature(env.reset).parameters
    assert params["seed"].kind is inspect.Parameter.KEYWORD_ONLY and params["seed"].default is None
    assert params["options"].kind is inspect.Parameter.KEYWORD_ONLY and params["options"].default is None
    with pytest.raises(gym.error.ResetNeeded, match="before reset"):
        env.step("<answer>1</answer>")
    with pytest.raises(gym.error.ResetNeeded, match="before reset"):
        env.render()
    obs, info = env.reset(seed=3)
    assert set(obs) == {"text", "images"} and obs in env.observation_space
    assert isinstance(obs["images"], tuple) and obs["images"][0].dtype == np.uint8
    assert set(info) == {"answer", "answer_choices", "solution", "task", "question", "objects"}
    assert info["answer"] in info["answer_choices"]
    assert re.fullmatch(
        r"<think>[^<]{1,60}</think><answer>" + re.escape(info["answer"]) + "</answer>", info["solution"]
    )
    assert np.array_equal(env.render(), obs["images"][0])
    out = env.step(info["solution"])
    assert len(out) == 5
    obs2, reward, terminated, truncated, info2 = out
    assert terminated is True and truncated is False and isinstance(reward, float)
    assert reward == pytest.approx(1.5) and info2["success"] is True
    assert info2["reward_parts"] == {"test_exact": 1.0, "test_format": 1.0}
    assert {"answer", "parsed_answer", "success", "reward_parts"} <= set(info2)
    assert obs2 in env.observation_space and obs2 == {"text": "", "images": ()}
    with pytest.raises(gym.error.ResetNeeded, match="ended"):
        env.step(info["solution"])
    env.reset()
    env.step("")  # a reset makes it steppable again


@pytest.mark.parametrize(
    "action",
    [
        "",
        "3",
        "<answer>",
        "</answer><answer>",
        "<think>unclosed",
        "<answer>purple-ish</answer>",
        "\x00\ud7ff" * 50,
        "x" * 5000,
    ],
)
def test_malformed_action_scores_the_minimum(test_rewards, action):
    env = SyntheticVQAEnv(task="mixed", seed=0, rewards=test_rewards)
    env.reset()
    _, reward, terminated, _, info = env.step(action)
    assert reward == 0.0 and terminated and info["success"] is False
    assert info["reward_parts"] == {"test_exact": 0.0, "test_format": 0.0}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    action=st.text(max_size=300)
    | st.builds(lambda a, b: f"<think>{a}</think><answer>{b}</answer>", st.text(), st.text())
)
def test_any_text_action_never_raises(test_rewards, action):
    env = SyntheticVQAEnv(task="mixed", seed=0, rewards=test_rewards)
    _, info = env.reset()
    _, reward, terminated, truncated, step_info = env.step(action)
    assert 0.0 <= reward <= 1.5 and terminated and not truncated
    if step_info["parsed_answer"] is None:
        assert step_info["success"] is False
    elif step_info["parsed_answer"] == info["answer"]:
        assert step_info["success"] is True


def test_non_text_action_is_a_clear_error(test_rewards):
    env = SyntheticVQAEnv(rewards=test_rewards)
    env.reset(seed=0)
    with pytest.raises(TypeError, match="str"):
        env.step(3)
    env.reset(seed=0)
    assert env.step(b"<answer>x</answer>")[1] == 0.0  # bytes are decoded


@pytest.mark.filterwarnings("ignore:.*not having a spec")  # the spec'd variant is checked below
def test_gymnasium_env_checker(test_rewards):
    check_env(SyntheticVQAEnv(task="mixed", difficulty=3, image_size=[56, 84], rewards=test_rewards))


def test_gymnasium_env_checker_with_spec(test_rewards):
    """Through gym.make the env has a spec, which enables the checker's seeded-determinism and render-mode checks."""
    gym.register(id="mmrl_test/SyntheticVQA-v0", entry_point="envs.vqa.synthetic:SyntheticVQAEnv")
    try:
        env = gym.make("mmrl_test/SyntheticVQA-v0", task="mixed", rewards=test_rewards)
        check_env(env.unwrapped)
    finally:
        gym.registry.pop("mmrl_test/SyntheticVQA-v0")


def test_vectorized_with_gymnasium(test_rewards):
    vec = gym.vector.SyncVectorEnv([lambda i=i: SyntheticVQAEnv(seed=i, rewards=test_rewards) for i in range(3)])
    obs, info = vec.reset(seed=0)
    assert len(obs["text"]) == 3 and obs in vec.observation_space
    _, reward, terminated, truncated, info = vec.step(tuple(info["solution"]))
    assert reward.tolist() == [1.5, 1.5, 1.5] and terminated.all() and not truncated.any() and info["success"].all()
    vec.close()


def test_render_mode_none_returns_none(test_rewards):
    env = SyntheticVQAEnv(render_mode=None, rewards=test_rewards)
    env.reset(seed=0)
    with pytest.warns(UserWarning):
        assert env.render() is None


# --------------------------------------------------------------------------------------------------------- config
def test_config_errors_are_one_line(test_rewards):
    with pytest.raises(ConfigError, match="did you mean 'difficulty'"):
        SyntheticVQAEnv(dificulty=2)
    with pytest.raises(ConfigError, match="task"):
        SyntheticVQAEnv(task="shape", rewards=test_rewards)
    with pytest.raises(ConfigError, match="difficulty"):
        SyntheticVQAEnv(difficulty=4, rewards=test_rewards)
    with pytest.raises(ConfigError, match="image_size"):
        SyntheticVQAEnv(image_size=[56], rewards=test_rewards)
    with pytest.raises(ConfigError, match="split"):
        SyntheticVQAEnv(split="test", rewards=test_rewards)
    with pytest.raises(ConfigError, match="prompt_template"):
        SyntheticVQAEnv(prompt_template="{question} {answer}", rewards=test_rewards)
    with pytest.raises(KeyError, match="unknown reward 'nope'"):
        SyntheticVQAEnv(rewards={"nope": 1.0})


def test_config_object_registry_and_template(test_rewards):
    cfg = SyntheticVQAConfig(task="color", prompt_template="{question} One of: {choices}.", rewards=test_rewards)
    obs, info = SyntheticVQAEnv(cfg).reset(seed=0)
    assert obs["text"].endswith("One of: red, green, blue, yellow.")
    assert "synthetic_vqa" in envs.names()
    env = envs.make("synthetic_vqa", task="count", seed=0, rewards=test_rewards)
    obs, _ = env.reset()
    assert obs["text"].startswith("How many shapes are there? Answer with <answer>N</answer>.")


def test_mixed_covers_tasks_and_options_pick_one(test_rewards):
    env = SyntheticVQAEnv(task="mixed", seed=0, rewards=test_rewards)
    assert {env.reset()[1]["task"] for _ in range(60)} == {"count", "color", "position"}
    assert env.reset(options={"task": "position"})[1]["task"] == "position"
    with pytest.raises(ValueError, match="unknown keys"):
        env.reset(options={"index": 3})


# ------------------------------------------------------------------------------------------- with the real rewards
def _real_rewards_or_skip() -> None:
    import rewards

    if not {"accuracy", "format"} <= set(rewards.names()):
        pytest.skip("the accuracy/format rewards are not registered yet")


def test_default_rewards_score_solution_and_garbage():
    _real_rewards_or_skip()
    import rewards

    env = SyntheticVQAEnv(task="mixed", seed=0)  # default rewards: {"accuracy": 1.0}
    lo, hi = rewards.RANGES["accuracy"]
    for _ in range(10):
        _, info = env.reset()
        assert env.step(info["solution"])[1] == hi
        env.reset()
        assert env.step("<answer><answer>")[1] == lo
    env = SyntheticVQAEnv(rewards={"accuracy": 1.0, "format": 0.1}, seed=0)
    _, info = env.reset()
    assert env.step(info["solution"])[4]["reward_parts"] == {"accuracy": 1.0, "format": 1.0}


@pytest.mark.parametrize("module", ["envs.vqa.base", "envs.vqa.render", "envs.vqa.synthetic", "envs.vqa.dataset"])
def test_docstring_examples_run(module, monkeypatch):
    _real_rewards_or_skip()
    monkeypatch.chdir(Path(__file__).resolve().parents[2])  # the dataset examples use repo-relative paths
    result = doctest.testmod(importlib.import_module(module))
    assert result.failed == 0 and result.attempted > 0


# ------------------------------------------------------------------------------------------ grid layout, restrictions
@pytest.mark.parametrize("size", [56, 112])
def test_grid_layout_puts_each_shape_in_its_own_token_cell(test_rewards, size):
    env = SyntheticVQAEnv(task="count", layout="grid", image_size=size, kinds=["square"], colors=["red"],
                          rewards=test_rewards)  # fmt: skip
    for seed in range(60):
        obs, info = env.reset(seed=seed)
        comps = components(obs["images"][0])
        assert len(comps) == int(info["answer"])  # counted from pixels, independently of the env's bookkeeping
        cells = set()
        for c in comps:  # every blob lies inside one 28-px cell, and no two blobs share a cell
            x, y, w, h = c["box"]
            assert x // 28 == (x + w - 1) // 28 and y // 28 == (y + h - 1) // 28, (seed, c["box"])
            cells.add((x // 28, y // 28))
            assert [nearest_palette(rgb) for rgb in c["colors"]] == ["red"] and c["kind"] == "square"
        assert len(cells) == len(comps)
        assert all(o["kind"] == "square" for o in info["objects"])


def test_restrictions_are_validated(test_rewards):
    with pytest.raises(ConfigError, match="kinds: only the count task"):
        SyntheticVQAEnv(task="color", kinds=["square"])
    with pytest.raises(ConfigError, match="kinds: only the count task"):
        SyntheticVQAEnv(task="count", kinds=["hexagon"])
    with pytest.raises(ConfigError, match="colors: expected a non-empty subset"):
        SyntheticVQAEnv(task="count", colors=["mauve"])
    with pytest.raises(ConfigError, match="layout: grid has 4 cells"):
        SyntheticVQAEnv(task="count", layout="grid", max_count=5)
    with pytest.raises(ConfigError, match="layout: expected random or grid"):
        SyntheticVQAEnv(layout="spiral")


def test_colour_choices_follow_the_restricted_palette(test_rewards):
    env = SyntheticVQAEnv(task="color", colors=["green", "blue"], rewards=test_rewards)
    for seed in range(20):
        _, info = env.reset(seed=seed)
        assert info["answer_choices"] == ["green", "blue"] and info["answer"] in ("green", "blue")
