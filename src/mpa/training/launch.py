"""``train.processes: N``: start N ranks of ``python -m mpa.stages.level <spec.json>`` on this machine.

Launched by ``torchrun --standalone`` (``python -m torch.distributed.run``), or by ``accelerate launch
--config_file <train.accelerate_config>`` when one is set (``configs/accelerate/``: DDP, FSDP, DeepSpeed
ZeRO-3 on GPUs; accelerate starts several CPU processes only through MPI, so CPU runs use torchrun).
Every rank builds the same Trainer, which joins the process group the launcher describes (gloo on CPU,
NCCL on GPUs). A failing rank leaves its error in ``<spec>.error-<rank>``; the earliest is raised here.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


class LaunchError(RuntimeError):
    """A worker process failed; the message names the rank and its error."""


def launched_world_size() -> int:
    """``WORLD_SIZE`` set by a launcher (1 when this process was not started by one)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def launch_command(nprocs: int, spec: Path, accelerate_config: str | None = None) -> list[str]:
    if accelerate_config:
        return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", accelerate_config,
                "--num_processes", str(nprocs), "-m", "mpa.stages.level", str(spec)]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nprocs}",
            "-m", "mpa.stages.level", str(spec)]


def run_processes(nprocs: int, spec: Path, accelerate_config: str | None = None) -> None:
    """Run the ranks, wait for all of them; :class:`LaunchError` names the first rank that failed."""
    env = {**os.environ, "TORCH_FORCE_WEIGHTS_ONLY_LOAD": "1"}
    env.setdefault("OMP_NUM_THREADS", "1")  # torchrun's default with several processes per node
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    for old in spec.parent.glob(spec.name + ".error-*"):
        old.unlink()
    cmd = launch_command(nprocs, spec, accelerate_config)
    code = subprocess.run(cmd, env=env, check=False, preexec_fn=die_with_parent).returncode
    errors = sorted(spec.parent.glob(spec.name + ".error-*"))
    try:
        if code or errors:
            if errors:  # the first to fail is the cause; the others lost their peer
                err = min((json.loads(e.read_text(encoding="utf-8")) for e in errors), key=lambda e: e["time"])
                raise LaunchError(f"PL worker rank {err['rank']} of {nprocs} failed: {err['error']}")
            raise LaunchError(f"PL workers failed (launcher exit code {code}); see the log above")
    finally:
        for e in errors:
            e.unlink(missing_ok=True)


def record_error(spec: Path, exc: BaseException) -> None:
    """In a rank: leave this rank's error where :func:`run_processes` finds it."""
    rank = os.environ.get("RANK", "0")
    msg = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
    (spec.parent / f"{spec.name}.error-{rank}").write_text(
        json.dumps({"rank": int(rank), "error": f"{type(exc).__name__}: {msg}", "time": time.time()}),
        encoding="utf-8")


def die_with_parent() -> None:
    """Linux: this process gets SIGKILL when the process that started it dies (no orphaned ranks)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass
