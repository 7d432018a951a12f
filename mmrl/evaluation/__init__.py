"""Offline evaluation: score any model's predictions on public benchmark files read from local disk.

``score(benchmark, data, predictions, out)`` reads the benchmark with its adapter (:mod:`mmrl.evaluation.benchmarks`),
judges every prediction file with the answer extraction and matching of :mod:`rewards`, and returns a :class:`Report`
(written as JSON, markdown and bar plots when ``out`` is given). No torch, no network, no images decoded.

Example:
    >>> from pathlib import Path
    >>> report = score("geometry3k", Path("assets/benchmarks/geometry3k/test"),
    ...                [Path("assets/benchmarks/geometry3k/pred_correct.jsonl")])
    >>> report.runs[0].accuracy, report.runs[0].missing
    (1.0, 0)
"""

from mmrl.evaluation.benchmarks import BENCHMARKS, Benchmark, Item, Outcome, get, names
from mmrl.evaluation.report import Report, RunScore, format_markdown, score, write_report

__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "Item",
    "Outcome",
    "Report",
    "RunScore",
    "format_markdown",
    "get",
    "names",
    "score",
    "write_report",
]
