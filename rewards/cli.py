"""``mmrl reward``: score a JSONL file of completions with registered rewards.

    mmrl reward --fn accuracy,format --input rows.jsonl [--output scored.jsonl]
    mmrl reward --list

Each input line is a JSON object with a ``completion`` string plus ground-truth columns (``answer``, ``image_size``,
``coordinate_convention``...). Every row is written back with a ``rewards`` object ``{name: value}``; a summary table
(name, mean, std, min, max, n) is printed with rich. A row a reward cannot score (its ground truth is not the kind the
reward needs, e.g. ``iou`` on a multiple-choice row) gets ``null`` for that reward, is left out of the summary, and is
counted in a one-line note on stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import rewards
from rewards.registry import RANGES


class _Usage(Exception):
    pass


def read_rows(path: Path) -> list[dict[str, Any]]:
    """JSONL rows; a bad line is a one-line ``_Usage`` error naming its line number. Blank lines are skipped."""
    out = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise _Usage(f"{path}:{lineno}: malformed JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(row, dict) or not isinstance(row.get("completion"), (str, list)):
                raise _Usage(f"{path}:{lineno}: each row must be a JSON object with a 'completion'")
            row["_line"] = lineno
            out.append(row)
    return out


def _columns(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    keys = sorted({k for r in rows for k in r} - {"completion", "rewards", "_line"})
    return {k: [r.get(k) for r in rows] for k in keys}


def score_rows(name: str, rows: list[dict[str, Any]]) -> tuple[list[float | None], list[str]]:
    """Values of reward ``name`` per row (``None`` where the row's ground truth does not fit the reward) and the
    one-line reasons for those rows. The whole batch is scored at once; on a ground-truth error, row by row."""
    fn = rewards.get(name)
    completions = [r["completion"] for r in rows]
    try:
        return [float(v) for v in fn(completions, **_columns(rows))], []
    except ValueError:
        pass
    values: list[float | None] = []
    errors: list[str] = []
    for r in rows:
        try:
            values.append(float(fn([r["completion"]], **_columns([r]))[0]))
        except ValueError as exc:
            values.append(None)
            errors.append(f"line {r['_line']}: {exc}")
    return values, errors


def _stats(values: list[float]) -> tuple[float, float, float, float]:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    return mean, std, min(values), max(values)


def _print_table(results: dict[str, list[float | None]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="rewards")
    for col in ("name", "mean", "std", "min", "max", "n"):
        table.add_column(col, justify="left" if col == "name" else "right")
    for name, values in results.items():
        vals = [v for v in values if v is not None]
        if vals:
            mean, std, lo, hi = _stats(vals)
            table.add_row(name, f"{mean:.4f}", f"{std:.4f}", f"{lo:.4f}", f"{hi:.4f}", str(len(vals)))
        else:
            table.add_row(name, "-", "-", "-", "-", "0")
    Console().print(table)


def _print_list() -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="registered rewards")
    for col in ("name", "min", "max", "summary"):
        table.add_column(col)
    for name in rewards.names():
        lo, hi = RANGES.get(name, (math.nan, math.nan))
        doc = (rewards.get(name).__doc__ or "").strip().split("\n")[0]
        table.add_row(name, f"{lo:g}", f"{hi:g}", doc)
    Console().print(table)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``mmrl reward`` (``argv`` = the arguments after ``reward``). Returns the exit status."""
    parser = argparse.ArgumentParser(prog="mmrl reward", description="Score JSONL completions with registered rewards.")
    parser.add_argument("--fn", help="reward name(s), comma-separated (see --list)")
    parser.add_argument("--input", type=Path, help="JSONL file: one object per line with 'completion' + columns")
    parser.add_argument("--output", type=Path, help="write the rows back with a 'rewards' object (JSONL)")
    parser.add_argument("--list", action="store_true", help="list the registered rewards with their ranges")
    args = parser.parse_args(argv)
    if args.list:
        _print_list()
        return 0
    try:
        if not args.fn or not args.input:
            raise _Usage("--fn and --input are required (or --list)")
        names = [n.strip() for n in args.fn.split(",") if n.strip()]
        unknown = [n for n in names if n not in rewards.names()]
        if not names or unknown:
            raise _Usage(
                f"unknown reward(s) {', '.join(unknown) or '(none given)'} (known: {', '.join(rewards.names())})"
            )
        if not args.input.is_file():
            raise _Usage(f"no such input file: {args.input}")
        rows = read_rows(args.input)
    except _Usage as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    results: dict[str, list[float | None]] = {}
    for name in names:
        values, errors = score_rows(name, rows)
        results[name] = values
        if errors:
            print(f"note: {name}: {len(errors)} row(s) not scored ({errors[0]})", file=sys.stderr)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        with args.output.open("w", encoding="utf-8") as f:
            for i, row in enumerate(rows):
                out = {k: v for k, v in row.items() if k != "_line"}
                out["rewards"] = {name: results[name][i] for name in names}
                f.write(json.dumps(out, ensure_ascii=False) + "\n")
    _print_table(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
