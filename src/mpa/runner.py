"""``mpa run``: every stage in-process, outputs under one run directory.

Layout of ``<out>/``: ``config.yaml`` (resolved), ``annotations.jsonl`` (PA), ``pi/`` (audit,
parity set, counts), ``level/checkpoint`` (the aligned student), ``eval/`` (predictions and
scores before/after), ``summary.json``. Re-running with the same ``out`` resumes.
"""

from __future__ import annotations

import gc
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from mpa.config import ModelConfig, RunConfig
from mpa.records import write_json_atomic
from mpa.stages.annotate import annotate
from mpa.stages.evaluate import evaluate
from mpa.stages.identify import identify
from mpa.stages.level import build_replay_mix, level
from mpa.tasks import get_task
from mpa.ui import console
from mpa.vlm.base import VLM, load_vlm


class _Lazy:
    """Load a model on first use; free it on ``release``."""

    def __init__(self, cfg: ModelConfig) -> None:
        self.cfg = cfg
        self._vlm: VLM | None = None

    def __call__(self) -> VLM:
        if self._vlm is None:
            self._vlm = load_vlm(self.cfg)
        return self._vlm

    def release(self) -> None:
        if self._vlm is not None:
            self._vlm.close()
            self._vlm = None
            gc.collect()


def run_pipeline(cfg: RunConfig, *, show: bool = True) -> dict[str, Any]:
    """PA → PI → PL → evaluate before/after; returns (and writes) the run summary."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    task = get_task(cfg.task.name, cfg.task.prompt_file, cfg.task.metric)
    teacher, student = _Lazy(cfg.teacher), _Lazy(cfg.student)
    timings: dict[str, float] = {}
    summary: dict[str, Any] = {"out": str(out), "task": task.name, "teacher": cfg.teacher.model,
                               "student": cfg.student.model, "match_rule": cfg.identify.match}

    t = time.perf_counter()
    pa = annotate(images=cfg.data.images, teacher=teacher(), task=task, cfg=cfg.annotate,
                  out_path=out / "annotations.jsonl", batch_size=cfg.teacher.batch_size,
                  max_images=cfg.data.max_images, seed=cfg.seed, show=show)
    timings["annotate"] = time.perf_counter() - t
    summary["annotate"] = asdict(pa)

    t = time.perf_counter()
    pi = identify(annotations_path=out / "annotations.jsonl", teacher=teacher, student=student, task=task,
                  cfg=cfg.identify, out_dir=out / "pi", teacher_batch_size=cfg.teacher.batch_size,
                  student_batch_size=cfg.student.batch_size, show=show)
    timings["identify"] = time.perf_counter() - t
    summary["identify"] = asdict(pi)
    teacher.release()

    bench = _load_benchmark(cfg)
    if bench is not None:
        t = time.perf_counter()
        summary["eval_before"] = evaluate(model=student(), benchmark=cfg.evaluate.benchmark, samples=bench,
                                          predictions_path=out / "eval" / "before.jsonl",
                                          batch_size=cfg.student.batch_size,
                                          max_new_tokens=cfg.evaluate.max_new_tokens, label="eval before")
        timings["eval_before"] = time.perf_counter() - t
    student.release()

    t = time.perf_counter()
    samples_path = out / "pi" / "parity.jsonl"
    if cfg.train.replay_fraction > 0:
        samples_path = out / "pi" / "train_mix.jsonl"
        build_replay_mix(out / "pi" / "audit.jsonl", out / "pi" / "parity.jsonl",
                         cfg.train.replay_fraction, cfg.train.seed, samples_path)
    pl = level(samples_path=samples_path, student=cfg.student, task=task, cfg=cfg.train,
               out_dir=out / "level", show=show)
    timings["level"] = time.perf_counter() - t
    summary["level"] = asdict(pl)

    if bench is not None:
        t = time.perf_counter()
        aligned = load_vlm(cfg.student.model_copy(update={"model": pl.checkpoint, "revision": None}))
        summary["eval_after"] = evaluate(model=aligned, benchmark=cfg.evaluate.benchmark, samples=bench,
                                         predictions_path=out / "eval" / "after.jsonl",
                                         batch_size=cfg.student.batch_size,
                                         max_new_tokens=cfg.evaluate.max_new_tokens, label="eval after")
        aligned.close()
        timings["eval_after"] = time.perf_counter() - t
        before, after = summary["eval_before"]["score"], summary["eval_after"]["score"]
        summary["delta"] = after - before
        if show:
            console.print(f"[bold]{cfg.evaluate.benchmark}[/]: student {before:.2f} → aligned {after:.2f} "
                          f"({after - before:+.2f})")
    summary["timings_s"] = timings
    write_json_atomic(out / "summary.json", summary)
    return summary


def _load_benchmark(cfg: RunConfig) -> list | None:
    ev = cfg.evaluate
    if not ev.benchmark:
        return None
    if not ev.annotations:
        raise ValueError("evaluate.benchmark is set but evaluate.annotations is not: give the official file")
    from mpa.data.benchmarks import load_benchmark

    return load_benchmark(ev.benchmark, ev.annotations, questions=ev.questions, images=ev.images,
                          max_samples=ev.max_samples)
