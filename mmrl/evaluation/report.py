"""Offline scoring of prediction files on a benchmark: counts, breakdowns, a JSON + markdown report and bar plots.

A prediction file is JSONL, one row per item: ``{"id": ..., "prediction": "model text"}``. The text may also sit under
``response`` / ``output`` / ``text``, and the id under the benchmark's own id key (``pid``, ``question_index``,
``sent_id``...). Every item of the benchmark is scored for every file: an item with no row is *missing*, a row whose
answer cannot be read is *unparsable*; both count as wrong and are reported as counts, as are repeated ids (the first
row is scored), ids that are not in the benchmark and lines that are not JSON objects (both ignored). Several files
are scored side by side (``before`` / ``after`` columns, with the change from the first to the last).

Example:
    >>> report = score("clevr", Path("assets/benchmarks/clevr/CLEVR_val_questions.json"),
    ...                [Path("assets/benchmarks/clevr/pred_correct.jsonl")])
    >>> report.runs[0].accuracy
    1.0
    >>> print(format_markdown(report).splitlines()[0])
    ## clevr: accuracy (24 items)
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mmrl.config import ConfigError
from mmrl.evaluation.benchmarks import Benchmark, Item, Outcome, get
from mmrl.evaluation.files import read_predictions

logger = logging.getLogger(__name__)

MISSING = "missing"  # outcome of an item with no prediction row
MAX_PLOT_CATEGORIES = 30  # a bar plot shows at most this many labels (the largest ones): MMMU has ~180 subfields


@dataclass
class RunScore:
    """The score of one prediction file."""

    label: str  # column name in the report (the file's stem, made unique)
    path: str  # the prediction file
    n: int  # items in the benchmark (the denominator: missing items count as wrong)
    correct: int = 0  # items judged correct
    missing: int = 0  # items with no prediction row (counted wrong)
    unparsable: int = 0  # predictions with no readable answer of the required kind (counted wrong)
    duplicates: int = 0  # rows repeating an id already seen (ignored: the first row is scored)
    unknown_ids: int = 0  # rows whose id is not in the benchmark (ignored)
    bad_rows: int = 0  # lines that are not a JSON object or carry no usable id (ignored)
    breakdowns: dict[str, dict[str, int]] = field(default_factory=dict)  # breakdown key -> label -> correct items
    outcomes: dict[str, str] = field(default_factory=dict)  # item id -> correct | wrong | unparsable | missing

    @property
    def accuracy(self) -> float:
        """``correct / n`` (0 for an empty benchmark)."""
        return self.correct / self.n if self.n else 0.0


@dataclass
class Report:
    """Scores of one or more prediction files on one benchmark."""

    benchmark: str  # registry name
    metric: str  # what the headline number is (accuracy, point-in-box accuracy, success rate...)
    source: str  # the public file / schema the adapter reads
    data: str  # the benchmark file read
    n_items: int  # items in the benchmark
    sizes: dict[str, dict[str, int]]  # breakdown key -> label -> items with that label (same for every run)
    runs: list[RunScore]  # one per prediction file, in the order given
    files: list[str] = field(default_factory=list)  # what ``write_report`` wrote

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: every field, each run with its ``accuracy`` and per-label ``{correct, n, accuracy}``."""
        out = asdict(self)
        for run, d in zip(self.runs, out["runs"]):
            d["accuracy"] = run.accuracy
            d["breakdowns"] = {
                key: {
                    label: {"correct": run.breakdowns[key][label], "n": n, "accuracy": run.breakdowns[key][label] / n}
                    for label, n in labels.items()
                }
                for key, labels in self.sizes.items()
            }
        return out


def _run_labels(paths: Sequence[Path]) -> list[str]:
    """Column names: each file's stem; stems that repeat take their parent folder (``step_0/preds``), then ``#i``."""
    labels = [p.stem for p in paths]
    labels = [f"{p.parent.name}/{p.stem}" if labels.count(p.stem) > 1 else s for p, s in zip(paths, labels)]
    return [f"{s}#{i}" if labels.count(s) > 1 else s for i, s in enumerate(labels)]


def _sizes(bench: Benchmark, items: list[Item]) -> dict[str, dict[str, int]]:
    """Items per label for each breakdown key, largest first; a key no item has (all ``unknown``) is dropped."""
    out: dict[str, dict[str, int]] = {}
    for key in bench.breakdowns:
        counts: dict[str, int] = {}
        for item in items:
            for label in item.groups.get(key, ("unknown",)):
                counts[label] = counts.get(label, 0) + 1
        if set(counts) != {"unknown"}:
            out[key] = dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    return out


def score_file(
    bench: Benchmark, items: list[Item], path: Path, label: str, sizes: dict[str, dict[str, int]]
) -> RunScore:
    """Judge every item of ``items`` against its row in the prediction file ``path``."""
    preds = read_predictions(path, bench.id_keys)
    ids = {item.id for item in items}
    run = RunScore(label, str(path), len(items), duplicates=preds.duplicates, bad_rows=preds.bad_rows)
    run.unknown_ids = sum(1 for i in preds.rows if i not in ids)
    run.breakdowns = {key: dict.fromkeys(labels, 0) for key, labels in sizes.items()}
    for item in items:
        row = preds.rows.get(item.id)
        if row is None:
            outcome = MISSING
        else:
            try:
                outcome = bench.judge(item, row).value
            except ValueError as e:  # a ground-truth problem surfaced by a reward (rewards never raise on model text)
                if isinstance(e, ConfigError):
                    raise
                raise ConfigError(f"{bench.name}: item {item.id}: {e}") from None
        run.outcomes[item.id] = outcome
        run.missing += outcome == MISSING
        run.unparsable += outcome == Outcome.UNPARSABLE.value
        if outcome == Outcome.CORRECT.value:
            run.correct += 1
            for key in run.breakdowns:
                for g in item.groups.get(key, ("unknown",)):
                    run.breakdowns[key][g] += 1
    return run


def score(benchmark: str, data: Path, predictions: list[Path], out: Path | None = None) -> Report:
    """Score each prediction file on the benchmark read from ``data``; with ``out``, also write the report files there
    (``<benchmark>_report.json``, ``<benchmark>_report.md``, one ``<benchmark>_<key>.png`` bar plot per breakdown).

    An unknown benchmark name, a missing or malformed data file, or a missing prediction file is a one-line
    ``ConfigError``; nothing in a prediction file's content raises.
    """
    bench = get(benchmark)
    if not predictions:
        raise ConfigError("predictions: give at least one prediction file")
    items = bench.read(Path(data))
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise ConfigError(f"{data}: item id {item.id!r} appears twice in the benchmark")
        seen.add(item.id)
    paths = [Path(p) for p in predictions]
    sizes = _sizes(bench, items)
    runs = [score_file(bench, items, p, label, sizes) for p, label in zip(paths, _run_labels(paths))]
    report = Report(bench.name, bench.metric, bench.source, str(data), len(items), sizes, runs)
    if out is not None:
        write_report(report, Path(out))
    return report


# --------------------------------------------------------------------------------------------------------------------
# Markdown, JSON, plots
# --------------------------------------------------------------------------------------------------------------------


def _row(cells: Sequence[Any]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    return [_row(header), _row(["---"] * len(header)), *(_row(r) for r in rows)]


def delta_cells(values: Sequence[float]) -> list[str]:
    """The change from the first run to the last, as an extra cell, when there are several runs."""
    return [f"{values[-1] - values[0]:+.3f}"] if len(values) > 1 else []


def format_markdown(report: Report) -> str:
    """The report as markdown: an overall table (accuracy and the counts) and one table per breakdown, a column per
    prediction file plus the change from the first to the last when there are several."""
    runs = report.runs
    labels = [r.label for r in runs]
    delta = ["Δ (last - first)"] if len(runs) > 1 else []
    lines = [
        f"## {report.benchmark}: {report.metric} ({report.n_items} items)",
        "",
        f"Data: `{report.data}`; format: {report.source}.",
        "",
    ]
    counts = [
        ("missing (counted wrong)", "missing"),
        ("unparsable (counted wrong)", "unparsable"),
        ("duplicate ids (ignored)", "duplicates"),
        ("unknown ids (ignored)", "unknown_ids"),
        ("bad rows (ignored)", "bad_rows"),
    ]
    overall = [
        [report.metric, *(f"{r.accuracy:.3f} ({r.correct}/{r.n})" for r in runs), *delta_cells([r.accuracy for r in runs])]
    ]
    overall += [[name, *(getattr(r, attr) for r in runs), *([""] if delta else [])] for name, attr in counts]
    lines += markdown_table(["", *labels, *delta], overall)
    for key, sizes in report.sizes.items():
        rows = []
        for label, n in sizes.items():
            accs = [r.breakdowns[key][label] / n for r in runs]
            rows.append([label, n, *(f"{a:.3f}" for a in accs), *delta_cells(accs)])
        lines += ["", f"### by {key}", "", *markdown_table([key, "n", *labels, *delta], rows)]
    return "\n".join(lines) + "\n"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def plot_breakdowns(report: Report, out_dir: Path) -> list[Path]:
    """One grouped bar plot per breakdown key (accuracy per label, a bar per prediction file), PNG, Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    width = 0.8 / max(len(report.runs), 1)
    for key, sizes in report.sizes.items():
        shown = list(sizes)[:MAX_PLOT_CATEGORIES]
        fig, ax = plt.subplots(figsize=(max(4.0, 0.55 * len(shown) * max(len(report.runs), 1) + 1.5), 3.6))
        for j, run in enumerate(report.runs):
            accs = [run.breakdowns[key][label] / sizes[label] for label in shown]
            ax.bar(
                [i + (j - (len(report.runs) - 1) / 2) * width for i in range(len(shown))], accs, width, label=run.label
            )
        ax.set_xticks(range(len(shown)))
        ax.set_xticklabels([f"{label}\n(n={sizes[label]})" for label in shown], rotation=30, ha="right", fontsize=7)
        ax.set_ylim(0, 1)
        ax.set_ylabel(report.metric)
        more = f" (largest {len(shown)} of {len(sizes)})" if len(shown) < len(sizes) else ""
        ax.set_title(f"{report.benchmark} by {key}{more}")
        ax.grid(axis="y", alpha=0.3)
        if len(report.runs) > 1:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # outside: bars reach 1.0
        fig.tight_layout()
        path = out_dir / f"{_safe(report.benchmark)}_{_safe(key)}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def write_report(report: Report, out_dir: Path) -> list[Path]:
    """Write ``<benchmark>_report.json``, ``<benchmark>_report.md`` and the bar plots into ``out_dir``; returns them
    (also kept in ``report.files``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = _safe(report.benchmark)
    md = out_dir / f"{stem}_report.md"
    md.write_text(format_markdown(report), encoding="utf-8")
    plots = plot_breakdowns(report, out_dir)
    report.files = [str(p) for p in (out_dir / f"{stem}_report.json", md, *plots)]
    path = out_dir / f"{stem}_report.json"
    path.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    logger.info("wrote %s", ", ".join(report.files))
    return [Path(f) for f in report.files]
