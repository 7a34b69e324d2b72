"""Resume a killed PL run from the Trainer's checkpoints, loading nothing that can run code.

``train.save_every_steps: K`` makes the Trainer write ``<level dir>/resume/checkpoint-<step>/`` every K
steps (weights as safetensors; optimizer, scheduler and RNG states with ``torch.save``;
``trainer_state.json`` last). The Trainer reads those back with ``torch.load(weights_only=True)``; on
top of that PL runs with ``TORCH_FORCE_WEIGHTS_ONLY_LOAD=1`` (every ``torch.load`` in the process and
its ranks refuses pickled objects, whatever its caller asked), and refuses checkpoints holding files
that are unpickled outside ``torch.load`` (DCP ``.metadata`` of sharded FSDP saves, DeepSpeed's
``global_step*``). A checkpoint without a whole ``trainer_state.json`` was cut by a kill mid-save: it is
deleted and the previous one is used.

``resume/mpa_resume.json`` records a fingerprint of the samples and the settings that change the
weights; resuming from another fingerprint is refused (nothing is silently reused).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

#: Settings that do not change the trained weights (how many processes, how often to save, where, how fast).
NEUTRAL_FIELDS = frozenset({"processes", "strategy", "save_every_steps", "backend", "trainjob", "dataloader_workers",
                            "accelerate_config"})
_CKPT = re.compile(r"^checkpoint-(\d+)$")
#: files that would be unpickled by something other than ``torch.load``
UNSAFE_NAMES = (".metadata",)


class ResumeMismatch(ValueError):
    """A resume state written for other samples or other settings."""


class UnsafeCheckpoint(ValueError):
    """A resume checkpoint holding something that could run code when loaded."""


def fingerprint(samples_path: str | Path, train: dict[str, Any], student: dict[str, Any]) -> str:
    h = hashlib.sha256()
    h.update(Path(samples_path).read_bytes())
    relevant = {k: v for k, v in sorted(train.items()) if k not in NEUTRAL_FIELDS}
    h.update(json.dumps({"train": relevant, "student": student}, sort_keys=True, default=str).encode())
    return h.hexdigest()


def resume_point(resume_dir: Path, fp: str, main: bool = True) -> Path | None:
    """The newest complete checkpoint to resume from (None: start fresh), after the safety checks."""
    mark = resume_dir / "mpa_resume.json"
    found = sorted((int(m.group(1)), p) for p in resume_dir.glob("checkpoint-*") if (m := _CKPT.match(p.name)))
    complete = [p for _, p in found if step_of(p) is not None]
    for _, p in found:
        if main and p not in complete:
            shutil.rmtree(p, ignore_errors=True)  # cut by a kill mid-save
    if complete:
        recorded = json.loads(mark.read_text(encoding="utf-8")).get("fingerprint") if mark.is_file() else None
        if recorded != fp:
            raise ResumeMismatch(
                f"{complete[-1]} was saved by a PL run on other samples or with other train settings; "
                f"delete {resume_dir} to start over, or run with the settings it was saved with"
            )
        check_safe(complete[-1])
        return complete[-1]
    if main:
        resume_dir.mkdir(parents=True, exist_ok=True)
        mark.write_text(json.dumps({"fingerprint": fp}), encoding="utf-8")
    return None


def step_of(ckpt: Path) -> int | None:
    """The optimizer step a checkpoint holds; None when its ``trainer_state.json`` (written last) is not whole."""
    try:
        return int(json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))["global_step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_safe(ckpt: Path) -> None:
    for p in ckpt.rglob("*"):
        if p.name in UNSAFE_NAMES or (p.is_dir() and p.name.startswith("global_step")):
            raise UnsafeCheckpoint(
                f"{p}: resuming would unpickle it (sharded FSDP or DeepSpeed state); mpa refuses to load code "
                "from a run directory. Save full state dicts (the shipped accelerate configs do), or delete "
                f"{ckpt.parent} to start over"
            )


def refused_load_message(exc: BaseException, ckpt: Path) -> str:
    """One line for a checkpoint file ``torch.load(weights_only=True)`` refused."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return (f"{ckpt} holds a file that is not plain tensors and numbers (refused, loading it could run code: "
            f"{first}); delete {ckpt.parent} to start over")
