"""PI — Parity Identifier (paper Eq. 1–2): keep samples the teacher reproduces and the student misses.

Both models answer each generated question zero-shot with the task's short-answer
instruction. E(X) = 1 iff X matches the pseudo answer A under the configured rule; a sample
is kept iff E(teacher) ∧ ¬E(student). Work happens in two resumable passes (teacher, then
student on the teacher-consistent samples only, unless configured otherwise), so each model
can be loaded on its own; the audit and the parity set are derived from both passes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mpa.cache import ResultCache, cache_key, model_identity, text_digest
from mpa.config import IdentifyConfig, RunConfig, task_for
from mpa.metrics import match
from mpa.records import (
    Annotation,
    JsonlLog,
    Judgement,
    StageRun,
    check_input,
    read_records,
    write_json_atomic,
    write_jsonl_atomic,
)
from mpa.tasks import Task, resolve_match_rule
from mpa.ui import progress_bar, summary_table
from mpa.vlm.base import VLM, GenParams, VLMRequest, bind_run_dir

ModelSource = VLM | Callable[[], VLM]


@dataclass
class IdentifySummary:
    n_images: int
    n_annotations: int
    n_parsed: int
    n_teacher_consistent: int
    n_student_wrong: int
    k_parity: int
    k_over_n: float
    student_calls: int
    student_calls_saved: int
    match_rule: str
    seconds: float
    cache_hits: int = 0
    generated: int = 0
    failures: dict[str, int] = field(default_factory=dict)


def _reason_key(error: str) -> str:
    return error.split(":")[0].split(" (")[0]


def _answer_pass(
    name: str, model: ModelSource, anns: list[Annotation], task: Task, params: GenParams,
    batch_size: int, path: Path, key: str, *, cache: ResultCache | None = None,
    preprocess_workers: int = 0, counters: dict | None = None,
) -> dict[str, dict]:
    """Have one model answer every annotation's question; resumable log of ``{id, key}`` records.

    A question the model cannot be asked (unreadable image, prompt too long, rejected by the
    processor) gets ``{id, key: None, error}``. Returns the records by annotation id.
    """
    from mpa.stages.annotate import ImagePrefetcher, generate_skipping_bad, pixel_cap, prompt_problem

    counters = counters if counters is not None else {}
    with JsonlLog(path) as out:
        todo = [a for a in anns if a.id not in out.done]
        if todo:
            vlm = model() if callable(model) and not isinstance(model, VLM) else model
            bind_run_dir(vlm, path.parent)  # batch ids (openai.batch) live beside the output
            ident = model_identity(vlm) if cache is not None else {}
            prefetch = ImagePrefetcher(preprocess_workers, *pixel_cap(vlm, None))
            with progress_bar(f"PI {name}", total=len(anns), completed=len(anns) - len(todo)) as advance:
                # the prefetcher works on URIs; one entry per annotation keeps the order aligned
                for bi, batch in enumerate(prefetch.batches([a.image for a in todo], batch_size)):
                    chunk = todo[bi * batch_size: bi * batch_size + len(batch)]
                    reqs, ok, keys = [], [], []
                    for a, (_, item) in zip(chunk, batch, strict=True):
                        prompt = task.answer_prompt(a.question or "")
                        problem = item if isinstance(item, str) else prompt_problem(prompt)
                        if problem is not None:
                            out.append_group([{"id": a.id, key: None, "error": problem}])
                            continue
                        reqs.append(VLMRequest(item.image, prompt))
                        ok.append(a)
                        keys.append(cache_key(stage="pi", task=task.name, prompt_version=task.prompt_version,
                                              prompt=text_digest(prompt), image=item.sha256, **ident,
                                              params=asdict(params)))
                    cached = cache.get_many(keys) if cache is not None else {}
                    miss = [j for j, k in enumerate(keys) if k not in cached]
                    fresh, rejected = generate_skipping_bad(vlm, [reqs[j] for j in miss], params) if miss else ([], {})
                    answers = [cached.get(k) for k in keys]
                    errors: dict[int, str] = {}
                    for r_i, (j, ans) in enumerate(zip(miss, fresh, strict=True)):
                        if r_i in rejected:
                            errors[j] = rejected[r_i]
                        else:
                            answers[j] = ans
                    if cache is not None:
                        cache.put_many({keys[j]: ans for j, ans in zip(miss, fresh, strict=True) if ans is not None})
                        cache.stats.count(f"pi_{name}", len(keys) - len(miss), len(miss))
                    counters["cache_hits"] = counters.get("cache_hits", 0) + len(keys) - len(miss)
                    counters["generated"] = counters.get("generated", 0) + len(miss)
                    out.append_group([{"id": a.id, key: None, "error": errors[j]} if j in errors
                                      else {"id": a.id, key: ans} for j, (a, ans) in enumerate(zip(ok, answers,
                                                                                                   strict=True))])
                    advance(len(chunk))
        return {r["id"]: r for r in out.records}


def identify_mark_settings(task: Task, cfg: IdentifyConfig, teacher: object, student: object) -> dict[str, Any]:
    """What PI's output is keyed by (besides its input annotations); :mod:`mpa.preflight` compares it with an
    existing mark before any model is loaded (``teacher``/``student``: VLMs, lazy loaders or model configs)."""
    return {"task": task.name, "match_rule": resolve_match_rule(task, cfg.match),
            "prompt_version": task.prompt_version, "answer_prompt": text_digest(task.answer_prompt("{question}")),
            "identify": cfg.model_dump(mode="json"), "teacher": model_identity(teacher),
            "student": model_identity(student)}


def identify(
    *,
    annotations_path: str | Path,
    teacher: ModelSource,
    student: ModelSource,
    task: Task,
    cfg: IdentifyConfig,
    out_dir: str | Path,
    teacher_batch_size: int = 8,
    student_batch_size: int = 8,
    show: bool = True,
    cache: ResultCache | None = None,
    preprocess_workers: int = 0,
    force: bool = False,
    allow_partial: bool = False,
) -> IdentifySummary:
    """Run PI; write ``audit.jsonl``, ``parity.jsonl`` and ``counts.json`` under ``out_dir``.

    ``cache`` reuses answers already computed for the same image, prompt, model and decoding;
    ``preprocess_workers`` decode and resize images in worker processes. An unfinished
    ``annotations_path`` is refused unless ``allow_partial``; ``out_dir`` is keyed by the annotations,
    both models and the PI settings (:class:`~mpa.records.StageRun`): other ones are refused unless
    ``force``, which discards the old answers first. Every audit row says why it was dropped,
    including images or questions a model could not take.
    """
    start = time.perf_counter()
    out_dir = Path(out_dir)
    partial = check_input(annotations_path, allow_partial)
    anns = read_records(annotations_path, Annotation)
    parsed = [a for a in anns if a.parse_ok]
    params = GenParams(max_new_tokens=cfg.max_new_tokens, temperature=0.0)
    rule = resolve_match_rule(task, cfg.match)
    settings = identify_mark_settings(task, cfg, teacher, student)
    with StageRun(out_dir, "identify", settings=settings, inputs={"annotations": annotations_path}, force=force,
                  partial_inputs=partial) as run:
        summary = _identify(anns, parsed, teacher, student, task, cfg, rule, out_dir, params, teacher_batch_size,
                            student_batch_size, cache, preprocess_workers, start)
        run.finish([out_dir / "audit.jsonl", out_dir / "parity.jsonl"])
    if show:
        summary_table("PI — parity identification", asdict(summary))
    return summary


def _identify(anns: list[Annotation], parsed: list[Annotation], teacher: ModelSource, student: ModelSource,
              task: Task, cfg: IdentifyConfig, rule: str, out_dir: Path, params: GenParams, teacher_batch_size: int,
              student_batch_size: int, cache: ResultCache | None, preprocess_workers: int,
              start: float) -> IdentifySummary:
    from mpa.stages.annotate import BAD_INPUT_PREFIXES

    def e(pred: str | None, ref: str | None) -> bool:
        if pred is None or ref is None:
            return False
        return match(rule, pred, ref, anls_threshold=cfg.anls_threshold, tolerance=cfg.relaxed_tolerance)

    counters: dict = {}
    t_rec = _answer_pass("teacher", teacher, parsed, task, params, teacher_batch_size,
                         out_dir / "pi_teacher.jsonl", "teacher_answer", cache=cache,
                         preprocess_workers=preprocess_workers, counters=counters)
    consistent = [a for a in parsed if e(t_rec.get(a.id, {}).get("teacher_answer"), a.answer)]
    ask_student = consistent if cfg.student_only_if_teacher_consistent else parsed
    s_rec = _answer_pass("student", student, ask_student, task, params, student_batch_size,
                         out_dir / "pi_student.jsonl", "student_answer", cache=cache,
                         preprocess_workers=preprocess_workers, counters=counters)

    audit: list[Judgement] = []
    failures: dict[str, int] = {}
    for a in anns:
        j = Judgement(**a.model_dump())
        t, s = t_rec.get(a.id), s_rec.get(a.id)
        if not a.parse_ok:
            bad_input = (a.error or "").startswith(BAD_INPUT_PREFIXES)
            j.reason = a.error if bad_input and a.error else f"unparsed: {a.error}"
        elif t is None:
            j.reason = "no teacher answer recorded"
        elif t.get("error"):
            j.reason = f"teacher could not answer: {t['error']}"
        else:
            j.teacher_answer = t.get("teacher_answer")
            j.teacher_match = e(j.teacher_answer, a.answer)
            if s is not None and not s.get("error"):
                j.student_answer = s.get("student_answer")
                j.student_match = e(j.student_answer, a.answer)
            if not j.teacher_match:
                j.reason = "teacher inconsistent with its own pseudo-label"
            elif s is not None and s.get("error"):
                j.reason = f"student could not answer: {s['error']}"
            elif j.student_match:
                j.reason = "student already correct"
            else:
                j.kept = True
                j.reason = "kept: teacher consistent, student wrong"
        for rec in (t, s):
            if rec is not None and rec.get("error"):
                failures[_reason_key(rec["error"])] = failures.get(_reason_key(rec["error"]), 0) + 1
        audit.append(j)
    write_jsonl_atomic(out_dir / "audit.jsonl", audit)
    k = write_jsonl_atomic(out_dir / "parity.jsonl", [j for j in audit if j.kept])
    n_images = len({a.image for a in anns})
    summary = IdentifySummary(
        n_images=n_images,
        n_annotations=len(anns),
        n_parsed=len(parsed),
        n_teacher_consistent=len(consistent),
        n_student_wrong=sum(1 for j in audit if j.teacher_match and j.student_match is False),
        k_parity=k,
        k_over_n=k / n_images if n_images else 0.0,
        student_calls=len(ask_student),
        student_calls_saved=len(parsed) - len(ask_student),
        match_rule=rule,
        seconds=time.perf_counter() - start,
        cache_hits=counters.get("cache_hits", 0),
        generated=counters.get("generated", 0),
        failures=failures,
    )
    write_json_atomic(out_dir / "counts.json", asdict(summary))
    return summary


def identify_with_config(
    cfg: RunConfig,
    teacher: ModelSource,
    student: ModelSource,
    annotations_path: str | Path,
    out_dir: str | Path,
    *,
    cache: ResultCache | None = None,
    show: bool = True,
) -> IdentifySummary:
    """PI with every setting taken from a run config."""
    return identify(
        annotations_path=annotations_path,
        teacher=teacher,
        student=student,
        task=task_for(cfg),
        cfg=cfg.identify,
        out_dir=out_dir,
        teacher_batch_size=cfg.teacher.batch_size,
        student_batch_size=cfg.student.batch_size,
        show=show,
        cache=cache,
        preprocess_workers=cfg.teacher.preprocess_workers,
        force=cfg.force,
        allow_partial=cfg.allow_partial,
    )
