"""The one way mpa writes a local file: no-follow, every byte checked, atomic and fsynced where it matters.

Every local write of a run (records, stage marks, lock files, logs, config copies, sheets) goes through
this module:

- :func:`open_fd` opens with ``O_NOFOLLOW``: a symlink planted where an output should be
  (``annotations.jsonl.lock`` → ``~/.bashrc``) is refused, never followed and truncated;
- :func:`write_all` checks the byte count ``os.write`` returns and loops on a short write, so a
  momentarily full disk can never leave a torn record that passes as written;
- :func:`write_atomic` writes a whole file through an exclusive temporary file, fsyncs it, renames it
  over the target and fsyncs the directory, so a mark or a record file is either the old or the new one;
- any ``OSError`` becomes :class:`WriteFailed` (an :class:`~mpa.errors.MpaError`, printed as one
  line): it names the file and says what to do (free space, a writable ``--out``, remove the link).
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

from mpa.errors import MpaError

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class WriteFailed(MpaError, OSError):
    """A local write that failed (full disk, read-only or missing directory, a symlink in the way)."""


_ADVICE = {
    errno.ENOSPC: "the disk is full: free space (or point --out at a larger disk), then re-run the same "
                  "command — finished work is kept and the run resumes",
    errno.EDQUOT: "the disk quota is used up: free space, then re-run the same command — finished work is kept",
    errno.EFBIG: "the file size limit was reached (ulimit -f, or the file system's limit): raise it, then re-run "
                 "the same command — finished work is kept",
    errno.EROFS: "the file system is read-only: write to another --out",
    errno.EACCES: "no permission to write there: write to another --out (or fix its permissions)",
    errno.EPERM: "no permission to write there: write to another --out (or fix its permissions)",
    errno.ELOOP: "it is a symbolic link, which mpa never writes through: remove the link (or use another --out)",
    errno.ENOTDIR: "a part of the path is not a directory (a dangling symlink or a file?): use another --out",
    errno.EIO: "the disk failed the write (full, or failing): free space or check the disk, then re-run the "
               "same command — finished work is kept",
    errno.ENOENT: "its directory does not exist (a dangling symlink?): create it or use another --out",
    errno.EISDIR: "it is a directory: remove it or use another --out",
}


#: errors of the disk, not of the file: one line at the command line whoever wrote
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})


def write_error(path: str | os.PathLike, exc: OSError, action: str = "write") -> WriteFailed:
    """``exc`` as one line naming ``path`` and what to do."""
    if isinstance(exc, WriteFailed):
        return exc
    reason = exc.strerror or str(exc) or type(exc).__name__
    advice = _ADVICE.get(exc.errno or 0, "check the path and the disk, then re-run the same command")
    err = WriteFailed(f"cannot {action} {path}: {reason}; {advice}")
    err.errno = exc.errno
    return err


def check_dir(path: str | os.PathLike, what: str = "--out") -> Path:
    """Create directory ``path`` (and its parents) or fail with one line saying why (dangling link, read-only)."""
    p = Path(path)
    if str(path) == "":
        raise WriteFailed(f"{what} is empty: name a directory")
    if p.is_symlink() and not p.exists():
        raise WriteFailed(f"cannot use {what} {p}: it is a symbolic link to {os.readlink(p)}, which does not "
                          "exist; create the target or use another directory")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(p, exc, "create directory") from None
    if not os.access(p, os.W_OK | os.X_OK):
        raise write_error(p, OSError(errno.EACCES, "Permission denied"), "write into")
    return p


def open_fd(path: str | os.PathLike, flags: int, mode: int = 0o644) -> int:
    """``os.open`` with no-follow and close-on-exec; errors as :class:`WriteFailed`."""
    try:
        return os.open(path, flags | _NOFOLLOW | _CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP or (exc.errno == errno.EMLINK and Path(path).is_symlink()):
            exc = OSError(errno.ELOOP, "Too many levels of symbolic links")
        raise write_error(path, exc, "open") from None


def write_all(fd: int, data: bytes, path: str | os.PathLike) -> None:
    """Write every byte of ``data`` to ``fd`` (looping on short writes); errors as :class:`WriteFailed`."""
    view = memoryview(data)
    try:
        while view:
            n = os.write(fd, view)
            if n <= 0:  # no progress and no error: never pass this off as written
                raise OSError(errno.EIO, f"write returned {n} with {len(view)} bytes left")
            view = view[n:]
    except OSError as exc:
        raise write_error(path, exc) from None


def fsync(fd: int, path: str | os.PathLike) -> None:
    try:
        os.fsync(fd)
    except OSError as exc:
        raise write_error(path, exc, "flush") from None


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | _CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a directory; the rename itself is atomic
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike, data: bytes | str, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically (exclusive temp file, fsync, rename, fsync of the directory).

    A symlink at ``path`` is replaced by the file, never followed; a symlink at the temporary name is removed.
    """
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(path.parent, exc, "create directory") from None
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)  # a leftover (or planted) temp file or link: removed, never written through
    fd = open_fd(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        write_all(fd, payload, path)
        if durable:
            fsync(fd, path)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    try:
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise write_error(path, exc, "replace") from None
    if durable:
        _fsync_dir(path.parent)


class AppendFile:
    """A text file opened for appending, no-follow; every write checked (:func:`write_all`)."""

    def __init__(self, path: str | os.PathLike, *, truncate: bool = False, durable: bool = False) -> None:
        self.path = Path(path)
        self.durable = durable
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | (os.O_TRUNC if truncate else 0)
        self.fd = open_fd(self.path, flags)

    def write(self, text: str | bytes) -> int:
        data = text.encode("utf-8") if isinstance(text, str) else text
        write_all(self.fd, data, self.path)
        if self.durable:
            fsync(self.fd, self.path)
        return len(text)

    def flush(self) -> None:
        """Writes go straight to the kernel; nothing to flush (kept for file-object callers)."""

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> AppendFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def open_append(path: str | os.PathLike, *, truncate: bool = False, durable: bool = False) -> Iterator[AppendFile]:
    """``with open_append(path) as f: f.write(line)`` — the safe replacement of ``open(path, "a")``."""
    f = AppendFile(path, truncate=truncate, durable=durable)
    try:
        yield f
    finally:
        f.close()
