"""Dataset rows as users have them, normalised: one small function per public schema, chosen by the columns present.

Each normaliser turns one raw record (a JSON object or a Parquet row as Python objects) into a :class:`Normalised` row:
the question text with :data:`IMAGE_MARKER` where each image stands, the raw image entries in that order, the ground
truth and the extra columns. ``envs.vqa.dataset`` validates what is left (prompt length, image paths, extra names).

Schemas (``SCHEMAS``; :func:`detect` picks one from a file's first row, the ``schema`` option forces one):

- ``flat``: mmrl's own, EasyR1's and R1-V / VLM-R1's: ``prompt`` (aliases ``problem``, ``question``), ``images`` (list;
  alias ``image``: one entry), ``answer`` (alias ``solution``).
- ``verl``: ``prompt`` as chat messages ``[{"role", "content": str}]``, ``images``, the ground truth in
  ``reward_model.ground_truth``; ``data_source``, ``ability``, ``extra_info``, ``reward_model`` are extra columns.
- ``trl``: conversational ``prompt`` whose contents are strings or parts lists (``{"type": "image"}``,
  ``{"type": "text", "text": ...}``), ``image`` (one) or ``images``, the ground truth in ``answer`` or ``solution``.
- ``sharegpt``: LLaMA-Factory's multimodal JSON: ``messages`` (``role``/``content``) or ``conversations``
  (``from``/``value``, roles ``human``/``gpt``), ``images``; the ground truth is the assistant turn that answers the
  question, or the ``answer_key`` column when set.

Placeholders: an ``<image>`` in the question text, or an image part of a chat content list, marks where an image
stands; the images fill the marks in order. A question with no mark shows its images first (Qwen's order). Marks whose
number differs from the number of images are a one-line :class:`DatasetError` naming the row.

Videos: every schema takes a ``videos`` column (a list; alias ``video``: one entry) of paths or ``{"bytes", "path"}``
structs, placed by ``<video>`` marks (or video parts of a chat content list) by the same rules as images.

Chat rows: the question is the last user turn (earlier turns, and the images their marks stand for, are dropped); a
system message is not put in the prompt (the policy's own system prompt applies) but passed to the rewards and the
info as the column ``system``; a string content is the text as is, a parts list is its texts joined with no separator
(as Qwen's chat template renders them), an image part becoming a mark.

Column names: ``prompt_key``, ``answer_key`` and ``image_key`` (as in EasyR1) replace a schema's default names (and
aliases); a dotted ``answer_key`` reads into a struct (verl's default is ``reward_model.ground_truth``).

Example:
    >>> keys = Keys()
    >>> row = SCHEMAS["flat"]({"problem": "<image> Which is larger?", "images": ["a.png"], "answer": "A"}, keys, "r")
    >>> row.prompt, row.images
    ('<image> Which is larger?', ['a.png'])
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from mmrl.config import ConfigError
from mmrl.types import IMAGE_MARKER, VIDEO_MARKER
from rewards import answer_span

PROMPT_KEYS: tuple[str, ...] = ("prompt", "problem", "question")  # flat schema, first present wins
ANSWER_KEYS: tuple[str, ...] = ("answer", "solution")  # flat and trl schemas, first present wins
IMAGE_KEYS: tuple[str, ...] = ("images", "image")  # every schema, first present wins
VIDEO_KEYS: tuple[str, ...] = ("videos", "video")  # every schema, first present wins
CHAT_KEYS: tuple[str, ...] = ("messages", "conversations")  # sharegpt schema
ROLES = {"human": "user", "gpt": "assistant", "user": "user", "assistant": "assistant", "system": "system"}


class DatasetError(ConfigError):
    """A bad data file or row: one line naming the file, the line/row and the field."""


class EmbeddedImage(NamedTuple):
    """An embedded image left in its Parquet file, read when its row is visited (see ``envs.vqa.dataset``)."""

    row: int  # 0-based row of the file
    column: str  # top-level column holding the image struct (or a list of them)
    item: int | None  # index in that column's list; None when the column holds one struct


@dataclass(frozen=True)
class Keys:
    """Column names from the config: None keeps the schema's defaults (and aliases)."""

    prompt: str | None = None  # prompt_key: the question text (flat) or chat messages (verl, trl, sharegpt) column
    answer: str | None = None  # answer_key: the ground-truth column; dotted reads into a struct
    image: str | None = None  # image_key: the images column (a list, or one entry)


@dataclass
class Normalised:
    """One row in mmrl's shape, before the checks that need the env's options (prompt length, image paths)."""

    prompt: str  # question text, IMAGE_MARKER / VIDEO_MARKER where each image / video stands (none: they go first)
    prompt_field: str  # the field named in errors about the prompt
    answer: str  # ground truth, not blank
    images: list[Any]  # raw image entries (path, {"bytes", "path"} struct, EmbeddedImage), in order
    image_fields: list[str]  # the field naming each entry in errors: "images[0]", "image"
    columns: dict[str, Any] = field(default_factory=dict)  # extra columns: rewards and info
    reward_only: dict[str, Any] = field(default_factory=dict)  # shadowed aliases: rewards only
    videos: list[Any] = field(default_factory=list)  # raw video entries (path, {"bytes", "path"} struct), in order
    video_fields: list[str] = field(default_factory=list)  # the field naming each video entry in errors


Normaliser = Callable[[dict[str, Any], Keys, str], Normalised]


# ------------------------------------------------------------------------------------------------------- schemas
def flat(record: dict[str, Any], keys: Keys, where: str) -> Normalised:
    """mmrl's, EasyR1's and R1-V's rows: a question string, images, an answer (see the module docstring)."""
    prompt_key, prompt = _pick(record, (keys.prompt,) if keys.prompt else PROMPT_KEYS, where, "prompt")
    prompt = _text(prompt, prompt_key, where)
    answer_key, answer = _pick(record, (keys.answer,) if keys.answer else ANSWER_KEYS, where, "answer")
    image_key, entries, fields = _images(record, keys, where)
    video_key, videos, video_fields = _videos(record, where)
    used = {prompt_key, answer_key, image_key, video_key}
    aliases = _aliases(keys, PROMPT_KEYS, ANSWER_KEYS) - used
    return Normalised(
        prompt=_placed(_placed(prompt, len(entries), where), len(videos), where, VIDEO_MARKER),
        prompt_field=prompt_key,
        answer=_answer(answer, answer_key, where, wrapped=answer_key == "solution"),
        images=entries,
        image_fields=fields,
        columns={k: v for k, v in record.items() if k not in used | aliases},
        reward_only={k: v for k, v in record.items() if k in aliases},
        videos=videos,
        video_fields=video_fields,
    )


def verl(record: dict[str, Any], keys: Keys, where: str) -> Normalised:
    """verl's RL rows: chat-message ``prompt``, ``images``, ``reward_model.ground_truth`` (module docstring)."""
    prompt_key, messages = _pick(record, (keys.prompt or "prompt",), where, "prompt")
    answer_key = keys.answer or "reward_model.ground_truth"
    answer = _dotted(record, answer_key, where)
    image_key, entries, fields = _images(record, keys, where)
    video_key, videos, video_fields = _videos(record, where)
    prompt, (entries, fields), (videos, video_fields), system, _ = _chat(
        messages, prompt_key, (entries, fields), (videos, video_fields), where
    )
    used = {prompt_key, image_key, answer_key, video_key}
    return Normalised(
        prompt=prompt,
        prompt_field=prompt_key,
        answer=_answer(answer, answer_key, where),
        images=entries,
        image_fields=fields,
        columns={**{k: v for k, v in record.items() if k not in used}, **_system(system)},
        videos=videos,
        video_fields=video_fields,
    )


def trl(record: dict[str, Any], keys: Keys, where: str) -> Normalised:
    """TRL's conversational rows: ``prompt`` messages with image parts, ``image``/``images``, an answer column."""
    prompt_key, messages = _pick(record, (keys.prompt or "prompt",), where, "prompt")
    answer_key, answer = _pick(record, (keys.answer,) if keys.answer else ANSWER_KEYS, where, "answer")
    image_key, entries, fields = _images(record, keys, where)
    video_key, videos, video_fields = _videos(record, where)
    prompt, (entries, fields), (videos, video_fields), system, _ = _chat(
        messages, prompt_key, (entries, fields), (videos, video_fields), where
    )
    used = {prompt_key, answer_key, image_key, video_key}
    aliases = _aliases(keys, (), ANSWER_KEYS) - used
    return Normalised(
        prompt=prompt,
        prompt_field=prompt_key,
        answer=_answer(answer, answer_key, where, wrapped=answer_key == "solution"),
        images=entries,
        image_fields=fields,
        columns={**{k: v for k, v in record.items() if k not in used | aliases}, **_system(system)},
        reward_only={k: v for k, v in record.items() if k in aliases},
        videos=videos,
        video_fields=video_fields,
    )


def sharegpt(record: dict[str, Any], keys: Keys, where: str) -> Normalised:
    """LLaMA-Factory's multimodal rows: ``messages``/``conversations`` with the answer as the assistant's turn."""
    prompt_key, messages = _pick(record, (keys.prompt,) if keys.prompt else CHAT_KEYS, where, "messages")
    image_key, entries, fields = _images(record, keys, where)
    video_key, videos, video_fields = _videos(record, where)
    prompt, (entries, fields), (videos, video_fields), system, reply = _chat(
        messages, prompt_key, (entries, fields), (videos, video_fields), where
    )
    if keys.answer:
        answer_key, answer = _pick(record, (keys.answer,), where, "answer")
    elif reply is None:
        raise DatasetError(f"{where}: field '{prompt_key}' has no assistant turn after the last user turn (the answer)")
    else:
        answer_key, answer = reply
    system = record.get("system", system)  # LLaMA-Factory's optional system column wins over a system message
    used = {prompt_key, image_key, keys.answer, "system", video_key}
    return Normalised(
        prompt=prompt,
        prompt_field=prompt_key,
        answer=_answer(answer, answer_key, where, wrapped=not keys.answer),
        images=entries,
        image_fields=fields,
        columns={**{k: v for k, v in record.items() if k not in used}, **_system(system)},
        videos=videos,
        video_fields=video_fields,
    )


SCHEMAS: dict[str, Normaliser] = {"flat": flat, "verl": verl, "trl": trl, "sharegpt": sharegpt}


def detect(record: Any, keys: Keys) -> str:
    """The schema of a file, from its first row: chat messages in a ``messages``/``conversations`` column (or using
    ShareGPT's ``from``/``value``) are ShareGPT's; a chat ``prompt`` is verl's when a ``reward_model`` column is
    present, TRL's otherwise; a question string is flat."""
    if not isinstance(record, dict):
        return "flat"  # the row's own error comes from the normaliser's caller
    name = keys.prompt or next((k for k in CHAT_KEYS if record.get(k) is not None), "prompt")
    prompt = record.get(name)
    if not isinstance(prompt, (list, tuple)):
        return "flat"
    if name in CHAT_KEYS or (prompt and isinstance(prompt[0], dict) and "from" in prompt[0]):
        return "sharegpt"
    return "verl" if record.get("reward_model") is not None else "trl"


# -------------------------------------------------------------------------------------- datasets' image storage
def is_image_struct(kind: Any) -> bool:
    """Whether an Arrow type is ``datasets``' image storage, ``struct<bytes: binary, ...>``, or a list of it."""
    import pyarrow as pa

    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        kind = kind.value_type
    if not pa.types.is_struct(kind) or kind.get_field_index("bytes") < 0:
        return False
    return pa.types.is_binary(kind.field("bytes").type) or pa.types.is_large_binary(kind.field("bytes").type)


# ------------------------------------------------------------------------------------------------------- helpers
def _pick(record: dict[str, Any], names: tuple[str, ...], where: str, what: str) -> tuple[str, Any]:
    """The first of ``names`` present in ``record`` (non-null) and its value; none: a one-line error."""
    for name in names:
        if record.get(name) is not None:
            return name, record[name]
    others = ", ".join(repr(n) for n in names[1:])
    aliases = f" (or its alias{'es' if len(names) > 2 else ''} {others})" if len(names) > 1 else ""
    raise DatasetError(f"{where}: missing field '{names[0] if names else what}'{aliases}")


def _aliases(keys: Keys, prompts: tuple[str, ...], answers: tuple[str, ...]) -> set[str]:
    """The default names of the fields whose name the config does not set: those left unused go to the rewards only."""
    return set((() if keys.prompt else prompts) + (() if keys.answer else answers) + (() if keys.image else IMAGE_KEYS))


def _dotted(record: dict[str, Any], key: str, where: str) -> Any:
    """``record["a"]["b"]`` for ``key`` "a.b" (a top-level column named "a.b" wins); missing: a one-line error."""
    if record.get(key) is not None:
        return record[key]
    value: Any = record
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if value is None:
        raise DatasetError(f"{where}: missing field '{key}'")
    return value


def _text(value: Any, name: str, where: str) -> str:
    """A question string, not blank."""
    if not isinstance(value, str):
        raise DatasetError(f"{where}: field '{name}' must be a string, got {type(value).__name__}")
    if not value.strip():
        raise DatasetError(f"{where}: field '{name}' is empty")
    return value


def _answer(value: Any, name: str, where: str, wrapped: bool = False) -> str:
    """The ground truth as text: a string or finite number (a boolean is refused: ``True`` would be compared as the
    text "True"); ``wrapped`` (R1-V's ``solution``, a chat reply) keeps only an ``<answer>...</answer>`` span."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DatasetError(f"{where}: field '{name}' must be a string or number, got {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):  # JSON's NaN/Infinity literals, Parquet float NaN
        raise DatasetError(f"{where}: field '{name}' must be a finite number, got {value}")
    answer = str(value)
    if wrapped:
        span = answer_span(answer)
        answer = (answer if span is None else span).strip()
    if not answer.strip():
        raise DatasetError(f"{where}: field '{name}' is empty")
    return answer


def _images(record: dict[str, Any], keys: Keys, where: str) -> tuple[str | None, list[Any], list[str]]:
    """The image column used, its entries and their field names; ``images`` must be a list, ``image`` may be one."""
    return _entries(record, (keys.image,) if keys.image else IMAGE_KEYS, "images", where)


def _videos(record: dict[str, Any], where: str) -> tuple[str | None, list[Any], list[str]]:
    """The video column used, its entries and their field names; ``videos`` must be a list, ``video`` may be one."""
    return _entries(record, VIDEO_KEYS, "videos", where)


def _entries(record: dict[str, Any], names: tuple[str, ...], listed: str, where: str) -> tuple[str | None, list, list]:
    """The first column of ``names`` present, its entries and their field names; the ``listed`` name must be a list."""
    key = next((k for k in names if record.get(k) is not None), None)
    if key is None:
        return None, [], []
    value = record[key]
    if key == listed and not isinstance(value, (list, tuple)):
        raise DatasetError(f"{where}: field '{key}' must be a list of {listed[:-1]} paths, got {type(value).__name__}")
    if isinstance(value, (list, tuple)):
        return key, list(value), [f"{key}[{i}]" for i in range(len(value))]
    return key, [value], [key]


def _placed(text: str, num_images: int, where: str, marker: str = IMAGE_MARKER) -> str:
    """``text`` when its ``marker`` marks are as many as the images (videos with :data:`VIDEO_MARKER`), or none
    (they go first); otherwise a one-line error."""
    marks = text.count(marker)
    if marks and marks != num_images:
        kind = "video" if marker == VIDEO_MARKER else "image"
        raise DatasetError(f"{where}: the question has {marks} {marker} placeholder(s) but the row has "
                           f"{num_images} {kind}(s)")  # fmt: skip
    return text


Entries = tuple[list[Any], list[str]]  # raw entries and the field naming each in errors


def _chat(
    messages: Any, name: str, images: Entries, videos: Entries, where: str
) -> tuple[str, Entries, Entries, str | None, tuple[str, str] | None]:
    """The last user turn of chat ``messages`` as marked text, the images and the videos its marks stand for (with
    their field names), the system message, and the assistant reply that follows the question as ``(field, text)``
    (or None)."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise DatasetError(f"{where}: field '{name}' must be a non-empty list of chat messages")
    turns: list[tuple[str, str]] = []  # (role, text with marks), one per message
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise DatasetError(f"{where}: field '{name}[{i}]' must be a message object, got {type(message).__name__}")
        role = ROLES.get(str(message.get("role", message.get("from"))), "other")
        turns.append((role, _content(message.get("content", message.get("value")), f"{name}[{i}]", where)))
    users = [i for i, (role, _) in enumerate(turns) if role == "user"]
    if not users:
        raise DatasetError(f"{where}: field '{name}' has no user turn (the question)")
    last = users[-1]
    question = turns[last][1]
    if not question.strip():
        raise DatasetError(f"{where}: field '{name}[{last}]' is empty")
    kept = []
    for marker, (entries, fields) in ((IMAGE_MARKER, images), (VIDEO_MARKER, videos)):
        marks = [text.count(marker) for _, text in turns]
        if sum(marks):  # the entries fill the marks of every turn in order: keep those of the question's turn
            _placed(marker * sum(marks), len(entries), where, marker)  # the same count check as a flat question's
            before = sum(marks[:last])
            entries, fields = entries[before : before + marks[last]], fields[before : before + marks[last]]
        kept.append((entries, fields))
    system = next((text for role, text in turns if role == "system"), None)
    reply = None
    if last + 1 < len(turns) and turns[last + 1][0] == "assistant":
        reply = f"{name}[{last + 1}]", turns[last + 1][1]
    return question, kept[0], kept[1], system, reply


def _content(content: Any, name: str, where: str) -> str:
    """A message's content as text: a string as is; a parts list's texts joined, each image part an image mark."""
    if isinstance(content, str):
        return content
    if not isinstance(content, (list, tuple)):
        raise DatasetError(f"{where}: field '{name}.content' must be a string or a list of parts")
    out = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "image":
            out.append(IMAGE_MARKER)
        elif kind == "text" and isinstance(part.get("text"), str):
            out.append(part["text"])
        elif kind == "video":
            out.append(VIDEO_MARKER)
        else:
            raise DatasetError(f"{where}: field '{name}.content[{j}]' must be an image, video or text part, "
                               f"got {part!r:.80}")  # fmt: skip
    return "".join(out)


def _system(system: Any) -> dict[str, Any]:
    """The ``system`` column of a chat row (absent when the row has no system prompt)."""
    return {} if system is None else {"system": system}
