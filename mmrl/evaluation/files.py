"""Reading benchmark files and prediction files from local disk (no network, no pickle, images never decoded).

Benchmark files come as the public releases ship them: a JSON array, a JSON object of ``id -> row`` (MathVista's
``testmini.json``), a JSON object with a ``questions`` array (CLEVR / SuperCLEVR), JSONL, or Parquet (Hugging Face
exports of MathVista / MMMU). A malformed benchmark file is a one-line :class:`~mmrl.config.ConfigError` naming the file
and the line or row. Prediction files are JSONL and read leniently: a line that is not a JSON object, or has no id, is
counted and skipped, never an error.

Example:
    >>> rows = load_records(Path("assets/benchmarks/mathvista/testmini.json"), id_key="pid")
    >>> rows[0]["pid"], rows[0]["question_type"]
    ('1', 'multi_choice')
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmrl.config import ConfigError

JSONL_SUFFIXES = (".jsonl", ".ndjson")
PARQUET_SUFFIXES = (".parquet", ".pq")
ID_KEY = "id"  # the id key every prediction row may use; a benchmark may accept its own id keys too
TEXT_KEYS = ("prediction", "response", "output", "text")  # where a prediction row holds the model's text, in order


def norm_id(value: Any) -> str | None:
    """An item id as a string (``7``, ``7.0`` and ``"7"`` are the same id); ``None`` for anything unusable."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, float):
        return str(int(value)) if math.isfinite(value) and value == int(value) else None
    if isinstance(value, (int, str)):
        text = str(value).strip()
        return text or None
    return None


def _json(path: Path, text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:  # JSONDecodeError, an int over 4300 digits, deep nesting
        raise ConfigError(f"{path}{where}: invalid JSON: {e}") from None


def load_json(path: Path) -> Any:
    """One JSON file's value; a missing file or invalid JSON is a ``ConfigError`` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"benchmark data file not found: {path}")
    return _json(path, path.read_text(encoding="utf-8"), "")


def _parquet_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a Parquet file without its image columns (a binary column, or a struct with a ``bytes`` field)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
        keep = [
            f.name
            for f in schema
            if not (pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type))
            and not (pa.types.is_struct(f.type) and f.type.get_field_index("bytes") >= 0)
        ]
        return pq.read_table(path, columns=keep).to_pylist()
    except Exception as e:  # pyarrow raises several types for unreadable files
        raise ConfigError(f"{path}: cannot read Parquet: {str(e).splitlines()[0]}") from None


def load_records(path: Path, id_key: str | None = None) -> list[dict[str, Any]]:
    """The rows of a benchmark file (JSON / JSONL / Parquet, see the module docstring), each a dict.

    A JSON object of objects (``{"1": {...}, "2": {...}}``) gives its values; when ``id_key`` is given, a row without
    it takes its key from the object. Anything that is not a dict row is a ``ConfigError`` naming the row.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"benchmark data file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        rows: list[Any] = _parquet_rows(path)
    elif suffix in JSONL_SUFFIXES:
        rows = []
        with path.open(encoding="utf-8") as lines:
            for lineno, line in enumerate(lines, start=1):
                if line.strip():
                    rows.append(_json(path, line, f", line {lineno}"))
    elif suffix == ".json":
        data = load_json(path)
        if isinstance(data, dict) and isinstance(data.get("questions"), list):  # CLEVR / SuperCLEVR
            rows = data["questions"]
        elif isinstance(data, dict) and data and all(isinstance(v, dict) for v in data.values()):  # MathVista
            rows = [({id_key: key} | row) if id_key and id_key not in row else row for key, row in data.items()]
        elif isinstance(data, list):
            rows = data
        else:
            raise ConfigError(f"{path}: expected a JSON array of rows or an object of id -> row")
    else:
        known = ", ".join((".json",) + JSONL_SUFFIXES + PARQUET_SUFFIXES)
        raise ConfigError(f"{path}: unknown data format '{suffix}' (use {known})")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ConfigError(f"{path}, row {i}: expected a JSON object, got {type(row).__name__}")
    return rows


@dataclass
class Predictions:
    """One prediction file, keyed by item id (the first row of a repeated id is the one scored)."""

    rows: dict[str, dict[str, Any]] = field(default_factory=dict)  # item id -> its prediction row
    duplicates: int = 0  # rows whose id was already seen (ignored)
    bad_rows: int = 0  # lines that are not a JSON object, or carry no usable id (ignored)


def read_predictions(path: Path, id_keys: Sequence[str] = ()) -> Predictions:
    """The rows of a JSONL prediction file keyed by their id: ``id``, else the first of ``id_keys`` present.

    Never raises on the content: bad lines are counted in ``bad_rows``, repeated ids in ``duplicates``. A missing file
    is a ``ConfigError``.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"predictions file not found: {path}")
    out = Predictions()
    keys = (ID_KEY, *id_keys)
    with path.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except (ValueError, RecursionError):
                out.bad_rows += 1
                continue
            key = next((k for k in keys if isinstance(row, dict) and row.get(k) is not None), None)
            item_id = norm_id(row[key]) if key is not None else None
            if item_id is None:
                out.bad_rows += 1
            elif item_id in out.rows:
                out.duplicates += 1
            else:
                out.rows[item_id] = row
    return out


def prediction_text(row: dict[str, Any]) -> str | None:
    """The model's text in a prediction row: the first of ``TEXT_KEYS`` present. A string is used as is; a number, list
    or object (a bare ``[x, y]`` point, a count) is written back as JSON text; ``None`` when there is none."""
    for key in TEXT_KEYS:
        value = row.get(key)
        if isinstance(value, str):
            return value
        if value is not None and not isinstance(value, bool):
            try:
                return json.dumps(value)
            except (TypeError, ValueError):
                return None
    return None
