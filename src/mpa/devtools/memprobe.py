"""Measure training memory on the CPU (benchmarks and tests; the runtime never imports this).

- :func:`saved_activation_bytes`: bytes autograd keeps for backward while ``fn`` runs (unique
  storages, parameters excluded) — what the plan's activation estimate models;
- :func:`reset_peak_rss` / :func:`peak_rss_bytes`: the process's resident-set high-water mark
  (Linux ``/proc/self/clear_refs`` + ``VmHWM``), for whole training steps.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def saved_activation_bytes(fn: Callable[[], Any], params: list[torch.nn.Parameter]) -> tuple[Any, int]:
    """Run ``fn`` and return (its result, bytes of the tensors saved for backward that are not parameters)."""
    param_ptrs = {p.untyped_storage().data_ptr() for p in params}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        ptr = st.data_ptr()
        if ptr not in param_ptrs:
            seen[ptr] = max(seen.get(ptr, 0), st.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(seen.values())


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS to its current RSS (Linux >= 4.0); False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")


def rss_bytes() -> int:
    return _status_kib("VmRSS") * 1024


def peak_rss_bytes() -> int:
    return _status_kib("VmHWM") * 1024
