"""Question-answering adapters: MathVista, MMMU, CLEVR / SuperCLEVR, Geometry3K (public files, local disk).

Each reader's docstring names the public file and the fields it reads; each judge uses the extraction and matching of
:mod:`rewards` (``accuracy``, ``numeric``, ``counting``, ``exact``; option letters by ``rewards.extract``).

Example:
    >>> items = read_clevr(Path("assets/benchmarks/clevr/CLEVR_val_questions.json"))
    >>> judge_clevr(items[0], {"prediction": f"There are {items[0].answer}."})
    <Outcome.CORRECT: 'correct'>
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mmrl.config import ConfigError
from mmrl.evaluation.base import (
    Item,
    Outcome,
    bad_item,
    choice_index,
    item_id_of,
    judge_choice,
    make_groups,
    outcome,
    region_of,
    reward_score,
)
from mmrl.evaluation.files import load_json, load_records, prediction_text
from rewards.extract import numbers, single_count, single_number

MAX_OPTIONS_REPR = 20_000  # MMMU ``options`` strings longer than this are refused (a list repr of a few options)

# --------------------------------------------------------------------------------------------------------------------
# MathVista
# --------------------------------------------------------------------------------------------------------------------


def read_mathvista(path: Path) -> list[Item]:
    """MathVista ``testmini.json`` (an object ``pid -> row``, from the GitHub release) or the HF Parquet/JSONL rows.

    Row fields used: ``pid``, ``question_type`` (``multi_choice`` | ``free_form``), ``answer`` (for multi_choice the
    text of the right choice, not a letter), ``choices``, ``answer_type`` (``text`` | ``integer`` | ``float`` |
    ``list``), ``precision`` (decimals of a float answer), ``metadata`` (``category``, ``task``, ``skills`` list...).
    """
    items = []
    for i, row in enumerate(load_records(path, id_key="pid")):
        pid = item_id_of(path, row, "pid", i)
        qtype, atype, answer = row.get("question_type"), row.get("answer_type"), row.get("answer")
        meta = row.get("metadata") if isinstance(row.get("metadata"), dict) else {}
        groups = make_groups(
            category=meta.get("category"),
            task=meta.get("task"),
            skills=meta.get("skills"),
            question_type=qtype,
            answer_type=atype,
        )
        if answer is None or not str(answer).strip():
            raise bad_item(path, pid, "no answer (the test split ships without answers: use testmini)")
        if qtype == "multi_choice":
            choices = [str(c) for c in row.get("choices") or []]
            if str(answer) not in choices:
                raise bad_item(path, pid, f"answer {answer!r:.40} is not one of its choices")
            items.append(Item(pid, choices.index(str(answer)), groups, {"choices": choices}))
        elif qtype == "free_form":
            if atype not in ("integer", "float", "text", "list"):
                raise bad_item(path, pid, f"unknown answer_type {atype!r}")
            precision = row.get("precision")
            ok = isinstance(precision, (int, float)) and precision == precision  # NaN in the Parquet export = none
            items.append(Item(pid, str(answer), groups, {"answer_type": atype, "precision": precision if ok else None}))
        else:
            raise bad_item(path, pid, f"unknown question_type {qtype!r} (multi_choice | free_form)")
    return items


def judge_mathvista(item: Item, pred: Mapping[str, Any]) -> Outcome:
    """multi_choice: the option chosen (letter or choice text). free_form: ``integer`` must equal the answer, ``float``
    must round to it at ``precision`` decimals (within half a unit of the last decimal: ``numeric`` with
    ``abs_tol = 0.5 * 10**-precision``), ``list`` must hold the same numbers in the same order, ``text`` is exact."""
    if "choices" in item.info:
        return judge_choice(item, pred)
    text = prediction_text(pred)
    region = region_of(text) if text is not None else None
    if region is None:
        return Outcome.UNPARSABLE
    atype = item.info["answer_type"]
    if atype == "list":
        got = numbers(region)
        return outcome(got == numbers(item.answer)) if got else Outcome.UNPARSABLE
    if atype == "text":
        return outcome(reward_score("exact", text, item.answer) == 1.0)
    if single_number(region) is None:
        return Outcome.UNPARSABLE
    precision = item.info["precision"]
    tol = 0.5 * 10.0 ** -int(precision) if atype == "float" and precision is not None else None
    return outcome(reward_score("numeric", text, item.answer, rel_tol=0.0 if tol else None, abs_tol=tol) == 1.0)


# --------------------------------------------------------------------------------------------------------------------
# MMMU
# --------------------------------------------------------------------------------------------------------------------


def _literal_list(path: Path, item_id: str, value: Any, key: str) -> list[Any]:
    """A list stored as a Python list repr (MMMU's ``options``, open answers like ``"['24/7', '3.429']"``)."""
    if isinstance(value, list):
        return value
    if not isinstance(value, str) or len(value) > MAX_OPTIONS_REPR:
        raise bad_item(path, item_id, f"'{key}' is not a list repr: {value!r:.80}")
    try:
        parsed = ast.literal_eval(value)  # literals only: never evaluates code (dataset text, not model output)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise bad_item(path, item_id, f"'{key}' is not a list repr: {value!r:.80}") from None
    if not isinstance(parsed, list):
        raise bad_item(path, item_id, f"'{key}' is not a list repr: {value!r:.80}")
    return parsed


def read_mmmu(path: Path) -> list[Item]:
    """MMMU rows (HF ``MMMU/MMMU`` ``<Subject>/validation-*.parquet``, or the same rows as JSON/JSONL).

    Fields used: ``id`` (``validation_<Subject>_<n>``: the subject is read from it), ``question_type``
    (``multiple-choice`` | ``open``), ``options`` (a Python list repr string), ``answer`` (an option letter, or for open
    questions the answer text, possibly a list repr of accepted answers), ``subfield``, ``topic_difficulty``.
    """
    items = []
    for i, row in enumerate(load_records(path)):
        item_id = item_id_of(path, row, "id", i)
        parts = item_id.split("_")
        subject = "_".join(parts[1:-1]) if len(parts) >= 3 else None
        groups = make_groups(
            subject=subject,
            subfield=row.get("subfield"),
            topic_difficulty=row.get("topic_difficulty"),
            question_type=row.get("question_type"),
        )
        answer = row.get("answer")
        if answer is None or not str(answer).strip():
            raise bad_item(path, item_id, "no answer")
        if row.get("question_type") == "open":
            alts = _literal_list(path, item_id, answer, "answer") if str(answer).startswith("[") else [answer]
            alts = [str(a) for a in alts if str(a).strip()]
            if not alts:
                raise bad_item(path, item_id, "no answer")
            items.append(Item(item_id, alts, groups))
        else:
            choices = [str(o) for o in _literal_list(path, item_id, row.get("options") or "[]", "options")]
            items.append(Item(item_id, choice_index(path, item_id, answer, choices), groups, {"choices": choices}))
    return items


def judge_mmmu(item: Item, pred: Mapping[str, Any]) -> Outcome:
    """multiple-choice: the option chosen; open: the ``accuracy`` reward against any accepted answer."""
    if "choices" in item.info:
        return judge_choice(item, pred)
    text = prediction_text(pred)
    if text is None or region_of(text) is None:
        return Outcome.UNPARSABLE
    return outcome(reward_score("accuracy", text, item.answer) == 1.0)


# --------------------------------------------------------------------------------------------------------------------
# CLEVR / SuperCLEVR
# --------------------------------------------------------------------------------------------------------------------

# The question families of the CLEVR paper, from the function of the program's last node.
_CLEVR_FAMILIES = {
    "count": "count",
    "exist": "exist",
    "equal_integer": "compare_integer",
    "less_than": "compare_integer",
    "greater_than": "compare_integer",
}


def _clevr_family(program: Any) -> str | None:
    if not isinstance(program, list) or not program or not isinstance(program[-1], dict):
        return None
    fn = program[-1].get("function") or program[-1].get("type")  # CLEVR v1.0 | SuperCLEVR / CLEVR generator
    if not isinstance(fn, str):
        return None
    if fn.startswith("query_"):
        return "query_attribute"
    if fn.startswith("equal_") and fn not in _CLEVR_FAMILIES:
        return "compare_attribute"
    return _CLEVR_FAMILIES.get(fn, fn)


def _clevr_answer(value: Any) -> str | None:
    if isinstance(value, bool):  # SuperCLEVR generator output may keep Python booleans
        return "yes" if value else "no"
    return str(value).strip() if value is not None and str(value).strip() else None


def read_clevr(path: Path) -> list[Item]:
    """CLEVR ``CLEVR_<split>_questions.json`` / SuperCLEVR ``superCLEVR_questions_*.json``: ``{"info", "questions":
    [{"question_index", "question", "answer", "program", "image_filename", "split", ...}]}`` (a JSONL of the same
    question objects works too). Counting questions are those whose answer is a non-negative integer."""
    items = []
    for i, row in enumerate(load_records(path)):
        item_id = item_id_of(path, row, "question_index", i)
        answer = _clevr_answer(row.get("answer"))
        if answer is None:
            raise bad_item(path, item_id, "no answer (the CLEVR test split ships without answers)")
        counting = answer.isdigit()
        groups = make_groups(
            question_type=_clevr_family(row.get("program")), answer_kind="count" if counting else "other"
        )
        items.append(Item(item_id, answer, groups, {"counting": counting}))
    return items


def judge_clevr(item: Item, pred: Mapping[str, Any]) -> Outcome:
    """A count answer through the ``counting`` reward (digits or number words, one committed count); any other answer
    (yes / no, an attribute) through ``exact``."""
    text = prediction_text(pred)
    region = region_of(text) if text is not None else None
    if region is None:
        return Outcome.UNPARSABLE
    if item.info["counting"]:
        if single_count(region) is None:
            return Outcome.UNPARSABLE
        return outcome(reward_score("counting", text, item.answer) == 1.0)
    return outcome(reward_score("exact", text, item.answer) == 1.0)


# --------------------------------------------------------------------------------------------------------------------
# Geometry3K
# --------------------------------------------------------------------------------------------------------------------


def read_geometry3k(path: Path) -> list[Item]:
    """Geometry3K (InterGPS release): a split directory of ``<id>/data.json`` files, or a JSON list / JSONL of those
    objects. Fields used: ``id``, ``choices`` (four strings), ``answer`` (a letter A-D), ``problem_type_graph`` and
    ``problem_type_goal`` (lists: multi-label breakdowns)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.rglob("data.json"), key=lambda p: (len(p.parent.name), p.parent.name))
        if not files:
            raise ConfigError(f"{path}: no <id>/data.json files (expected a Geometry3K split directory)")
        rows = [load_json(f) for f in files]
        for f, row in zip(files, rows):
            if not isinstance(row, dict):
                raise ConfigError(f"{f}: expected a JSON object (one Geometry3K problem)")
    else:
        rows = load_records(path)
    items = []
    for i, row in enumerate(rows):
        item_id = item_id_of(path, row, "id", i)
        choices = [str(c) for c in row.get("choices") or []]
        groups = make_groups(goal=row.get("problem_type_goal"), graph=row.get("problem_type_graph"))
        answer = choice_index(path, item_id, row.get("answer"), choices)
        items.append(Item(item_id, answer, groups, {"choices": choices}))
    return items
