"""Records that flow between stages, as JSON lines, written crash-safely.

Schema (one JSON object per line):

``annotations.jsonl`` (PA) — :class:`Annotation`: ``id`` (``<sha256[:16]>-<k>``), ``image`` (path or
URI), ``image_sha256``, ``task``, ``prompt_version``, ``teacher``, ``k`` (which of the image's
``qa_per_image`` attempts), ``question``, ``answer``, ``raw`` (the teacher's text), ``parse_ok``,
``error`` (why the attempt yields no sample: unreadable image, parse failure, duplicate...).

``audit.jsonl`` (PI) — :class:`Judgement`: an annotation plus ``teacher_answer``,
``student_answer``, ``teacher_match``, ``student_match``, ``kept`` and ``reason``.
``parity.jsonl`` holds the kept judgements (the parity set).

Images are referenced, never embedded. A :class:`JsonlLog` appends one whole line per
``os.write`` on an ``O_APPEND`` descriptor and fsyncs, so a killed process leaves at most one
torn last line, which the next open drops. Records are grouped (all attempts of one image, or
one sample): an incomplete group is dropped on open and redone, so nothing is lost or doubled.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel


class Annotation(BaseModel):
    id: str
    image: str
    image_sha256: str
    task: str
    prompt_version: str
    teacher: str
    k: int = 0
    question: str | None = None
    answer: str | None = None
    raw: str = ""
    parse_ok: bool = False
    error: str | None = None


class Judgement(Annotation):
    teacher_answer: str | None = None
    student_answer: str | None = None
    teacher_match: bool = False
    student_match: bool | None = None
    kept: bool = False
    reason: str = ""


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Yield records; a bad line raises ValueError naming file and line."""
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from exc


def write_jsonl_atomic(path: str | Path, records: Iterable[dict | BaseModel]) -> int:
    """Write a whole jsonl file via a temporary file and rename; return the record count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    with open(tmp, "w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(_dumps(rec) + "\n")
            n += 1
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return n


def write_json_atomic(path: str | Path, obj: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _dumps(rec: dict | BaseModel) -> str:
    if isinstance(rec, BaseModel):
        return rec.model_dump_json()
    return json.dumps(rec, ensure_ascii=False, default=str)


class JsonlLog:
    """An append-only, resumable jsonl log.

    ``group_of(record)`` names the unit of work a record belongs to and ``group_size(record)``
    how many records complete it (default: one record per group). On open, a torn last line
    and the records of incomplete groups are dropped (the file is rewritten atomically), so
    ``done`` holds exactly the finished groups.
    """

    def __init__(
        self,
        path: str | Path,
        group_of: Callable[[dict], str] = lambda r: r["id"],
        group_size: Callable[[dict], int] = lambda r: 1,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._group_of = group_of
        self.records: list[dict] = self._recover(group_size)
        self.done: set[str] = {group_of(r) for r in self.records}
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def _recover(self, group_size: Callable[[dict], int]) -> list[dict]:
        if not self.path.exists():
            return []
        raw = self.path.read_bytes()
        lines = raw.split(b"\n")
        records: list[dict] = []
        torn = False
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                if i == len(lines) - 1:  # a torn last line from a killed writer
                    torn = True
                    break
                raise ValueError(f"{self.path}:{i + 1}: corrupt record in the middle of the file") from None
        counts: dict[str, int] = {}
        for r in records:
            counts[self._group_of(r)] = counts.get(self._group_of(r), 0) + 1
        complete = [r for r in records if counts[self._group_of(r)] >= group_size(r)]
        if torn or len(complete) != len(records) or (raw and not raw.endswith(b"\n")):
            write_jsonl_atomic(self.path, complete)
        return complete

    def append_group(self, records: list[dict | BaseModel]) -> None:
        """Append one finished group of records in a single write, then fsync."""
        if not records:
            return
        dicts = [r.model_dump() if isinstance(r, BaseModel) else r for r in records]
        data = "".join(_dumps(r) + "\n" for r in dicts).encode("utf-8")
        os.write(self._fd, data)
        os.fsync(self._fd)
        self.records.extend(dicts)
        self.done.update(self._group_of(r) for r in dicts)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> JsonlLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
