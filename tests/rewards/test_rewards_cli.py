"""rewards.cli.main (``mmrl reward``) on the shipped sample rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import rewards
from rewards.cli import main
from rewards.registry import RANGES

SAMPLE = Path(__file__).resolve().parents[2] / "assets" / "rewards" / "sample_rows.jsonl"


def test_sample_rows_cover_accuracy_grounding_and_actions() -> None:
    rows = [json.loads(line) for line in SAMPLE.read_text().splitlines() if line.strip()]
    assert len(rows) >= 12
    sources = {r["data_source"] for r in rows}
    assert {"counting", "mcq", "math", "grounding", "gui"} <= sources
    assert {r.get("coordinate_convention") for r in rows} >= {None, "qwen2_vl", "qwen2_5_vl"}


def test_cli_scores_sample_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "scored.jsonl"
    names = ["accuracy", "format", "iou", "hit", "action_match", "overlong"]
    assert main(["--fn", ",".join(names), "--input", str(SAMPLE), "--output", str(out)]) == 0
    captured = capsys.readouterr()
    for col in ("name", "mean", "std", "min", "max", "n"):
        assert col in captured.out
    for name in names:
        assert name in captured.out
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    src = [json.loads(line) for line in SAMPLE.read_text().splitlines() if line.strip()]
    assert len(rows) == len(src)
    for row, orig in zip(rows, src):
        assert {k: v for k, v in row.items() if k != "rewards"} == orig  # rows written back unchanged
        assert set(row["rewards"]) == set(names)
        for name, value in row["rewards"].items():
            if value is not None:
                lo, hi = RANGES[name]
                assert lo <= value <= hi
    by = [r["rewards"] for r in rows]
    # hand-checked rows: counting ok / hedge, mcq ok / hedge, math ok, ocr ok
    assert [b["accuracy"] for b in by[:6]] == [1.0, 0.0, 1.0, 0.0, 1.0, 1.0]
    assert by[6]["iou"] == pytest.approx(106 * 110 / (110 * 110))  # [12,30,118,140] inside [10,30,120,140]
    assert by[7]["hit"] == 0.0  # full-image box
    assert by[8]["hit"] == 1.0  # qwen2_vl box tokens
    assert [b["action_match"] for b in by[10:]] == [1.0, 1.0, 0.5, 0.0]
    assert by[0]["iou"] is None  # not a box row: null, not a crash
    assert "not scored" in captured.err


def test_cli_malformed_line_names_line_number(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"completion": "<answer>3</answer>", "answer": "3"}\n\n{"completion": oops}\n')
    assert main(["--fn", "accuracy", "--input", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and ":3:" in err and "malformed JSON" in err


def test_cli_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--fn", "nope", "--input", str(SAMPLE)]) == 2
    assert "unknown reward" in capsys.readouterr().err
    assert main(["--fn", "accuracy", "--input", str(tmp_path / "missing.jsonl")]) == 2
    assert "no such input" in capsys.readouterr().err
    assert main(["--fn", "accuracy"]) == 2
    no_completion = tmp_path / "x.jsonl"
    no_completion.write_text('{"answer": "3"}\n')
    assert main(["--fn", "accuracy", "--input", str(no_completion)]) == 2
    assert ":1:" in capsys.readouterr().err


def test_cli_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    for name in rewards.names():
        assert name in out
