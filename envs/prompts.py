"""Prompt sources: where an env's prompts come from, and the order it draws them in.

A prompt source is one of

- a sequence of prompts, each a string or a record ``{"prompt": str, **fields}``;
- a path to a ``.txt`` file (one prompt per non-blank line) or a ``.jsonl`` file (one record per
  line, each with a ``"prompt"`` key); the suffix decides the format (in any case: ``.JSONL``
  too), and other suffixes (``.json``, ``.csv``, none) are refused rather than read as text;
- a callable ``f(rng: numpy.random.Generator) -> str | dict`` that makes a prompt on demand.

Record fields other than ``"prompt"`` (an expected answer, keywords, ...) travel with the prompt
and reach the reward model as keyword arguments (see :mod:`tokengym.reward_models.base`), so
their names are strings other than ``prompts`` and ``completions``.
"""

from __future__ import annotations

import codecs
import inspect
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

PromptLike = str | Mapping[str, Any]
PromptSourceLike = (
    Sequence[PromptLike] | str | os.PathLike | Callable[[np.random.Generator], PromptLike]
)

_NEWLINES = re.compile(r"\r\n|\r|\n")

FORCED_PROMPT_ID = -1
"""``prompt_id`` of a prompt forced through ``reset(options={"prompt": ...})``."""

PROMPT_SUFFIXES = (".txt", ".jsonl")
"""Prompt file formats, by suffix (any case): one prompt per line, one JSON record per line."""

RESERVED_FIELDS = ("prompts", "completions")
"""Names a record field may not take: they are the reward model's positional arguments."""

_SOURCES = ("a list of strings or {'prompt': ...} records, a path to a .txt/.jsonl file, or a "
            "callable rng -> prompt")


@dataclass(frozen=True)
class PromptRecord:
    """One prompt: its text, its id in the source (-1 when forced or generated), extra fields."""

    text: str
    id: int
    fields: Mapping[str, Any] = field(default_factory=dict)


def to_record(prompt: PromptLike, prompt_id: int, where: str) -> PromptRecord:
    """Validate one prompt and turn it into a :class:`PromptRecord`."""
    if isinstance(prompt, str):
        text, fields = prompt, {}
    elif isinstance(prompt, Mapping):
        if "prompt" not in prompt:
            keys = sorted(map(repr, prompt))
            raise ValueError(
                f"{where}: a prompt record needs a string 'prompt' key, got keys [{', '.join(keys)}]"
            )
        text = prompt["prompt"]
        if not isinstance(text, str):
            raise ValueError(
                f"{where}: the record's 'prompt' is {text!r:.60} ({type(text).__name__}), not a "
                "string; a prompt record is {'prompt': str, **fields}"
            )
        fields = {k: v for k, v in prompt.items() if k != "prompt"}
        _check_field_names(fields, where)
    else:
        raise TypeError(
            f"{where}: a prompt must be a string or a record {{'prompt': str, ...}}, "
            f"got {type(prompt).__name__}"
        )
    if not text.strip():
        raise ValueError(f"{where}: the prompt is empty")
    return PromptRecord(text=text, id=prompt_id, fields=fields)


def _check_field_names(fields: Mapping[Any, Any], where: str) -> None:
    for name in fields:
        if not isinstance(name, str):
            raise ValueError(
                f"{where}: field name {name!r} is not a string; record fields reach the reward "
                "model as keyword arguments, so their names must be identifiers such as 'answer'"
            )
        if name in RESERVED_FIELDS:
            raise ValueError(
                f"{where}: field name {name!r} is reserved (the reward model's positional "
                f"arguments are {' and '.join(RESERVED_FIELDS)}); rename the field"
            )


def _check_generator(prompts: Callable[..., Any]) -> None:
    """A prompt callable must take the episode's RNG as its one positional argument."""
    try:
        sig = inspect.signature(prompts)
    except (TypeError, ValueError):  # no signature to inspect (some builtins): trust it
        return
    try:
        sig.bind(None)
    except TypeError:
        raise TypeError(
            f"prompts: a prompt callable is called as f(rng) with a numpy Generator, but its "
            f"signature is {sig}; pass {_SOURCES}"
        ) from None


def _read_text(path: Path) -> str:
    """The file's text, decoded as UTF-8 (a leading byte-order mark is dropped).

    Binary data (a NUL byte, or bytes that are not UTF-8) is refused with a ValueError naming the
    file and the byte offset, rather than a raw ``UnicodeDecodeError`` or prompts full of junk.
    """
    data = path.read_bytes()
    start = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    hint = ("prompt files must be UTF-8 text (.txt: one prompt per line; .jsonl: one JSON record "
            "per line); is this a binary file, or text in another encoding (re-save it as UTF-8)?")
    try:
        text = data[start:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = start + exc.start
        line = data.count(b"\n", 0, offset) + 1
        raise ValueError(
            f"prompt file {path}: byte {data[offset]:#04x} at offset {offset} (line {line}) is not "
            f"valid UTF-8 ({exc.reason}); {hint}"
        ) from None
    nul = data.find(b"\0", start)
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        raise ValueError(f"prompt file {path}: NUL byte at offset {nul} (line {line}); {hint}")
    return text


def _lines(text: str) -> list[str]:
    # Universal newlines (\n, \r\n, \r), as a text-mode open() reads them. Not str.splitlines(),
    # which also splits at \x0b, \x0c, \x1c-\x1e, \x85, U+2028 and U+2029: characters a prompt
    # (and an unescaped JSON string) may hold.
    return _NEWLINES.split(text)


def _read_file(path: Path) -> list[PromptRecord]:
    suffix = path.suffix.lower()
    if suffix not in PROMPT_SUFFIXES:
        kind = f"a {suffix} file" if suffix else "a file without a .txt/.jsonl suffix"
        hint = (" (for a JSON list of records, write one record per line in a .jsonl file, or "
                "load the list and pass it as prompts=)") if suffix == ".json" else ""
        raise ValueError(
            f"{path}: {kind} is not a prompt file{hint}; prompt files are .txt (one prompt per "
            "line) or .jsonl (one JSON record {'prompt': str, **fields} per line)"
        )
    text = _read_text(path)
    if suffix == ".jsonl":
        records = []
        for lineno, line in enumerate(_lines(text), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
            records.append(to_record(obj, len(records), f"{path}:{lineno}"))
        return records
    lines = [ln for ln in _lines(text) if ln.strip()]
    return [to_record(ln, i, f"{path}") for i, ln in enumerate(lines)]


class PromptSource:
    """A validated prompt source that draws prompts in a seeded order.

    Fixed sources are drawn as shuffled passes: every prompt once per pass, each pass in a fresh
    order from the episode's RNG, so the same seed gives the same prompt order.
    """

    def __init__(self, prompts: PromptSourceLike) -> None:
        self.records: list[PromptRecord] | None = None
        self.generator: Callable[[np.random.Generator], PromptLike] | None = None
        if isinstance(prompts, (str, os.PathLike)):
            path = Path(prompts)
            if path.is_dir():
                raise ValueError(
                    f"prompts={os.fspath(prompts)!r} is a directory; pass a prompt file (.txt: "
                    "one prompt per line, .jsonl: one record per line) inside it, or "
                    f"{_SOURCES}."
                )
            if not path.is_file():
                raise ValueError(
                    f"prompts={os.fspath(prompts)!r} is not an existing file. Pass a list of "
                    "prompts (strings or {'prompt': ...} records), a .txt/.jsonl path, or a "
                    "callable rng -> prompt."
                )
            self.records = _read_file(path)
            where = f"prompt file {path}"
        elif callable(prompts):
            _check_generator(prompts)
            self.generator = prompts
            return
        elif isinstance(prompts, Sequence) and not isinstance(prompts, (bytes, bytearray)):
            self.records = [to_record(p, i, f"prompts[{i}]") for i, p in enumerate(prompts)]
            where = "the prompt list"
        else:
            raise TypeError(f"prompts must be {_SOURCES}; got {type(prompts).__name__}")
        if not self.records:
            raise ValueError(f"{where} is empty; an env needs at least one prompt")

    def __len__(self) -> int:
        """Number of fixed prompts (0 for a generator source)."""
        return len(self.records) if self.records is not None else 0

    def draw(self, rng: np.random.Generator, order: dict[str, Any]) -> PromptRecord:
        """Next prompt. ``order`` is the caller's per-episode-slot cursor state (mutated)."""
        if self.generator is not None:
            return to_record(self.generator(rng), FORCED_PROMPT_ID, "the prompt callable's result")
        records = self.records
        if order.get("perm") is None or order["pos"] >= len(records):
            order["perm"] = rng.permutation(len(records))
            order["pos"] = 0
        record = records[int(order["perm"][order["pos"]])]
        order["pos"] += 1
        return record


def encode_prompt(tokenizer: Any, text: str, chat_template: bool, max_tokens: int
                  ) -> tuple[np.ndarray, bool]:
    """A prompt's token ids ``(k,)`` int64, ``k <= max_tokens``, and whether its beginning was cut.

    With ``chat_template`` the prompt is a user turn followed by the generation prompt. Longer
    prompts keep their end (what the completion continues).

    Raises:
        ValueError: the prompt tokenizes to nothing.
    """
    if chat_template:
        wrapped = tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False
        )
        ids = tokenizer(wrapped, add_special_tokens=False)["input_ids"]
    else:
        ids = tokenizer(text)["input_ids"]
    ids = np.asarray(ids, dtype=np.int64)
    truncated = ids.size > max_tokens
    if truncated:
        ids = ids[-max_tokens:]
    if ids.size == 0:
        raise ValueError(f"prompt {text!r} tokenizes to nothing")
    return ids, truncated
