"""Grounding rewards: boxes ``[x1, y1, x2, y2]`` and points ``[x, y]`` (formulas in REFERENCE.md).

Columns:
    answer                 ground truth in ORIGINAL image pixels: a box ``[x1, y1, x2, y2]`` or point ``[x, y]`` (a list,
                           a JSON string, or ``{"bbox_2d": [...]}`` / ``{"point_2d": [...]}``); ``detection`` takes a list
                           of boxes or of ``{"bbox_2d": [...], "label": ...}``.
    image_size             optional ``[W, H]`` of the original image (required by ``box_size`` and by non-pixel conventions);
                           without it, the size of the first image of the ``images`` column (what the envs pass).
    coordinate_convention  optional convention of the *completion*: pixel (default) | qwen2_5_vl | qwen2_vl | qwen3_vl |
                           normalized; conversion lives in ``rewards.coords`` only. ``min_pixels``/``max_pixels`` for qwen2_5_vl.
    click_radius           optional radius in original pixels, used when the ground truth is a point (``hit``).
    require_tags           optional bool: the prediction must sit inside ``<answer>...</answer>``.

Prediction rules (documented defences against reward hacking):
    * The answer region (last ``<answer>`` content, else the whole text) must hold exactly ONE distinct box/point for the
      single-target rewards; several distinct shapes ("spray") score the minimum.
    * Swapped corners are normalised (``x1 > x2`` is read as ``[x2, y1, x1, y2]``): order carries no information, so
      normalising gives no advantage to any output and avoids penalising a harmless convention difference.
    * With ``image_size`` known, boxes are clipped to the image; points outside ``[0, W] x [0, H]`` score the minimum.
    * A box thinner than ``MIN_BOX_SIDE`` (1 px, original pixels) after clipping is degenerate and scores the minimum.
    * ``hit`` / ``gaussian_point`` on a box covering ``>= FULL_IMAGE_FRACTION`` (80%) of the image area score 0, unless
      the ground-truth box itself covers that much (needs ``image_size``; without it the check cannot run).
    * NaN / inf anywhere in the prediction scores the minimum.
    * Ground-truth boxes with swapped corners are normalised too; gt sides below 1 px are floored at 1 px for the
      Gaussian widths so that no division by zero can happen.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from rewards.columns import as_bool, as_float, as_text, gt_column, gt_numbers, load_json_gt, rows
from rewards.coords import Frame, frame_from_row
from rewards.extract import BOX_KEYS, POINT_KEYS, Shape, json_values, shapes, single_shape, tagged_region
from rewards.registry import register

Box = tuple[float, float, float, float]
Point = tuple[float, float]

MIN_BOX_SIDE = 1.0  # original pixels: thinner predicted boxes are degenerate (score the minimum)
FULL_IMAGE_FRACTION = 0.8  # hit/gaussian_point: a predicted box covering >= 80% of the image scores 0
DEFAULT_CLICK_RADIUS_FRACTION = 0.05  # gt point: default radius = 5% of max(W, H) when image_size is known ...
DEFAULT_CLICK_RADIUS_PX = 28.0  # ... else 28 px (one Qwen 28x28 merged patch)
DETECTION_IOU = 0.5  # Visual-RFT match threshold (strictly greater)
ROW_COLUMNS = ("coordinate_convention", "image_size", "images", "min_pixels", "max_pixels", "click_radius", "require_tags")


# --------------------------------------------------------------------------------------------------------------------
# Geometry (pure, original pixels)
# --------------------------------------------------------------------------------------------------------------------


def norm_box(b: Sequence[float]) -> Box:
    """``b`` with corners ordered so that ``x1 <= x2`` and ``y1 <= y2``."""
    x1, y1, x2, y2 = b
    return min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)


def area(b: Box) -> float:
    return max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])


def iou_boxes(a: Box, b: Box) -> float:
    """Intersection over union of two normalised boxes, in [0, 1] (0 when the union is empty)."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0.0, iw) * max(0.0, ih)
    union = area(a) + area(b) - inter
    return inter / union if union > 0 else 0.0


def centre(b: Box) -> Point:
    return (b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0


def in_box(p: Point, b: Box) -> bool:
    """Whether point ``p`` lies inside (or on the border of) box ``b``."""
    return b[0] <= p[0] <= b[2] and b[1] <= p[1] <= b[3]


def bhattacharyya_coefficient(mu1: Point, s1: Point, mu2: Point, s2: Point) -> float:
    """``exp(-D_B)`` between diagonal Gaussians ``N(mu1, diag(s1^2))`` and ``N(mu2, diag(s2^2))``, in (0, 1].

    Per axis, with ``v = s1^2 + s2^2``: ``D = d^2 / (4 v) + 1/2 ln(v / (2 s1 s2))`` (the general
    ``1/8 d^T S^-1 d + 1/2 ln(det S / sqrt(det S1 det S2))`` with ``S = (S1 + S2) / 2``); axes add up.
    """
    d_b = 0.0
    for m1, a, m2, b in zip(mu1, s1, mu2, s2):
        v = a * a + b * b
        d = m1 - m2
        d_b += d * d / (4.0 * v) + 0.5 * math.log(v / (2.0 * a * b))  # d * d, not d ** 2: ** raises on overflow
    return math.exp(-d_b)


def box_gaussian(b: Box) -> tuple[Point, Point]:
    """The diagonal Gaussian of a box: mean = centre, std = (0.5 w, 0.5 h) with sides floored at ``MIN_BOX_SIDE``.

    The same alpha = 0.5 as GUI-G2's Gaussian point reward, so the box edges sit at one standard deviation.
    """
    w = max(b[2] - b[0], MIN_BOX_SIDE)
    h = max(b[3] - b[1], MIN_BOX_SIDE)
    return centre(b), (0.5 * w, 0.5 * h)


def default_click_radius(image_size: tuple[float, float] | None) -> float:
    """Radius (original pixels) within which a click counts for a ground-truth point."""
    return DEFAULT_CLICK_RADIUS_FRACTION * max(image_size) if image_size else DEFAULT_CLICK_RADIUS_PX


def point_hits(p: Point, gt: tuple[float, ...], radius: float) -> bool:
    """Whether point ``p`` hits the target ``gt``: inside a box, or within ``radius`` of a point."""
    if len(gt) == 4:
        return in_box(p, norm_box(gt))
    return math.hypot(p[0] - gt[0], p[1] - gt[1]) <= radius


# --------------------------------------------------------------------------------------------------------------------
# Predictions -> original pixels (with the documented defences)
# --------------------------------------------------------------------------------------------------------------------


def to_pixel_shape(coords: Sequence[float], frame: Frame) -> tuple[float, ...] | None:
    """A predicted box/point in original pixels after the defences (module docstring), or ``None`` (= minimum)."""
    if not all(math.isfinite(v) for v in coords):
        return None
    c = frame.to_pixels(coords)
    if not all(math.isfinite(v) for v in c):
        return None
    size = frame.image_size
    if len(c) == 2:
        if size is not None and not (0.0 <= c[0] <= size[0] and 0.0 <= c[1] <= size[1]):
            return None
        return c
    b = norm_box(c)
    if size is not None:
        w, h = size
        b = (min(max(b[0], 0.0), w), min(max(b[1], 0.0), h), min(max(b[2], 0.0), w), min(max(b[3], 0.0), h))
    if b[2] - b[0] < MIN_BOX_SIDE or b[3] - b[1] < MIN_BOX_SIDE:
        return None
    return b


def click_point(c: tuple[float, ...], gt: tuple[float, ...], size: tuple[float, float] | None) -> Point | None:
    """The point a pixel-space prediction stands for (a box's centre), or ``None`` for a (near) full-image box."""
    if len(c) == 2:
        return c[0], c[1]
    b: Box = c  # type: ignore[assignment]
    if size is not None:
        full = FULL_IMAGE_FRACTION * size[0] * size[1]
        if area(b) >= full and not (len(gt) == 4 and area(norm_box(gt)) >= full):
            return None
    return centre(b)


def parse_gt_shape(value: Any, sizes: Sequence[int] = (2, 4)) -> tuple[float, ...]:
    """Ground truth ``[x1, y1, x2, y2]`` / ``[x, y]`` (list, JSON string or ``{"bbox_2d": ...}``); boxes normalised."""
    value = load_json_gt(value)
    if isinstance(value, dict):
        key = next((k for k in BOX_KEYS + POINT_KEYS if k in value), None)
        value = value[key] if key else value
    gt = gt_numbers(value, sizes)
    return norm_box(gt) if len(gt) == 4 else gt


def _per_row(completions: list[Any], columns: dict[str, Any]) -> list[tuple[str | None, Any, dict[str, Any], Frame]]:
    """(answer region, raw gt, row columns, frame) for every completion."""
    n = len(completions)
    gts = gt_column(columns, n)
    out = []
    for comp, gt, row in zip(completions, gts, rows(columns, n, ROW_COLUMNS)):
        region = tagged_region(as_text(comp), as_bool(row["require_tags"], "require_tags"))
        out.append((region, gt, row, frame_from_row(row)))
    return out


def _single(region: str | None, frame: Frame) -> tuple[float, ...] | None:
    shape = single_shape(region) if region is not None else None
    return to_pixel_shape(shape.coords, frame) if shape is not None else None


def _box_reward(completions: list[Any], columns: dict[str, Any], score: Any, need_size: bool = False) -> list[float]:
    """Shared loop for the box-vs-box rewards: ``score(pred_box, gt_box, frame) -> float``; no valid box -> 0."""
    out = []
    for region, gt_raw, _row, frame in _per_row(completions, columns):
        gt = parse_gt_shape(gt_raw, (4,))
        if need_size and frame.image_size is None:
            raise ValueError("column 'image_size' is required by this reward")
        pred = _single(region, frame)
        value = score(pred, gt, frame) if pred is not None and len(pred) == 4 else 0.0
        out.append(value if math.isfinite(value) else 0.0)
    return out


# --------------------------------------------------------------------------------------------------------------------
# Rewards
# --------------------------------------------------------------------------------------------------------------------


@register("hit", bounds=(0.0, 1.0))
def hit(completions: list[Any], **columns: Any) -> list[float]:
    """1.0 if the predicted point (or the predicted box's centre) lies inside the ground-truth box, else 0.0. Range [0, 1].

    Ground-truth points count a hit within ``click_radius`` (default: 5% of max(W, H), else 28 px). A box covering
    >= 80% of the image scores 0 (unless the gt box does too); see the module docstring for the other defences.
    """
    out = []
    for region, gt_raw, row, frame in _per_row(completions, columns):
        gt = parse_gt_shape(gt_raw)
        radius = as_float(row["click_radius"], "click_radius", default_click_radius(frame.image_size))
        pred = _single(region, frame)
        p = click_point(pred, gt, frame.image_size) if pred is not None else None
        out.append(1.0 if p is not None and point_hits(p, gt, radius) else 0.0)
    return out


@register("iou", bounds=(0.0, 1.0))
def iou(completions: list[Any], **columns: Any) -> list[float]:
    """IoU of the predicted box with the ground-truth box (after clipping/normalising). Range [0, 1]."""
    return _box_reward(completions, columns, lambda p, g, f: iou_boxes(p, g))


@register("iou2", bounds=(0.0, 1.0))
def iou2(completions: list[Any], **columns: Any) -> list[float]:
    """IoU squared (Perception-R1): sharper near 1, so small boxes that merely overlap earn little. Range [0, 1]."""
    return _box_reward(completions, columns, lambda p, g, f: iou_boxes(p, g) ** 2)


def _box_size(p: Box, g: Box, frame: Frame) -> float:
    w, h = frame.image_size  # type: ignore[misc]
    terms = [
        1.0 - abs(p[0] - g[0]) / w,
        1.0 - abs(p[1] - g[1]) / h,
        1.0 - abs(p[2] - g[2]) / w,
        1.0 - abs(p[3] - g[3]) / h,
    ]
    terms = [min(max(t, 0.0), 1.0) for t in terms]
    if min(terms) <= 0.0:
        return 0.0
    return 0.125 * len(terms) / sum(1.0 / t for t in terms)


@register("box_size", bounds=(0.0, 0.125))
def box_size(completions: list[Any], **columns: Any) -> list[float]:
    """GUI-G1 box-size constraint: 0.125 x harmonic mean of ``1 - |x1 - x1'| / W``, ``1 - |y1 - y1'| / H``,
    ``1 - |x2 - x2'| / W``, ``1 - |y2 - y2'| / H``. Needs ``image_size``. Range [0, 0.125]."""
    return _box_reward(completions, columns, _box_size, need_size=True)


@register("gaussian_point", bounds=(0.0, 1.0))
def gaussian_point(completions: list[Any], **columns: Any) -> list[float]:
    """GUI-G2 Gaussian point reward ``exp(-1/2 ((dx / sx)^2 + (dy / sy)^2))``, (dx, dy) from the gt box centre to the
    predicted point (or box centre), ``sx, sy = 0.5 x gt width, height`` (sides floored at 1 px). Range [0, 1]."""
    out = []
    for region, gt_raw, _row, frame in _per_row(completions, columns):
        gt = parse_gt_shape(gt_raw, (4,))
        pred = _single(region, frame)
        p = click_point(pred, gt, frame.image_size) if pred is not None else None
        if p is None:
            out.append(0.0)
            continue
        (cx, cy), (sx, sy) = box_gaussian(gt)  # type: ignore[arg-type]
        zx, zy = (p[0] - cx) / sx, (p[1] - cy) / sy
        out.append(math.exp(-0.5 * (zx * zx + zy * zy)))  # products overflow to inf (-> 0.0); ** would raise
    return out


@register("gaussian_coverage", bounds=(0.0, 1.0))
def gaussian_coverage(completions: list[Any], **columns: Any) -> list[float]:
    """``exp(-Bhattacharyya distance)`` between the predicted and gt boxes' diagonal Gaussians. Range [0, 1].

    Each box ``[x1, y1, x2, y2]`` becomes ``N(mu, diag(sx^2, sy^2))`` with ``mu`` its centre and ``(sx, sy) =
    (0.5 w, 0.5 h)`` (``box_gaussian``). 1.0 only for identical boxes; penalises both offset and size mismatch.
    """

    def score(p: Box, g: Box, frame: Frame) -> float:
        (m1, s1), (m2, s2) = box_gaussian(p), box_gaussian(g)
        return bhattacharyya_coefficient(m1, s1, m2, s2)

    return _box_reward(completions, columns, score)


def _gt_objects(value: Any) -> list[tuple[Box, str | None]]:
    """Detection ground truth: one box, a list of boxes, or a list of ``{"bbox_2d": [...], "label": ...}``."""
    value = load_json_gt(value)
    if isinstance(value, dict) or (
        isinstance(value, (list, tuple)) and len(value) == 4 and not isinstance(value[0], (list, dict))
    ):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"column 'answer': expected a list of boxes, got {value!r:.80}")
    out = []
    for item in value:
        label = item.get("label") if isinstance(item, dict) and isinstance(item.get("label"), str) else None
        out.append((parse_gt_shape(item, (4,)), label))
    return out


def _labels_match(a: str | None, b: str | None) -> bool:
    return a is None or b is None or a.strip().lower() == b.strip().lower()


def detection_score(preds: list[tuple[Box | None, float, str | None]], gts: list[tuple[Box, str | None]]) -> float:
    """Visual-RFT detection reward on pixel-space inputs, in [0, 2]: ``R_iou + R_conf``.

    Predictions ``(box | None for degenerate, confidence, label)`` are matched greedily in descending confidence to the
    unmatched gt box of highest IoU (labels must agree when both have one), a match needing IoU > 0.5.
    ``R_iou = sum of matched IoUs / max(n_gt, n_pred)``. ``R_conf`` = mean over predictions of ``c`` for a matched
    prediction and ``1 - c`` for an unmatched one (a confident false positive costs, a hedged one less); no prediction:
    ``R_conf = 1`` if there is no gt either, else 0. Both empty scores 2.0.
    """
    if not preds:
        return 2.0 if not gts else 0.0
    order = sorted(range(len(preds)), key=lambda i: -preds[i][1])
    free = set(range(len(gts)))
    matched_iou = 0.0
    conf_terms = []
    for i in order:
        box, conf, label = preds[i]
        best, best_j = 0.0, -1
        if box is not None:
            for j in free:
                if _labels_match(label, gts[j][1]):
                    v = iou_boxes(box, gts[j][0])
                    if v > best:
                        best, best_j = v, j
        if best > DETECTION_IOU:
            free.discard(best_j)
            matched_iou += best
            conf_terms.append(conf)
        else:
            conf_terms.append(1.0 - conf)
    return matched_iou / max(len(gts), len(preds)) + sum(conf_terms) / len(conf_terms)


@register("detection", bounds=(0.0, 2.0))
def detection(completions: list[Any], **columns: Any) -> list[float]:
    """Visual-RFT detection reward ``R = sum IoU / max(n_gt, n_pred) + R_conf`` (see ``detection_score``). Range [0, 2].

    The completion lists boxes (``[{"bbox_2d": [...], "confidence": 0.9, "label": "cat"}, ...]`` or bare boxes); a
    missing confidence counts as 1.0 (fully confident), confidences are clipped to [0, 1]. An explicit empty list
    ``[]`` predicts "nothing"; unparseable text, a point, or any NaN/inf scores 0. More than 100 boxes scores 0.
    """
    out = []
    for region, gt_raw, _row, frame in _per_row(completions, columns):
        gts = _gt_objects(gt_raw)
        found: list[Shape] = shapes(region) if region is not None else []
        if not found:
            explicit_empty = region is not None and any(v == [] for v in json_values(region))
            out.append(detection_score([], gts) if explicit_empty else 0.0)
            continue
        preds: list[tuple[Box | None, float, str | None]] = []
        for s in found:
            conf = 1.0 if s.confidence is None else s.confidence
            if not s.is_box or not all(math.isfinite(v) for v in (*s.coords, conf)):
                preds = []
                break
            box = to_pixel_shape(s.coords, frame)
            preds.append((box, min(max(conf, 0.0), 1.0), s.label))  # type: ignore[arg-type]
        out.append(detection_score(preds, gts) if preds else 0.0)
    return out


def frames(columns: dict[str, Any], n: int) -> list[Frame]:
    """The coordinate frame of every row (used by envs that show ground truth to a policy in its own convention)."""
    return [frame_from_row(r) for r in rows(columns, n, ROW_COLUMNS)]
