"""Write the self-made benchmark fixtures in ``assets/benchmarks/<name>/``: public file schemas, 24 items each.

Every benchmark gets its data file(s) in the public layout (MathVista ``testmini.json``, MMMU Parquet, CLEVR and
SuperCLEVR questions JSON, the Geometry3K ``test/<id>/data.json`` tree, RefCOCO refs with inline COCO boxes, the
ScreenSpot-v2 and ScreenSpot-Pro annotation JSONs, an episode manifest) and four prediction files, built from three
answers per item (``correct``, ``wrong`` and ``unparsable`` below) by one rule shared by all benchmarks:

* ``pred_correct.jsonl``: every item answered correctly (formats vary: tags, ``\\boxed{}``, "the answer is", words).
* ``pred_wrong.jsonl``: every item answered wrongly, but readably.
* ``pred_malformed.jsonl``: item ``i`` gets its correct answer when ``i % 4 == 0`` (under ``prediction``), its wrong
  one when ``i % 4 == 1`` (under ``response``), its unparsable one when ``i % 4 == 2`` (under ``output``), its correct
  one when ``i % 4 == 3`` (under ``text``, the id under the benchmark's own id key when it has one); then a repeat of
  item 1's id with its correct answer (a duplicate: ignored), an unknown id, a line that is not JSON, a row without an
  id and a JSON array line. Expected: 12 correct, 6 wrong, 6 unparsable, 1 duplicate, 1 unknown id, 3 bad rows.
* ``pred_missing.jsonl``: the correct answer for every item with ``i % 3 != 0``; the other 8 items are missing.

Output is deterministic (no randomness) and small (well under 200 kB in all).

Usage:
    python scripts/make_benchmark_fixtures.py [--out assets/benchmarks]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

logger = logging.getLogger("make_benchmark_fixtures")

N = 24  # items per benchmark
LETTERS = "ABCDE"


@dataclass
class Fixture:
    """One benchmark's fixture: where the data goes, the per-item answers, and how prediction rows name items."""

    name: str  # folder under assets/benchmarks
    write_data: Callable[[Path], list[Path]]  # writes the public-format file(s) into the folder
    ids: list[Any]  # item ids in benchmark order (as the public file holds them)
    correct: list[dict[str, Any]]  # per item: the prediction fields of a correct answer
    wrong: list[dict[str, Any]]  # ... of a wrong but readable answer
    unparsable: list[dict[str, Any]]  # ... of an answer that cannot be read
    own_id_key: str = "id"  # the benchmark's own id key (used by the i % 4 == 3 rows of pred_malformed)


def _text(s: str) -> dict[str, Any]:
    return {"prediction": s}


def _write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    return path


def _write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------------------------------
# MathVista: testmini.json, an object pid -> row (multi_choice with choice text answers; free_form integer/float/list)
# --------------------------------------------------------------------------------------------------------------------

MV_KINDS = ("multi_choice", "integer", "float", "multi_choice", "integer", "list")
MV_CHOICES = [
    ["larger than", "equal to", "smaller than"],
    ["Yes", "No"],
    ["2", "4", "6", "8"],
    ["red", "blue", "green"],
]
MV_FLOATS = [
    ("1.5", 1, "1.54", "1.6"),
    ("2.75", 2, "2.7512", "2.76"),
    ("0.3", 1, "0.26", "0.4"),
    ("12.25", 2, "12.2549", "12.24"),
]
MV_TASKS = [
    "figure question answering",
    "geometry problem solving",
    "math word problem",
    "textbook question answering",
    "visual question answering",
]
MV_SKILLS = [
    "algebraic reasoning",
    "arithmetic reasoning",
    "geometry reasoning",
    "logical reasoning",
    "numeric commonsense",
    "scientific reasoning",
    "statistical reasoning",
]


def mathvista() -> Fixture:
    rows: dict[str, Any] = {}
    correct, wrong, unparsable = [], [], []
    for i in range(N):
        pid, kind = str(i + 1), MV_KINDS[i % 6]
        skills = [MV_SKILLS[i % 7]] + ([MV_SKILLS[(i + 2) % 7]] if i % 3 == 0 else [])
        row: dict[str, Any] = {
            "question": f"Question {pid} about the figure?",
            "image": f"images/{pid}.jpg",
            "choices": None,
            "unit": None,
            "precision": None,
            "answer": None,
            "question_type": "multi_choice" if kind == "multi_choice" else "free_form",
            "answer_type": "text" if kind == "multi_choice" else kind,
            "pid": pid,
            "metadata": {
                "split": "testmini",
                "language": "english",
                "img_width": 640,
                "img_height": 480,
                "source": "FigureQA" if i % 2 else "Geometry3K",
                "category": "math-targeted-vqa" if i % 2 == 0 else "general-vqa",
                "task": MV_TASKS[i % 5],
                "context": "synthetic scene",
                "grade": "high school",
                "skills": skills,
            },
            "query": f"Hint: answer the question. Question {pid}",
        }
        if kind == "multi_choice":
            choices = MV_CHOICES[(i // 3) % 4]
            k = i % len(choices)
            row.update(choices=choices, answer=choices[k])
            variant = (i // 6) % 3
            correct.append(
                _text([f"({LETTERS[k]})", f"The answer is {choices[k]}", f"<answer>{LETTERS[k]}</answer>"][variant])
            )
            wrong.append(_text(f"<answer>{LETTERS[(k + 1) % len(choices)]}</answer>"))
            unparsable.append(_text("A or B"))
        elif kind == "integer":
            a = 3 + i
            row["answer"] = str(a)
            correct.append(_text([f"<answer>{a}</answer>", f"\\boxed{{{a}}}", f"So the answer is {a}."][(i // 6) % 3]))
            wrong.append(_text(f"<answer>{a + 1}</answer>"))
            unparsable.append(_text("I cannot tell from the figure."))
        elif kind == "float":
            answer, precision, close, off = MV_FLOATS[(i // 6) % 4]
            row.update(answer=answer, precision=float(precision))  # the release stores precision as a float
            correct.append(_text(f"about {close}"))
            wrong.append(_text(f"<answer>{off}</answer>"))
            unparsable.append(_text(""))
        else:  # list
            values = [i, i + 3, i + 7]
            row["answer"] = json.dumps(values)
            correct.append(_text(f"<answer>{json.dumps(values)}</answer>"))
            wrong.append(_text(f"<answer>{json.dumps(values[::-1])}</answer>"))
            unparsable.append(_text("no idea"))
        rows[pid] = row
    return Fixture(
        "mathvista",
        lambda d: [_write_json(d / "testmini.json", rows)],
        list(rows),
        correct,
        wrong,
        unparsable,
        "pid",
    )


# --------------------------------------------------------------------------------------------------------------------
# MMMU: validation Parquet (options as a Python list repr, answer letter; open questions every 5th item)
# --------------------------------------------------------------------------------------------------------------------

MMMU_SUBJECTS = [("Art_Theory", "Art History"), ("Physics", "Mechanics"), ("Accounting", "Financial Accounting")]
MMMU_OPTIONS = [
    ["$12", "$15", "$18", "$21"],
    ["Baroque", "Rococo", "Gothic", "Romanesque"],
    ["2 m/s", "4 m/s", "8 m/s", "16 m/s", "32 m/s"],
]
MMMU_OPEN = [("7.5", "7.5", "8"), ("['24/7', '3.429']", "3.429", "3.5"), ("12", "12", "13"), ("0.25", "1/4", "0.2")]
MMMU_DIFFICULTY = ["Easy", "Medium", "Hard"]


def mmmu() -> Fixture:
    rows, correct, wrong, unparsable = [], [], [], []
    for i in range(N):
        subject, subfield = MMMU_SUBJECTS[i % 3]
        row: dict[str, Any] = {
            "id": f"validation_{subject}_{i // 3 + 1}",
            "question": f"<image 1> Question {i}?",
            "options": "[]",
            "explanation": "",
            "image_1": {"bytes": b"\x89PNG not a real image", "path": f"{i}.png"},
            "img_type": "['Diagrams']",
            "answer": None,
            "topic_difficulty": MMMU_DIFFICULTY[(i // 2) % 3],
            "question_type": "multiple-choice",
            "subfield": subfield,
        }
        if i % 5 == 4:
            answer, good, bad = MMMU_OPEN[i // 5]
            row.update(question_type="open", answer=answer)
            correct.append(_text(f"<answer>{good}</answer>"))
            wrong.append(_text(f"<answer>{bad}</answer>"))
            unparsable.append(_text(""))
        else:
            options = MMMU_OPTIONS[(i // 2) % 3]
            k = i % len(options)
            row.update(options=str(options), answer=LETTERS[k])
            correct.append(_text([f"({LETTERS[k]})", f"Answer: {LETTERS[k]}", f"<answer>{LETTERS[k]}</answer>"][i % 3]))
            wrong.append(_text(f"Answer: {LETTERS[(k + 2) % len(options)]}"))
            unparsable.append(_text("A or B"))
        rows.append(row)

    def write(d: Path) -> list[Path]:
        d.mkdir(parents=True, exist_ok=True)
        path = d / "validation-00000-of-00001.parquet"
        pq.write_table(pa.table({k: [r[k] for r in rows] for k in rows[0]}), path)
        return [path]

    return Fixture("mmmu", write, [r["id"] for r in rows], correct, wrong, unparsable)


# --------------------------------------------------------------------------------------------------------------------
# CLEVR / SuperCLEVR: questions JSON {"info", "questions": [...]} with programs
# --------------------------------------------------------------------------------------------------------------------

CLEVR_KINDS = ("count", "exist", "query_color", "count", "equal_integer", "equal_shape")
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six"]


def _node(key: str, fn: str, inputs: list[int], values: list[str] | None = None) -> dict[str, Any]:
    return {"inputs": inputs, key: fn, "value_inputs": values or []}


def _clevr(name: str, superclevr: bool) -> Fixture:
    key = "type" if superclevr else "function"  # SuperCLEVR's program nodes name the function "type"
    colors = ["red", "blue", "green", "gray", "brown", "purple", "cyan", "yellow"]
    questions, correct, wrong, unparsable = [], [], [], []
    for i in range(N):
        kind = CLEVR_KINDS[i % 6]
        program = [_node(key, "scene", []), _node(key, "filter_color", [0], [colors[i % 8]])]
        answer: Any
        if kind == "count":
            n = i % 7
            answer = n if superclevr else str(n)
            word = i % 2 == 1
            correct.append(_text(f"There are {NUMBER_WORDS[n]}." if word else f"<answer>{n}</answer>"))
            wrong.append(_text(f"<answer>{n + 1}</answer>"))
            unparsable.append(_text("3 or 4"))
        elif kind == "query_color":
            answer = colors[(i + 3) % 8]
            correct.append(_text(f"<answer>{answer}</answer>"))
            wrong.append(_text(f"<answer>{colors[(i + 4) % 8]}</answer>"))
            unparsable.append(_text("<answer></answer>"))
        else:  # exist, equal_integer, equal_shape: yes / no
            yes = i % 4 < 2
            answer = yes if superclevr else ("yes" if yes else "no")
            correct.append(_text("Yes." if yes else "<answer>no</answer>"))
            wrong.append(_text("<answer>no</answer>" if yes else "Yes."))
            unparsable.append(_text(""))
        program.append(_node(key, kind, [1]))
        questions.append(
            {
                "image_index": i // 2,
                "program": program,
                "question_index": i,
                "image_filename": f"{'superCLEVR' if superclevr else 'CLEVR'}_val_{i // 2:06d}.png",
                "question_family_index": i % 6,
                "split": "val",
                "answer": answer,
                "question": f"Question {i}?",
            }
        )
    data = {"info": {"split": "val", "license": "self-made fixture", "version": "1.0"}, "questions": questions}
    file = "superCLEVR_questions_val.json" if superclevr else "CLEVR_val_questions.json"
    return Fixture(
        name,
        lambda d: [_write_json(d / file, data)],
        [q["question_index"] for q in questions],
        correct,
        wrong,
        unparsable,
        "question_index",
    )


# --------------------------------------------------------------------------------------------------------------------
# Geometry3K: test/<id>/data.json (four choices, answer letter, problem_type_goal / problem_type_graph lists)
# --------------------------------------------------------------------------------------------------------------------

G3K_CHOICES = [
    ["6", "8", "10", "12"],
    ["2\\sqrt{3}", "4\\sqrt{3}", "6", "8\\sqrt{3}"],
    ["12.5", "15.2", "18.7", "21.0"],
]
G3K_GOALS = [["Length"], ["Angle"], ["Area"], ["Length", "Ratio"]]
G3K_GRAPHS = [["Triangle"], ["Circle"], ["Line", "Triangle"]]


def geometry3k() -> Fixture:
    problems, correct, wrong, unparsable = [], [], [], []
    for i in range(N):
        choices = G3K_CHOICES[i % 3]
        k = i % 4
        problems.append(
            {
                "id": 2401 + i,
                "annotat_text": f"Find x in problem {i}.",
                "problem_text": f"Find x in problem {i}.",
                "choices": choices,
                "answer": "ABCD"[k],
                "problem_type_graph": G3K_GRAPHS[(i // 2) % 3],
                "problem_type_goal": G3K_GOALS[(i // 3) % 4],
                "data_type": "test",
                "comment": "",
            }
        )
        variant = (i // 4) % 3
        correct.append(_text(["ABCD"[k], f"\\boxed{{{choices[k]}}}", f"The answer is {choices[k]}"][variant]))
        wrong.append(_text(["ABCD"[(k + 1) % 4], f"\\boxed{{{choices[(k + 2) % 4]}}}"][i % 2]))
        unparsable.append(_text(["A or C", "", "It cannot be determined."][i % 3]))

    def write(d: Path) -> list[Path]:
        return [_write_json(d / "test" / str(p["id"]) / "data.json", p) for p in problems]

    return Fixture("geometry3k", write, [p["id"] for p in problems], correct, wrong, unparsable)


# --------------------------------------------------------------------------------------------------------------------
# RefCOCO: refs (refs(unc).p fields) with the COCO bbox [x, y, w, h] inline; one item per sentence
# --------------------------------------------------------------------------------------------------------------------

REF_SPLITS = ["val", "testA", "testB"]
REF_CATEGORIES = [1, 3, 18, 62]


def refcoco() -> Fixture:
    refs, ids, correct, wrong, unparsable = [], [], [], [], []
    for r in range(N // 2):
        x, y, w, h = 20 + 30 * r, 15 + 20 * r, (60, 90)[r % 2], (48, 72)[r % 2]  # w divisible by 3 and 10
        sentences = []
        for s in range(2):
            i = 2 * r + s
            sentences.append(
                {
                    "tokens": ["the", "object", str(i)],
                    "raw": f"The object {i}",
                    "sent_id": 100 + i,
                    "sent": f"the object {i}",
                }
            )
            ids.append(100 + i)
            x2, y2 = x + w, y + h
            box = [
                json.dumps({"bbox_2d": [x, y, x2, y2]}),
                f"<answer>[{x + w // 10}, {y}, {x2 + w // 10}, {y2}]</answer>",  # IoU 0.9 / 1.1
                f"<|box_start|>({x + w // 3},{y}),({x2 + w // 3},{y2})<|box_end|>",  # IoU exactly 0.5: counts
            ][i % 3]
            correct.append(_text(box))
            wrong.append(
                _text(
                    [f"[{x + w // 2}, {y}, {x2 + w // 2}, {y2}]", f"[{x2 + 5}, {y2 + 5}, {x2 + 50}, {y2 + 40}]"][i % 2]
                )
            )
            unparsable.append(_text(["[320, 240]", "[[0, 0, 10, 10], [20, 20, 40, 40]]", ""][i % 3]))
        refs.append(
            {
                "sent_ids": [s["sent_id"] for s in sentences],
                "file_name": f"COCO_train2014_{500000 + r:012d}_{r}.jpg",
                "ann_id": 9000 + r,
                "ref_id": 10 + r,
                "image_id": 500000 + r,
                "split": REF_SPLITS[r % 3],
                "sentences": sentences,
                "category_id": REF_CATEGORIES[r % 4],
                "bbox": [x, y, w, h],
            }
        )
    return Fixture(
        "refcoco", lambda d: [_write_json(d / "refs_val.json", refs)], ids, correct, wrong, unparsable, "sent_id"
    )


# --------------------------------------------------------------------------------------------------------------------
# ScreenSpot-v2 (bbox [x, y, w, h], no ids) and ScreenSpot-Pro (bbox [x1, y1, x2, y2], img_size, group, ui_type)
# --------------------------------------------------------------------------------------------------------------------

SS_SOURCES = {"desktop": ["windows", "macos"], "mobile": ["ios", "android"], "web": ["shop", "forum", "gitlab", "tool"]}


def _click_answers(x1: int, y1: int, x2: int, y2: int, i: int, width: int | None) -> tuple[dict, dict, dict]:
    cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
    good = [
        f"click({cx}, {cy})",
        json.dumps({"point_2d": [cx, cy]}),
        f"<answer>[{x1 + 5}, {y1 + 5}, {x2 - 5}, {y2 - 5}]</answer>",
    ]
    bad = [f"click({x2 + 50}, {cy})", f"click({width + 10}, {cy})" if width else f"click({cx}, {y2 + 30})"]
    none = ["", "(10, 20) and (300, 400)", "click the OK button"]
    return _text(good[i % 3]), _text(bad[i % 2]), _text(none[i % 3])


def screenspot_v2() -> Fixture:
    files: dict[str, list[dict[str, Any]]] = {}
    ids, correct, wrong, unparsable = [], [], [], []
    i = 0
    for platform in ("desktop", "mobile", "web"):  # sorted file-name order, the order the adapter reads a directory in
        stem = f"screenspot_{platform}_v2"
        entries = []
        for k in range(N // 3):
            x, y, w, h = 100 + 40 * k, 50 + 30 * k, 80, 40
            entries.append(
                {
                    "img_filename": f"{platform}_{k:04d}.png",
                    "bbox": [x, y, w, h],
                    "instruction": f"open item {k}",
                    "data_type": "text" if k % 2 == 0 else "icon",
                    "data_source": SS_SOURCES[platform][k % len(SS_SOURCES[platform])],
                }
            )
            ids.append(f"{stem}:{k}")
            c, wr, u = _click_answers(x, y, x + w, y + h, i, None)
            correct.append(c), wrong.append(wr), unparsable.append(u)
            i += 1
        files[stem] = entries
    return Fixture(
        "screenspot_v2",
        lambda d: [_write_json(d / f"{stem}.json", entries) for stem, entries in files.items()],
        ids,
        correct,
        wrong,
        unparsable,
    )


SSP_APPS = [
    ("autocad", "windows", "CAD", [1920, 1080]),
    ("photoshop", "windows", "Creative", [3840, 2160]),
    ("vscode", "macos", "Dev", [2560, 1600]),
]


def screenspot_pro() -> Fixture:
    files: dict[str, list[dict[str, Any]]] = {}
    ids, correct, wrong, unparsable = [], [], [], []
    i = 0
    for app, platform, group, size in SSP_APPS:  # sorted file-name order
        entries = []
        for k in range(N // 3):
            box = [200 + 100 * k, 300 + 50 * k, 240 + 100 * k, 330 + 50 * k]
            item_id = f"{app}_{platform}_{k}"
            entries.append(
                {
                    "img_filename": f"{app}_{platform}/screenshot_{k}.png",
                    "bbox": box,
                    "instruction": f"press control {k}",
                    "instruction_cn": "",
                    "id": item_id,
                    "application": app,
                    "platform": platform,
                    "img_size": size,
                    "ui_type": "text" if k % 2 == 0 else "icon",
                    "group": group,
                }
            )
            ids.append(item_id)
            c, wr, u = _click_answers(*box, i, size[0])
            correct.append(c), wrong.append(wr), unparsable.append(u)
            i += 1
        files[f"{app}_{platform}"] = entries
    return Fixture(
        "screenspot_pro",
        lambda d: [_write_json(d / "annotations" / f"{stem}.json", e) for stem, e in files.items()],
        ids,
        correct,
        wrong,
        unparsable,
    )


# --------------------------------------------------------------------------------------------------------------------
# Success rate of any env: an episode manifest; predictions carry "success"
# --------------------------------------------------------------------------------------------------------------------

EP_TASKS = ["PickCube-v1", "PushCube-v1", "click-button"]


def success() -> Fixture:
    rows = [{"id": f"ep-{i:03d}", "task": EP_TASKS[i % 3], "seed": i} for i in range(N)]
    correct = [{"success": [True, 1, 1.0][i % 3]} for i in range(N)]
    wrong = [{"success": [False, 0][i % 2]} for i in range(N)]
    unparsable = [[{"success": "maybe"}, {"success": None}, {"return": 1.0}][i % 3] for i in range(N)]
    return Fixture(
        "success",
        lambda d: [_write_jsonl(d / "episodes.jsonl", rows)],
        [r["id"] for r in rows],
        correct,
        wrong,
        unparsable,
        "episode_id",
    )


# --------------------------------------------------------------------------------------------------------------------
# Prediction files (the rule in the module docstring)
# --------------------------------------------------------------------------------------------------------------------

TEXT_KEY_BY_CASE = {0: "prediction", 1: "response", 2: "output", 3: "text"}


def _row(item_id: Any, fields: dict[str, Any], text_key: str = "prediction", id_key: str = "id") -> dict[str, Any]:
    return {id_key: item_id, **{(text_key if k == "prediction" else k): v for k, v in fields.items()}}


def write_predictions(fx: Fixture, d: Path) -> list[Path]:
    n = len(fx.ids)
    malformed: list[Any] = []
    for i, item_id in enumerate(fx.ids):
        case = i % 4
        fields = [fx.correct, fx.wrong, fx.unparsable, fx.correct][case][i]
        malformed.append(_row(item_id, fields, TEXT_KEY_BY_CASE[case], fx.own_id_key if case == 3 else "id"))
    malformed += [
        _row(fx.ids[1], fx.correct[1]),  # a duplicate: the first row (wrong) is the one scored
        _row("no-such-item", fx.correct[0]),  # an id that is not in the benchmark
        "{not json",
        dict(fx.correct[0]),  # no id
        "[1, 2]",  # not an object
    ]
    return [
        _write_jsonl(d / "pred_correct.jsonl", [_row(fx.ids[i], fx.correct[i]) for i in range(n)]),
        _write_jsonl(d / "pred_wrong.jsonl", [_row(fx.ids[i], fx.wrong[i]) for i in range(n)]),
        _write_jsonl(d / "pred_malformed.jsonl", malformed),
        _write_jsonl(d / "pred_missing.jsonl", [_row(fx.ids[i], fx.correct[i]) for i in range(n) if i % 3 != 0]),
    ]


FIXTURES: list[Callable[[], Fixture]] = [
    mathvista,
    mmmu,
    lambda: _clevr("clevr", superclevr=False),
    lambda: _clevr("superclevr", superclevr=True),
    geometry3k,
    refcoco,
    screenspot_v2,
    screenspot_pro,
    success,
]


def write_fixtures(out: Path) -> list[Path]:
    """Write every fixture under ``out/<name>/`` (each folder is replaced); return the written paths."""
    written = []
    for make in FIXTURES:
        fx = make()
        d = out / fx.name
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        written += fx.write_data(d) + write_predictions(fx, d)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "assets" / "benchmarks")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    paths = write_fixtures(args.out)
    logger.info("wrote %d files, %d bytes in all", len(paths), sum(p.stat().st_size for p in paths))


if __name__ == "__main__":
    main()
