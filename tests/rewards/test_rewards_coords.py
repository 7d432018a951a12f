"""rewards.coords: smart_resize equals transformers', and every convention round-trips."""

from __future__ import annotations

import random

import pytest
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as hf_smart_resize

from rewards.coords import CONVENTIONS, DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS, Frame, frame_from_row, smart_resize


def test_smart_resize_equals_transformers() -> None:
    rng = random.Random(0)
    sizes = [(28, 28), (56, 56), (1, 200), (480, 640), (1080, 1920), (4000, 3000), (100, 19999), (13, 17)]
    sizes += [(rng.randint(10, 5000), rng.randint(10, 5000)) for _ in range(2000)]
    for h, w in sizes:
        if max(h, w) / min(h, w) > 200:
            continue
        for mn, mx in [
            (DEFAULT_MIN_PIXELS, DEFAULT_MAX_PIXELS),
            (256 * 28 * 28, 1024 * 28 * 28),
            (4 * 28 * 28, 16 * 28 * 28),
        ]:
            assert smart_resize(h, w, 28, mn, mx) == hf_smart_resize(h, w, factor=28, min_pixels=mn, max_pixels=mx), (
                h,
                w,
            )


def test_default_max_pixels_matches_transformers_default() -> None:
    assert DEFAULT_MAX_PIXELS == 14 * 14 * 4 * 1280
    assert smart_resize(4000, 3000) == hf_smart_resize(4000, 3000)


def test_smart_resize_rejects_extreme_aspect() -> None:
    with pytest.raises(ValueError, match="image_size"):
        smart_resize(1, 1000)


def test_hand_worked_conversions() -> None:
    # Qwen2-VL/Qwen3-VL: [0, 1000) -> pixels
    assert Frame("qwen2_vl", (640, 480)).to_pixels((500, 250)) == (320.0, 120.0)
    assert Frame("qwen3_vl", (640, 480)).to_pixels((1000, 1000)) == (640.0, 480.0)
    assert Frame("normalized", (640, 480)).to_pixels((0.5, 0.5, 1.0, 1.0)) == (320.0, 240.0, 640.0, 480.0)
    assert Frame("pixel").to_pixels((3, 4)) == (3.0, 4.0)
    # Qwen2.5-VL: 640x480 -> smart_resize -> 644 wide (23 x 28), 476 high (17 x 28)
    fx, fy = Frame("qwen2_5_vl", (640, 480)).to_pixels((644, 476))
    assert fx == pytest.approx(640) and fy == pytest.approx(480)


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_round_trip(convention: str) -> None:
    rng = random.Random(1)
    for _ in range(200):
        size = (rng.uniform(20, 4000), rng.uniform(20, 4000))
        if max(size) / min(size) > 150:
            continue
        frame = Frame(convention, size)
        c = tuple(rng.uniform(0, size[i % 2]) for i in range(4))
        assert frame.to_pixels(frame.from_pixels(c)) == pytest.approx(c, rel=1e-9, abs=1e-9)


def test_frame_from_row_errors_name_columns() -> None:
    assert frame_from_row({}).convention == "pixel"
    assert frame_from_row({"coordinate_convention": "Qwen2_VL", "image_size": [10, 10]}).convention == "qwen2_vl"
    with pytest.raises(ValueError, match="coordinate_convention"):
        frame_from_row({"coordinate_convention": "weird", "image_size": [10, 10]})
    with pytest.raises(ValueError, match="image_size"):
        frame_from_row({"coordinate_convention": "qwen2_vl"})
    with pytest.raises(ValueError, match="image_size"):
        frame_from_row({"image_size": [0, 10]})
    with pytest.raises(ValueError, match="image_size"):
        frame_from_row({"image_size": "big"})
    assert frame_from_row({"image_size": {"width": 5, "height": 6}}).image_size == (5.0, 6.0)


def test_conversion_lives_in_one_place() -> None:
    # No other rewards module may scale coordinates itself: they all go through rewards.coords.
    import pathlib

    import rewards

    root = pathlib.Path(rewards.__file__).parent
    for path in root.glob("*.py"):
        if path.name == "coords.py":
            continue
        text = path.read_text()
        assert "1000.0" not in text and "smart_resize(" not in text, path.name
