"""The CLI turns configuration errors into one line and exit code 2, before anything is written; a bug is not one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmrl.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("override, message", [
    ("rewards.nope=1.0", "rewards: unknown reward 'nope'"),
    ("env.id=Nope-v9", "env.id: unknown env 'Nope-v9'"),
    ("policy.kind=tabular", "policy.kind: unknown policy family 'tabular'"),
    ("model.history_images=0", "model.history_images"),
    ("algo.loss=ppo_clipp", "algo.loss: unknown"),
])  # fmt: skip
def test_config_errors_exit_2_in_one_line_before_any_file_is_written(tmp_path, capsys, override, message):
    code = main(["train", str(ROOT / "configs/cartpole_ppo.yaml"), f"train.output_dir={tmp_path}", override])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("mmrl: error: ") and message in err and "\n" not in err
    assert not any(tmp_path.iterdir())


def test_a_key_error_inside_the_library_is_not_reported_as_a_config_error(monkeypatch, tmp_path):
    from mmrl.trainer import loop

    def broken(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(loop.Trainer, "fit", broken)
    with pytest.raises(KeyError, match="a bug"):
        main(["train", str(ROOT / "configs/cartpole_ppo.yaml"), f"train.output_dir={tmp_path}", "--no-progress"])


def test_eval_scores_prediction_files_offline_side_by_side(tmp_path, capsys):
    data = ROOT / "assets/benchmarks/mathvista"
    code = main(["eval", "--benchmark", "mathvista", "--data", str(data / "testmini.json"), "--predictions",
                 str(data / "pred_correct.jsonl"), str(data / "pred_missing.jsonl"), "--out", str(tmp_path)])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and "| accuracy | 1.000 (24/24) | 0.667 (16/24) |" in out
    assert "| missing (counted wrong) | 0 | 8 |" in out and any(tmp_path.glob("*.json"))


@pytest.mark.parametrize("argv", [["eval", "--benchmark", "mathvista"], ["eval"],
                                  ["eval", "--benchmark", "nope", "--data", "x", "--predictions", "y"]])  # fmt: skip
def test_eval_usage_errors_exit_2_in_one_line(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("mmrl: error: ") and "\n" not in err


def test_view_writes_the_page_of_a_trained_run(tiny_model_path, tmp_path, capsys):
    """A one-step run stores its rollout sample (rollouts_every) and its viewer; `mmrl view` rewrites the page."""
    run = ["train", str(ROOT / "configs/quickstart.yaml"), f"model.path={tiny_model_path}", "model.build_tiny=false",
           f"train.output_dir={tmp_path}", "train.steps=1", "warmup.steps=0", "algo.prompts_per_step=2",
           "algo.group_size=2", "rollout.batch_size=4", "train.eval_size=4", "train.rollouts_every=1",
           "train.rollouts_samples=4", "--no-progress"]  # fmt: skip
    assert main(run) == 0
    page = tmp_path / "quickstart" / "viewer.html"
    samples = tmp_path / "quickstart" / "rollouts" / "step_000001" / "samples.jsonl"
    assert page.exists() and len(samples.read_text().splitlines()) == 4
    page.unlink()
    assert main(["view", str(tmp_path / "quickstart")]) == 0 and page.exists() and "samples" in page.read_text()
    assert main(["view", str(tmp_path / "nope")]) == 2


def table_rows(text: str) -> dict[str, list[str]]:
    """The rows of a markdown table, by their first cell."""
    cells = [
        [c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines() if line.startswith("|")
    ]
    return {row[0]: row[1:] for row in cells}


def test_eval_prints_a_table_that_matches_the_trainers_own_evaluations(tiny_model_path, tmp_path, capsys):
    """`mmrl eval CONFIG` on a tiny run: each checkpoint's success and return are those the trainer logged for that
    step in metrics.jsonl (same eval split, size, greedy decoding and seeds), the checkpoints side by side."""
    args = [str(ROOT / "configs/quickstart.yaml"), f"model.path={tiny_model_path}", "model.build_tiny=false",
            f"train.output_dir={tmp_path}", "train.steps=2", "train.eval_every=1", "train.save_every=1",
            "train.keep_checkpoints=3", "train.eval_size=16", "warmup.steps=40", "warmup.batch_size=8",
            "warmup.lr=3e-3", "algo.prompts_per_step=2", "algo.group_size=4", "algo.minibatch_size=8",
            "rollout.batch_size=8", "train.rollouts_every=0", "--no-progress"]  # fmt: skip
    assert main(["train", *args]) == 0
    capsys.readouterr()
    run = tmp_path / "quickstart"
    logged = {
        r["step"]: r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "eval/return" in r
    }
    assert sorted(logged) == [0, 1, 2]

    assert main(["eval", *args]) == 0  # the latest checkpoint: one column
    rows = table_rows(capsys.readouterr().out)
    assert rows[""] == ["step_000002"] and rows["episodes"] == ["16"] and rows["checkpoint"][0].endswith("step_000002")
    successes, n = rows["success"][0].split()[1].strip("()").split("/")
    assert int(successes) / int(n) == logged[2]["eval/success"] and n == "16"
    assert rows["return (mean)"] == [f"{logged[2]['eval/return']:.3f}"]
    assert {"reward accuracy (mean)", "reward format_answer (mean)"} <= set(rows)

    out = tmp_path / "report"
    assert main(["eval", *args, "--all-checkpoints", "--out", str(out)]) == 0  # before and after RL side by side
    rows = table_rows(capsys.readouterr().out)
    assert rows[""] == ["initial", "step_000001", "step_000002", "Δ (last - first)"]
    for column, step in ((1, 1), (2, 2)):
        assert rows["return (mean)"][column] == f"{logged[step]['eval/return']:.3f}"
        assert rows["success"][column].startswith(f"{logged[step]['eval/success']:.3f} (")
    report = json.loads((out / "eval_report.json").read_text())
    assert [r["label"] for r in report["results"]] == ["initial", "step_000001", "step_000002"]
    assert report["results"][0]["checkpoint"] is None and report["results"][2]["n"] == 16
    assert report["results"][2]["eval/success"] == logged[2]["eval/success"]
    assert (out / "eval_report.md").read_text().startswith("## quickstart: held-out evaluation (16 episodes")

    step1 = run / "checkpoints" / "step_000001"
    assert main(["eval", *args, "--json", "--checkpoints", str(step1)]) == 0
    result = json.loads(capsys.readouterr().out)["results"][0]
    assert result["checkpoint"] == str(step1) and result["eval/return"] == logged[1]["eval/return"]
    assert main(["eval", *args, "--checkpoints", str(tmp_path / "nope")]) == 2
    assert "--checkpoints: no checkpoint directory" in capsys.readouterr().err
