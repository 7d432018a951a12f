"""Offline benchmark scoring on the self-made fixtures in ``assets/benchmarks/``.

Expected numbers come from how the fixtures are built (``scripts/make_benchmark_fixtures.py``, module docstring), not
from running the scorer: ``pred_correct`` answers all 24 items right in varied formats, ``pred_wrong`` all wrong but
readable; in ``pred_malformed`` item ``i`` is correct when ``i % 4`` is 0 or 3, wrong when 1, unparsable when 2, plus one
duplicate id, one unknown id and three bad lines; ``pred_missing`` answers only the items with ``i % 3 != 0``. The
breakdown references are read from the raw fixture files here, with plain ``json`` / ``pyarrow``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mmrl.config import ConfigError
from mmrl.evaluation import format_markdown, get, names, score

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ROOT / "assets" / "benchmarks"
N = 24
DATA = {
    "mathvista": "mathvista/testmini.json",
    "mmmu": "mmmu/validation-00000-of-00001.parquet",
    "clevr": "clevr/CLEVR_val_questions.json",
    "superclevr": "superclevr/superCLEVR_questions_val.json",
    "geometry3k": "geometry3k/test",
    "refcoco": "refcoco/refs_val.json",
    "screenspot_v2": "screenspot_v2",
    "screenspot_pro": "screenspot_pro/annotations",
    "success": "success/episodes.jsonl",
}
FILES = ("correct", "wrong", "malformed", "missing")
EXPECTED_MALFORMED = ["correct", "wrong", "unparsable", "correct"]  # by i % 4


def preds(folder: str, *kinds: str) -> list[Path]:
    return [ASSETS / folder / f"pred_{k}.jsonl" for k in kinds]


@pytest.fixture(scope="module")
def reports():
    return {name: score(name, ASSETS / DATA[name], preds(name, *FILES)) for name in DATA}


# --------------------------------------------------------------------------------------------------------------------
# Independent references read from the raw fixture files: item ids in order, and breakdown labels per item
# --------------------------------------------------------------------------------------------------------------------

CLEVR_FAMILY = {
    "count": "count",
    "exist": "exist",
    "query_color": "query_attribute",
    "equal_integer": "compare_integer",
    "equal_shape": "compare_attribute",
}


def raw_items(name: str) -> list[tuple[str, dict[str, list[str]]]]:
    """``(id, {breakdown key: labels})`` per item in file order, for the keys each benchmark is checked on."""
    path = ASSETS / DATA[name]
    if name == "mathvista":
        rows = json.loads(path.read_text()).values()
        return [(r["pid"], {"task": [r["metadata"]["task"]], "skills": r["metadata"]["skills"]}) for r in rows]
    if name == "mmmu":
        rows = pq.read_table(path, columns=["id", "question_type"]).to_pylist()
        return [
            (r["id"], {"subject": [r["id"].split("_", 1)[1].rsplit("_", 1)[0]], "question_type": [r["question_type"]]})
            for r in rows
        ]
    if name in ("clevr", "superclevr"):
        key = "type" if name == "superclevr" else "function"
        rows = json.loads(path.read_text())["questions"]
        return [(str(q["question_index"]), {"question_type": [CLEVR_FAMILY[q["program"][-1][key]]]}) for q in rows]
    if name == "geometry3k":
        rows = [json.loads((path / str(2401 + i) / "data.json").read_text()) for i in range(N)]
        return [(str(r["id"]), {"goal": r["problem_type_goal"], "graph": r["problem_type_graph"]}) for r in rows]
    if name == "refcoco":
        return [
            (str(s["sent_id"]), {"split": [r["split"]]}) for r in json.loads(path.read_text()) for s in r["sentences"]
        ]
    if name == "screenspot_v2":
        out = []
        for platform in ("desktop", "mobile", "web"):
            rows = json.loads((path / f"screenspot_{platform}_v2.json").read_text())
            out += [
                (
                    f"screenspot_{platform}_v2:{k}",
                    {"platform": [platform], "platform_type": [f"{platform}-{r['data_type']}"]},
                )
                for k, r in enumerate(rows)
            ]
        return out
    if name == "screenspot_pro":
        out = []
        for app in ("autocad_windows", "photoshop_windows", "vscode_macos"):
            out += [
                (r["id"], {"group": [r["group"]], "ui_type": [r["ui_type"]]})
                for r in json.loads((path / f"{app}.json").read_text())
            ]
        return out
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [(r["id"], {"task": [r["task"]]}) for r in rows]


# --------------------------------------------------------------------------------------------------------------------
# Scores on the four prediction files of every fixture
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(DATA))
def test_correct_and_wrong_files(reports, name):
    correct, wrong = reports[name].runs[0], reports[name].runs[1]
    assert reports[name].n_items == N
    assert (correct.correct, correct.missing, correct.unparsable, correct.accuracy) == (N, 0, 0, 1.0)
    assert (wrong.correct, wrong.missing, wrong.unparsable, wrong.accuracy) == (0, 0, 0, 0.0)
    assert set(wrong.outcomes.values()) == {"wrong"}


@pytest.mark.parametrize("name", list(DATA))
def test_malformed_file_counts_and_outcomes(reports, name):
    run = reports[name].runs[2]
    assert (run.correct, run.unparsable, run.missing) == (12, 6, 0)
    assert (run.duplicates, run.unknown_ids, run.bad_rows) == (1, 1, 3)
    assert run.accuracy == 0.5
    ids = [item_id for item_id, _ in raw_items(name)]
    assert list(run.outcomes) == ids  # every benchmark item is reported, in file order
    assert [run.outcomes[i] for i in ids] == [EXPECTED_MALFORMED[k % 4] for k in range(N)]


@pytest.mark.parametrize("name", list(DATA))
def test_missing_ids_count_as_wrong(reports, name):
    run = reports[name].runs[3]
    assert (run.correct, run.missing, run.unparsable) == (16, 8, 0)
    assert run.accuracy == pytest.approx(2 / 3)
    ids = [item_id for item_id, _ in raw_items(name)]
    assert [run.outcomes[i] for i in ids] == ["missing" if k % 3 == 0 else "correct" for k in range(N)]


@pytest.mark.parametrize("name", list(DATA))
def test_breakdowns_match_the_raw_files(reports, name):
    report = reports[name]
    malformed, missing = report.runs[2], report.runs[3]
    items = raw_items(name)
    for key in items[0][1]:
        sizes, right_malformed, right_missing = Counter(), Counter(), Counter()
        for k, (_, groups) in enumerate(items):
            for label in groups[key]:
                sizes[label] += 1
                right_malformed[label] += k % 4 in (0, 3)
                right_missing[label] += k % 3 != 0
        assert report.sizes[key] == dict(sizes), key
        assert malformed.breakdowns[key] == {label: right_malformed[label] for label in sizes}, key
        assert missing.breakdowns[key] == {label: right_missing[label] for label in sizes}, key


def test_multi_label_breakdown_counts_an_item_under_each_label(reports):
    # MathVista items with i % 3 == 0 have two skills: 8 of the 24, so the skill sizes add up to 32
    assert sum(reports["mathvista"].sizes["skills"].values()) == N + 8
    # Geometry3K goal ["Length", "Ratio"] for i // 3 % 4 == 3: items 9-11 and 21-23
    assert reports["geometry3k"].sizes["goal"] == {"Length": 12, "Angle": 6, "Area": 6, "Ratio": 6}


def test_screenspot_v1_names_and_refcoco_variants_read_the_same_formats():
    one_file = ASSETS / "screenspot_v2" / "screenspot_mobile_v2.json"
    run = score("screenspot", one_file, preds("screenspot_v2", "correct"))
    # the ids of one file are that file's 8 entries; the other 16 rows of the prediction file are unknown ids
    assert (run.n_items, run.runs[0].correct, run.runs[0].unknown_ids) == (8, 8, 16)
    assert run.sizes["platform"] == {"mobile": 8}
    for name in ("refcoco+", "refcocog"):
        r = score(name, ASSETS / DATA["refcoco"], preds("refcoco", "malformed"))
        assert (r.runs[0].correct, r.runs[0].unparsable, r.metric) == (12, 6, "accuracy@IoU0.5")


# --------------------------------------------------------------------------------------------------------------------
# Hand-worked judging rules
# --------------------------------------------------------------------------------------------------------------------


def score_rows(name: str, rows: list[dict], tmp_path: Path, data: Path | None = None) -> list[str]:
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = score(name, data or ASSETS / DATA[name], [path]).runs[0]
    return [run.outcomes[str(r["id"])] for r in rows]


def test_mathvista_float_answers_are_judged_at_their_precision(tmp_path):
    # pid 3: answer "1.5", precision 1 -> within 0.05; pid 9: answer "2.75", precision 2 -> within 0.005
    rows = [
        {"id": "3", "prediction": "1.549"},
        {"id": "9", "prediction": "<answer>2.7549</answer>"},
    ]
    assert score_rows("mathvista", rows, tmp_path) == ["correct", "correct"]
    rows = [{"id": "3", "prediction": "1.56"}, {"id": "9", "prediction": "2.756"}]
    assert score_rows("mathvista", rows, tmp_path) == ["wrong", "wrong"]


def test_multiple_choice_by_letter_or_choice_text(tmp_path):
    # MathVista pid 1: choices ["larger than", "equal to", "smaller than"], answer "larger than"
    assert score_rows("mathvista", [{"id": "1", "prediction": "larger than"}], tmp_path) == ["correct"]
    assert score_rows("mathvista", [{"id": "1", "prediction": "The answer is (B) equal to."}], tmp_path) == ["wrong"]
    assert score_rows("mathvista", [{"id": "1", "prediction": "(A) or (C)"}], tmp_path) == ["unparsable"]
    # Geometry3K 2402: choices ["2\sqrt{3}", "4\sqrt{3}", "6", "8\sqrt{3}"], answer B; sqrt(48) = 4 sqrt(3) (math_verify)
    assert score_rows("geometry3k", [{"id": 2402, "prediction": "\\boxed{\\sqrt{48}}"}], tmp_path) == ["correct"]
    assert score_rows("geometry3k", [{"id": 2402, "prediction": "\\boxed{7}"}], tmp_path) == ["unparsable"]


def test_grounding_coordinate_conventions_come_from_the_prediction_row(tmp_path):
    # ScreenSpot-Pro autocad_windows_0: box [200, 300, 240, 330] on a 1920 x 1080 screen; centre (220, 315)
    qx, qy = round(220 / 1920 * 1000), round(315 / 1080 * 1000)  # Qwen2-VL [0, 1000) coordinates of the centre
    rows = [
        {"id": "autocad_windows_0", "prediction": f"click({qx}, {qy})", "coordinate_convention": "qwen2_vl"},
        {"id": "autocad_windows_1", "prediction": "click(300, 350)"},  # pixels: box [300, 350, 340, 380]
    ]
    assert score_rows("screenspot_pro", rows, tmp_path) == ["correct", "correct"]
    rows[0].pop("coordinate_convention")  # (115, 292) as pixels is outside the box
    assert score_rows("screenspot_pro", rows[:1], tmp_path) == ["wrong"]
    # ScreenSpot-v2 ships no image size: a normalised convention without the row's image_size is a usage error
    row = {"id": "screenspot_web_v2:0", "prediction": "click(500, 500)", "coordinate_convention": "qwen2_vl"}
    with pytest.raises(ConfigError, match=r"item screenspot_web_v2:0: column 'image_size' is required"):
        score_rows("screenspot_v2", [row], tmp_path)
    # with it, (500, 500) of a 280 x 180 screen is (140, 90): on the box [100, 50, 180, 90]'s bottom edge
    assert score_rows("screenspot_v2", [row | {"image_size": [280, 180]}], tmp_path) == ["correct"]


def test_a_point_given_as_a_json_list_is_read(tmp_path):
    rows = [{"id": "screenspot_web_v2:0", "prediction": [140, 70]}, {"id": "screenspot_web_v2:1", "prediction": None}]
    assert score_rows("screenspot_v2", rows, tmp_path) == ["correct", "unparsable"]


def test_refcoco_threshold_is_iou_at_least_one_half(tmp_path):
    # sent 100: COCO bbox [20, 15, 60, 48] -> [20, 15, 80, 63]. Shifted right by 20: IoU = 40 / 80 = 0.5 (counts);
    # by 21: IoU = 39 * 48 / (2 * 60 * 48 - 39 * 48) = 39 / 81 < 0.5
    assert score_rows("refcoco", [{"id": 100, "prediction": "[40, 15, 100, 63]"}], tmp_path) == ["correct"]
    assert score_rows("refcoco", [{"id": 100, "prediction": "[41, 15, 101, 63]"}], tmp_path) == ["wrong"]


# --------------------------------------------------------------------------------------------------------------------
# Errors: one line, never a traceback from prediction content
# --------------------------------------------------------------------------------------------------------------------


def test_unknown_benchmark_lists_the_known_ones():
    with pytest.raises(ConfigError) as e:
        get("mathvistaa")
    message = str(e.value)
    assert "\n" not in message and "mathvistaa" in message
    assert all(n in message for n in names())


def test_missing_and_malformed_files_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        score("clevr", tmp_path / "nope.json", preds("clevr", "correct"))
    with pytest.raises(ConfigError, match="predictions file not found"):
        score("clevr", ASSETS / DATA["clevr"], [tmp_path / "nope.jsonl"])
    bad = tmp_path / "testmini.json"
    bad.write_text('{"1": {"pid": "1", "question_type": "multi_choice", "answer": "C", "choices": ["A1", "B1"]}}')
    with pytest.raises(ConfigError, match=r"item 1: answer 'C' is not one of its choices"):
        score("mathvista", bad, preds("mathvista", "correct"))
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="invalid JSON") as e:
        score("mathvista", bad, preds("mathvista", "correct"))
    assert "\n" not in str(e.value)


def test_garbage_prediction_files_score_zero_without_raising(tmp_path):
    path = tmp_path / "garbage.jsonl"
    path.write_bytes(b'\xff\xfe\x00garbage\n{"id": [1]}\n{"id": true, "prediction": "A"}\n[]\n"str"\n\n')
    run = score("mmmu", ASSETS / DATA["mmmu"], [path]).runs[0]
    assert (run.correct, run.missing, run.bad_rows) == (0, N, 5)


# --------------------------------------------------------------------------------------------------------------------
# Reports: JSON, markdown, side by side, plots
# --------------------------------------------------------------------------------------------------------------------


def test_side_by_side_report_files(tmp_path):
    report = score("clevr", ASSETS / DATA["clevr"], preds("clevr", "wrong", "correct"), out=tmp_path)
    md = format_markdown(report)
    lines = md.splitlines()
    assert lines[0] == "## clevr: accuracy (24 items)"
    assert "|  | pred_wrong | pred_correct | Δ (last - first) |" in lines
    assert "| accuracy | 0.000 (0/24) | 1.000 (24/24) | +1.000 |" in lines
    assert "### by question_type" in lines and "### by answer_kind" in lines
    # 8 count questions (CLEVR_KINDS has two "count" in six), all wrong before and right after
    assert "| count | 8 | 0.000 | 1.000 | +1.000 |" in lines
    written = {Path(f).name for f in report.files}
    assert written == {"clevr_report.json", "clevr_report.md", "clevr_question_type.png", "clevr_answer_kind.png"}
    data = json.loads((tmp_path / "clevr_report.json").read_text())
    assert [r["label"] for r in data["runs"]] == ["pred_wrong", "pred_correct"]
    assert data["runs"][1]["accuracy"] == 1.0 and data["n_items"] == N
    assert data["runs"][1]["breakdowns"]["question_type"]["count"] == {"correct": 8, "n": 8, "accuracy": 1.0}
    assert set(data["runs"][0]["outcomes"].values()) == {"wrong"}
    assert (tmp_path / "clevr_report.md").read_text() == md
    for png in ("clevr_question_type.png", "clevr_answer_kind.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_labels_stay_unique(tmp_path):
    paths = []
    for stage in ("before", "after"):
        (tmp_path / stage).mkdir()
        paths.append(tmp_path / stage / "preds.jsonl")
        paths[-1].write_text(
            (ASSETS / "success" / f"pred_{'wrong' if stage == 'before' else 'correct'}.jsonl").read_text()
        )
    report = score("success", ASSETS / DATA["success"], paths)
    assert [r.label for r in report.runs] == ["before/preds", "after/preds"]
    assert [r.accuracy for r in report.runs] == [0.0, 1.0]
    assert report.metric == "success rate" and list(report.sizes) == ["task"]


# --------------------------------------------------------------------------------------------------------------------
# Layering and fixtures
# --------------------------------------------------------------------------------------------------------------------


def test_importing_evaluation_pulls_in_no_torch_and_no_matplotlib():
    code = "import sys, mmrl.evaluation; print('torch' in sys.modules, 'matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_fixtures_are_small_and_regenerate_identically(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import make_benchmark_fixtures
    finally:
        sys.path.pop(0)
    written = make_benchmark_fixtures.write_fixtures(tmp_path)
    committed = sorted(p.relative_to(ASSETS) for p in ASSETS.rglob("*") if p.is_file())
    assert sorted(p.relative_to(tmp_path) for p in written) == committed
    assert sum((ASSETS / p).stat().st_size for p in committed) < 200_000
    for rel in committed:
        if rel.suffix == ".parquet":
            assert pq.read_table(tmp_path / rel).equals(pq.read_table(ASSETS / rel)), rel
        else:
            assert (tmp_path / rel).read_bytes() == (ASSETS / rel).read_bytes(), rel
