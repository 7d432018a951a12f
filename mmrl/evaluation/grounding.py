"""Grounding adapters: RefCOCO / RefCOCO+ / RefCOCOg (accuracy at IoU >= 0.5) and ScreenSpot v1 / v2 / Pro (point in
box), judged with the ``iou`` and ``hit`` rewards of :mod:`rewards.grounding` (their defences included).

Ground-truth boxes are converted to ``[x1, y1, x2, y2]`` original pixels; a prediction is read in pixels unless its
row names a ``coordinate_convention`` (``qwen2_vl``, ``qwen2_5_vl``...: :mod:`rewards.coords`), with the row's
``image_size`` or the item's (ScreenSpot-Pro ships ``img_size``).

Example:
    >>> items = read_screenspot_pro(Path("assets/benchmarks/screenspot_pro/annotations"))
    >>> x1, y1, x2, y2 = items[0].answer
    >>> judge_screenspot(items[0], {"prediction": f"click({(x1 + x2) / 2}, {(y1 + y2) / 2})"})
    <Outcome.CORRECT: 'correct'>
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mmrl.config import ConfigError
from mmrl.evaluation.base import Item, Outcome, bad_item, item_id_of, make_groups, outcome, reward_score
from mmrl.evaluation.files import load_records, norm_id, prediction_text
from rewards.extract import single_shape, tagged_region

IOU_THRESHOLD = 0.5  # RefCOCO: a predicted box counts when IoU >= 0.5 (the standard REC accuracy)
GROUNDING_COLUMNS = ("coordinate_convention", "image_size", "min_pixels", "max_pixels")  # read from prediction rows

# --------------------------------------------------------------------------------------------------------------------
# Grounding: RefCOCO / RefCOCO+ / RefCOCOg, ScreenSpot v1 / v2 / Pro
# --------------------------------------------------------------------------------------------------------------------


def _box(path: Path, item_id: str, value: Any, xywh: bool) -> tuple[float, float, float, float]:
    """A ground-truth box as ``(x1, y1, x2, y2)`` pixels from COCO ``[x, y, w, h]`` (``xywh``) or ``[x1, y1, x2, y2]``."""
    try:
        x, y, a, b = (float(v) for v in value)
    except (TypeError, ValueError):
        raise bad_item(path, item_id, f"bbox is not four numbers: {value!r:.80}") from None
    return (x, y, x + a, y + b) if xywh else (x, y, a, b)


def _grounding_columns(pred: Mapping[str, Any], item: Item) -> dict[str, Any]:
    """The coordinate columns for the grounding rewards: the prediction row's own, else the item's image size."""
    cols = {k: pred.get(k) for k in GROUNDING_COLUMNS}
    if cols["image_size"] is None:
        cols["image_size"] = item.info.get("image_size")
    return cols


def _judge_grounding(item: Item, pred: Mapping[str, Any], reward: str, need_box: bool, threshold: float) -> Outcome:
    text = prediction_text(pred)
    region = tagged_region(text) if text is not None else None
    shape = single_shape(region) if region is not None else None
    if shape is None or (need_box and not shape.is_box):
        return Outcome.UNPARSABLE
    try:
        value = reward_score(reward, text, list(item.answer), **_grounding_columns(pred, item))
    except ValueError as e:  # a bad coordinate_convention / image_size in the prediction row: a usage error
        raise ConfigError(f"prediction for item {item.id}: {e}") from None
    return outcome(value >= threshold)


def read_refcoco(path: Path) -> list[Item]:
    """RefCOCO / RefCOCO+ / RefCOCOg refs with the fields of ``refs(unc).p`` / ``refs(umd).p`` (``ref_id``, ``split``,
    ``sentences`` [{``sent_id``, ``sent``}], ``category_id``...) plus each ref's COCO ``bbox`` ``[x, y, w, h]`` inline
    (as in the Hugging Face exports), as JSON / JSONL / Parquet. The pickle itself is never loaded: convert it once with
    trusted code (copy ``bbox`` from ``instances.json`` by ``ann_id``). One item per sentence, id ``sent_id``; an
    optional ``image_size`` ``[W, H]`` (or ``width``/``height``) enables non-pixel coordinate conventions."""
    items = []
    for i, ref in enumerate(load_records(path)):
        ref_id = norm_id(ref.get("ref_id")) or f"#{i}"
        if ref.get("bbox") is None:
            raise bad_item(path, ref_id, "no 'bbox' (copy it from instances.json by ann_id)")
        box = _box(path, ref_id, ref["bbox"], xywh=True)
        size = ref.get("image_size") or ([ref["width"], ref["height"]] if "width" in ref and "height" in ref else None)
        sentences = ref.get("sentences")
        if not isinstance(sentences, list) or not sentences:
            raise bad_item(path, ref_id, "no 'sentences'")
        for sent in sentences:
            sent_id = norm_id(sent.get("sent_id")) if isinstance(sent, dict) else None
            if sent_id is None:
                raise bad_item(path, ref_id, f"sentence without a 'sent_id': {sent!r:.80}")
            groups = make_groups(split=ref.get("split"), category_id=ref.get("category_id"))
            items.append(Item(sent_id, box, groups, {"image_size": size}))
    return items


def judge_refcoco(item: Item, pred: Mapping[str, Any]) -> Outcome:
    """Correct when the one predicted box has IoU >= 0.5 with the ground truth (the ``iou`` reward, pixels unless the
    prediction row names a ``coordinate_convention``); a point, or several boxes, is unparsable."""
    return _judge_grounding(item, pred, "iou", need_box=True, threshold=IOU_THRESHOLD)


_PLATFORMS = {"ios": "mobile", "android": "mobile", "windows": "desktop", "macos": "desktop", "mac": "desktop"}


def _release_files(path: Path, pattern: str) -> list[Path]:
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob(pattern))
        if not files:
            raise ConfigError(f"{path}: no {pattern} files")
        return files
    return [path]


def read_screenspot(path: Path) -> list[Item]:
    """ScreenSpot (SeeClick) / ScreenSpot-v2 (OS-Copilot): ``screenspot_{mobile,desktop,web}[_v2].json``, a file or the
    directory holding them. Each entry: ``img_filename``, ``bbox`` ``[x, y, w, h]`` pixels, ``instruction``,
    ``data_type`` (``text`` | ``icon``), ``data_source`` (``ios``, ``android``, ``windows``, ``macos``, web sites...).
    Entries have no id: the id is ``<file stem>:<position in the file>`` (``screenspot_mobile_v2:0``). The platform is
    the word mobile / desktop / web in the file name, else read from ``data_source``. No image size is shipped: a
    prediction row may give ``image_size`` (needed for non-pixel conventions)."""
    items = []
    for file in _release_files(path, "screenspot_*.json"):
        stem = file.stem
        named = next((p for p in ("mobile", "desktop", "web") if p in stem.lower()), None)
        for i, row in enumerate(load_records(file)):
            item_id = f"{stem}:{i}"
            source = str(row.get("data_source") or "").strip().lower()
            platform = named or _PLATFORMS.get(source, "web" if source else None)
            dtype = row.get("data_type")
            both = f"{platform}-{dtype}" if platform and dtype else None
            groups = make_groups(platform=platform, data_type=dtype, platform_type=both, data_source=source)
            items.append(Item(item_id, _box(file, item_id, row.get("bbox"), xywh=True), groups))
    return items


def read_screenspot_pro(path: Path) -> list[Item]:
    """ScreenSpot-Pro ``annotations/<app>_<os>.json`` (a file or the ``annotations`` directory). Each entry: ``id``,
    ``img_filename``, ``bbox`` ``[x1, y1, x2, y2]`` pixels, ``img_size`` ``[W, H]``, ``instruction``, ``application``,
    ``platform`` (``windows`` | ``macos`` | ``linux``), ``group`` (Dev, Creative, CAD, Scientific, Office, OS),
    ``ui_type`` (``text`` | ``icon``)."""
    items = []
    for file in _release_files(path, "*.json"):
        for i, row in enumerate(load_records(file)):
            item_id = item_id_of(file, row, "id", i)
            group, ui_type = row.get("group"), row.get("ui_type")
            groups = make_groups(
                group=group,
                ui_type=ui_type,
                group_type=f"{group}-{ui_type}" if group and ui_type else None,
                platform=row.get("platform"),
                application=row.get("application"),
            )
            box = _box(file, item_id, row.get("bbox"), xywh=False)
            items.append(Item(item_id, box, groups, {"image_size": row.get("img_size")}))
    return items


def judge_screenspot(item: Item, pred: Mapping[str, Any]) -> Outcome:
    """Correct when the predicted point (or a predicted box's centre) lies in the target box (the ``hit`` reward, with
    its defences: a near full-screen box, or a point off the screen when the size is known, scores 0)."""
    return _judge_grounding(item, pred, "hit", need_box=False, threshold=1.0)
