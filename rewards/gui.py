"""GUI action rewards (UI-R1, GUI-R1, UI-S1): is the predicted action the ground-truth action?

The completion holds one JSON action, possibly inside ``<answer>``: ``{"action": "click", "point": [x, y]}``,
``{"action": "type", "text": "hello"}``, ``{"action": "scroll", "direction": "down"}``, ``{"action": "press",
"key": "enter"}``... (Python-style single quotes and a one-element list are accepted, see ``extract.parse_action``).

Columns:
    answer                 the ground-truth action as a dict or JSON string, coordinates in ORIGINAL image pixels; its
                           target may be a box (``bbox``/``bbox_2d``/``box``) or a point (``point``/``coordinate``...).
    coordinate_convention, image_size, min_pixels, max_pixels
                           the completion's convention, converted by ``rewards.coords`` exactly as for grounding.
    click_radius           optional radius (original pixels) around a gt point; default 5% of max(W, H), else 28 px.
    require_tags           optional bool: the action must sit inside ``<answer>...</answer>``.

Argument matching, for every non-empty argument of the ground truth (extra predicted arguments are ignored):
    * location keys (``point``, ``coordinate``, ``bbox``...): the predicted location (a point, or a box's centre, after
      the grounding defences) must land in the gt box / within ``click_radius`` of the gt point. Other keys ending in
      ``point``/``coordinate`` (``start_point``, ``end_point`` of a drag) are matched by name the same way.
    * text keys (``text``, ``input_text``, ``content``, ``value``, ``app``, ``app_name``): token F1 >= 0.5.
    * anything else (``direction``, ``key``, ``button``...): equal after lowercasing and trimming.
Action types are compared after lowercasing, with spaces/dashes as underscores and a few aliases (tap -> click,
left_click -> click, input/input_text/type_text -> type). A location that is NaN/inf, outside the image, degenerate or
(nearly) the whole screen never matches, so such an action earns at most the type-only 0.5.
"""

from __future__ import annotations

import math
from typing import Any

from rewards.accuracy import token_f1
from rewards.columns import as_bool, as_float, as_text, gt_column, load_json_gt, rows
from rewards.coords import Frame, frame_from_row
from rewards.extract import BOX_KEYS, POINT_KEYS, coords_of, parse_action
from rewards.grounding import ROW_COLUMNS, click_point, default_click_radius, norm_box, point_hits, to_pixel_shape
from rewards.registry import register

FULL, TYPE_ONLY, WRONG_TYPE, UNPARSEABLE = 1.0, 0.5, 0.1, 0.0  # UI-S1 grading
TEXT_F1 = 0.5  # typed text counts when token F1 >= 0.5
LOCATION_KEYS = BOX_KEYS + POINT_KEYS
TEXT_KEYS = ("text", "input_text", "content", "value", "app", "app_name")
_ALIASES = {"tap": "click", "left_click": "click", "input": "type", "input_text": "type", "type_text": "type"}


def action_type(value: Any) -> str:
    """Normalised action type: lowercase, spaces/dashes -> underscores, aliases resolved."""
    t = str(value).strip().lower().replace(" ", "_").replace("-", "_")
    return _ALIASES.get(t, t)


def _location(action: dict[str, Any], keys: tuple[str, ...]) -> tuple[float, ...] | None:
    for key in keys:
        if key in action:
            return coords_of(action[key])
    return None


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, (str, list, dict)) and not value)


def _location_ok(pred_raw: tuple[float, ...] | None, gt: tuple[float, ...], frame: Frame, radius: float) -> bool:
    if pred_raw is None:
        return False
    pred = to_pixel_shape(pred_raw, frame)
    p = click_point(pred, gt, frame.image_size) if pred is not None else None
    return p is not None and point_hits(p, gt, radius)


def _gt_location(value: Any, key: str) -> tuple[float, ...]:
    c = coords_of(value)
    if c is None or not all(math.isfinite(v) for v in c):
        raise ValueError(f"column 'answer': action argument '{key}' is not [x, y] or [x1, y1, x2, y2]: {value!r:.80}")
    return norm_box(c) if len(c) == 4 else c


def args_match(pred: dict[str, Any], gt: dict[str, Any], frame: Frame, radius: float) -> bool:
    """Whether every non-empty ground-truth argument is matched by the prediction (rules in the module docstring)."""
    gt_loc_key = next((k for k in LOCATION_KEYS if k in gt and not _is_empty(gt[k])), None)
    if gt_loc_key is not None:
        target = _gt_location(gt[gt_loc_key], gt_loc_key)
        if not _location_ok(_location(pred, LOCATION_KEYS), target, frame, radius):
            return False
    for key, want in gt.items():
        if key == "action" or key in LOCATION_KEYS or _is_empty(want):
            continue
        got = pred.get(key)
        if key.endswith(("point", "coordinate")):
            if not _location_ok(coords_of(got), _gt_location(want, key), frame, radius):
                return False
        elif key in TEXT_KEYS:
            got = (
                next((pred[k] for k in TEXT_KEYS if k in pred and isinstance(pred[k], str)), None)
                if got is None
                else got
            )
            if not isinstance(got, str) or token_f1(got, str(want)) < TEXT_F1:
                return False
        elif str(got).strip().lower() != str(want).strip().lower():
            return False
    return True


def grade_action(pred: dict[str, Any] | None, gt: dict[str, Any], frame: Frame, radius: float) -> float:
    """UI-S1 grade: 1.0 type and arguments match, 0.5 type only, 0.1 parsed but wrong type, 0.0 unparseable."""
    if pred is None:
        return UNPARSEABLE
    if action_type(pred["action"]) != action_type(gt["action"]):
        return WRONG_TYPE
    return FULL if args_match(pred, gt, frame, radius) else TYPE_ONLY


def parse_gt_action(value: Any) -> dict[str, Any]:
    """The ground-truth action (dict or JSON string; a one-element list is unwrapped) with an ``action`` key."""
    value = load_json_gt(value)
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not isinstance(value, dict) or not isinstance(value.get("action"), str):
        raise ValueError(f"column 'answer': expected an action object with an 'action' key, got {value!r:.80}")
    return value


@register("action_match", bounds=(0.0, 1.0))
def action_match(completions: list[Any], **columns: Any) -> list[float]:
    """UI-S1 graded action match: 1.0 full match, 0.5 right type with wrong arguments, 0.1 parsed but wrong type,
    0.0 unparseable. A click must land in the gt box (or within ``click_radius`` of a gt point); typed text needs token
    F1 >= 0.5. Range [0, 1]."""
    n = len(completions)
    out = []
    for comp, gt_raw, row in zip(completions, gt_column(columns, n), rows(columns, n, ROW_COLUMNS)):
        gt = parse_gt_action(gt_raw)
        frame = frame_from_row(row)
        radius = as_float(row["click_radius"], "click_radius", default_click_radius(frame.image_size))
        pred = parse_action(as_text(comp), as_bool(row["require_tags"], "require_tags"))
        out.append(grade_action(pred, gt, frame, radius))
    return out
