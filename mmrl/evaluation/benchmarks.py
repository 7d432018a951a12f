"""Benchmark adapters: read a public benchmark file from local disk and judge one prediction per item.

Each adapter (a :class:`Benchmark` in ``BENCHMARKS``, looked up by name with :func:`get`) knows

* which public file it reads and the schema it expects (``source``, repeated in the reader's docstring),
* the item id (``Item.id``; prediction rows carry it as ``id`` or under the benchmark's own ``id_keys``),
* how to judge one prediction row (:class:`Outcome`: correct / wrong / unparsable), through the answer extraction and
  matching of :mod:`rewards` (never a second copy of it),
* the breakdown keys its report is split by (a multi-label key such as MathVista's ``skills`` counts an item under each
  of its labels).

What counts as unparsable is written in :mod:`mmrl.evaluation.base`. The adapters live in :mod:`mmrl.evaluation.qa`
and :mod:`mmrl.evaluation.grounding`; the success-rate adapter for any env is here.

============== ======================================================== ======================================
name           public file read                                          metric
============== ======================================================== ======================================
mathvista      ``testmini.json`` (object pid -> row) or the HF Parquet   accuracy (choice / number at precision)
mmmu           HF ``validation-*.parquet`` (or the same rows as JSON)    accuracy (option letter / open answer)
clevr          ``CLEVR_<split>_questions.json`` (``{"questions": [...]}``) accuracy (counts via the counting matcher)
superclevr     SuperCLEVR ``superCLEVR_questions_*.json`` (CLEVR schema)  as clevr
geometry3k     the release's ``<split>/<id>/data.json`` tree, or a JSON  accuracy (option letter or choice value)
               list / JSONL of those ``data.json`` objects
refcoco(+/g)   refs (``refs(unc).p`` fields) with each ref's COCO bbox   accuracy at IoU >= 0.5
               inline, as JSON / JSONL / Parquet (never the pickle)
screenspot     SeeClick ``screenspot_{mobile,desktop,web}.json``         point in box
screenspot_v2  OS-Copilot ``screenspot_{mobile,desktop,web}_v2.json``    point in box
screenspot_pro ``annotations/<app>_<os>.json`` (boxes x1, y1, x2, y2)    point in box
success        episode JSONL: ``{"id", "success", "task"?}`` per episode  success rate
============== ======================================================== ======================================

Example:
    >>> bench = get("clevr")
    >>> items = bench.read(Path("assets/benchmarks/clevr/CLEVR_val_questions.json"))
    >>> bench.judge(items[0], {"id": items[0].id, "prediction": f"<answer>{items[0].answer}</answer>"})
    <Outcome.CORRECT: 'correct'>
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mmrl.config import ConfigError
from mmrl.evaluation.base import Benchmark, Item, Outcome, item_id_of, judge_choice, make_groups, outcome
from mmrl.evaluation.files import load_records
from mmrl.evaluation.grounding import (
    judge_refcoco,
    judge_screenspot,
    read_refcoco,
    read_screenspot,
    read_screenspot_pro,
)
from mmrl.evaluation.qa import (
    judge_clevr,
    judge_mathvista,
    judge_mmmu,
    read_clevr,
    read_geometry3k,
    read_mathvista,
    read_mmmu,
)

# --------------------------------------------------------------------------------------------------------------------
# Success rate of any env
# --------------------------------------------------------------------------------------------------------------------


def read_episodes(path: Path) -> list[Item]:
    """The episode manifest: JSONL (or JSON list / Parquet) rows with ``id`` (or ``episode_id``) and an optional
    ``task``; other keys are ignored, so a rollout file is its own manifest. The prediction files are rollout JSONLs
    with ``{"id": ..., "success": true | false | 1 | 0}`` per episode (the env's ``info["success"]`` at episode end)."""
    items = []
    for i, row in enumerate(load_records(path)):
        item_id = item_id_of(path, row, "id" if row.get("id") is not None else "episode_id", i)
        items.append(Item(item_id, True, make_groups(task=row.get("task"))))
    return items


def judge_episode(item: Item, pred: Mapping[str, Any]) -> Outcome:
    """Success is ``success`` true (or 1); a missing or non-boolean ``success`` is unparsable."""
    value = pred.get("success")
    if isinstance(value, bool):
        return outcome(value)
    if isinstance(value, (int, float)) and value in (0, 1):
        return outcome(value == 1)
    return Outcome.UNPARSABLE


# --------------------------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------------------------


def _registry(benchmarks: Iterable[Benchmark]) -> dict[str, Benchmark]:
    return {b.name: b for b in benchmarks}


_CLEVR_SOURCE = "{'questions': [{question_index, question, answer, program, ...}]}"
_REFCOCO_SOURCE = "refs (ref_id, split, sentences[{sent_id, sent}]) + COCO bbox [x, y, w, h]"
_SCREENSPOT_SOURCE = (
    "screenspot_{{mobile,desktop,web}}{suffix}.json: img_filename, bbox [x, y, w, h], data_type, data_source"
)

BENCHMARKS: dict[str, Benchmark] = _registry(
    [
        Benchmark(
            "mathvista",
            "testmini.json (pid -> {question_type, answer, choices, answer_type, precision, metadata})",
            read_mathvista,
            judge_mathvista,
            ("category", "task", "skills", "question_type", "answer_type"),
            ("pid",),
        ),
        Benchmark(
            "mmmu",
            "validation-*.parquet (id, question_type, options list repr, answer letter, subfield)",
            read_mmmu,
            judge_mmmu,
            ("subject", "subfield", "topic_difficulty", "question_type"),
        ),
        Benchmark(
            "clevr", _CLEVR_SOURCE, read_clevr, judge_clevr, ("question_type", "answer_kind"), ("question_index",)
        ),
        Benchmark(
            "superclevr", _CLEVR_SOURCE, read_clevr, judge_clevr, ("question_type", "answer_kind"), ("question_index",)
        ),
        Benchmark(
            "geometry3k",
            "<split>/<id>/data.json (id, choices, answer letter, problem_type_goal, problem_type_graph)",
            read_geometry3k,
            judge_choice,
            ("goal", "graph"),
        ),
        *(
            Benchmark(name, _REFCOCO_SOURCE, read_refcoco, judge_refcoco, ("split",), ("sent_id",), "accuracy@IoU0.5")
            for name in ("refcoco", "refcoco+", "refcocog")
        ),
        Benchmark(
            "screenspot",
            _SCREENSPOT_SOURCE.format(suffix=""),
            read_screenspot,
            judge_screenspot,
            ("platform", "data_type", "platform_type", "data_source"),
            metric="point-in-box accuracy",
        ),
        Benchmark(
            "screenspot_v2",
            _SCREENSPOT_SOURCE.format(suffix="_v2"),
            read_screenspot,
            judge_screenspot,
            ("platform", "data_type", "platform_type", "data_source"),
            metric="point-in-box accuracy",
        ),
        Benchmark(
            "screenspot_pro",
            "annotations/<app>_<os>.json: id, bbox [x1, y1, x2, y2], img_size, group, ui_type, platform, application",
            read_screenspot_pro,
            judge_screenspot,
            ("group", "ui_type", "group_type", "platform", "application"),
            metric="point-in-box accuracy",
        ),
        Benchmark(
            "success",
            "episode JSONL: {id | episode_id, task?}; predictions {id, success}",
            read_episodes,
            judge_episode,
            ("task",),
            ("episode_id",),
            "success rate",
        ),
    ]
)


def get(name: str) -> Benchmark:
    """The adapter registered as ``name``; an unknown name is a one-line ``ConfigError`` listing the known ones."""
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise ConfigError(f"unknown benchmark '{name}' (known: {', '.join(sorted(BENCHMARKS))})") from None


def names() -> list[str]:
    """All registered benchmark names, sorted."""
    return sorted(BENCHMARKS)
