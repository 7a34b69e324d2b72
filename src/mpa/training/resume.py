"""Resume a killed PL run: model, optimizer, scheduler, data position and RNG every K steps.

``<level dir>/resume/step-<n>/`` holds a ``torch.distributed.checkpoint`` of the trainable weights and
the AdamW state (sharded under FSDP, written once under DDP), the scheduler state, the losses so
far, and each process's RNG state. A save is written under ``step-<n>.tmp`` and renamed when every
process has finished, so a kill mid-save leaves the previous save intact. The data position is the
step: the sample order is a pure function of the seed and the samples (:mod:`mpa.training.batches`).

A save records a fingerprint of the samples file and the training settings that change the result;
resuming from a save with another fingerprint is refused (nothing is silently reused). The number
of processes may differ on resume (the checkpoint is resharded); the RNG state is then not restored.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mpa.training.distributed import DistContext

#: Settings that do not change the trained weights (how many processes, how often to save, where).
NEUTRAL_FIELDS = frozenset({"processes", "strategy", "save_every_steps", "backend", "trainjob"})
_STEP_DIR = re.compile(r"^step-(\d+)$")


class ResumeMismatch(ValueError):
    """A resume state written for other samples or other settings."""


@dataclass
class ResumePoint:
    step: int  # optimizer steps done
    losses: list[float] = field(default_factory=list)
    path: Path | None = None


def fingerprint(samples_path: str | Path, train: dict[str, Any], student: dict[str, Any]) -> str:
    h = hashlib.sha256()
    h.update(Path(samples_path).read_bytes())
    relevant = {k: v for k, v in sorted(train.items()) if k not in NEUTRAL_FIELDS}
    h.update(json.dumps({"train": relevant, "student": student}, sort_keys=True, default=str).encode())
    return h.hexdigest()


def latest(resume_dir: Path) -> Path | None:
    """The newest complete save (``step-<n>``, never a ``.tmp``)."""
    if not resume_dir.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in resume_dir.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
    return max(found)[1] if found else None


@contextlib.contextmanager
def _single_process_quiet() -> Iterator[None]:
    """One process has no process group: that is intended, not worth a warning per save."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")
        yield


def _states(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    return get_state_dict(model, optimizer, options=StateDictOptions(ignore_frozen_params=True))


def save(
    resume_dir: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    losses: list[float],
    fp: str,
    ctx: DistContext,
    keep: int = 1,
) -> Path:
    """Write ``step-<step>`` (all processes take part); drop older saves beyond ``keep``."""
    import torch.distributed.checkpoint as dcp

    final = resume_dir / f"step-{step:06d}"
    tmp = resume_dir / f"step-{step:06d}.tmp"
    if ctx.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True, exist_ok=True)
    ctx.barrier()
    msd, osd = _states(model, optimizer)
    with _single_process_quiet():
        dcp.save({"model": msd, "optim": osd}, checkpoint_id=str(tmp), no_dist=not ctx.distributed)
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save(rng, tmp / f"rng-{ctx.rank}.pt")
    if ctx.is_main:
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        meta = {"step": step, "fingerprint": fp, "world_size": ctx.world_size, "losses": losses}
        (tmp / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    ctx.barrier()
    if ctx.is_main:
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        older = sorted(p for p in resume_dir.iterdir() if _STEP_DIR.match(p.name) and p != final)
        for p in older[: max(0, len(older) - (keep - 1))]:
            shutil.rmtree(p, ignore_errors=True)
    ctx.barrier()
    return final


def load(
    resume_dir: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    fp: str,
    ctx: DistContext,
) -> ResumePoint | None:
    """Restore the newest save into ``model``/``optimizer``/``scheduler``; None when there is none."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    path = latest(resume_dir)
    if path is None:
        return None
    meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
    if meta.get("fingerprint") != fp:
        raise ResumeMismatch(
            f"{path} was saved by a PL run on other samples or with other train settings; "
            f"delete {resume_dir} to start over, or run with the settings it was saved with"
        )
    msd, osd = _states(model, optimizer)
    state = {"model": msd, "optim": osd}
    with _single_process_quiet():
        dcp.load(state, checkpoint_id=str(path), no_dist=not ctx.distributed)
    set_state_dict(
        model,
        optimizer,
        model_state_dict=state["model"],
        optim_state_dict=state["optim"],
        options=StateDictOptions(ignore_frozen_params=True, strict=False),
    )
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=False))
    rng_file = path / f"rng-{ctx.rank}.pt"
    if meta.get("world_size") == ctx.world_size and rng_file.is_file():
        rng = torch.load(rng_file, weights_only=False)
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
    return ResumePoint(step=int(meta["step"]), losses=list(meta.get("losses", [])), path=path)


def clear(resume_dir: Path) -> None:
    shutil.rmtree(resume_dir, ignore_errors=True)
