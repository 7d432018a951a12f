"""Parquet data files read lazily: records streamed a batch at a time and, in a lazy file (below), image bytes left in
the file (an :class:`~envs.vqa.schemas.EmbeddedImage` ref per image) and read back a slice of rows at a time when a row
is visited (:class:`EmbeddedImages`). Used by :mod:`envs.vqa.dataset`; its docstring says what that costs.

A file is lazy unless it is one row group of at most ``EAGER_MAX_BYTES`` (uncompressed): such a small file is read
whole at load. Its size does not matter otherwise, nor do its row groups' sizes (``datasets`` writes groups of up to
100 MB): a visit reads the slice of about ``SLICE_BYTES`` around its row, never a whole group. At load, the image
bytes of a lazy file are not read at all when the row groups' statistics prove every image struct has bytes (null
count 0 in the ``bytes`` column, as ``datasets`` writes embedded images); otherwise they are streamed through to see
which structs have bytes and which give a path, and dropped.

Example:
    >>> for loc, record in parquet_records(Path("rows.parquet"), max_rows=2):  # doctest: +SKIP
    ...     print(loc, sorted(record))
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from envs.vqa import schemas
from envs.vqa.schemas import DatasetError, EmbeddedImage

logger = logging.getLogger(__name__)

PARQUET_BATCH_ROWS = 256  # Parquet rows turned into Python objects at a time: never the whole file's at once
EAGER_MAX_BYTES = 64 * 2**20  # a file of one row group up to this size (uncompressed) is read whole at load
SLICE_BYTES = 2 * 2**20  # a visit reads about this much (uncompressed) of its row group around its row
# pages are read through a buffer of this size; pyarrow's default (0) reads a whole column chunk at once: a row group
# of ``datasets``' ~100 MB then held ~3x that at its peak
READ_BUFFER_BYTES = 2**20
SLOW_GROUP_BYTES = 256 * 2**20  # a lazy file with a row group over this size is warned about (slow shuffled visits)

FileId = tuple[int, int, int, int]  # (st_dev, st_ino, st_size, st_mtime_ns): a rewritten file gets a new one


def file_id(path: Path) -> FileId:
    """The identity of the file at ``path`` now (see ``FileId``)."""
    st = path.stat()
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


@dataclass
class _Cursor:
    """One row group's image column being read in slices, in order (a later row of the same group reads on)."""

    column: str  # the top-level image column
    group: int  # the row group
    parquet: Any  # the open pyarrow ParquetFile
    slices: Iterator[Any]  # pyarrow RecordBatches of that column, a slice of rows each
    next_row: int  # file row of the next slice's first row


class EmbeddedImages:
    """Reads the image bytes a lazy Parquet file keeps (``EmbeddedImage`` refs) a slice of rows at a time: the last
    slice is kept (shared by the envs on the table, under a lock) and the reader stays open where it stopped, so
    visiting rows in file order reads the file once, and memory holds one slice of images, never a group or the file.
    A row before the open slice, or in another group, starts reading its group again from the group's start: the
    group's earlier pages are decoded and dropped (~35 ms per 100 MiB decoded on a 2-core CPU)."""

    def __init__(self, path: Path, file_id: FileId) -> None:
        self.path = path  # resolved
        self.file_id = file_id  # the file's identity at load: the refs are only valid for it
        self._lock = threading.Lock()
        self._group_start: np.ndarray | None = None  # [num_groups + 1] int64: group g holds rows [start[g], start[g+1])
        self._slice_rows: list[int] = []  # rows per slice of each group: about SLICE_BYTES of it
        self._cursor: _Cursor | None = None  # where reading stopped
        self._cached: tuple[str, int, Any] | None = None  # (column, first row, that column's slice: an Arrow array)

    def read(self, ref: EmbeddedImage) -> bytes:
        """The encoded bytes of ``ref``; a file changed since the load raises OSError (the row is then skipped)."""
        with self._lock:
            if file_id(self.path) != self.file_id:
                raise OSError("the data file changed since it was loaded; build the env again to re-read it")
            cached = self._cached
            if cached is None or cached[0] != ref.column or not 0 <= ref.row - cached[1] < len(cached[2]):
                self._cached = None  # drop the old slice before reading the new one
                self._cached = self._read_slice(ref.column, ref.row)
            _, first, values = self._cached
            value = values.slice(ref.row - first, 1).to_pylist()[0]  # this row only
        entry = value if ref.item is None else value[ref.item]
        if not entry["bytes"]:  # the load took them on the statistics' word (module docstring): found empty now
            raise OSError("the embedded image bytes are empty")
        return bytes(entry["bytes"])

    def _read_slice(self, column: str, row: int) -> tuple[str, int, Any]:
        """``(column, first row, values)``: the slice of ``column`` holding file row ``row``."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._group_start is None:
            meta = pq.read_metadata(self.path)
            groups = [meta.row_group(g) for g in range(meta.num_row_groups)]
            self._group_start = np.cumsum([0, *(g.num_rows for g in groups)], dtype=np.int64)  # [num_groups + 1]
            self._slice_rows = [max(1, g.num_rows * SLICE_BYTES // max(g.total_byte_size, 1)) for g in groups]
        group = int(np.searchsorted(self._group_start, row, side="right")) - 1
        cursor = self._cursor
        if cursor is None or (cursor.column, cursor.group) != (column, group) or cursor.next_row > row:
            self.close()
            parquet = pq.ParquetFile(self.path, pre_buffer=False, buffer_size=READ_BUFFER_BYTES)
            slices = parquet.iter_batches(batch_size=self._slice_rows[group], row_groups=[group], columns=[column],
                                          use_threads=False)  # fmt: skip
            cursor = self._cursor = _Cursor(column, group, parquet, slices, int(self._group_start[group]))
        try:
            while True:  # the slices before the row's are decoded and dropped: pyarrow reads a group's pages in order
                values = next(cursor.slices).column(0)  # rows [cursor.next_row, cursor.next_row + len(values))
                first, cursor.next_row = cursor.next_row, cursor.next_row + len(values)
                if row < cursor.next_row:
                    pa.default_memory_pool().release_unused()  # the dropped slices' pages: RSS no slice holds
                    return column, first, values
        except Exception:  # a corrupt page, a file cut short (StopIteration): the next read starts afresh
            self.close()
            raise

    def close(self) -> None:
        """Close the open reader (the next read opens the file again)."""
        if self._cursor is not None:
            self._cursor.parquet.close()
            self._cursor = None


def parquet_records(path: Path, max_rows: int | None) -> Iterator[tuple[str, Any]]:
    """``(loc, record)`` pairs of a Parquet file, turned into Python objects ``PARQUET_BATCH_ROWS`` rows at a time;
    in a lazy file (module docstring) an image struct's bytes become an :class:`EmbeddedImage` ref."""
    import pyarrow
    import pyarrow.parquet as pq

    index = 0
    try:  # pre_buffer reads every column chunk of the file at once
        parquet = pq.ParquetFile(path, pre_buffer=False, buffer_size=READ_BUFFER_BYTES)
    except Exception as e:  # pyarrow raises several types for unreadable files
        raise DatasetError(f"{path}: cannot read Parquet: {str(e).splitlines()[0]}") from None
    try:
        with parquet:
            meta = parquet.metadata
            sizes = [meta.row_group(g).total_byte_size for g in range(meta.num_row_groups)]
            lazy = len(sizes) > 1 or sum(sizes) > EAGER_MAX_BYTES
            if lazy and max(sizes) > SLOW_GROUP_BYTES:
                logger.warning("%s: row groups of up to %d MiB: a visit out of file order decodes its group up to its "
                               "row (~35 ms per 100 MiB); rewrite it with smaller row groups (e.g. datasets' to_parquet)",
                               path, max(sizes) // 2**20)  # fmt: skip
            image_columns = [f.name for f in parquet.schema_arrow if lazy and schemas.is_image_struct(f.type)]
            columns, unread = _columns_to_read(parquet, image_columns)
            batches = parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=columns)
            while max_rows is None or index < max_rows:
                try:
                    batch = next(batches, None)
                except Exception as e:  # a corrupt page surfaces while reading
                    raise DatasetError(f"{path}: cannot read Parquet: {str(e).splitlines()[0]}") from None
                if batch is None:
                    return
                if max_rows is not None:
                    batch = batch.slice(0, max_rows - index)
                refs = {name: embedded_refs(batch.column(name), name, index, name in unread) for name in image_columns}
                for i, record in enumerate(batch.drop_columns(image_columns).to_pylist()):
                    yield f"row {index}", {**record, **{name: column[i] for name, column in refs.items()}}
                    index += 1
    finally:  # Arrow's allocator keeps the freed read buffers (~4x the file) for reuse; the rows are Python objects now
        pyarrow.default_memory_pool().release_unused()


def _columns_to_read(parquet: Any, image_columns: list[str]) -> tuple[list[str] | None, set[str]]:
    """The leaf columns to read (None: all) and the image columns whose ``bytes`` leaf is left out: those where every
    row group's statistics count no null in it (a null struct, an empty or null list, a path-only image count as
    nulls there) and that have another leaf (``path``) to give the rows' image counts."""
    meta, schema = parquet.metadata, parquet.schema
    leaves = [schema.column(i).path for i in range(len(schema))]  # "images.list.element.bytes", "answer", ...
    unread = set()
    for name in image_columns:
        own = [i for i, leaf in enumerate(leaves) if leaf.startswith(f"{name}.")]
        data = [i for i in own if leaves[i].rsplit(".", 1)[1] == "bytes"]
        stats = [meta.row_group(g).column(data[0]).statistics for g in range(meta.num_row_groups)] if data else []
        if (
            len(data) == 1
            and len(own) > 1
            and all(s is not None and s.has_null_count and s.null_count == 0 for s in stats)
        ):
            unread.add(name)
            leaves[data[0]] = ""
    return ([leaf for leaf in leaves if leaf] if unread else None), unread


def embedded_refs(column: Any, name: str, first_row: int, unread: bool = False) -> list[Any]:
    """One batch's image column as Python values with every non-empty ``bytes`` replaced by its EmbeddedImage ref
    (the bytes themselves never become Python objects): ``{"bytes": ref | None, "path": ...}`` or a list of them.
    ``unread``: the column was read without its ``bytes`` (the statistics prove every struct has them): each is a ref.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    is_list = not pa.types.is_struct(column.type)
    structs = column.flatten() if is_list else column  # [entries]: every image of the batch, row after row
    valid = structs.is_valid().to_pylist()
    has = (
        valid
        if unread
        else pc.fill_null(pc.greater(pc.binary_length(pc.struct_field(structs, "bytes")), 0), False).to_pylist()
    )
    paths = pc.struct_field(structs, "path").to_pylist() if structs.type.get_field_index("path") >= 0 else None

    def entry(k: int, row: int, item: int | None) -> dict[str, Any] | None:
        ref = EmbeddedImage(row, name, item) if has[k] else None
        return {"bytes": ref, "path": paths[k] if paths else None} if valid[k] else None

    if not is_list:
        return [entry(i, first_row + i, None) for i in range(len(column))]
    out, k = [], 0
    for i, length in enumerate(column.value_lengths().to_pylist()):  # None: a null list
        out.append(None if length is None else [entry(k + j, first_row + i, j) for j in range(length)])
        k += length or 0
    return out
