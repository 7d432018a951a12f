"""Parquet data files read lazily: records streamed a batch at a time, and, in a file of several small row groups, image
bytes left in the file (an :class:`~envs.vqa.schemas.EmbeddedImage` ref per image) and read back one row group at a
time when a row is visited (:class:`EmbeddedImages`). Used by :mod:`envs.vqa.dataset`; its docstring says when a file
is lazy and what that costs.

Example:
    >>> for loc, record in parquet_records(Path("rows.parquet"), max_rows=2):  # doctest: +SKIP
    ...     print(loc, sorted(record))
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from envs.vqa import schemas
from envs.vqa.schemas import DatasetError, EmbeddedImage

PARQUET_BATCH_ROWS = 256  # Parquet rows turned into Python objects at a time: never the whole file's at once
LAZY_MAX_GROUP_BYTES = 64 * 2**20  # row groups up to this size (uncompressed) leave their images in the file

FileId = tuple[int, int, int, int]  # (st_dev, st_ino, st_size, st_mtime_ns): a rewritten file gets a new one


def file_id(path: Path) -> FileId:
    """The identity of the file at ``path`` now (see ``FileId``)."""
    st = path.stat()
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


class EmbeddedImages:
    """Reads the image bytes a lazy Parquet file keeps (``EmbeddedImage`` refs), one row group at a time: the last
    group's column is kept (shared by the envs on the table, under a lock), so visiting rows in order reads each
    group once and memory holds one group's images, never the file's."""

    def __init__(self, path: Path, file_id: FileId) -> None:
        self.path = path  # resolved
        self.file_id = file_id  # the file's identity at load: the refs are only valid for it
        self._lock = threading.Lock()
        self._group_start: np.ndarray | None = None  # [num_groups + 1] int64: group g holds rows [start[g], start[g+1])
        self._cached: tuple[int, str, Any] | None = None  # (group, column, that column of the group: an Arrow array)

    def read(self, ref: EmbeddedImage) -> bytes:
        """The encoded bytes of ``ref``; a file changed since the load raises OSError (the row is then skipped)."""
        import pyarrow.parquet as pq

        with self._lock:
            if file_id(self.path) != self.file_id:
                raise OSError("the data file changed since it was loaded; build the env again to re-read it")
            if self._group_start is None:
                meta = pq.read_metadata(self.path)
                sizes = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
                self._group_start = np.cumsum([0, *sizes], dtype=np.int64)  # [num_groups + 1]
            group = int(np.searchsorted(self._group_start, ref.row, side="right")) - 1
            if self._cached is None or self._cached[:2] != (group, ref.column):
                self._cached = None  # drop the old group before reading the new one
                with pq.ParquetFile(self.path) as parquet:
                    column = parquet.read_row_group(group, columns=[ref.column]).column(0)
                self._cached = (group, ref.column, column)
            value = self._cached[2].slice(ref.row - int(self._group_start[group]), 1).to_pylist()[0]  # this row only
        entry = value if ref.item is None else value[ref.item]
        return bytes(entry["bytes"])


def parquet_records(path: Path, max_rows: int | None) -> Iterator[tuple[str, Any]]:
    """``(loc, record)`` pairs of a Parquet file, turned into Python objects ``PARQUET_BATCH_ROWS`` rows at a time;
    in a lazy file (module docstring) an image struct's bytes become an :class:`EmbeddedImage` ref."""
    import pyarrow
    import pyarrow.parquet as pq

    index = 0
    try:
        parquet = pq.ParquetFile(path, pre_buffer=False)  # pre_buffer reads every column chunk of the file at once
    except Exception as e:  # pyarrow raises several types for unreadable files
        raise DatasetError(f"{path}: cannot read Parquet: {str(e).splitlines()[0]}") from None
    try:
        with parquet:
            meta = parquet.metadata
            groups = [meta.row_group(g).total_byte_size for g in range(meta.num_row_groups)]
            lazy = len(groups) > 1 and max(groups) <= LAZY_MAX_GROUP_BYTES
            image_columns = [f.name for f in parquet.schema_arrow if lazy and schemas.is_image_struct(f.type)]
            batches = parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS)
            while max_rows is None or index < max_rows:
                try:
                    batch = next(batches, None)
                except Exception as e:  # a corrupt page surfaces while reading
                    raise DatasetError(f"{path}: cannot read Parquet: {str(e).splitlines()[0]}") from None
                if batch is None:
                    return
                if max_rows is not None:
                    batch = batch.slice(0, max_rows - index)
                refs = {name: schemas.embedded_refs(batch.column(name), name, index) for name in image_columns}
                for i, record in enumerate(batch.drop_columns(image_columns).to_pylist()):
                    yield f"row {index}", {**record, **{name: column[i] for name, column in refs.items()}}
                    index += 1
    finally:  # Arrow's allocator keeps the freed read buffers (~4x the file) for reuse; the rows are Python objects now
        pyarrow.default_memory_pool().release_unused()
