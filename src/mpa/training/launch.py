"""Start N local worker processes for data-parallel PL: ``train.processes: N`` in the config.

Uses PyTorch's own launcher (``torch.distributed.launcher.api.elastic_launch``, what ``torchrun`` runs)
programmatically: a c10d rendezvous on a free local port, N fresh Python processes with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` set; each joins the process group
(gloo on CPU, NCCL on GPU) in :func:`mpa.training.distributed.init_distributed`. Nobody has to learn
a launcher; and a run started by any launcher (``torchrun``, a Kubeflow TrainJob) is recognised by
the same environment.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import uuid
from collections.abc import Sequence


class LaunchError(RuntimeError):
    """A worker process failed; the message names the rank and its error."""


def run_processes(nprocs: int, module: str, args: Sequence[str], *, run_id: str | None = None) -> None:
    """Run ``python -m <module> <args>`` as ``nprocs`` ranks on this machine and wait for all of them."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    os.environ.setdefault("OMP_NUM_THREADS", "1")  # torchrun's default with several processes per node
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nprocs,
        run_id=run_id or uuid.uuid4().hex[:12],
        rdzv_backend="c10d",
        rdzv_endpoint="127.0.0.1:0",  # a free port, like `torchrun --standalone`
        max_restarts=0,
        monitor_interval=0.2,
        start_method="spawn",
    )
    try:
        elastic_launch(config, entrypoint=sys.executable)("-m", module, *args)
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        detail = failure.message if isinstance(failure.message, str) else failure.message.get("message", "")
        first = (detail or "").strip().splitlines()
        reason = first[-1] if first else f"exit code {failure.exitcode}"
        raise LaunchError(f"PL worker rank {rank} of {nprocs} failed: {reason}") from exc


def die_with_parent() -> None:
    """Linux: this process gets SIGKILL when the process that started it dies (no orphaned ranks)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    except OSError:
        pass
