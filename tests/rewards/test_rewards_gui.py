"""action_match (UI-S1 grading) and format_json_action."""

from __future__ import annotations

import json

import pytest

import rewards
from rewards.gui import action_type


def grade(completion: str, answer: object, **cols: object) -> float:
    return rewards.get("action_match")([completion], answer=[answer], **{k: [v] for k, v in cols.items()})[0]


CLICK_BOX = {"action": "click", "bbox": [100, 100, 200, 150]}


@pytest.mark.parametrize(
    "completion, want",
    [
        ('<answer>{"action": "click", "point": [150, 120]}</answer>', 1.0),
        ('{"action": "click", "coordinate": [150, 120]}', 1.0),
        ('{"action": "tap", "point": [150, 120]}', 1.0),  # alias
        ('{"action": "click", "bbox_2d": [140, 110, 160, 130]}', 1.0),  # box centre
        ('{"action": "click", "point": [250, 120]}', 0.5),  # right type, misses the box
        ('{"action": "click"}', 0.5),  # no location
        ('{"action": "click", "point": [NaN, 120]}', 0.5),
        ('{"action": "type", "text": "hello"}', 0.1),  # parsed, wrong type
        ("click at 150, 120", 0.0),  # unparseable
        ('{"action": "click", "point": [150, 120]} {"action": "type"}', 0.0),  # two actions: ambiguous
        ("", 0.0),
        ("[{'action': 'click', 'point': [150, 120], 'input_text': 'no input text'}]", 1.0),  # GUI-R1 style
    ],
)
def test_click_in_box(completion: str, want: float) -> None:
    assert grade(completion, CLICK_BOX, image_size=[1080, 1920]) == want


def test_click_radius_for_point_ground_truth() -> None:
    gt = {"action": "click", "point": [500, 500]}
    assert grade('{"action": "click", "point": [520, 500]}', gt, click_radius=30) == 1.0
    assert grade('{"action": "click", "point": [540, 500]}', gt, click_radius=30) == 0.5
    # default: 5% of max(W, H) = 96 px for 1080x1920
    assert grade('{"action": "click", "point": [590, 500]}', gt, image_size=[1080, 1920]) == 1.0
    assert grade('{"action": "click", "point": [600, 500]}', gt, image_size=[1080, 1920]) == 0.5


def test_type_text_f1_threshold() -> None:
    gt = {"action": "type", "text": "weather in paris"}
    assert grade('{"action": "type", "text": "weather in Paris"}', gt) == 1.0
    assert grade('{"action": "type", "text": "paris weather"}', gt) == 1.0  # F1 = 2*1*(2/3)/(5/3) = 0.8
    assert grade('{"action": "type", "text": "london"}', gt) == 0.5
    assert grade('{"action": "type", "input_text": "weather in paris"}', gt) == 1.0  # any text key
    assert grade('{"action": "type", "text": ""}', gt) == 0.5
    assert grade('{"action": "input", "text": "weather in paris"}', gt) == 1.0


def test_other_arguments() -> None:
    assert grade('{"action": "scroll", "direction": "DOWN"}', {"action": "scroll", "direction": "down"}) == 1.0
    assert grade('{"action": "scroll", "direction": "up"}', {"action": "scroll", "direction": "down"}) == 0.5
    assert grade('{"action": "press", "key": "enter"}', {"action": "press", "key": "Enter"}) == 1.0
    assert grade('{"action": "back"}', {"action": "back"}) == 1.0
    assert grade('{"action": "back", "extra": 1}', json.dumps({"action": "back"})) == 1.0  # gt as JSON string


def test_drag_start_and_end_points() -> None:
    gt = {"action": "drag", "start_point": [100, 100], "end_point": [300, 300]}
    assert grade('{"action": "drag", "start_point": [101, 99], "end_point": [305, 300]}', gt, click_radius=10) == 1.0
    assert grade('{"action": "drag", "start_point": [101, 99], "end_point": [100, 100]}', gt, click_radius=10) == 0.5


@pytest.mark.parametrize("convention", ["qwen2_vl", "qwen3_vl", "normalized", "qwen2_5_vl"])
def test_click_coordinates_converted(convention: str) -> None:
    size = [1080, 1920]
    frame = rewards.Frame(convention, (1080.0, 1920.0))
    x, y = frame.from_pixels((150, 120))
    comp = json.dumps({"action": "click", "point": [x, y]})
    assert grade(comp, CLICK_BOX, image_size=size, coordinate_convention=convention) == 1.0
    # the same numbers read as pixels miss (they are in another unit)
    if convention != "qwen2_5_vl":
        assert grade(comp, CLICK_BOX, image_size=size) == 0.5


def test_click_outside_image_and_full_screen_box() -> None:
    assert grade('{"action": "click", "point": [-150, 120]}', CLICK_BOX, image_size=[1080, 1920]) == 0.5
    full = '{"action": "click", "bbox": [0, 0, 1080, 1920]}'
    assert grade(full, {"action": "click", "bbox": [400, 800, 700, 1100]}, image_size=[1080, 1920]) == 0.5


def test_bad_ground_truth_names_column() -> None:
    with pytest.raises(ValueError, match="column 'answer'"):
        grade('{"action": "click"}', "click")
    with pytest.raises(ValueError, match="column 'answer'"):
        grade('{"action": "click"}', {"type": "click"})
    with pytest.raises(ValueError, match="column 'answer'"):
        grade('{"action": "click"}', {"action": "click", "point": "here"})


def test_action_type_normalisation() -> None:
    assert action_type(" Left-Click ") == "click"
    assert action_type("long press") == "long_press"


def test_format_json_action() -> None:
    fn = rewards.get("format_json_action")
    comps = [
        '<answer>{"action": "click", "point": [1, 2]}</answer>',
        '{"action": "back"}',
        '{"act": "x"}',
        "nothing",
        "<answer>{}</answer>",
    ]
    assert fn(comps) == [1.0, 1.0, 0.0, 0.0, 0.0]
