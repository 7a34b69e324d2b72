"""Terminal output: progress and summary tables.

Progress is visible everywhere: on a terminal one set of rich bars (the libraries' own tqdm bars are
switched off, :func:`quiet_library_bars`); without a terminal (KFP pod logs, CI, ``| tee``) one plain
line per ``PROGRESS_EVERY_FRACTION`` of the work and at least every ``PROGRESS_EVERY_S`` seconds, also
while a slow batch makes no progress: ``<time> PA annotate: 120/2400 (5.0%) 3.20/s ETA 11m52s``.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console(stderr=True)

PROGRESS_EVERY_S = 30.0
PROGRESS_EVERY_FRACTION = 0.05


def quiet_library_bars() -> None:
    """Switch off transformers' and huggingface_hub's own tqdm bars (they would interleave with ours);
    mpa's stages report progress through :func:`progress_bar`. Cheap: nothing heavy is imported here."""
    import os

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # read by huggingface_hub and transformers
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class LogProgress:
    """Progress as log lines (no terminal): done/total, percent, rate since start, ETA."""

    def __init__(self, description: str, total: int, completed: int = 0, *,
                 emit: Callable[[str], None] | None = None, clock: Callable[[], float] = time.monotonic,
                 every_s: float = PROGRESS_EVERY_S, every_fraction: float = PROGRESS_EVERY_FRACTION) -> None:
        self.description, self.total = description, max(int(total), 0)
        self.done = self._start_done = self._last_done = int(completed)
        self._emit = emit or _stderr_line
        self._clock = clock
        self._start = self._last_t = clock()
        self.every_s = every_s
        self._step = max(1, int(self.total * every_fraction))
        self._lock = threading.Lock()

    def line(self) -> str:
        elapsed = self._clock() - self._start
        fresh = self.done - self._start_done
        rate = fresh / elapsed if elapsed > 0 else 0.0
        pct = 100.0 * self.done / self.total if self.total else 100.0
        parts = [f"{self.description}: {self.done}/{self.total} ({pct:.1f}%)"]
        if fresh and elapsed > 0:
            parts.append(f"{rate:.2f}/s" if rate >= 0.1 else f"{60 * rate:.2f}/min")
            if self.done < self.total:
                parts.append(f"ETA {_duration((self.total - self.done) / rate)}")
        parts.append(f"elapsed {_duration(elapsed)}")
        if self._start_done:
            parts.append(f"resumed at {self._start_done}")
        return " ".join(parts)

    def _write(self) -> None:
        self._last_t, self._last_done = self._clock(), self.done
        self._emit(self.line())

    def begin(self) -> None:
        with self._lock:
            self._write()

    def advance(self, n: int = 1) -> None:
        with self._lock:
            self.done += n
            if (self.done - self._last_done >= self._step or self._clock() - self._last_t >= self.every_s
                    or self.done >= self.total):
                self._write()

    def tick(self) -> None:
        """Called by the heartbeat: a line if none was written for ``every_s`` (a slow batch)."""
        with self._lock:
            if self._clock() - self._last_t >= self.every_s:
                self._write()

    def end(self) -> None:
        with self._lock:
            if self.done != self._last_done:
                self._write()


def _stderr_line(text: str) -> None:
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    sys.stderr.write(f"{stamp} {text}\n")
    sys.stderr.flush()


@contextmanager
def _log_progress(description: str, total: int, completed: int) -> Iterator[Callable[[int], None]]:
    prog = LogProgress(description, total, completed)
    prog.begin()
    stop = threading.Event()

    def heartbeat() -> None:
        while not stop.wait(min(5.0, prog.every_s)):
            prog.tick()

    beat = threading.Thread(target=heartbeat, name=f"progress {description}", daemon=True)
    beat.start()
    try:
        yield prog.advance
    finally:
        stop.set()
        beat.join(timeout=1.0)
        prog.end()


@contextmanager
def progress_bar(description: str, total: int, completed: int = 0) -> Iterator[Any]:
    """Progress of one stage; yields ``advance(n)``. A rich bar on a terminal, log lines otherwise."""
    if not console.is_terminal:
        with _log_progress(description, total, completed) as advance:
            yield advance
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as prog:
        task = prog.add_task(description, total=total, completed=completed)

        def advance(n: int = 1) -> None:
            prog.advance(task, n)

        yield advance


def summary_table(title: str, rows: dict[str, Any]) -> None:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value", justify="right")
    for key, value in rows.items():
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    console.print(table)
