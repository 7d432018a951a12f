"""Registry (names, RANGES, docstrings), composite, routed and from_compute_score."""

from __future__ import annotations

import logging
import math
import re

import pytest

import rewards
from rewards.registry import RANGES

REQUIRED = {
    "accuracy", "exact", "numeric", "mcq", "math", "f1", "rouge_l", "counting", "format", "format_answer", "format_boxed",
    "format_json_action", "hit", "iou", "iou2", "box_size", "gaussian_point", "gaussian_coverage", "detection",
    "action_match", "length_penalty", "repetition_penalty", "overlong",
}  # fmt: skip


def test_every_required_reward_is_registered_with_a_range() -> None:
    assert REQUIRED <= set(rewards.names())
    # every reward shipped in the rewards package has a documented range (other test packages may register stand-ins)
    shipped = {n for n in rewards.names() if rewards.get(n).__module__.startswith("rewards.")}
    assert shipped == set(RANGES) and REQUIRED <= shipped


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_docstring_states_the_range(name: str) -> None:
    lo, hi = RANGES[name]
    doc = rewards.get(name).__doc__ or ""
    m = re.search(r"Range \[(-?[\d.]+), (-?[\d.]+)\]", doc)
    assert m, f"{name}: docstring must state 'Range [lo, hi]'"
    assert (float(m.group(1)), float(m.group(2))) == (lo, hi)


def test_register_rejects_duplicates_and_bad_bounds() -> None:
    with pytest.raises(ValueError, match="already registered"):
        rewards.register("iou")(lambda completions, **kw: [0.0] * len(completions))
    with pytest.raises(ValueError, match="bounds"):
        rewards.register("_test_bad_bounds", bounds=(1.0, 0.0))(lambda c, **k: [])
    with pytest.raises(KeyError, match="unknown reward"):
        rewards.get("nope")


def test_composite_parts_and_total() -> None:
    fn = rewards.composite({"accuracy": 1.0, "format": 0.5})
    total, parts = fn(["<think>x</think><answer>3</answer>", "<answer>3</answer>"], answer=["3", "3"])
    assert total == [1.5, 1.0]
    assert parts == {"accuracy": [1.0, 1.0], "format": [1.0, 0.0]}


def test_routed_by_data_source() -> None:
    fn = rewards.routed(
        {"math": {"accuracy": 1.0, "format": 0.5}, "grounding": {"iou": 2.0}},
        default={"format_answer": 1.0},
    )
    completions = [
        "<think>x</think><answer>3</answer>",
        '<answer>{"bbox_2d": [0, 0, 10, 10]}</answer>',
        "<answer>hi</answer>",
    ]
    total, parts = fn(
        completions,
        answer=["3", [0, 0, 10, 20], "whatever"],
        data_source=["math", "grounding", "ocr"],
        image_size=[None, [100, 100], None],
        trainer_state=object(),  # non-list extras pass through
    )
    assert total == [1.5, 1.0, 1.0]
    assert parts["accuracy"][0] == 1.0 and math.isnan(parts["accuracy"][1])
    assert parts["iou"][1] == pytest.approx(0.5) and math.isnan(parts["iou"][0])
    assert parts["format_answer"][2] == 1.0


def test_routed_without_default_names_the_column() -> None:
    fn = rewards.routed({"math": {"accuracy": 1.0}})
    with pytest.raises(ValueError, match="data_source"):
        fn(["<answer>3</answer>"], answer=["3"], data_source=["other"])
    with pytest.raises(KeyError, match="unknown reward"):
        rewards.routed({"math": {"nope": 1.0}})


def test_from_compute_score(caplog: pytest.LogCaptureFixture) -> None:
    seen = []

    def compute_score(data_source, solution_str, ground_truth, extra_info=None):  # noqa: ANN001, ANN202
        seen.append((data_source, ground_truth, extra_info))
        if ground_truth == "boom":
            raise RuntimeError("user bug")
        if ground_truth == "dict":
            return {"score": 0.25, "acc": 1}
        if ground_truth == "nodict":
            return {"acc": 1}
        if ground_truth == "nan":
            return float("nan")
        return float(solution_str.strip() == ground_truth)

    fn = rewards.from_compute_score(compute_score)
    with caplog.at_level(logging.DEBUG, logger="rewards.routing"):
        out = fn(
            ["3", "x", "x", "x", "x", "x"],
            ground_truth=["3", "boom", "dict", "nodict", "nan", "boom"],
            data_source=["gsm8k"] * 6,
            extra_info=[{"i": i} for i in range(6)],
        )
    assert out == [1.0, 0.0, 0.25, 0.0, 0.0, 0.0]
    assert seen[0] == ("gsm8k", "3", {"i": 0})
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "user bug" in warnings[0].getMessage()
    # ground truth falls back to the `answer` column; data_source defaults to ""
    assert fn(["3"], answer=["3"]) == [1.0]


@pytest.mark.parametrize(
    "module",
    ["rewards", "rewards.registry", "rewards.extract", "rewards.coords", "rewards.accuracy", "rewards.format",
     "rewards.shaping", "rewards.perception", "rewards.routing"],
)  # fmt: skip
def test_docstring_examples_run(module: str) -> None:
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module))
    assert result.failed == 0 and result.attempted > 0
