"""Records that flow between stages, as JSON lines, written crash-safely; and the stage marks.

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
one sample): an incomplete group is dropped on open and redone, so nothing is lost. Readers count
a record id once: a duplicated line (two writers of one file before locks existed, a file
concatenated twice) is dropped, never counted.

One writer per output: a log (and a stage's output, :class:`StageRun`) is held under an
exclusive ``flock`` on ``<output>.lock`` while it is written. The kernel releases the lock when
the process ends, however it ends, so a killed writer never leaves a stale lock behind; a second
writer is refused with :class:`OutputLocked`. The lock covers one machine's file system: a run
whose ``out`` is an ``s3://`` prefix works in a local copy, and two machines writing one prefix
are not kept apart (give each its own prefix, or use ``--shard``).

Stage marks (``<output>.stage.json``): a stage writes, before its first output, a
:class:`StageMark` holding digests of its settings and its input files with ``complete: false``,
and at the end the same mark with ``complete: true`` and the digests of what it wrote. So

- a re-run with the same inputs and settings resumes (or returns the finished result), and one
  with different inputs or settings is refused with :class:`StageMismatch` naming what changed
  (``force`` discards the old output and redoes the stage);
- a later stage refuses an input whose mark says it is unfinished, was made from an unfinished
  input, or was changed after it was finished (:class:`IncompleteInput`), unless ``allow_partial``.

A file without a mark was not written by an mpa stage (a ``--samples`` file of your own, a
merged file from elsewhere) and is taken as given.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError, model_validator

from mpa.errors import MpaError, one_line
from mpa.safeio import fsync, open_fd, write_all, write_atomic, write_error

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)


class RecordError(MpaError, ValueError):
    """A record file that cannot be used; the message names the file and the line."""


class OutputLocked(MpaError, ValueError):
    """Another process is writing this output."""


class StageMismatch(MpaError, ValueError):
    """An output made with other inputs or settings than this run's."""


class IncompleteInput(MpaError, ValueError):
    """A stage's input is unfinished (or was changed after it was finished)."""


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

    @model_validator(mode="after")
    def _parsed_means_a_sample(self) -> Annotation:
        """``parse_ok`` holds only with a question and an answer: a record claiming it without them (an edited
        or foreign file) is read as unparsed, so it never counts into the parity set's K."""
        if self.parse_ok and not ((self.question or "").strip() and (self.answer or "").strip()):
            self.parse_ok = False
            self.error = self.error or "parse_ok without a question and an answer"
        return self


class Judgement(Annotation):
    teacher_answer: str | None = None
    student_answer: str | None = None
    teacher_match: bool = False
    student_match: bool | None = None
    kept: bool = False
    reason: str = ""


class TrainingSample(BaseModel):
    """One PL sample as a ``--samples`` / ``parity.jsonl`` line gives it (other fields are ignored)."""

    model_config = {"strict": True}  # a number or a list where text belongs is an error, not str()-ed

    image: str
    question: str | None = None
    answer: str | None = None
    parse_ok: bool = True
    kept: bool = True


# ----------------------------------------------------------------------------- reading
_ARRAY_HINT = ("this is a JSON array, not JSON Lines: write one JSON object per line "
               "(e.g. `jq -c '.[]' file.json > file.jsonl`)")


def _check_object(path: str | Path, lineno: int, obj: Any) -> dict[str, Any]:
    if isinstance(obj, list):
        raise RecordError(f"{path}:{lineno}: {_ARRAY_HINT}")
    if not isinstance(obj, dict):
        raise RecordError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
    return obj


def _parse_line(path: str | Path, lineno: int, line: str | bytes) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
        if lineno == 1 and text.lstrip().startswith("["):
            raise RecordError(f"{path}:{lineno}: {_ARRAY_HINT}") from None
        raise RecordError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
    return _check_object(path, lineno, obj)


def _lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of every non-blank line; a byte that is not UTF-8 is an error naming file:line."""
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below, errors named
    except FileNotFoundError:
        raise RecordError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise RecordError(f"{path}: is a directory, expected a .jsonl file") from None
    with fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise RecordError(f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at column "
                                  f"{exc.start + 1}); fix or delete that line") from None
            if line.strip():
                yield lineno, line


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Yield one dict per non-blank line; anything else raises :class:`RecordError` naming file and line."""
    for lineno, line in _lines(path):
        yield _parse_line(path, lineno, line)


def _field_errors(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "record"
        parts.append(f"missing field {loc!r}" if err["type"] == "missing" else f"{loc}: {err['msg']}")
    return "; ".join(parts)


def read_records(path: str | Path, model: type[M], key: str = "id") -> list[M]:
    """Every record of a jsonl file as ``model``, each ``key`` once (the first line wins).

    A line that is not a valid ``model`` raises :class:`RecordError` naming file, line and field.
    """
    out: list[M] = []
    seen: set[Any] = set()
    dropped = 0
    for lineno, raw in _numbered(path):
        try:
            rec = model.model_validate(raw)
        except ValidationError as exc:
            raise RecordError(f"{path}:{lineno}: {_field_errors(exc)}") from None
        ident = getattr(rec, key)
        if ident in seen:
            dropped += 1
            continue
        seen.add(ident)
        out.append(rec)
    if dropped:
        log.warning("%s: %d duplicated record(s) ignored (each %s is counted once)", path, dropped, key)
    return out


def read_training_samples(path: str | Path) -> list[dict[str, Any]]:
    """The (image, question, answer) samples PL trains on: ``parity.jsonl`` (kept ones), ``annotations.jsonl``
    (parsed ones) or a ``--samples`` file of your own. A line with a field of the wrong type (``"question": 5``)
    raises :class:`RecordError` naming file, line and field."""
    out = []
    for lineno, raw in _numbered(path):
        try:
            rec = TrainingSample.model_validate(raw)
        except ValidationError as exc:
            raise RecordError(f"{path}:{lineno}: {_field_errors(exc)}") from None
        if rec.parse_ok and rec.kept and (rec.question or "").strip() and (rec.answer or "").strip():
            out.append({"image": rec.image, "question": rec.question, "answer": rec.answer})
    return out


def unique_records(path: str | Path, key: str = "id") -> list[dict[str, Any]]:
    """The dict records of a jsonl file, each ``key`` once (records without ``key`` are all kept)."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for _, rec in _numbered(path):
        ident = rec.get(key)
        if ident is not None:
            if ident in seen:
                continue
            seen.add(ident)
        out.append(rec)
    return out


def _numbered(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    for lineno, line in _lines(path):
        yield lineno, _parse_line(path, lineno, line)


# ----------------------------------------------------------------------------- writing
def write_jsonl_atomic(path: str | Path, records: Iterable[dict | BaseModel]) -> int:
    """Write a whole jsonl file atomically (:func:`mpa.safeio.write_atomic`); return the record count."""
    lines = [_dumps(rec) + "\n" for rec in records]
    write_atomic(path, "".join(lines).encode("utf-8"))
    return len(lines)


def write_json_atomic(path: str | Path, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def _dumps(rec: dict | BaseModel) -> str:
    if isinstance(rec, BaseModel):
        return rec.model_dump_json()
    return json.dumps(rec, ensure_ascii=False, default=str)


# ----------------------------------------------------------------------------- one writer per output
LOCK_SUFFIX = ".lock"
_held: dict[str, list[int]] = {}  # lock file -> [fd, holders in this process]
_held_guard = threading.Lock()


def lock_path(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(output.name + LOCK_SUFFIX)


class OutputLock:
    """An exclusive ``flock`` on ``<output>.lock`` (see the module docstring); re-entrant in one process."""

    def __init__(self, output: str | Path) -> None:
        path = lock_path(output)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise write_error(path.parent, exc, "create directory") from None
        self.key = os.path.realpath(path)
        self._released = False
        with _held_guard:
            if self.key in _held:
                _held[self.key][1] += 1
                return
            fd = open_fd(path, os.O_RDWR | os.O_CREAT)  # no-follow: a planted link is refused, never truncated
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
                os.close(fd)
                raise OutputLocked(
                    f"{output} is being written by another mpa process ({holder}); wait for it to finish or "
                    "write to another --out (the lock is released when that process ends, even if it is "
                    "killed; it covers this machine only: two machines must not share one s3:// --out)"
                ) from None
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
            try:
                os.ftruncate(fd, 0)
                os.lseek(fd, 0, os.SEEK_SET)
                write_all(fd, f"pid {os.getpid()} on {socket.gethostname()} since {stamp}\n".encode(), path)
            except OSError as exc:
                os.close(fd)
                raise write_error(path, exc) from None
            _held[self.key] = [fd, 1]

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        with _held_guard:
            entry = _held.get(self.key)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] == 0:
                fcntl.flock(entry[0], fcntl.LOCK_UN)
                os.close(entry[0])
                del _held[self.key]

    def __del__(self) -> None:
        self.release()


class JsonlLog:
    """An append-only, resumable jsonl log, written by one process at a time.

    ``group_of(record)`` names the unit of work a record belongs to and ``group_size(record)``
    how many distinct records (by ``id_of``, default: the ``id`` field) complete it (default: one
    record per group). On open, a torn last line, duplicated records and the records of incomplete
    groups are dropped (the file is rewritten atomically), so ``done`` holds exactly the finished
    groups. While open, the log holds its :class:`OutputLock`.
    """

    def __init__(
        self,
        path: str | Path,
        group_of: Callable[[dict], str] = lambda r: r["id"],
        group_size: Callable[[dict], int] = lambda r: 1,
        id_of: Callable[[dict], str] | None = None,
    ) -> None:
        self.path = Path(path)
        self._group_of = group_of
        self._id_of = id_of or (lambda r: r["id"] if "id" in r else json.dumps(r, sort_keys=True))
        self._fd = -1
        self._lock = OutputLock(self.path)  # before recovery: recovery may rewrite the file
        try:
            self.records: list[dict] = self._recover(group_size)
            self.done: set[str] = {group_of(r) for r in self.records}
            self._fd = open_fd(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        except BaseException:
            self._lock.release()
            raise

    def _recover(self, group_size: Callable[[dict], int]) -> list[dict]:
        if not self.path.exists() and not self.path.is_symlink():
            return []
        fd = open_fd(self.path, os.O_RDONLY)  # no-follow: a log that is a link elsewhere is refused
        with os.fdopen(fd, "rb") as fh:
            raw = fh.read()
        lines = raw.split(b"\n")
        records: list[dict] = []
        keys: list[tuple[str, str]] = []
        torn = False
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):  # a torn line may end inside a UTF-8 character
                array = i == 0 and line.lstrip().startswith(b"[")
                if i == len(lines) - 1 and not array:
                    torn = True  # a torn last line from a killed writer
                    break
                if array:
                    raise RecordError(f"{self.path}:1: {_ARRAY_HINT}") from None
                raise RecordError(f"{self.path}:{i + 1}: corrupt record in the middle of the file; "
                                  "delete that line (its work is redone) and re-run") from None
            rec = _check_object(self.path, i + 1, obj)
            try:
                keys.append((self._group_of(rec), self._id_of(rec)))
            except KeyError as exc:
                raise RecordError(f"{self.path}:{i + 1}: record has no {exc} field") from None
            records.append(rec)
        ids: dict[str, set[str]] = {}
        unique: list[dict] = []
        seen: set[str] = set()
        for rec, (group, ident) in zip(records, keys, strict=True):
            if ident in seen:
                continue
            seen.add(ident)
            ids.setdefault(group, set()).add(ident)
            unique.append(rec)
        complete = [r for r in unique if len(ids[self._group_of(r)]) >= group_size(r)]
        if len(unique) != len(records):
            log.warning("%s: %d duplicated record(s) dropped", self.path, len(records) - len(unique))
        if torn or len(complete) != len(records) or (raw and not raw.endswith(b"\n")):
            write_jsonl_atomic(self.path, complete)
        return complete

    def append_group(self, records: list[dict | BaseModel]) -> None:
        """Append one finished group of records in a single write, then fsync."""
        if not records:
            return
        dicts = [r.model_dump() if isinstance(r, BaseModel) else r for r in records]
        data = "".join(_dumps(r) + "\n" for r in dicts).encode("utf-8")
        size = os.fstat(self._fd).st_size
        try:
            write_all(self._fd, data, self.path)  # every byte, or an error: never a torn record taken as written
            fsync(self._fd, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, size)  # no partial group left to glue onto the next one
            raise
        self.records.extend(dicts)
        self.done.update(self._group_of(r) for r in dicts)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._lock.release()

    def __enter__(self) -> JsonlLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ----------------------------------------------------------------------------- digests
_DIGEST_MEMO: dict[str, str] = {}
_MEMO_MIN_BYTES = 8 << 20  # larger files' digests are also remembered on disk (model weights)


def _memo_file() -> Path:
    from mpa.storage import cache_dir

    return cache_dir() / "file-digests.json"


def file_sha256(path: str | Path) -> str:
    """sha256 of a local file's bytes, remembered per (path, size, mtime, inode).

    Large files (model weights) are remembered across processes too (``$MPA_CACHE/file-digests.json``),
    so a multi-GB checkpoint is read once, not at every stage start.
    """
    st = os.stat(path)
    key = f"{os.path.realpath(path)}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"
    hit = _DIGEST_MEMO.get(key)
    if hit is not None:
        return hit
    disk: dict[str, str] = {}
    if st.st_size >= _MEMO_MIN_BYTES:
        try:
            disk = json.loads(_memo_file().read_text(encoding="utf-8"))
            hit = disk.get(key)
        except (OSError, ValueError):
            disk = {}
    if hit is None:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        hit = h.hexdigest()
        if st.st_size >= _MEMO_MIN_BYTES:
            disk[key] = hit
            try:
                write_json_atomic(_memo_file(), dict(list(disk.items())[-10_000:]))
            except OSError:
                pass  # a read-only cache only costs time
    _DIGEST_MEMO[key] = hit
    return hit


def path_digest(path: str | Path) -> str:
    """Digest of a file's contents, or of a directory's files (names and contents); ``absent`` if missing."""
    p = Path(path)
    if p.is_file():
        return file_sha256(p)
    if p.is_dir():
        h = hashlib.sha256()
        for f in sorted(x for x in p.rglob("*") if x.is_file() and not x.name.endswith(LOCK_SUFFIX)):
            h.update(f"{f.relative_to(p).as_posix()}\0{file_sha256(f)}\n".encode())
        return h.hexdigest()
    return "absent"


def value_digest(value: Any) -> str:
    blob = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value_digest(value)
    return out


# ----------------------------------------------------------------------------- stage marks
MARK_SUFFIX = ".stage.json"


def mark_path(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(output.name + MARK_SUFFIX)


@dataclass
class StageMark:
    """What a stage's output was made from (digests only: no setting's value is stored)."""

    stage: str
    settings: dict[str, str]
    inputs: dict[str, str]
    complete: bool = False
    partial_inputs: bool = False
    outputs: dict[str, str] = field(default_factory=dict)

    def changes(self, other: StageMark) -> list[str]:
        keys = set(self.settings) | set(other.settings)
        changed = sorted(k for k in keys if self.settings.get(k) != other.settings.get(k))
        names = set(self.inputs) | set(other.inputs)
        changed += sorted(f"input {k}" for k in names if self.inputs.get(k) != other.inputs.get(k))
        if self.stage != other.stage:
            changed.insert(0, f"stage {other.stage} → {self.stage}")
        return changed


def read_mark(output: str | Path) -> StageMark | None:
    path = mark_path(output)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return StageMark(**{k: data[k] for k in ("stage", "settings", "inputs")},
                         complete=bool(data.get("complete")), partial_inputs=bool(data.get("partial_inputs")),
                         outputs=dict(data.get("outputs") or {}))
    except (ValueError, KeyError, TypeError) as exc:
        raise RecordError(f"{path}: unreadable stage mark ({one_line(str(exc), 120)}); delete it and re-run "
                          "with --force, or use a new --out") from None


def write_mark(output: str | Path, mark: StageMark) -> None:
    write_json_atomic(mark_path(output), asdict(mark))


def _covering_mark(path: Path) -> tuple[StageMark | None, str]:
    """The mark of ``path`` itself, else of the stage directory holding it; and the file's name in it."""
    mark = read_mark(path)
    if mark is not None:
        return mark, path.name
    parent = read_mark(path.parent)
    return parent, path.name


def check_input(path: str | Path, allow_partial: bool = False) -> bool:
    """Refuse an unfinished stage output as input (see the module docstring); return whether it is partial.

    With ``allow_partial`` an unfinished input is used (with a warning) and reported as partial, so
    the stage that reads it marks its own output as made from a partial input.
    """
    path = Path(path)
    mark, name = _covering_mark(path)
    if mark is None:
        return False
    if not mark.complete:
        problem = f"is unfinished: {mark.stage} stopped before it was done"
        todo = f"finish it (re-run `mpa {mark.stage}` with the same --config/--out: it resumes)"
    elif mark.partial_inputs:
        problem = f"was made by {mark.stage} from an unfinished input"
        todo = "finish the earlier stage, then re-run this one with --force"
    elif name in mark.outputs and path_digest(path) != mark.outputs[name]:
        problem = f"was changed after {mark.stage} finished it (another writer?)"
        todo = f"re-run `mpa {mark.stage}` with --force to remake it"
    else:
        return False
    if allow_partial:
        log.warning("%s %s; used as it is (allow_partial)", path, problem)
        return True
    raise IncompleteInput(f"{path} {problem}; {todo}, or pass --allow-partial (allow_partial: true) to use it "
                          "as it is")


class StageRun:
    """One stage writing ``output`` (a file or a directory): the lock, the mark, resume or refuse.

    ``settings`` (nested dict) and ``inputs`` (name → local path) key the output; ``clear`` are the
    paths ``force`` deletes when they no longer match (default: ``output``). After :meth:`begin`,
    ``done`` says whether a finished output with the same key is already there.
    """

    def __init__(self, output: str | Path, stage: str, *, settings: dict[str, Any],
                 inputs: dict[str, str | Path] | None = None, digests: dict[str, str] | None = None,
                 force: bool = False, partial_inputs: bool = False, clear: Iterable[str | Path] | None = None,
                 ) -> None:
        self.output = Path(output)
        self.stage = stage
        self.force = force
        self.clear = [Path(p) for p in clear] if clear is not None else [self.output]
        self.mark = StageMark(stage=stage, settings=_flatten(settings),
                              inputs={**{k: path_digest(v) for k, v in (inputs or {}).items()}, **(digests or {})},
                              partial_inputs=partial_inputs)
        self.done = False
        self._lock: OutputLock | None = None

    def begin(self) -> StageRun:
        self._lock = OutputLock(self.output)
        try:
            old = read_mark(self.output)
            if old is not None and not any(p.exists() for p in self.clear):
                old = None  # nothing was written under the old key: nothing to protect
            if old is not None and old.changes(self.mark):
                changed = old.changes(self.mark)
                if not self.force:
                    shown = ", ".join(changed[:6]) + (f" and {len(changed) - 6} more" if len(changed) > 6 else "")
                    raise StageMismatch(
                        f"{self.output} was made by {old.stage} with other inputs or settings (changed: {shown}); "
                        "write to a new --out (or --predictions), or pass --force to discard it and redo the stage")
                log.warning("%s: inputs or settings changed; discarding it and redoing %s (force)",
                            self.output, self.stage)
                for p in self.clear:
                    if p.is_dir():
                        shutil.rmtree(p)
                    elif p.exists():
                        p.unlink()
                old = None
            if old is not None and old.complete and old.partial_inputs == self.mark.partial_inputs:
                self.done = True
            else:
                write_mark(self.output, self.mark)
        except BaseException:
            self.close()
            raise
        return self

    def reopen(self) -> None:
        """A finished output gets more work (e.g. new images): unfinished until :meth:`finish`."""
        self.mark.complete = False
        write_mark(self.output, self.mark)
        self.done = False

    def finish(self, outputs: Iterable[str | Path] = ()) -> None:
        """Mark the output complete, with the digests of ``outputs`` (files in it, or the output itself)."""
        digests = {}
        for p in outputs:
            p = Path(p)
            name = p.name if p == self.output else p.relative_to(self.output).as_posix()
            digests[name] = path_digest(p)
        self.mark.complete = True
        self.mark.outputs = digests
        write_mark(self.output, self.mark)
        self.done = True

    def close(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> StageRun:
        return self.begin()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()
