"""VQA rows from a JSONL, JSON or Parquet file in the schemas users have them: mmrl's own, EasyR1, R1-V, verl, TRL,
LLaMA-Factory / ShareGPT (no conversion).

Schemas: each row is normalised by one function of :mod:`envs.vqa.schemas` (which documents them), chosen from the
file's first row (``schema: auto``, logged as ``dataset <file>: schema <name>``) or forced (``schema: verl``). Column
names can be changed with ``prompt_key``, ``answer_key`` and ``image_key`` (as in EasyR1). mmrl's own, ``flat``:

- ``prompt`` (str, not blank), aliases ``problem``, ``question``: the question text; ``prompt_suffix`` (the format
  instruction) is appended to it. At most ``max_prompt_chars`` characters (see "Bad data").
- ``images`` (list), alias ``image`` (one entry): each entry a path, relative to the data file's directory (see "Image
  paths"), or a Hugging Face ``datasets`` image struct ``{"bytes": ..., "path": ...}`` (embedded bytes win; ``bytes``
  must be binary: a base64 string is refused, not decoded). May be absent (text-only row). Images are decoded lazily,
  at ``reset``, as RGB uint8 ``[H, W, 3]`` (any mode PIL converts: P, RGBA, L, 1, I;16, CMYK, ...).
- ``answer`` (str, int or finite float; not blank), alias ``solution``: the ground truth. A ``solution`` that wraps its
  answer in ``<answer>...</answer>`` (R1-V style) contributes only the wrapped text. A boolean is refused (``True``
  would be compared as the text "True": write "yes"/"no" for the data's own convention).
- ``videos`` (list), alias ``video`` (one entry): video files or embedded bytes, as images (same paths rule), placed by
  ``<video>`` marks; decoded at ``reset`` with PyAV (OpenCV as fallback), sampled at ``video_fps`` up to
  ``video_max_frames`` frames (:mod:`envs.vqa.video`). The observation then has ``videos`` (frames ``[T, H, W, 3]``)
  and ``video_fps`` (their sampled rate); a file without videos keeps the image-only observation. A video that does
  not decode skips its row like an image.
- ``answer_choices`` (optional list): the finite answer vocabulary, returned in ``info["answer_choices"]``.
- any other column (``data_source``, ``image_size``, ...): passed to the reward functions as a column of the same name
  and returned in ``info`` under its name (at reset and step). The names ``success``, ``reward_parts``,
  ``parsed_answer``, ``row_index``, ``augment``, ``reward_columns``, ``bad_rows``, ``skipped`` and ``truncated_rows``
  are the env's own info keys and are refused.

When a row has a field under several names (``prompt`` and ``question``), the first name listed above wins; the others
are passed to the reward functions only. A null value counts as absent (Parquet fills a row's missing columns with
nulls, so the same rows load identically from JSONL and Parquet).

Where images stand: a question with ``<image>`` placeholders (or a chat row's image parts) keeps one ``<image>`` where
each image stands, in ``obs["text"]``, and the VLM's prompt codec puts each image there; a question without any shows
its images first (Qwen's order). Placeholders that are not as many as the row's images are a one-line error (below).

Image paths: a path is resolved (symlinks followed) relative to the data file's directory; one that leads out of that
directory (``..``, an absolute path elsewhere, a symlink pointing out) is a one-line :class:`DatasetError` unless
``allow_outside_root: true``.

Bad data, at load: what can be checked without decoding an image is checked when the env is built, so a bad file
fails before training starts. A missing, blank or over-long prompt; a missing or blank answer, a NaN or infinite one,
one of another type; ``images`` not a list, an image file that does not exist or lies outside the data directory,
embedded image bytes given as a string or a number; placeholders that do not match the images; a row that is not an
object; a line that is not JSON: each is a one-line :class:`DatasetError` naming the file, the line (JSONL, 1-based) or
row (Parquet or JSON array, 0-based) and the field. A prompt longer than ``max_prompt_chars`` (null or 0: no limit) is
that error with ``long_prompts: error``; with ``truncate`` it keeps its first ``max_prompt_chars`` characters (and its
images go first when the cut left fewer placeholders than images) and is counted in ``truncated_rows`` (an env
attribute and a reset info key). The default, 20000, is far above real VQA prompts (tens to hundreds of characters)
and far below what a rollout cannot hold (a 1 MB prompt made the first rollout ask for 1.1 TB).

Bad data, at reset: what only decoding finds (corrupt or truncated bytes, an unreadable or since-deleted file, a format
PIL cannot read) does not stop a run. ``reset()`` skips that row and shows the row at the next position of the order,
logs a warning naming the file, the line/row and the reason (at the row's first skip; at debug level on later passes),
and reports it in the reset info: ``info["bad_rows"]`` is the number of distinct rows this env has skipped so far,
``info["skipped"]`` the ``"<file>, line N: <reason>"`` (``row N`` for Parquet) of each row skipped during this reset
(``[]`` when none). A mixup or distractor image that does not decode is replaced by the next image in the other rows'
numbering (one random draw whatever fails, so a seed still gives the same augmentation) and its row is reported the
same way. A reset that finds no row (or no other image) that decodes is a one-line :class:`DatasetError`, as is
``reset(options={"index": i})`` on a row that does not decode: the caller named that row (nothing is skipped or
counted). ``bad_rows``, ``skipped`` and ``truncated_rows`` are in every reset's info and in no step's.

Order: ``reset()`` visits rows in file order, or with ``shuffle`` in a permutation seeded by ``seed`` (a fresh one each
pass). ``reset(seed=s)`` jumps to position ``s`` of that order (so a seed names a question, as in the synthetic env; if
that row is bad, the next good position's row is shown, so two seeds can show one row) and later ``reset()`` calls
continue from there; ``reset(options={"index": i})`` shows row ``i`` of the file without moving the position.

Augmentation (``augment``, see :mod:`envs.transforms`): the other image of a mixup or distractor is an image of another
row (uniform over the other rows' images), decoded afresh; with ``image_size`` set it has that size, so the observation
space admits exactly the sizes a distractor makes. The env cannot tell which augmentations keep a row's answer: choose
them for the data (a rotation crops the corners and can swap left and right; mixup and distractor put a note before the
question saying which picture it is about). Their randomness comes from the env's generator: ``seed`` seeds it at
construction and ``reset(seed=s)`` reseeds it, so the same seed shows the same row augmented the same way.

Sharing: a data file is parsed once per process. ``_TABLES`` (a module-level dict guarded by ``_TABLES_LOCK``) holds
one immutable table of validated rows per resolved path and :class:`_Options` (``max_rows``, ``max_prompt_chars``,
``long_prompts``, ``schema``, the column names, ``allow_outside_root``: the options that change the rows or which rows
are refused; the ``prompt_suffix`` is added at reset, ``image_size`` when decoding); every env built on that file with
those options shares it, so the memory of N envs over one file is that of one. The table is re-read when the file's
identity (device, inode, size, mtime in ns) changes, and lives until then or until the process ends. Rows are never
mutated: the env copies what it hands out of a row (columns, info, answer choices). Worker processes each parse and
hold their own copy. A table once loaded is not re-validated: an image file deleted afterwards is found at reset (and
the row skipped).

Lazy Parquet images: in a Parquet file of several row groups, or of one over ``envs.vqa.parquet.EAGER_MAX_BYTES``,
embedded image bytes stay in the file: the load reads the other columns (and reads the bytes through only when the row
groups' statistics do not show that every image struct has them), and ``reset`` reads the slice of about
``envs.vqa.parquet.SLICE_BYTES`` of rows around the row it shows (the table keeps the last slice read and where its
reader stopped, shared by its envs), so memory does not grow with the file or its row groups (``datasets`` writes
groups of up to 100 MB). Visiting rows in file order reads the file once; a row out of order decodes its group up to
it (~35 ms per 100 MiB: a trainer's random prompt seeds pay that once per prompt, its group shares the slice). A file
of one small row group is read whole at load. Once a lazy file is rewritten, its old rows no longer decode (skipped
at reset) until an env is built on it again; an embedded ``bytes`` that is empty (not null) is then found at reset
(row skipped) instead of falling back to its ``path``.

Example:
    >>> env = DatasetVQAEnv(path="assets/vqa/sample.jsonl", rewards={"accuracy": 1.0})
    >>> obs, info = env.reset(options={"index": 0})
    >>> env.num_rows, obs["images"][0].dtype
    (6, dtype('uint8'))
"""

from __future__ import annotations

import copy
import io
import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from PIL import Image, UnidentifiedImageError

from envs.transforms import AugmentContext
from envs.vqa import schemas
from envs.vqa.base import Episode, VQAEnv, image_hw, reference_solution
from envs.vqa.parquet import EmbeddedImages, FileId, file_id, parquet_records
from envs.vqa.schemas import IMAGE_MARKER, SCHEMAS, DatasetError, EmbeddedImage, Keys, detect
from envs.vqa.video import decode_video, video_spaces
from mmrl.config import ConfigError, from_dict

logger = logging.getLogger(__name__)

RESERVED_INFO: frozenset[str] = frozenset(
    {"success", "reward_parts", "reward_columns", "parsed_answer", "row_index", "augment"}  # step and reset
    | {"bad_rows", "skipped", "truncated_rows"}  # reset only: bad data met (see the module docstring)
)
_JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
_PARQUET_SUFFIXES = (".parquet", ".pq")
LONG_PROMPTS = ("error", "truncate")  # what a prompt over max_prompt_chars does (see the module docstring)
SCHEMA_NAMES = ("auto", *SCHEMAS)  # the schema option: detected from the first row, or forced

__all__ = ["DatasetError", "DatasetVQAConfig", "DatasetVQAEnv"]


@dataclass
class DatasetVQAConfig:
    path: str = ""  # JSONL (.jsonl/.ndjson/.json) or Parquet (.parquet) file of rows in one of the schemas
    schema: str = "auto"  # auto | flat | verl | trl | sharegpt: the row schema (envs.vqa.schemas); auto detects it
    prompt_key: str | None = None  # column of the question (flat) or chat messages (others); None: the schema's names
    answer_key: str | None = None  # column of the ground truth ("a.b" reads into a struct); None: the schema's names
    image_key: str | None = None  # column of the images (a list or one entry); None: images, then image
    allow_outside_root: bool = False  # accept image paths that lead out of the data file's directory
    shuffle: bool = False  # visit rows in a seeded permutation (a fresh one each pass) instead of file order
    seed: int = 0  # seed of the shuffle permutation and of the env's generator (augmentations) at construction
    rewards: dict[str, float] = field(default_factory=lambda: {"accuracy": 1.0})  # reward name -> weight (rewards.get)
    prompt_suffix: str = " Answer with <answer>...</answer>."  # format instruction appended to every prompt ("" = none)
    max_rows: int | None = None  # keep only the first max_rows rows of the file (None = all)
    max_prompt_chars: int | None = 20000  # longest prompt in characters (null/0: no limit); ~100x a VQA question
    long_prompts: str = "error"  # error | truncate: a prompt over max_prompt_chars fails the load, or keeps its start
    image_size: int | list[int] | None = None  # resize images to this side or [height, width]; None keeps native sizes
    video_fps: float | None = 2.0  # videos are sampled at this rate (None: every frame); obs["video_fps"]: the rate got
    video_max_frames: int = 16  # at most this many frames per video (evenly over the clip)
    max_action_length: int = 1024  # action_space max length in characters (longer text is still accepted by step)
    require_tags: bool = True  # answers count only inside <answer></answer> (the prompt asks for them); a reward column
    render_mode: str | None = "rgb_array"  # rgb_array (render() returns the current first image) | null
    augment: list[dict[str, Any]] = field(default_factory=list)  # [{name, p, ...}] applied at reset, in order
    defer_rewards: bool = False  # step() returns reward 0 and the reward inputs in info["reward_columns"] (a trainer scores whole batches)


ImageRef = str | bytes | EmbeddedImage  # a resolved path, embedded bytes, or bytes left in the Parquet file


@dataclass(frozen=True, slots=True)
class _Row:
    """One validated row, shared by every env on its file (see the module docstring): never mutated."""

    loc: str  # "line N" (JSONL, 1-based) or "row N" (Parquet or JSON array, 0-based), for error messages
    prompt: str  # the question, without the prompt suffix (an env option, added at reset); IMAGE_MARKERs placed
    images: tuple[ImageRef, ...]  # resolved file paths, embedded encoded bytes, or where those bytes lie in the file
    videos: tuple[ImageRef, ...]  # the same for videos (VIDEO_MARKERs placed in prompt)
    answer: str
    choices: tuple[str, ...] | None
    columns: dict[str, Any]  # extra reward-function columns (extras + shadowed aliases); copied at reset
    info: dict[str, Any]  # extra info keys (extras only); copied before it is handed out


@dataclass(frozen=True)
class _Options:
    """The options that change a file's rows or which rows are refused: with the path, a table's cache key."""

    max_rows: int | None  # first rows kept (None: all)
    max_prompt_chars: int | None  # longest prompt (None: no limit; 0 is stored as None, so both share a table)
    truncate: bool  # long_prompts == "truncate"
    schema: str  # SCHEMA_NAMES
    keys: Keys  # prompt_key, answer_key, image_key
    allow_outside_root: bool  # image paths may lead out of the data file's directory


@dataclass(frozen=True)
class _Table:
    """The validated rows of one data file and what every env derives from them, computed once (never mutated)."""

    rows: tuple[_Row, ...]
    image_start: np.ndarray  # [num_rows + 1] int64, read-only: row i owns image numbers image_start[i] to [i + 1] - 1
    # the longest prompt, then every other character of the prompts in strings no longer than it: the text space of
    # these strings is that of all the prompts (same charset, same max length), built in O(1) per env, not O(rows)
    prompt_samples: tuple[str, ...]
    truncated_rows: int  # prompts cut to max_prompt_chars (long_prompts: truncate)
    embedded: EmbeddedImages  # reads the image bytes a lazy Parquet file keeps
    has_videos: bool  # some row has a video: observations carry videos


_TableKey = tuple[str, _Options]  # (resolved path, options)
_TABLES: dict[_TableKey, tuple[FileId, _Table]] = {}  # the process-wide cache, one entry per file and options
_TABLES_LOCK = threading.Lock()  # held while parsing, so envs built in threads parse a file once


def _load_table(path: Path, options: _Options) -> _Table:
    """The validated rows of ``path`` under ``options``, from the cache while the file is unchanged.

    Raises the first bad row's :class:`DatasetError`; a failed parse is not cached (the next env re-reads the file).
    """
    resolved = path.resolve()
    key, identity = (str(resolved), options), file_id(resolved)
    with _TABLES_LOCK:
        cached = _TABLES.get(key)
        if cached is not None and cached[0] == identity:
            logger.debug("sharing the parsed rows of %s", path)
            return cached[1]
        _TABLES.pop(key, None)  # a changed file: drop the old rows before reading the new ones
        cut: list[str] | None = [] if options.truncate else None  # where prompts were truncated
        schema, rows = options.schema, []
        for loc, record in _read_records(path, options.max_rows):
            if schema == "auto":
                schema = detect(record, options.keys)
            if not rows:
                logger.info("dataset %s: schema %s", path, schema)
            rows.append(_parse_row(path, loc, record, resolved.parent, options, schema, cut))
        if not rows:
            raise DatasetError(f"{path}: no rows")
        image_start = np.cumsum([0] + [len(r.images) for r in rows], dtype=np.int64)  # [num_rows + 1]
        image_start.flags.writeable = False
        samples = _prompt_samples([r.prompt for r in rows])
        has_videos = any(r.videos for r in rows)
        embedded = EmbeddedImages(resolved, identity)
        table = _Table(tuple(rows), image_start, samples, len(cut or ()), embedded, has_videos)
        _TABLES[key] = (identity, table)
    logger.info("loaded %d VQA rows from %s", len(rows), path)
    if cut:
        logger.warning("%s: truncated %d prompt(s) to max_prompt_chars=%d characters (first at %s)", path, len(cut),
                       options.max_prompt_chars, cut[0])  # fmt: skip
    return table


def _prompt_samples(prompts: list[str]) -> tuple[str, ...]:
    """The longest prompt, then the other characters of ``prompts`` in strings no longer than it (see ``_Table``)."""
    longest = max(prompts, key=len)
    chars: set[str] = set()
    for prompt in prompts:
        chars.update(prompt)
    rest = "".join(sorted(chars - set(longest)))
    step = max(len(longest), 1)
    return (longest, *(rest[i : i + step] for i in range(0, len(rest), step)))


def _read_records(path: Path, max_rows: int | None) -> Iterator[tuple[str, Any]]:
    """``(loc, record)`` pairs from a JSONL/JSON-array or Parquet file, streamed; ``loc`` names the line or row."""
    suffix = path.suffix.lower()
    if suffix in _PARQUET_SUFFIXES:
        yield from parquet_records(path, max_rows)
        return
    if suffix not in _JSONL_SUFFIXES:
        known = ", ".join(_JSONL_SUFFIXES + _PARQUET_SUFFIXES)
        raise DatasetError(f"{path}: unknown data format '{suffix}' (use {known})")
    if suffix == ".json":
        text = path.read_text(encoding="utf-8")
        if text.lstrip().startswith("["):  # a JSON array of rows
            try:
                records = json.loads(text)
            except (ValueError, RecursionError) as e:  # JSONDecodeError, an int over 4300 digits, deep nesting
                raise DatasetError(f"{path}: invalid JSON: {e}") from None
            yield from ((f"row {i}", rec) for i, rec in enumerate(records[:max_rows]))
            return
    count = 0
    # a file iterates over \n, \r and \r\n line ends only; str.splitlines would also split a JSON string at U+2028
    with path.open(encoding="utf-8") as lines:
        for lineno, line in enumerate(lines, start=1):
            if max_rows is not None and count >= max_rows:
                return
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except (ValueError, RecursionError) as e:  # JSONDecodeError, an int over 4300 digits, deep nesting
                raise DatasetError(f"{path}, line {lineno}: invalid JSON: {e}") from None
            count += 1
            yield f"line {lineno}", record


def _image_ref(
    entry: Any, field_name: str, where: str, root: Path, allow_outside_root: bool, what: str = "image"
) -> ImageRef:
    """Check one image (or video: ``what``) entry (path or ``{"bytes", "path"}`` struct) and resolve a path against
    ``root`` (confined to it unless ``allow_outside_root``); embedded bytes, or their ref in a lazy Parquet file, win
    over the path."""
    if isinstance(entry, dict):
        data = entry.get("bytes")
        if isinstance(data, EmbeddedImage):
            return data
        if data not in (None, b"", "") and not isinstance(data, (bytes, bytearray, memoryview)):
            kind = type(data).__name__
            raise DatasetError(f"{where}: field '{field_name}.bytes' must be encoded {what} bytes (binary), got {kind}")
        if data:
            return bytes(data)
        entry = entry.get("path")
    if not isinstance(entry, str) or not entry:
        a_path = "an image path" if what == "image" else f"a {what} path"
        raise DatasetError(f"{where}: field '{field_name}' must be {a_path}, got {type(entry).__name__} {entry!r}")
    resolved = (root / entry).resolve()  # an absolute entry replaces root; symlinks are followed
    if not allow_outside_root and not resolved.is_relative_to(root):
        raise DatasetError(f"{where}: field '{field_name}': {what} path {entry!r} leads out of the data directory "
                           f"{root} (set allow_outside_root: true to allow it)")  # fmt: skip
    if not resolved.is_file():
        raise DatasetError(f"{where}: field '{field_name}': {what} file not found: {resolved}")
    return str(resolved)  # a str is a fraction of a Path's memory, and rows can number millions


def _parse_row(
    path: Path, loc: str, record: Any, root: Path, options: _Options, schema: str, cut: list[str] | None
) -> _Row:
    """Normalise one record with ``schema`` and validate it into a :class:`_Row`; raise a one-line DatasetError naming
    the file, ``loc`` and the field. ``root`` is the data file's resolved directory.

    A prompt over ``options.max_prompt_chars`` is an error, or with ``cut`` (a list) truncated to it and ``loc``
    appended to ``cut``. Nothing here decodes an image (that is reset's, which skips rows that fail).
    """
    where = f"{path}, {loc}"
    if not isinstance(record, dict):
        raise DatasetError(f"{where}: a row must be an object/mapping, got {type(record).__name__}")
    # null = absent (Parquet fills a row's missing columns with null)
    row = SCHEMAS[schema]({k: v for k, v in record.items() if v is not None}, options.keys, where)
    prompt, limit = row.prompt, options.max_prompt_chars
    if limit and len(prompt) > limit:
        if cut is None:
            raise DatasetError(f"{where}: field '{row.prompt_field}' has {len(prompt)} characters, more than "
                               f"max_prompt_chars={limit} (raise it, or set long_prompts: truncate)")  # fmt: skip
        prompt = prompt[:limit]
        for marker, entries in ((IMAGE_MARKER, row.images), (schemas.VIDEO_MARKER, row.videos)):
            if prompt.count(marker) != len(entries):  # the cut dropped placeholders: these go first
                prompt = prompt.replace(marker, "")
        cut.append(loc)
    refs = [_image_ref(e, n, where, root, options.allow_outside_root) for e, n in zip(row.images, row.image_fields)]
    videos = [_image_ref(e, n, where, root, options.allow_outside_root, "video")
              for e, n in zip(row.videos, row.video_fields)]  # fmt: skip

    choices = row.columns.pop("answer_choices", None)
    if choices is not None:
        if not isinstance(choices, (list, tuple)) or not all(isinstance(c, (str, int, float)) for c in choices):
            raise DatasetError(f"{where}: field 'answer_choices' must be a list of strings")
        choices = [str(c) for c in choices]
    clash = sorted(RESERVED_INFO & set(row.columns))
    if clash:
        raise DatasetError(f"{where}: column '{clash[0]}' clashes with an info key the env sets; rename it")
    columns = {**row.columns, **row.reward_only}
    if choices is not None:
        columns["answer_choices"] = choices
    choices = None if choices is None else tuple(choices)
    return _Row(loc, prompt, tuple(refs), tuple(videos), row.answer, choices, columns, row.columns)


class DatasetVQAEnv(VQAEnv):
    """Single-turn VQA over the rows of a JSONL or Parquet file. See the module docstring for the schema.

    Example:
        >>> env = DatasetVQAEnv(path="assets/vqa/sample.parquet", shuffle=True, seed=1)
        >>> obs, info = env.reset(seed=0)
        >>> obs, reward, terminated, truncated, info = env.step("<think>...</think><answer>3</answer>")
        >>> sorted(k for k in ("answer", "success", "reward_parts") if k in info)
        ['answer', 'reward_parts', 'success']
    """

    def __init__(self, config: DatasetVQAConfig | None = None, **kwargs: Any) -> None:
        if config is not None and kwargs:
            raise ConfigError("pass either a DatasetVQAConfig or keyword arguments, not both")
        self.config = config if config is not None else from_dict(DatasetVQAConfig, kwargs)
        cfg = self.config
        if not cfg.path:
            raise ConfigError("path: the data file (JSONL or Parquet) is required")
        if cfg.max_rows is not None and cfg.max_rows < 1:
            raise ConfigError(f"max_rows: must be >= 1 or null, got {cfg.max_rows}")
        limit = cfg.max_prompt_chars
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
            raise ConfigError(f"max_prompt_chars: must be an integer >= 0 or null (0, null: no limit), got {limit!r}")
        if cfg.long_prompts not in LONG_PROMPTS:
            raise ConfigError(f"long_prompts: must be one of {' | '.join(LONG_PROMPTS)}, got {cfg.long_prompts!r}")
        self.path = Path(cfg.path)
        if not self.path.is_file():
            raise DatasetError(f"{self.path}: data file not found")
        self.image_hw = image_hw(cfg.image_size) if cfg.image_size is not None else None
        if cfg.schema not in SCHEMA_NAMES:
            raise ConfigError(f"schema: must be one of {' | '.join(SCHEMA_NAMES)}, got {cfg.schema!r}")
        for name in ("prompt_key", "answer_key", "image_key"):
            value = getattr(cfg, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ConfigError(f"{name}: must be a column name or null (the schema's names), got {value!r}")
        keys = Keys(cfg.prompt_key, cfg.answer_key, cfg.image_key)
        truncate = cfg.long_prompts == "truncate"
        options = _Options(cfg.max_rows, limit or None, truncate, cfg.schema, keys, cfg.allow_outside_root)
        table = _load_table(self.path, options)
        self.rows = table.rows  # shared with every env on this file and these options: read-only
        self._embedded = table.embedded  # reads the images a lazy Parquet file keeps (shared, thread-safe)
        self.truncated_rows = table.truncated_rows  # prompts cut to max_prompt_chars at load (long_prompts: truncate)
        self.has_videos = table.has_videos  # observations carry "videos" and "video_fps" (some row has a video)
        if cfg.video_fps is not None and not cfg.video_fps > 0:
            raise ConfigError(f"video_fps: must be > 0 or null (every frame), got {cfg.video_fps!r}")
        if cfg.video_max_frames < 1:
            raise ConfigError(f"video_max_frames: must be >= 1, got {cfg.video_max_frames}")
        super().__init__(
            cfg.rewards, cfg.render_mode, cfg.max_action_length, cfg.require_tags, cfg.augment, cfg.defer_rewards
        )
        # images of all rows, row by row: row i owns image numbers _image_start[i] to _image_start[i + 1] - 1
        self._image_start = table.image_start  # [num_rows + 1], shared and read-only
        rows_with_images = int(np.count_nonzero(np.diff(self._image_start)))
        for i, aug in enumerate(self.augment):
            if aug.uses_other_image and rows_with_images < 2:
                raise ConfigError(
                    f"augment[{i}].name: {aug.name} needs images of other rows; {self.path} has images in "
                    f"{rows_with_images} row(s)"
                )
        self.observation_space = spaces.Dict(
            {
                "text": self._text_space([p + cfg.prompt_suffix for p in table.prompt_samples]),
                "images": spaces.Sequence(self._image_space(self.image_hw)),
                **(video_spaces(None) if self.has_videos else {}),
            }
        )
        self._np_random, self._np_random_seed = seeding.np_random(cfg.seed)
        self._position = 0  # next position in the (possibly shuffled) visiting order; grows past num_rows
        self._perm_epoch, self._perm = -1, np.arange(0)
        self._bad_rows: set[int] = set()  # file rows this env found undecodable (skipped): info["bad_rows"] is its size

    @property
    def num_rows(self) -> int:
        """Number of rows loaded (after ``max_rows``)."""
        return len(self.rows)

    def row_at(self, position: int) -> int:
        """File row index visited at ``position`` of the order (pass ``position // num_rows`` reshuffles)."""
        epoch, k = divmod(position, self.num_rows)
        if not self.config.shuffle:
            return k
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.config.seed, epoch]).permutation(self.num_rows)
            self._perm_epoch = epoch
        return int(self._perm[k])

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Show the next row whose images decode (``seed`` jumps to that position; ``options={"index": i}`` shows
        file row ``i`` or raises). ``info`` adds ``bad_rows``, ``skipped`` and ``truncated_rows`` (module docstring)."""
        super().reset(seed=seed)
        options = dict(options or {})
        index = options.pop("index", None)
        if options:
            raise ValueError(f"reset(options=...): unknown keys {sorted(options)} (known: index)")
        if seed is not None:
            self._position = int(seed)
        skipped: list[str] = []  # "<file>, <loc>: <reason>" of each row passed over in this reset
        if index is None:
            index, (images, videos) = self._next_good_row(skipped)
        elif not isinstance(index, (int, np.integer)) or not 0 <= index < self.num_rows:
            raise IndexError(f"reset(options={{'index': {index!r}}}): expected an integer in [0, {self.num_rows})")
        else:
            index = int(index)
            images, videos = self._decode_row(index)  # the caller named this row: a bad one is its error, not skipped
        row = self.rows[index]
        episode = Episode(
            text=row.prompt + self.config.prompt_suffix,
            images=images,
            answer=row.answer,
            answer_choices=None if row.choices is None else list(row.choices),
            solution=reference_solution(row.answer, f"The answer is {row.answer}."),
            # the row is shared with other envs: the rewards get a copy of its columns (they may keep or change it),
            # and info a new dict whose values _begin and step copy before handing them out
            columns=copy.deepcopy(row.columns),
            info={**row.info, "row_index": index},
        )
        obs, info = self._begin(episode, AugmentContext(draw_image=lambda: self._other_image(index, skipped)))
        # after _begin: an augmentation's other image may have skipped rows too. Reset-only keys (not in episode.info)
        info.update(bad_rows=len(self._bad_rows), skipped=skipped, truncated_rows=self.truncated_rows)
        if self.has_videos:
            fps = tuple(np.asarray(f, np.float64) for _, f in videos)  # 0-d: values of a Box
            obs.update(videos=tuple(v for v, _ in videos), video_fps=fps)
        return obs, info

    def step(self, action: str) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        """:meth:`VQAEnv.step`; with videos in the file, the terminal observation has none."""
        obs, reward, terminated, truncated, info = super().step(action)
        if self.has_videos:
            obs.update(videos=(), video_fps=())
        return obs, reward, terminated, truncated, info

    def _next_good_row(self, skipped: list[str]) -> tuple[int, tuple[list[np.ndarray], list[tuple[np.ndarray, float]]]]:
        """The file row at the next position of the order whose images and videos all decode, and them; each row passed
        over is reported (see :meth:`_skip`). Every row failing is a one-line DatasetError, not an endless loop."""
        failed: set[int] = set()  # rows failed in this call: a shuffled order may cross a pass and repeat some
        while True:
            index = self.row_at(self._position)
            self._position += 1
            try:
                return index, self._decode_row(index)
            except DatasetError as e:
                self._skip(index, str(e), skipped)
                failed.add(index)
                if len(failed) == self.num_rows:
                    raise DatasetError(f"{self.path}: none of its {self.num_rows} rows has images that decode "
                                       f"(the last: {self.rows[index].loc}: {_reason(e)})") from None  # fmt: skip

    def _skip(self, index: int, where: str, skipped: list[str]) -> None:
        """Report file row ``index`` as undecodable (``where``: its one-line DatasetError): counted once per env in
        ``bad_rows``, listed in this reset's ``skipped``, logged as a warning the first time and at debug after."""
        level = logging.DEBUG if index in self._bad_rows else logging.WARNING
        self._bad_rows.add(index)
        skipped.append(where)
        logger.log(level, "skipped a row whose image does not decode: %s", where)

    def _decode_row(self, index: int) -> tuple[list[np.ndarray], list[tuple[np.ndarray, float]]]:
        """The images of file row ``index``, each RGB uint8 ``[H, W, 3]``, and its videos as ``(frames [T, H, W, 3],
        sampled fps)``; the first that fails raises DatasetError."""
        row = self.rows[index]
        images = [self._load_image(ref, row.loc, i) for i, ref in enumerate(row.images)]
        return images, [self._load_video(ref, row.loc, i) for i, ref in enumerate(row.videos)]

    def _load_video(self, ref: ImageRef, loc: str, i: int) -> tuple[np.ndarray, float]:
        """Decode and sample video ``i`` of the row at ``loc`` (``video_fps``, ``video_max_frames``); any failure is a
        one-line DatasetError."""
        try:
            data = self._embedded.read(ref) if isinstance(ref, EmbeddedImage) else ref
            return decode_video(data, self.config.video_fps, self.config.video_max_frames)
        except Exception as e:  # decode_video's ValueError, a lazy Parquet file that changed (OSError)
            name, why = ref if isinstance(ref, str) else "(embedded bytes)", _reason(e)
            raise DatasetError(f"{self.path}, {loc}: field 'videos[{i}]': cannot read video {name}: {why}") from None

    def _other_image(self, index: int, skipped: list[str]) -> np.ndarray:
        """An image of a row other than ``index``, uniform over those rows' images, decoded afresh. One that does not
        decode is reported and replaced by the next in the numbering: one random draw whatever fails, so the rest of
        the augmentation draws what it would with good data (a seed gives the same result every time)."""
        start, stop = int(self._image_start[index]), int(self._image_start[index + 1])
        others = int(self._image_start[-1]) - (stop - start)
        first = int(self.np_random.integers(others))
        for step in range(others):
            k = (first + step) % others
            k += (stop - start) if k >= start else 0  # skip the images of row ``index``
            row = int(np.searchsorted(self._image_start, k, side="right")) - 1
            i = k - int(self._image_start[row])
            try:
                return self._load_image(self.rows[row].images[i], self.rows[row].loc, i)
            except DatasetError as e:
                self._skip(row, str(e), skipped)
        raise DatasetError(f"{self.path}, {self.rows[index].loc}: an augmentation needs an image of another row, and "
                           f"none of the other {others} decodes")  # fmt: skip

    def _load_image(self, ref: ImageRef, loc: str, i: int) -> np.ndarray:
        """Decode image ``i`` of the row at ``loc`` to RGB uint8 ``[H, W, 3]`` (resized to ``image_size`` when set);
        any failure (unreadable file, corrupt or truncated bytes, an unknown format) is a one-line DatasetError."""
        try:
            data = self._embedded.read(ref) if isinstance(ref, EmbeddedImage) else ref  # lazy: read from the file now
            with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as img:
                rgb = img.convert("RGB")
        except Exception as e:  # PIL raises several types for unreadable images
            name, why = ref if isinstance(ref, str) else "(embedded bytes)", _reason(e)
            raise DatasetError(f"{self.path}, {loc}: field 'images[{i}]': cannot read image {name}: {why}") from None
        if self.image_hw is not None and rgb.size != (self.image_hw[1], self.image_hw[0]):
            rgb = rgb.resize((self.image_hw[1], self.image_hw[0]), Image.Resampling.BICUBIC)
        return np.asarray(rgb, dtype=np.uint8).copy()  # [H, W, 3]


def _reason(error: BaseException) -> str:
    """One line saying why ``error`` happened (PIL's "cannot identify image file <BytesIO at 0x...>" shortened)."""
    if isinstance(error, UnidentifiedImageError):
        return "not an image format PIL can read"
    if isinstance(error, DatasetError):  # already "<file>, <loc>: <field>: <reason>"
        return str(error).split(": ", 1)[-1]
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
