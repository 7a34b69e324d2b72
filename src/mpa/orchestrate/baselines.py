"""The paper's baselines as first-class run modes, one flag each (same config file as ``mpa run``).

- ``zero-shot``: the student as it is, scored on the benchmark (every table's first row);
- ``no-pi``: MPA without the Parity Identifier — PA, then PL on *every* parseable pseudo-label
  (paper Tables 6 and 9: 21K pseudo-labels vs the 2K-sample parity set);
- ``few-shot``: supervised fine-tuning on N human-labeled samples of the benchmark's train split
  (paper Table 5, which uses N = 100), full fine-tuning or LoRA (``train.lora``); the training
  answer of a sample is its most frequent ground-truth answer.

All modes reuse the engine's stages (:func:`mpa.stages.annotate.annotate`,
:func:`mpa.stages.level.level`, :func:`mpa.stages.evaluate.evaluate`) and write under
``<out>/baselines/<mode>/``: the training samples, ``level/`` (checkpoint), ``eval/`` and
``summary.json``. Re-running resumes like ``mpa run``.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mpa.config import RunConfig
from mpa.records import write_json_atomic, write_jsonl_atomic

MODES = ("zero-shot", "no-pi", "few-shot")


class BaselineError(ValueError):
    """A baseline that cannot run with the given inputs; the message says what to add."""


def majority_answer(answers: list[str]) -> str:
    """The most frequent answer (first seen wins ties), the usual SFT target for 10-answer VQA data."""
    if not answers:
        raise BaselineError("a training sample has no ground-truth answers")
    counts = Counter(a.strip() for a in answers if a.strip())
    if not counts:
        raise BaselineError("a training sample has only empty answers")
    best = max(counts.values())
    return next(a.strip() for a in answers if counts.get(a.strip()) == best)


def few_shot_samples(
    benchmark: str, annotations: str, n: int, *, questions: str | None = None, images: str | None = None, seed: int = 0
) -> list[dict[str, str]]:
    """``n`` labeled (image, question, answer) training samples drawn reproducibly from a train split."""
    from mpa.data.benchmarks import load_benchmark

    pool = [s for s in load_benchmark(benchmark, annotations, questions=questions, images=images) if s.answers]
    if not pool:
        raise BaselineError(f"{annotations} has no labeled samples to fine-tune on")
    if n > len(pool):
        raise BaselineError(f"few-shot asks for {n} samples but {annotations} has {len(pool)} labeled ones")
    chosen = random.Random(seed).sample(pool, n)
    return [
        {"image": s.image, "question": s.question, "answer": majority_answer(s.answers), "question_id": s.question_id}
        for s in chosen
    ]


def run_baseline(
    cfg: RunConfig,
    mode: str,
    *,
    shots: int | None = None,
    train_annotations: str | None = None,
    train_questions: str | None = None,
    train_images: str | None = None,
    train_benchmark: str | None = None,
    show: bool = True,
) -> dict[str, Any]:
    """Run one baseline; return (and write) its summary with the benchmark score before/after."""
    from mpa.config import task_for
    from mpa.stages.annotate import annotate_with_config
    from mpa.stages.evaluate import benchmark_samples, evaluate_with_config
    from mpa.stages.level import level_with_config
    from mpa.vlm.loader import load_vlm

    if mode not in MODES:
        raise BaselineError(f"unknown baseline {mode!r}; choose one of: {', '.join(MODES)}")
    if mode == "few-shot" and (not shots or not train_annotations):
        raise BaselineError("few-shot needs --shots N and --train-annotations (the benchmark's train file)")
    out = Path(cfg.out) / "baselines" / mode
    out.mkdir(parents=True, exist_ok=True)
    task = task_for(cfg)
    bench = benchmark_samples(cfg)
    if bench is None and mode == "zero-shot":
        raise BaselineError(
            "zero-shot scores the student on a benchmark: set evaluate.benchmark and "
            "evaluate.annotations (or --benchmark/--annotations)"
        )
    summary: dict[str, Any] = {"mode": mode, "out": str(out), "task": task.name, "student": cfg.student.model}
    timings: dict[str, float] = {}

    def score(model_cfg, name: str) -> dict:
        t = time.perf_counter()
        try:
            return evaluate_with_config(cfg, out / "eval" / f"{name}.jsonl", model=model_cfg, samples=bench,
                                        label=f"eval {name}")
        finally:
            timings[f"eval_{name}"] = time.perf_counter() - t

    if bench is not None:
        summary["eval_before"] = score(cfg.student, "before")
    if mode == "zero-shot":
        summary["score"] = summary["eval_before"]["score"]
        summary["timings_s"] = timings
        write_json_atomic(out / "summary.json", summary)
        return summary

    t = time.perf_counter()
    if mode == "no-pi":
        teacher = load_vlm(cfg.teacher)
        try:
            pa = annotate_with_config(cfg, teacher, out / "annotations.jsonl", show=show)
        finally:
            teacher.close()
        summary["annotate"] = asdict(pa)
        samples_path = out / "annotations.jsonl"  # every parseable pseudo-label, no PI filter
        summary["n_train"] = pa.n_parsed
    else:
        rows = few_shot_samples(
            train_benchmark or cfg.evaluate.benchmark or cfg.task.name,
            train_annotations,
            shots,
            questions=train_questions,
            images=train_images,
            seed=cfg.train.seed,
        )
        samples_path = out / "train.jsonl"
        write_jsonl_atomic(samples_path, rows)
        summary["n_train"] = len(rows)
    timings["prepare"] = time.perf_counter() - t

    t = time.perf_counter()
    pl = level_with_config(cfg, out / "level", samples_path=samples_path, show=show)
    timings["level"] = time.perf_counter() - t
    summary["level"] = asdict(pl)
    if bench is not None:
        summary["eval_after"] = score(cfg.student.at(pl.checkpoint), "after")
        summary["score"] = summary["eval_after"]["score"]
        summary["delta"] = summary["eval_after"]["score"] - summary["eval_before"]["score"]
    summary["timings_s"] = timings
    write_json_atomic(out / "summary.json", summary)
    return summary
