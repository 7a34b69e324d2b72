"""Progress without a terminal: log lines (done/total, rate, ETA) every 5 % and at least every 30 s."""

from __future__ import annotations

import os
import subprocess
import sys

import yaml

from mpa.ui import LogProgress


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_a_line_every_five_percent_with_rate_and_eta():
    lines: list[str] = []
    clock = Clock()
    prog = LogProgress("PA annotate", total=200, emit=lines.append, clock=clock)
    prog.begin()
    for _ in range(200):
        clock.t += 0.5
        prog.advance(1)
    prog.end()
    assert lines[0] == "PA annotate: 0/200 (0.0%) elapsed 0s"
    assert len(lines) == 1 + 20  # one per 10 items (5 %), the last at 200/200; end() adds nothing new
    assert lines[1] == "PA annotate: 10/200 (5.0%) 2.00/s ETA 1m35s elapsed 5s"
    assert lines[-1] == "PA annotate: 200/200 (100.0%) 2.00/s elapsed 1m40s"


def test_a_line_at_least_every_thirty_seconds_also_while_stalled():
    lines: list[str] = []
    clock = Clock()
    prog = LogProgress("PI teacher", total=100_000, completed=400, emit=lines.append, clock=clock)
    prog.begin()
    clock.t += 29
    prog.advance(10)  # < 5 %, < 30 s: nothing
    assert len(lines) == 1
    clock.t += 2
    prog.advance(10)  # 31 s since the last line
    assert lines[-1].startswith("PI teacher: 420/100000 (0.4%) 0.65/s ETA ") and "resumed at 400" in lines[-1]
    clock.t += 31
    prog.tick()  # the heartbeat: no progress for 31 s still writes a line
    assert len(lines) == 3 and lines[-1].startswith("PI teacher: 420/100000")
    prog.tick()
    assert len(lines) == 3


def test_stages_log_progress_when_not_on_a_terminal(tiny_config, tmp_path):
    """`mpa annotate` with stderr captured (as in a pod or CI) writes progress lines, not nothing."""
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config))
    res = subprocess.run([sys.executable, "-m", "mpa.cli", "annotate", "-c", str(cfg)], capture_output=True,
                         text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert res.returncode == 0, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if " PA annotate: " in ln]
    assert lines[0].endswith("PA annotate: 0/12 (0.0%) elapsed 0s")
    assert "PA annotate: 12/12 (100.0%)" in lines[-1] and "/s" in lines[-1]
    assert "\r" not in res.stderr and "it/s]" not in res.stderr  # no tqdm bars
