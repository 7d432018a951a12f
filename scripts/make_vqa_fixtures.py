"""Write the tiny VQA fixtures in ``assets/vqa/``: a few 56x56 shape PNGs and the same rows as JSONL and Parquet.

The rows exercise the schema of :mod:`envs.vqa.dataset`: canonical ``prompt/images/answer``, the aliases
``problem``/``question``, ``image`` and ``solution``, a multi-image row, a text-only row, ``answer_choices`` and extra
columns (``data_source``, ``image_size``). Output is deterministic; everything stays well under 50 kB.

Usage:
    python scripts/make_vqa_fixtures.py [--out assets/vqa]
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from envs.vqa.render import PALETTE, Shape, draw_scene

logger = logging.getLogger("make_vqa_fixtures")

SIZE = 56


def _shape(kind: str, color: str, x0: int, y0: int, side: int) -> Shape:
    return Shape(kind, color, PALETTE[color], (x0, y0, x0 + side - 1, y0 + side - 1))


# file name -> shapes (fixed layouts, so the fixtures never change when the env's sampler does)
IMAGES: dict[str, list[Shape]] = {
    "count_3.png": [
        _shape("circle", "red", 4, 6, 14),
        _shape("square", "blue", 32, 4, 12),
        _shape("triangle", "green", 18, 34, 16),
    ],
    "count_1.png": [_shape("square", "yellow", 20, 20, 16)],
    "color_square.png": [_shape("square", "red", 6, 30, 14), _shape("circle", "blue", 34, 8, 14)],
    "position.png": [_shape("circle", "green", 4, 20, 14), _shape("square", "purple", 36, 22, 13)],
}

ROWS: list[dict[str, Any]] = [
    {
        "prompt": "How many shapes are there?",
        "images": ["images/count_3.png"],
        "answer": "3",
        "data_source": "shapes",
        "image_size": [SIZE, SIZE],
    },
    {
        "problem": "What colour is the square?",
        "image": "images/color_square.png",
        "answer": "red",
        "data_source": "shapes",
    },
    {
        "question": "Is the circle left or right of the square?",
        "images": ["images/position.png"],
        "solution": "<answer> left </answer>",
        "data_source": "shapes",
    },
    {
        "prompt": "How many shapes are in the two images together?",
        "images": ["images/count_3.png", "images/count_1.png"],
        "answer": "4",
        "data_source": "shapes",
    },
    {"prompt": "What is two plus two?", "answer": "4", "data_source": "text"},
    {
        "prompt": "What colour is the circle?",
        "images": ["images/color_square.png"],
        "answer": "blue",
        "answer_choices": ["red", "green", "blue", "yellow"],
        "data_source": "shapes",
    },
]


def write_fixtures(out: Path) -> list[Path]:
    """Write the PNGs, ``sample.jsonl`` and ``sample.parquet`` under ``out``; return the written paths."""
    (out / "images").mkdir(parents=True, exist_ok=True)
    written = []
    for name, shapes in IMAGES.items():
        path = out / "images" / name
        Image.fromarray(draw_scene(shapes, SIZE, SIZE)).save(path, optimize=True)
        written.append(path)
    jsonl = out / "sample.jsonl"
    jsonl.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    keys = list(dict.fromkeys(k for row in ROWS for k in row))  # union of columns; a missing value is null
    parquet = out / "sample.parquet"
    pq.write_table(pa.table({k: [row.get(k) for row in ROWS] for k in keys}), parquet)
    written += [jsonl, parquet]
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "assets" / "vqa")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    paths = write_fixtures(args.out)
    for path in paths:
        logger.info("wrote %s (%d bytes)", path, path.stat().st_size)
    logger.info("total %d bytes", sum(p.stat().st_size for p in paths))


if __name__ == "__main__":
    main()
