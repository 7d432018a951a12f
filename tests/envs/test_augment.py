"""Augmentations as VQA env config options: seeding, the transforms exactly, spaces, answers kept, config errors."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import cv2
import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from envs.transforms import AUGMENTATIONS, AugmentContext, distractor_concat, mixup, parse_augment, random_rotation
from envs.vqa import DatasetVQAEnv, SyntheticVQAEnv
from envs.vqa.render import nearest_color
from envs.vqa.synthetic import TASK_AUGMENTS, TASKS, rotation_limit
from mmrl.config import ConfigError

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "vqa"
JSONL = ASSETS / "sample.jsonl"
ALL = [{"name": "rotation", "p": 0.5, "max_degrees": 15}, {"name": "mixup", "p": 0.3}, {"name": "distractor", "p": 0.5}]
NOTE_RIGHT = "An unrelated picture is appended to the right of the image; answer about the left picture."


def synthetic(test_rewards, augment=None, **kwargs) -> SyntheticVQAEnv:
    return SyntheticVQAEnv(rewards=test_rewards, **({"augment": augment} if augment is not None else {}), **kwargs)


def dataset(test_rewards, augment=None, **kwargs) -> DatasetVQAEnv:
    kwargs = {"path": str(JSONL), "image_size": 56, **kwargs}
    return DatasetVQAEnv(rewards=test_rewards, **({"augment": augment} if augment is not None else {}), **kwargs)


def assert_same_obs(a: dict, b: dict) -> None:
    assert a["text"] == b["text"] and len(a["images"]) == len(b["images"])
    for x, y in zip(a["images"], b["images"]):
        np.testing.assert_array_equal(x, y)


def shape_colours(image: np.ndarray, threshold: int) -> list[str]:
    """Palette names of the shapes found as 8-connected components of pixels darker than ``threshold`` (in their
    darkest channel), each named by its most common pixel; specks under 4 px (a thin rotated apex) are skipped."""
    mask = (image.min(axis=-1) < threshold).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    names = []
    for i in range(1, n):
        if stats[i, cv2.CC_STAT_AREA] >= 4:
            colours, counts = np.unique(image[labels == i], axis=0, return_counts=True)
            names.append(nearest_color(colours[counts.argmax()]))
    return sorted(names)


# ------------------------------------------------------------------------------------------------------- seeding
@pytest.mark.parametrize("make", [synthetic, dataset])
def test_same_seed_same_augmentations(test_rewards, make):
    a, b = make(test_rewards, ALL), make(test_rewards, ALL)
    applied = set()
    for seed in range(12):
        (oa, ia), (oa2, ia2), (ob, ib) = a.reset(seed=seed), a.reset(seed=seed), b.reset(seed=seed)
        assert_same_obs(oa, oa2)
        assert_same_obs(oa, ob)
        assert ia["augment"] == ia2["augment"] == ib["augment"]
        applied.update(ia["augment"])
    assert applied == set(AUGMENTATIONS)  # every entry fired for some seed (and p < 1 skipped it for others)


@pytest.mark.parametrize("make", [synthetic, dataset])
def test_p_zero_is_pixel_identical_to_no_augmentation(test_rewards, make):
    inert = make(test_rewards, [{**entry, "p": 0.0} for entry in ALL])
    plain = make(test_rewards)
    assert inert.observation_space == plain.observation_space
    for seed in (0, 1, 2):
        (oi, ii), (op, ip) = inert.reset(seed=seed), plain.reset(seed=seed)
        assert_same_obs(oi, op)
        assert ii.pop("augment") == [] and ii == ip
        for _ in range(3):  # p = 0 draws nothing, so the unseeded stream continues as without augmentation
            assert_same_obs(inert.reset()[0], plain.reset()[0])


@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
def test_p_one_changes_the_image(test_rewards, name):
    entry = {"name": name, "max_degrees": 30} if name == "rotation" else {"name": name}
    env, plain = synthetic(test_rewards, [entry]), synthetic(test_rewards)
    changed = 0
    for seed in range(20):
        (obs, info), (raw, _) = env.reset(seed=seed), plain.reset(seed=seed)
        assert info["augment"] == [name]
        img, ref = obs["images"][0], raw["images"][0]
        changed += img.shape != ref.shape or not np.array_equal(img, ref)
    # a rotation's bound shrinks to 0 for scenes with a shape in a corner (see test_rotation_keeps_every_shape)
    assert changed == 20 if name != "rotation" else changed >= 10


def test_eval_env_with_empty_augment_is_unaffected(test_rewards):
    kwargs = {"task": "count", "augment": ALL, "rewards": test_rewards}
    eval_kwargs = {**kwargs, **{"split": "eval", "augment": []}}  # how the trainer merges env.eval_kwargs
    evaluated = SyntheticVQAEnv(**eval_kwargs)
    reference = SyntheticVQAEnv(task="count", split="eval", rewards=test_rewards)
    assert evaluated.observation_space == reference.observation_space
    for seed in range(5):
        (oe, ie), (orf, irf) = evaluated.reset(seed=seed), reference.reset(seed=seed)
        assert_same_obs(oe, orf)
        assert ie == irf and "augment" not in ie


# ------------------------------------------------------------------------------------ the transforms, exactly
def test_rotation_is_the_transform_with_the_scene_bound(test_rewards):
    env = synthetic(test_rewards, [{"name": "rotation", "max_degrees": 25}], difficulty=2)
    plain = synthetic(test_rewards, difficulty=2)
    bounds = []
    for seed in range(10):
        obs, info = env.reset(seed=seed)
        raw, raw_info = plain.reset(seed=seed)
        boxes = [tuple(o["box"]) for o in raw_info["objects"]]
        bound = rotation_limit(boxes, 56, 56, 25.0)
        bounds.append(bound)
        expected = random_rotation(raw["images"][0], bound, copy.deepcopy(plain.np_random))
        np.testing.assert_array_equal(obs["images"][0], expected)
        assert obs["text"] == raw["text"] and info["answer"] == raw_info["answer"]
    assert 0.0 < max(bounds) <= 25.0


def test_rotation_in_the_dataset_env_is_the_transform_with_a_fresh_generator(test_rewards):
    env, plain = dataset(test_rewards, [{"name": "rotation", "max_degrees": 20}]), dataset(test_rewards)
    for seed in (0, 2, 3):
        obs, _ = env.reset(seed=seed)
        raw, _ = plain.reset(seed=seed)
        rng = np.random.default_rng(seed)  # reset(seed=s) seeds the env's generator as default_rng(s) does
        for image, original in zip(obs["images"], raw["images"]):
            np.testing.assert_array_equal(image, random_rotation(original, 20.0, rng))


@pytest.mark.parametrize("task", TASKS)
def test_mixup_and_distractor_use_the_next_scene(test_rewards, task):
    """The other image is the scene the env would show next; mixup then draws its weight."""
    entries = [{"name": "mixup", "min_weight": 0.6, "max_weight": 0.8}, {"name": "distractor", "axis": 0}]
    for entry in (e for e in entries if e["name"] in TASK_AUGMENTS[task]):
        env, plain = synthetic(test_rewards, [entry], task=task), synthetic(test_rewards, task=task)
        for seed in range(5):
            obs, info = env.reset(seed=seed)
            raw, raw_info = plain.reset(seed=seed)
            other = plain.reset()[0]["images"][0]  # continues the generator: the next scene of this task and split
            if entry["name"] == "mixup":
                expected = mixup(raw["images"][0], other, float(plain.np_random.uniform(0.6, 0.8)))
            else:
                expected = distractor_concat(raw["images"][0], other, axis=0)
                np.testing.assert_array_equal(obs["images"][0][56:], other)  # the bottom half is the next scene
            np.testing.assert_array_equal(obs["images"][0], expected)
            assert info["answer"] == raw_info["answer"] and info["objects"] == raw_info["objects"]


def test_dataset_distractor_and_mixup_use_another_rows_image(test_rewards):
    plain = dataset(test_rewards)
    row_images = [plain.reset(options={"index": i})[0]["images"] for i in range(plain.num_rows)]
    for entry in ({"name": "distractor"}, {"name": "mixup"}):
        env = dataset(test_rewards, [entry])
        for index in range(plain.num_rows):
            obs, info = env.reset(options={"index": index})
            others = [img for i, images in enumerate(row_images) if i != index for img in images]
            assert len(obs["images"]) == len(row_images[index])
            assert info["augment"] == ([entry["name"]] if row_images[index] else [])  # a text-only row draws nothing
            for image, original in zip(obs["images"], row_images[index]):
                if entry["name"] == "distractor":
                    assert image.shape == (56, 112, 3)
                    np.testing.assert_array_equal(image[:, :56], original)
                    assert any(np.array_equal(image[:, 56:], o) for o in others)
                else:
                    out, a = image.astype(int), original.astype(int)
                    dominated = [o for o in others if (np.abs(out - a) <= np.abs(out - o.astype(int))).all()]
                    assert image.shape == original.shape and dominated  # closer to the original than to the other
            assert ("unrelated" in obs["text"]) == bool(row_images[index])


def test_augmentations_return_new_arrays_and_keep_their_inputs():
    rng = np.random.default_rng(0)
    image, other = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8), rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    before = image.copy(), other.copy()
    context = AugmentContext(draw_image=lambda: other)
    for aug in parse_augment([{"name": "rotation", "max_degrees": 0}, {"name": "mixup"}, {"name": "distractor"}]):
        out = aug.apply(image, rng, context)
        assert not np.shares_memory(out, image) and not np.shares_memory(out, other)
    np.testing.assert_array_equal(image, before[0])
    np.testing.assert_array_equal(other, before[1])


# ------------------------------------------------------------------------------------------ spaces and info
@pytest.mark.parametrize("make", [synthetic, dataset])
def test_observations_stay_in_the_space(test_rewards, make):
    env = make(test_rewards, ALL)
    shapes = set()
    for seed in range(30):
        obs, _ = env.reset(seed=seed)
        assert env.observation_space.contains(obs)
        shapes.update(img.shape for img in obs["images"])
    assert shapes == {(56, 56, 3), (56, 112, 3)}  # p = 0.5: with and without the distractor
    assert not env.observation_space["images"].feature_space.contains(np.zeros((56, 84, 3), np.uint8))
    # through gym.make the env has a spec, which enables the checker's seeded-determinism and render-mode checks
    gym.register(id="mmrl_test/AugmentedVQA-v0", entry_point=lambda **kwargs: make(test_rewards, ALL, **kwargs))
    try:
        check_env(gym.make("mmrl_test/AugmentedVQA-v0").unwrapped)
    finally:
        gym.registry.pop("mmrl_test/AugmentedVQA-v0")


def test_axis_0_and_two_distractors_size_the_space(test_rewards):
    env = synthetic(test_rewards, [{"name": "distractor", "axis": 0}, {"name": "distractor", "p": 0.5}])
    assert env.observation_space["images"].feature_space.shapes == ((112, 56), (112, 168))  # [2H, W], then [2H, 3W]
    shapes = set()
    for seed in range(20):
        obs, info = env.reset(seed=seed)
        assert env.observation_space.contains(obs) and info["augment"][0] == "distractor"
        shapes.add(obs["images"][0].shape[:2])
        assert obs["text"].count("unrelated") == len(info["augment"])  # one note per axis
    assert shapes == {(112, 56), (112, 168)}


def test_info_and_text_record_what_was_applied(test_rewards):
    env = synthetic(test_rewards, [{"name": "distractor"}], task="position")
    obs, info = env.reset(seed=0)
    assert info["augment"] == ["distractor"] and obs["text"].startswith(NOTE_RIGHT + " Is the ")
    assert env.step(info["solution"])[4]["augment"] == ["distractor"]
    assert env.render().shape == (56, 112, 3)  # render shows what the model sees
    obs, info = dataset(test_rewards, [{"name": "distractor"}]).reset(options={"index": 3})  # two images
    assert obs["text"].startswith("An unrelated picture is appended to the right of each image;")


def test_vectorized_with_a_distractor(test_rewards):
    augment = [{"name": "distractor", "p": 0.5}]
    vec = gym.vector.SyncVectorEnv([lambda i=i: synthetic(test_rewards, augment, seed=i) for i in range(3)])
    obs, info = vec.reset(seed=0)
    assert obs in vec.observation_space and len(info["augment"]) == 3
    vec.close()


# ------------------------------------------------------------------------------------------------- answers kept
@pytest.mark.parametrize("task", ["count", "color"])
@pytest.mark.parametrize("difficulty", [1, 2, 3])
def test_rotation_keeps_every_shape(test_rewards, task, difficulty):
    """Every shape stays whole and separate, in its colour, so count and colour answers hold (at 30 degrees)."""
    env = synthetic(test_rewards, [{"name": "rotation", "max_degrees": 30}], task=task, difficulty=difficulty,
                    image_size=[56, 84])  # fmt: skip
    for seed in range(40):
        obs, info = env.reset(seed=seed)
        assert shape_colours(obs["images"][0], 128) == sorted(o["color"] for o in info["objects"])


@pytest.mark.parametrize("task", ["count", "position"])
@pytest.mark.parametrize("difficulty", [1, 2, 3])
def test_mixup_keeps_the_scenes_silhouettes(test_rewards, task, difficulty):
    """At the lowest weight (0.6) every pixel of the scene's shapes is darker than every other pixel (<= 0.6 * 75 + 0.4
    * 255 = 147 against >= 0.6 * 255 = 153): one threshold gives back the scene's exact silhouettes, so the kinds, the
    number and the places of the shapes asked about are all still there."""
    env = synthetic(test_rewards, [{"name": "mixup", "min_weight": 0.6, "max_weight": 0.7}], task=task,
                    difficulty=difficulty)  # fmt: skip
    plain = synthetic(test_rewards, task=task, difficulty=difficulty)
    for seed in range(30):
        (obs, info), (raw, raw_info) = env.reset(seed=seed), plain.reset(seed=seed)
        silhouettes = (raw["images"][0] != 255).any(axis=-1)
        assert not np.array_equal(obs["images"][0], raw["images"][0])
        np.testing.assert_array_equal(obs["images"][0].min(axis=-1) < 150, silhouettes)
        note = "A faint unrelated picture is blended into the image; answer about the stronger picture."
        assert obs["text"] == f"{note} {raw['text']}" and info["answer"] == raw_info["answer"]


@pytest.mark.parametrize("task", TASKS)
def test_distractor_keeps_the_scene_beside_it(test_rewards, task):
    env, plain = synthetic(test_rewards, [{"name": "distractor"}], task=task), synthetic(test_rewards, task=task)
    for seed in range(10):
        (obs, info), (raw, raw_info) = env.reset(seed=seed), plain.reset(seed=seed)
        np.testing.assert_array_equal(obs["images"][0][:, :56], raw["images"][0])
        assert obs["text"] == f"{NOTE_RIGHT} {raw['text']}" and info["answer"] == raw_info["answer"]


def test_rotation_limit_keeps_boxes_inside():
    assert rotation_limit([(20, 20, 35, 35)], 56, 56) == 180.0  # inside the inscribed circle: any angle
    assert rotation_limit([(1, 1, 8, 8)], 56, 56) == 0.0  # touching the corner margin: none
    assert rotation_limit([(20, 20, 35, 35)], 56, 56, max_degrees=12.34) == 12.34
    # a corner 25 px from the centre on both axes leaves the 27-px half-side when 25 (cos t + sin t) > 27
    exact = np.degrees(np.arcsin(27 / (25 * np.sqrt(2)))) - 45.0  # 4.8 degrees
    assert rotation_limit([(3, 3, 10, 10)], 56, 56) == pytest.approx(exact, abs=0.1)


# ------------------------------------------------------------------------------------------------- config errors
@pytest.mark.parametrize(
    "augment, message",
    [
        ([{"name": "rotaton"}], r"^augment\[0\]\.name: unknown augmentation 'rotaton' \(did you mean 'rotation'\?\)$"),
        ([{"p": 0.5}], r"^augment\[0\]\.name: missing \(known: rotation, mixup, distractor\)$"),
        (["rotation"], r"^augment\[0\]: expected a mapping"),
        (
            [{"name": "mixup"}, {"name": "rotation", "max_degres": 5}],
            r"^unknown config key 'augment\[1\]\.max_degres' \(did you mean 'max_degrees'\?\)$",
        ),
        ([{"name": "rotation", "max_degrees": "lots"}], r"^augment\[0\]\.max_degrees: expected a number"),
        ([{"name": "distractor", "axis": 1.0}], r"^augment\[0\]\.axis: expected an integer"),
        ([{"name": "distractor", "axis": 2}], r"^augment\[0\]\.axis: expected 1 \(right\) or 0 \(below\), got 2$"),
        ([{"name": "mixup", "p": 1.5}], r"^augment\[0\]\.p: expected a probability in \[0, 1\], got 1\.5$"),
        ([{"name": "mixup", "p": -0.1}], r"^augment\[0\]\.p: expected a probability"),
        ([{"name": "mixup", "min_weight": 0.5}], r"^augment\[0\]\.min_weight: expected a weight in \(0\.5, 1\]"),
        ([{"name": "mixup", "min_weight": 0.8, "max_weight": 0.7}], r"^augment\[0\]\.max_weight: expected a weight"),
        ([{"name": "rotation", "max_degrees": 200}], r"^augment\[0\]\.max_degrees: expected degrees in \[0, 180\]"),
        ([{"name": "rotation", "fill": "grey"}], r"^augment\[0\]\.fill: expected one of white, black, got 'grey'$"),
        ([{"name": "rotation", "fill": "black"}], r"^augment\[0\]\.fill: the scenes' background is white"),
        ([{"name": "rotation"}, {"name": "rotation"}], r"^augment\[1\]\.name: at most one rotation"),
        ([{"name": "distractor"}, {"name": "rotation"}], r"^augment\[1\]\.name: rotation must come before distractor"),
        ([{"name": "mixup", "min_weight": 0.55}], r"^augment\[0\]\.min_weight: at least 0\.6 here"),
    ],
)
def test_config_errors_are_one_line_and_name_the_field(test_rewards, augment, message):
    with pytest.raises(ConfigError, match=message) as error:
        synthetic(test_rewards, augment)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "task, name, allowed",
    [("position", "rotation", "distractor, mixup"), ("color", "mixup", "distractor, rotation"),
     ("mixed", "rotation", "distractor, mixup"), ("mixed", "mixup", "distractor, rotation")],
)  # fmt: skip
def test_augmentations_that_can_change_the_answer_are_refused(test_rewards, task, name, allowed):
    message = rf"^augment\[1\]\.name: {name} can change the answer of the \w+ task \(allowed: {allowed}\)$"
    with pytest.raises(ConfigError, match=message):
        synthetic(test_rewards, [{"name": "distractor"}, {"name": name}], task=task)
    synthetic(test_rewards, [{"name": "distractor"}], task=task).reset(seed=0)  # allowed everywhere


def test_reset_refuses_a_task_the_augmentations_do_not_fit(test_rewards):
    env = synthetic(test_rewards, [{"name": "rotation"}], task="count")
    assert env.reset(options={"task": "color"})[1]["task"] == "color"
    with pytest.raises(ValueError, match="task 'position' does not allow the augmentation 'rotation'"):
        env.reset(options={"task": "position"})


def test_dataset_config_errors(test_rewards, tmp_path):
    with pytest.raises(ConfigError, match=r"^unknown config key 'augment\[0\]\.angle' \(valid: "):
        dataset(test_rewards, [{"name": "rotation", "angle": 3}])
    one_image_row = tmp_path / "one.jsonl"
    rows = [{"prompt": "How many?", "images": [str(ASSETS / "images" / "count_3.png")], "answer": "3"},
            {"prompt": "Two plus two?", "answer": "4"}]  # fmt: skip
    one_image_row.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ConfigError, match=r"^augment\[0\]\.name: distractor needs images of other rows; .* in 1 row"):
        dataset(test_rewards, [{"name": "distractor"}], path=str(one_image_row), allow_outside_root=True)
    dataset(test_rewards, [{"name": "rotation"}], path=str(one_image_row), allow_outside_root=True).reset(seed=0)  # needs no other image
    dataset(test_rewards, [{"name": "mixup", "min_weight": 0.55}])  # the 0.6 floor is the synthetic scenes' own
