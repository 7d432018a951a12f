"""Grounding rewards: hand-worked cases, hacks, and agreement with independent implementations in every convention."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as hf_smart_resize

import rewards

W, H = 640, 480


def score(name: str, completion: str, answer: object, **cols: object) -> float:
    cols.setdefault("image_size", [W, H])
    return rewards.get(name)([completion], answer=[answer], **{k: [v] for k, v in cols.items()})[0]


def box(b: list[float]) -> str:
    return json.dumps({"bbox_2d": b})


# ---------------------------------------------------------------------------------------------------------------------
# Independent reference implementations (plain loops / a pixel grid / numerical integration)
# ---------------------------------------------------------------------------------------------------------------------


def raster_iou(a: list[int], b: list[int]) -> float:
    """IoU by counting unit pixels of integer boxes on a grid."""
    grid_a = np.zeros((H, W), bool)
    grid_b = np.zeros((H, W), bool)
    grid_a[a[1] : a[3], a[0] : a[2]] = True
    grid_b[b[1] : b[3], b[0] : b[2]] = True
    union = (grid_a | grid_b).sum()
    return float((grid_a & grid_b).sum() / union) if union else 0.0


def bc_numeric(b1: list[float], b2: list[float]) -> float:
    """Bhattacharyya coefficient of the two boxes' Gaussians, integral of sqrt(p q), per axis numerically."""
    out = 1.0
    for lo, hi in ((0, 2), (1, 3)):
        m1, s1 = (b1[lo] + b1[hi]) / 2, (b1[hi] - b1[lo]) / 2
        m2, s2 = (b2[lo] + b2[hi]) / 2, (b2[hi] - b2[lo]) / 2
        x = np.linspace(min(m1, m2) - 12 * max(s1, s2), max(m1, m2) + 12 * max(s1, s2), 200_001)
        p = np.exp(-0.5 * ((x - m1) / s1) ** 2) / (s1 * math.sqrt(2 * math.pi))
        q = np.exp(-0.5 * ((x - m2) / s2) ** 2) / (s2 * math.sqrt(2 * math.pi))
        y = np.sqrt(p * q)
        out *= float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)))
    return out


def to_convention(coords: list[float], convention: str, size: tuple[int, int]) -> list[float]:
    """Original pixels -> a convention, written independently of rewards.coords (uses transformers' smart_resize)."""
    w, h = size
    if convention == "pixel":
        sx, sy = 1.0, 1.0
    elif convention == "qwen2_5_vl":
        h_r, w_r = hf_smart_resize(h, w, factor=28, min_pixels=56 * 56, max_pixels=28 * 28 * 1280)
        sx, sy = w_r / w, h_r / h
    elif convention in ("qwen2_vl", "qwen3_vl"):
        sx, sy = 1000 / w, 1000 / h
    else:
        sx, sy = 1 / w, 1 / h
    return [v * (sx if i % 2 == 0 else sy) for i, v in enumerate(coords)]


# ---------------------------------------------------------------------------------------------------------------------
# Hand-worked
# ---------------------------------------------------------------------------------------------------------------------


def test_iou_hand_worked() -> None:
    gt = [0, 0, 10, 20]
    assert score("iou", box([0, 0, 10, 10]), gt) == pytest.approx(0.5)
    assert score("iou2", box([0, 0, 10, 10]), gt) == pytest.approx(0.25)
    assert score("iou", box([0, 0, 10, 20]), gt) == 1.0
    assert score("iou", box([20, 20, 30, 30]), gt) == 0.0
    assert score("iou", "no box", gt) == 0.0
    assert score("iou", '{"point_2d": [5, 5]}', gt) == 0.0  # a point is not a box


def test_hit_hand_worked() -> None:
    gt = [100, 100, 200, 200]
    assert score("hit", '{"point_2d": [150, 150]}', gt) == 1.0
    assert score("hit", "[100, 100]", gt) == 1.0  # border counts
    assert score("hit", "(250, 150)", gt) == 0.0
    assert score("hit", box([140, 140, 160, 160]), gt) == 1.0  # box centre
    assert score("hit", box([0, 0, 100, 100]), gt) == 0.0  # centre (50, 50) outside
    # ground-truth point: within click_radius
    assert score("hit", "[105, 100]", [100, 100], click_radius=10) == 1.0
    assert score("hit", "[115, 100]", [100, 100], click_radius=10) == 0.0
    assert score("hit", "[115, 100]", [100, 100]) == 1.0  # default radius 5% of 640 = 32 px


def test_box_size_hand_worked() -> None:
    gt = [0, 0, 64, 48]
    assert score("box_size", box(gt), gt) == pytest.approx(0.125)
    # x2 off by 64 (10% of W): terms (1, 1, 0.9, 1) -> harmonic mean 4 / (3 + 1/0.9)
    assert score("box_size", box([0, 0, 128, 48]), gt) == pytest.approx(0.125 * 4 / (3 + 1 / 0.9))
    with pytest.raises(ValueError, match="image_size"):
        rewards.get("box_size")([box(gt)], answer=[gt])


def test_gaussian_point_hand_worked() -> None:
    gt = [100, 100, 200, 300]  # centre (150, 200), sx = 50, sy = 100
    assert score("gaussian_point", "[150, 200]", gt) == 1.0
    assert score("gaussian_point", "[200, 200]", gt) == pytest.approx(math.exp(-0.5))
    assert score("gaussian_point", "[200, 300]", gt) == pytest.approx(math.exp(-1.0))
    assert score("gaussian_point", box([140, 190, 160, 210]), gt) == 1.0


def test_gaussian_coverage_hand_worked() -> None:
    gt = [100, 100, 200, 300]
    assert score("gaussian_coverage", box(gt), gt) == pytest.approx(1.0)
    # same centre, twice as wide: x-axis BC = sqrt(2 s 2s / (s^2 + 4 s^2)) = sqrt(4/5)
    assert score("gaussian_coverage", box([50, 100, 250, 300]), gt) == pytest.approx(math.sqrt(0.8))


# ---------------------------------------------------------------------------------------------------------------------
# Hacks and edge cases (documented choices in rewards.grounding)
# ---------------------------------------------------------------------------------------------------------------------


def test_full_image_box_gets_no_hit() -> None:
    gt = [280, 200, 360, 280]  # contains the image centre
    assert score("hit", box([0, 0, W, H]), gt) == 0.0
    assert score("gaussian_point", box([0, 0, W, H]), gt) == 0.0
    assert score("hit", box([10, 10, W - 10, H - 10]), gt) == 0.0  # >= 80% of the image
    assert score("hit", box([100, 100, 540, 380]), gt) == 1.0  # 40% of the image is allowed
    # ... unless the ground truth itself is (nearly) the whole image
    assert score("hit", box([0, 0, W, H]), [5, 5, W - 5, H - 5]) == 1.0


def test_image_size_comes_from_the_images_column_when_absent() -> None:
    """Envs pass the images the policy saw; with no image_size column the full-image hack is still caught."""
    from PIL import Image

    gt = [280, 200, 360, 280]
    hit = rewards.get("hit")
    assert hit([box([0, 0, W, H])], answer=[gt]) == [1.0]  # no size known: the centre is all there is to check
    for image in (np.zeros((H, W, 3), np.uint8), Image.new("RGB", (W, H))):
        assert hit([box([0, 0, W, H])], answer=[gt], images=[[image]]) == [0.0]
        assert hit([box([300, 220, 340, 260])], answer=[gt], images=[[image]]) == [1.0]
    # a normalised convention maps through the image's size too, and an explicit image_size wins
    norm = rewards.get("iou")
    assert norm([box([0.4375, 0.4167, 0.5625, 0.5833])], answer=[gt], coordinate_convention=["normalized"],
                images=[[np.zeros((H, W, 3), np.uint8)]])[0] == pytest.approx(1.0, abs=1e-3)  # fmt: skip
    assert norm([box([0.4375, 0.4167, 0.5625, 0.5833])], answer=[gt], coordinate_convention=["normalized"],
                image_size=[[W, H]], images=[[np.zeros((10, 10, 3), np.uint8)]])[0] == pytest.approx(1.0, abs=1e-3)  # fmt: skip


def test_tiny_and_degenerate_boxes() -> None:
    gt = [100, 100, 200, 200]
    tiny = box([149, 149, 151, 151])
    assert score("iou", tiny, gt) == pytest.approx(4 / 10000)  # shrinking does not pay under IoU
    tx, ty = 1 - 49 / W, 1 - 49 / H  # each corner is 49 px off
    assert score("box_size", tiny, gt) == pytest.approx(0.125 * 4 / (2 / tx + 2 / ty))
    for name in ("hit", "iou", "iou2", "box_size", "gaussian_point", "gaussian_coverage"):
        assert score(name, box([150, 150, 150, 150]), gt) == 0.0, name  # zero area
        assert score(name, box([150, 150, 150.5, 180]), gt) == 0.0, name  # thinner than 1 px


def test_swapped_corners_are_normalised() -> None:
    gt = [100, 100, 200, 200]
    for name in ("hit", "iou", "iou2", "box_size", "gaussian_point", "gaussian_coverage"):
        assert score(name, box([200, 200, 100, 100]), gt) == score(name, box([100, 100, 200, 200]), gt), name
        assert score(name, box([200, 100, 100, 200]), gt) == score(name, box([100, 100, 200, 200]), gt), name
    assert score("iou", box([100, 100, 200, 200]), [200, 200, 100, 100]) == 1.0  # swapped ground truth too


def test_out_of_image_coordinates() -> None:
    gt = [0, 0, 100, 100]
    assert score("iou", box([-100, -100, 100, 100]), gt) == 1.0  # clipped to the image
    assert score("iou", box([700, 500, 800, 600]), gt) == 0.0  # entirely outside -> zero area after clipping
    assert score("hit", "[-5, 50]", gt) == 0.0  # point outside the image
    assert score("hit", "[50, 500]", [0, 400, 100, 480]) == 0.0
    # without image_size nothing can be clipped (pixel convention)
    assert rewards.get("iou")([box([-100, 0, 100, 100])], answer=[gt]) == [pytest.approx(0.5)]


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_predictions_score_minimum(bad: str) -> None:
    gt = [0, 0, 100, 100]
    comp = f'{{"bbox_2d": [{bad}, 0, 100, 100]}}'
    for name in ("hit", "iou", "iou2", "box_size", "gaussian_point", "gaussian_coverage", "detection"):
        assert score(name, comp, gt) == 0.0, name
    assert score("hit", f'{{"point_2d": [{bad}, 5]}}', gt) == 0.0


def test_huge_coordinates_in_normalised_convention_stay_finite() -> None:
    v = score("gaussian_point", "[1e308, 5]", [0, 0, 100, 100], coordinate_convention="qwen2_vl")
    assert v == 0.0


def test_spray_of_boxes_scores_minimum() -> None:
    gt = [0, 0, 100, 100]
    spray = json.dumps([{"bbox_2d": [0, 0, 100, 100]}, {"bbox_2d": [200, 200, 300, 300]}])
    for name in ("hit", "iou", "gaussian_point"):
        assert score(name, spray, gt) == 0.0


def test_answer_tags_restrict_the_region() -> None:
    gt = [0, 0, 100, 100]
    comp = "<think>maybe [200, 200, 300, 300]</think><answer>[0, 0, 100, 100]</answer>"
    assert score("iou", comp, gt) == 1.0
    assert score("iou", "[0, 0, 100, 100]", gt, require_tags=True) == 0.0


def test_unicode_digits_in_boxes() -> None:
    assert score("iou", "[０, ０, １００, １００]", [0, 0, 100, 100]) == 1.0


def test_ground_truth_formats_and_errors() -> None:
    assert score("iou", box([0, 0, 10, 10]), "[0, 0, 10, 10]") == 1.0
    assert score("iou", box([0, 0, 10, 10]), {"bbox_2d": [0, 0, 10, 10]}) == 1.0
    with pytest.raises(ValueError, match="column 'answer'"):
        score("iou", box([0, 0, 10, 10]), [1, 2])  # iou needs a gt box
    with pytest.raises(ValueError, match="column 'answer'"):
        score("iou", box([0, 0, 10, 10]), "not json")
    with pytest.raises(ValueError, match="column 'answer'"):
        score("iou", box([0, 0, 10, 10]), [0, 0, float("nan"), 1])


# ---------------------------------------------------------------------------------------------------------------------
# Agreement with the independent implementations, across all conventions
# ---------------------------------------------------------------------------------------------------------------------


def _random_box(rng: random.Random, w: int, h: int) -> list[int]:
    x1, x2 = sorted(rng.sample(range(w + 1), 2))
    y1, y2 = sorted(rng.sample(range(h + 1), 2))
    return [x1, y1, x2, y2]


def test_iou_matches_raster_iou() -> None:
    rng = random.Random(0)
    for _ in range(150):
        a, b = _random_box(rng, W, H), _random_box(rng, W, H)
        if rng.random() < 0.3:  # force overlaps
            b = [a[0] + rng.randint(0, 5), a[1], a[2] + rng.randint(0, 40), a[3] - rng.randint(0, 3)]
            b = [min(v, W if i % 2 == 0 else H) for i, v in enumerate(b)]
        got = score("iou", box(a), b)
        assert got == pytest.approx(raster_iou(a, b), abs=1e-12)


def test_gaussian_coverage_matches_numeric_bhattacharyya() -> None:
    rng = random.Random(1)
    for _ in range(25):
        a, b = _random_box(rng, W, H), _random_box(rng, W, H)
        if min(a[2] - a[0], a[3] - a[1], b[2] - b[0], b[3] - b[1]) < 2:
            continue
        assert score("gaussian_coverage", box(a), b) == pytest.approx(bc_numeric(a, b), rel=1e-6, abs=1e-12)


def test_box_size_and_gaussian_point_match_formulas() -> None:
    rng = random.Random(2)
    for _ in range(200):
        a, g = _random_box(rng, W, H), _random_box(rng, W, H)
        if min(a[2] - a[0], a[3] - a[1]) < 1:
            continue
        terms = [1 - abs(a[0] - g[0]) / W, 1 - abs(a[1] - g[1]) / H, 1 - abs(a[2] - g[2]) / W, 1 - abs(a[3] - g[3]) / H]
        want = 0.0 if min(terms) == 0 else 0.125 * 4 / sum(1 / t for t in terms)
        assert score("box_size", box(a), g) == pytest.approx(want)
        px, py = rng.uniform(0, W), rng.uniform(0, H)
        sx, sy = 0.5 * max(g[2] - g[0], 1), 0.5 * max(g[3] - g[1], 1)
        cx, cy = (g[0] + g[2]) / 2, (g[1] + g[3]) / 2
        want = math.exp(-0.5 * (((px - cx) / sx) ** 2 + ((py - cy) / sy) ** 2))
        assert score("gaussian_point", json.dumps([px, py]), g) == pytest.approx(want, rel=1e-9, abs=1e-300)


@pytest.mark.parametrize("convention", ["pixel", "qwen2_5_vl", "qwen2_vl", "qwen3_vl", "normalized"])
@pytest.mark.parametrize("size", [(640, 480), (1080, 1920), (3000, 200), (333, 777)])
def test_conventions_agree_with_pixel_scores(convention: str, size: tuple[int, int]) -> None:
    rng = random.Random(f"{convention}{size}")  # str seeds are deterministic (unlike hash())
    w, h = size
    for _ in range(20):
        gt = _random_box(rng, w, h)
        pred = _random_box(rng, w, h)
        if min(pred[2] - pred[0], pred[3] - pred[1]) < 2:
            continue
        shown = to_convention(pred, convention, size)
        cols = {"image_size": [w, h], "coordinate_convention": convention}
        pix = {"image_size": [w, h]}
        for name in ("iou", "iou2", "box_size", "gaussian_coverage", "hit", "gaussian_point"):
            assert score(name, box(shown), gt, **cols) == pytest.approx(score(name, box(pred), gt, **pix), abs=1e-9), (
                name
            )
        point = [rng.uniform(0, w), rng.uniform(0, h)]
        for name in ("hit", "gaussian_point"):
            got = score(name, json.dumps(to_convention(point, convention, size)), gt, **cols)
            assert got == pytest.approx(score(name, json.dumps(point), gt, **pix), abs=1e-9), name
        # exact answer in the convention scores a perfect IoU
        assert score("iou", box(to_convention(gt, convention, size)), gt, **cols) == pytest.approx(1.0)
        # Qwen2-VL's native box tokens
        if convention == "qwen2_vl":
            q = [round(v) for v in shown]
            text = f"<|box_start|>({q[0]},{q[1]}),({q[2]},{q[3]})<|box_end|>"
            assert score("iou", text, gt, **cols) == pytest.approx(score("iou", box(q), gt, **cols))


# ---------------------------------------------------------------------------------------------------------------------
# Detection (Visual-RFT)
# ---------------------------------------------------------------------------------------------------------------------


def det(objs: list[tuple[list[float], float]]) -> str:
    return json.dumps([{"bbox_2d": b, "confidence": c} for b, c in objs])


def test_detection_hand_worked() -> None:
    gts = [[0, 0, 100, 100], [200, 200, 300, 300]]
    # perfect, fully confident: 1 + 1
    assert score("detection", det([(gts[0], 1.0), (gts[1], 1.0)]), gts) == pytest.approx(2.0)
    # one exact match (conf 0.8) + one false positive (conf 0.4): R_iou = 1 / 2, R_conf = (0.8 + 0.6) / 2
    got = score("detection", det([([0, 0, 100, 100], 0.8), ([400, 400, 450, 450], 0.4)]), gts)
    assert got == pytest.approx(0.5 + 0.7)
    # IoU 0.5 exactly does not match (strictly greater): [0,0,100,50] vs [0,0,100,100]
    got = score("detection", det([([0, 0, 100, 50], 1.0)]), [[0, 0, 100, 100]])
    assert got == pytest.approx(0.0)
    # greedy in confidence order: the confident box takes the gt, the other is a false positive
    got = score("detection", det([([0, 0, 90, 100], 0.9), ([0, 0, 100, 100], 0.5)]), [[0, 0, 100, 100]])
    assert got == pytest.approx(0.9 / 2 + (0.9 + 0.5) / 2)


def test_detection_empty_and_malformed() -> None:
    assert score("detection", "[]", []) == 2.0  # correctly predicts nothing
    assert score("detection", "<answer>[]</answer>", [[0, 0, 10, 10]]) == 0.0
    assert score("detection", "nothing here", [[0, 0, 10, 10]]) == 0.0
    assert score("detection", det([([0, 0, 10, 10], 0.2)]), []) == pytest.approx(0.8)
    assert score("detection", '[{"bbox_2d": [0, 0, 10, 10], "confidence": "x"}]', [[0, 0, 10, 10]]) == 0.0
    spam = det([([i, i, i + 10, i + 10], 1.0) for i in range(150)])
    assert score("detection", spam, [[0, 0, 10, 10]]) == 0.0
    # missing confidence = 1.0; confidences clipped to [0, 1]
    assert score("detection", box([0, 0, 10, 10]), [[0, 0, 10, 10]]) == pytest.approx(2.0)
    assert score("detection", det([([0, 0, 10, 10], 7.0)]), [[0, 0, 10, 10]]) == pytest.approx(2.0)


def test_detection_labels_must_agree_when_both_given() -> None:
    gts = [{"bbox_2d": [0, 0, 10, 10], "label": "cat"}]
    right = json.dumps([{"bbox_2d": [0, 0, 10, 10], "label": "Cat"}])
    wrong = json.dumps([{"bbox_2d": [0, 0, 10, 10], "label": "dog"}])
    assert score("detection", right, gts) == pytest.approx(2.0)
    assert score("detection", wrong, gts) == pytest.approx(0.0)


def test_detection_spam_is_divided_by_n_pred() -> None:
    gts = [[0, 0, 100, 100]]
    one = score("detection", det([([0, 0, 100, 100], 1.0)]), gts)
    many = score("detection", det([([0, 0, 100, 100], 1.0)] + [([300, 300, 310 + i, 310], 0.0) for i in range(9)]), gts)
    assert many < one


def test_overflowing_coordinates_without_image_size() -> None:
    # (1e308 / 50) ** 2 raises OverflowError in Python; the rewards must return their minimum instead.
    for comp in ("[1e308, 5]", "[-1e308, 1e308]", "[" + "9" * 400 + ", 5]"):
        for name in ("hit", "gaussian_point"):
            assert rewards.get(name)([comp], answer=[[0, 0, 100, 100]]) == [0.0], (name, comp)
    assert rewards.get("gaussian_coverage")([box([-1e308, 0, 1e308, 10])], answer=[[0, 0, 100, 100]]) == [0.0]


def test_qwen2_5_vl_min_max_pixels_columns() -> None:
    # 1000x1000 with max_pixels 256*28*28: smart_resize -> 448x448, so x_orig = x * 1000 / 448
    gt = [100, 100, 300, 300]
    shown = [v * 448 / 1000 for v in gt]
    cols = {"image_size": [1000, 1000], "coordinate_convention": "qwen2_5_vl", "max_pixels": 256 * 28 * 28}
    assert score("iou", box(shown), gt, **cols) == pytest.approx(1.0)
    assert hf_smart_resize(1000, 1000, factor=28, min_pixels=56 * 56, max_pixels=256 * 28 * 28) == (448, 448)
    # with the default max_pixels the image is not shrunk (1008x1008), so the same numbers are read differently
    assert score("iou", box(shown), gt, image_size=[1000, 1000], coordinate_convention="qwen2_5_vl") < 0.5


def test_empty_batches() -> None:
    from rewards.registry import RANGES

    for name in RANGES:
        assert rewards.get(name)([], answer=[]) == []
