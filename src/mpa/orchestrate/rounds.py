"""Iterative MPA: rounds of PI → PL over one PA pool until the parity set runs dry.

The paper names iterative refinement as future work. Round 1 is the paper's MPA. Round r ≥ 2 asks
round r−1's student the teacher-consistent questions again (PI), keeps what it still gets wrong,
trains on that and evaluates. The teacher is never asked twice: round r reuses round 1's teacher
answers (``pi/pi_teacher.jsonl``), and a round that would need a teacher call fails loudly.
Whether to go on is decided from parity-set sizes only (``iterate.min_k``,
``iterate.stop_when_not_shrinking``), never from benchmark labels.

Layout: round 1 is the run directory itself (``pi/``, ``level/``, ``eval/after.jsonl``); round r ≥ 2
lives in ``rounds/<r>/`` (``pi/``, ``level/``, ``train_union.jsonl`` when training from the base
student, ``eval/after.jsonl``). Every step is the stages' own resumable step, so a killed round
resumes where it stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mpa.config import RunConfig
from mpa.errors import MpaError
from mpa.records import read_jsonl, write_jsonl_atomic
from mpa.safeio import write_atomic
from mpa.stages.evaluate import evaluate_with_config
from mpa.stages.identify import IdentifySummary, identify_with_config
from mpa.stages.level import LevelSummary, level_with_config
from mpa.vlm.base import VLM
from mpa.vlm.loader import LazyVLM

TEACHER_LOG = "pi_teacher.jsonl"


class TeacherAskedAgain(MpaError, RuntimeError):
    """A later round tried to load the teacher: its answers from round 1 are missing or incomplete."""


def round_dir(out: str | Path, r: int) -> Path:
    """Where round ``r`` keeps its outputs (round 1: the run directory itself)."""
    return Path(out) if r == 1 else Path(out) / "rounds" / str(r)


def identify_round(cfg: RunConfig, annotations: Path, teacher_log: Path, student_checkpoint: str,
                   pi_dir: Path, *, show: bool = True) -> IdentifySummary:
    """PI of one later round: ``student_checkpoint`` answers the questions the teacher answered consistently in
    round 1 (``teacher_log``, reused as this round's teacher pass: no teacher call is made)."""
    if not teacher_log.is_file():
        raise TeacherAskedAgain(f"no teacher answers at {teacher_log}: run round 1 (PI) first")
    pi_dir.mkdir(parents=True, exist_ok=True)
    if not (pi_dir / TEACHER_LOG).is_file():
        write_atomic(pi_dir / TEACHER_LOG, teacher_log.read_bytes())  # no-follow: a planted link is replaced

    def no_teacher() -> VLM:
        raise TeacherAskedAgain(f"round PI in {pi_dir} needs teacher answers that {teacher_log} lacks: "
                                "finish round 1's PI (rerun the same command) before later rounds")

    student = LazyVLM(cfg.student.at(student_checkpoint))
    try:
        return identify_with_config(cfg, no_teacher, student, annotations, pi_dir, show=show)
    finally:
        student.release()


def teacher_log_from_audit(audit: Path, out: Path) -> Path:
    """Round 1's teacher log (``{id, teacher_answer}`` per parsed annotation, as :func:`identify_round` reads
    it) rebuilt from its PI ``audit.jsonl`` — e.g. the merged audit of many shards, whose own logs are gone.
    The audit holds the teacher's answer to every parsed annotation (null where its image failed), so the
    rebuilt log is complete and no teacher call is needed."""
    rows = [{"id": r["id"], "teacher_answer": r.get("teacher_answer")} for r in read_jsonl(audit) if r.get("parse_ok")]
    write_jsonl_atomic(out, rows)
    return out


def parity_union(paths: Iterable[Path]) -> list[dict]:
    """Every sample of these parity sets in order, each id once (its first occurrence)."""
    seen: set[str] = set()
    union: list[dict] = []
    for path in paths:
        for row in read_jsonl(path):
            if row["id"] not in seen:
                seen.add(row["id"])
                union.append(row)
    return union


def train_later_round(cfg: RunConfig, level_dir: Path, prev_checkpoint: str, pi_dir: Path, union: Path, *,
                      show: bool = True) -> LevelSummary:
    """PL of a later round: from ``prev_checkpoint`` on this round's parity set ``pi_dir/parity.jsonl``
    (``iterate.train_from: previous``), or from the base student on ``union``, every round's parity set so
    far (``base``)."""
    if cfg.iterate.train_from == "previous":
        cont = cfg.model_copy(update={"student": cfg.student.at(prev_checkpoint)})
        return level_with_config(cont, level_dir, pi_dir=pi_dir, show=show)
    return level_with_config(cfg, level_dir, samples_path=union, show=show)


def train_round(cfg: RunConfig, out: Path, r: int, prev_checkpoint: str, *, show: bool = True) -> LevelSummary:
    """PL of round ``r`` of a run directory (:func:`train_later_round`)."""
    d = round_dir(out, r)
    if cfg.iterate.train_from == "base":
        write_jsonl_atomic(d / "train_union.jsonl",
                           parity_union(round_dir(out, i) / "pi" / "parity.jsonl" for i in range(1, r + 1)))
    return train_later_round(cfg, d / "level", prev_checkpoint, d / "pi", d / "train_union.jsonl", show=show)


def round_record(r: int, pi: dict, pl: dict | None, ev: dict | None, stopped: str | None = None) -> dict[str, Any]:
    """One entry of ``summary["rounds"]``."""
    rec: dict[str, Any] = {"round": r, "k_parity": pi["k_parity"], "n_teacher_consistent": pi["n_teacher_consistent"]}
    if pl is not None:
        rec.update(checkpoint=pl["checkpoint"], steps=pl["steps"], first_loss=pl["first_loss"],
                   last_loss=pl["last_loss"])
    if ev is not None:
        rec["eval"] = ev
    if stopped:
        rec["stopped"] = stopped
    return rec


def stop_reason(cfg: RunConfig, k: int, k_prev: int) -> str | None:
    """Why round with parity-set size ``k`` (previous round: ``k_prev``) should not train, or None."""
    if k < cfg.iterate.min_k:
        return f"K={k} < iterate.min_k={cfg.iterate.min_k}"
    if cfg.iterate.stop_when_not_shrinking and k >= k_prev:
        return f"K={k} did not shrink from K={k_prev}"
    return None


def run_later_rounds(
    cfg: RunConfig,
    out: Path,
    first: dict[str, Any],
    *,
    bench: list | None,
    show: bool = True,
    after_step: Callable[[], None] | None = None,
    on_round: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Rounds 2..``cfg.rounds`` after round 1 (``first``: its :func:`round_record`); returns every round's record.

    ``after_step`` runs after each step (the runner syncs an ``s3://`` run directory there); ``on_round`` gets
    each new record (tracking)."""
    records = [first]
    teacher_log = out / "pi" / TEACHER_LOG
    for r in range(2, cfg.rounds + 1):
        prev = records[-1]
        d = round_dir(out, r)
        t = time.perf_counter()
        pi = asdict(identify_round(cfg, out / "annotations.jsonl", teacher_log, prev["checkpoint"], d / "pi",
                                   show=show))
        timings = {"identify": time.perf_counter() - t}
        if after_step:
            after_step()
        stopped = stop_reason(cfg, pi["k_parity"], prev["k_parity"])
        pl = ev = None
        if not stopped:
            t = time.perf_counter()
            pl = asdict(train_round(cfg, out, r, prev["checkpoint"], show=show))
            timings["level"] = time.perf_counter() - t
            if after_step:
                after_step()
            if bench is not None:
                t = time.perf_counter()
                ev = evaluate_with_config(cfg, d / "eval" / "after.jsonl", model=cfg.student.at(pl["checkpoint"]),
                                          samples=bench, label=f"eval round {r}")
                timings["eval"] = time.perf_counter() - t
                if after_step:
                    after_step()
        rec = round_record(r, pi, pl, ev, stopped) | {"timings_s": timings}
        records.append(rec)
        if on_round:
            on_round(rec)
        if stopped:
            break
    return records


def final_checkpoint(records: list[dict[str, Any]]) -> str | None:
    """The checkpoint of the last round that trained."""
    trained = [r for r in records if r.get("checkpoint")]
    return trained[-1]["checkpoint"] if trained else None
