"""Result cache: a finished model call is never paid for twice.

Keyed by (image content hash, task, prompt version, prompt text, model id and revision,
decoding parameters, attempt k): a re-run — or another shard, or a run in another directory
pointed at the same cache — skips finished work, and a changed prompt (new prompt version or
text), model revision or decoding setting misses and re-does it.

Stored in one SQLite file (WAL mode) so several shard processes on one machine or a shared
volume can read and write it at once; every ``put_many`` is one committed transaction, so a
killed process loses at most the batch in flight.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mpa.errors import MpaError, one_line

SCHEMA = "CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, value TEXT NOT NULL, created REAL NOT NULL)"


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    writes: int = 0
    by_stage: dict[str, dict[str, int]] = field(default_factory=dict)

    def count(self, stage: str, hits: int, misses: int) -> None:
        self.hits += hits
        self.misses += misses
        s = self.by_stage.setdefault(stage, {"hits": 0, "misses": 0})
        s["hits"] += hits
        s["misses"] += misses


def cache_key(**parts: Any) -> str:
    """A stable digest of the key parts (canonical JSON; order of keyword arguments does not matter)."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def model_identity(vlm: Any) -> dict[str, Any]:
    """What makes a model's answers what they are: id and revision, backend (served name and endpoint for
    API backends) and, for a local checkpoint directory, a digest of its files — a checkpoint retrained
    in place under the same path is another model.

    ``vlm`` is a loaded VLM, a :class:`~mpa.config.ModelConfig`, or anything holding one as ``cfg`` (a
    lazy loader): all three give the same identity, without loading the model.
    """
    from mpa.config import ModelConfig

    cfg = vlm if isinstance(vlm, ModelConfig) else getattr(vlm, "cfg", None)
    if cfg is None:  # a bare VLM, or a function that loads one: its name (an object's repr changes per process)
        return {"model": getattr(vlm, "model_id", None) or getattr(vlm, "__qualname__", type(vlm).__name__)}
    ident: dict[str, Any] = {"model": cfg.model, "revision": cfg.revision, "backend": cfg.backend}
    if cfg.backend == "openai":
        ident["served"] = cfg.served_name or cfg.model
        ident["base_url"] = cfg.openai.base_url
    elif Path(cfg.model).expanduser().is_dir():
        from mpa.records import path_digest

        ident["checkpoint"] = path_digest(Path(cfg.model).expanduser())
    return ident


class CacheError(MpaError, ValueError):
    """The result-cache database cannot be used."""


def _unusable(path: Path, exc: Exception) -> MpaError:
    code = getattr(exc, "sqlite_errorcode", None)
    code = code & 0xFF if isinstance(code, int) else None  # the primary code of an extended one (IOERR_WRITE)
    if code in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_IOERR) or "disk is full" in str(exc) \
            or "readonly database" in str(exc):
        # the disk (or a read-only mount) is at fault, not the cache: deleting it would not help
        import errno

        from mpa.safeio import write_error

        err = errno.EROFS if "readonly" in str(exc) or code == sqlite3.SQLITE_READONLY else \
            errno.ENOSPC if "full" in str(exc) or code == sqlite3.SQLITE_FULL else errno.EIO
        return write_error(path, OSError(err, one_line(str(exc), 120)))
    if "locked" in str(exc):
        return CacheError(f"result cache {path} stayed locked by another process for 60 s; wait for it, or give "
                          "this run its own cache.dir")
    return CacheError(f"result cache {path} cannot be used ({one_line(str(exc), 120)}): it only holds model answers "
                      "that can be recomputed — delete it, point cache.dir elsewhere, or set cache.enabled=false")


class ResultCache:
    """A persistent key → text map (see module docstring)."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        if path.suffix != ".sqlite":
            path = path / "results.sqlite"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.stats = CacheStats()
        try:
            self._db = sqlite3.connect(str(path), timeout=60.0, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(SCHEMA)
            self._db.execute("SELECT key, value, created FROM results LIMIT 1").fetchall()
            self._db.commit()
        except sqlite3.Error as exc:
            raise _unusable(path, exc) from exc

    def get_many(self, keys: list[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        try:
            for i in range(0, len(keys), 500):
                part = keys[i : i + 500]
                q = f"SELECT key, value FROM results WHERE key IN ({','.join('?' * len(part))})"
                found.update(dict(self._db.execute(q, part).fetchall()))
        except sqlite3.Error as exc:
            raise _unusable(self.path, exc) from exc
        return found

    def put_many(self, items: dict[str, str]) -> None:
        if not items:
            return
        now = time.time()
        try:
            with self._db:
                self._db.executemany(
                    "INSERT OR REPLACE INTO results (key, value, created) VALUES (?, ?, ?)",
                    [(k, v, now) for k, v in items.items()],
                )
        except sqlite3.Error as exc:
            raise _unusable(self.path, exc) from exc
        self.stats.writes += len(items)

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0]

    def close(self) -> None:
        self._db.close()

    def summary(self) -> dict[str, Any]:
        return {"path": str(self.path), **asdict(self.stats)}


def default_cache_dir() -> Path:
    """Where runs share their result cache unless ``cache.dir`` says otherwise: ``$MPA_CACHE/results``
    (``~/.cache/mpa/results``)."""
    from mpa.storage import cache_dir

    return cache_dir() / "results"


@contextmanager
def open_run_cache(cfg: Any, run_dir: str | Path | None) -> Iterator[ResultCache | None]:
    """The one way to open a run's PA/PI result cache, closed when the block ends (also on an error):
    ``cache.dir`` when set, else the user's shared one (:func:`default_cache_dir`, the same for every run
    directory, so a new ``--out`` does not pay the teacher again); None when disabled, or when there is no
    run directory (``run_dir=None``: a Kubeflow pod, whose own disk goes with it, uses a cache only where
    ``cache.dir`` names a shared volume)."""
    if not cfg.cache.enabled:
        cache = None
    elif cfg.cache.dir:
        cache = ResultCache(Path(cfg.cache.dir))
    else:
        cache = None if run_dir is None else ResultCache(default_cache_dir())
    try:
        yield cache
    finally:
        if cache is not None:
            cache.close()
