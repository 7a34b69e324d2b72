"""Evaluate: a model answers a labeled benchmark; score with the benchmark's official metric."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from mpa import storage
from mpa.cache import model_identity
from mpa.records import JsonlLog, StageRun, value_digest
from mpa.tasks import ANSWER_INSTRUCTION
from mpa.ui import progress_bar
from mpa.vlm.base import VLM, GenParams, VLMRequest

if TYPE_CHECKING:
    from mpa.config import ModelConfig, RunConfig
    from mpa.data.benchmarks import BenchmarkSample


class MissingBenchmarkImages(FileNotFoundError):
    """The benchmark's images are not where the loader looked (wrong or missing ``images`` dir)."""


def check_images_exist(samples: list[BenchmarkSample]) -> None:
    """Fail before any model call if local benchmark images are missing (a wrong ``--images``)."""
    from pathlib import Path

    missing = [s.image for s in samples if not storage.is_s3(s.image) and not Path(s.image).is_file()]
    if missing:
        raise MissingBenchmarkImages(
            f"{len(missing)} of {len(samples)} benchmark images not found, e.g. {missing[0]}; "
            "point --images / evaluate.images at the benchmark's image directory"
        )


def answer_all(
    model: VLM,
    items: list[tuple[str, str, str]],
    predictions_path: str | Path,
    *,
    id_key: str = "id",
    batch_size: int = 8,
    max_new_tokens: int = 16,
    label: str = "answer",
    force: bool = False,
) -> dict[str, str]:
    """Greedy answers to ``(id, image, prompt)`` items, in batches, into a resumable jsonl of
    ``{id_key, "answer"}``; an item the model cannot take (unreadable or unusable image, prompt too
    long, rejected by the processor) gets an empty answer and its error.

    The file is keyed by the model (id, revision, checkpoint contents) and the items: answers of
    another model or to other questions are never reused — refused (:class:`~mpa.records.StageMismatch`)
    unless ``force``, which starts the file afresh.
    """
    from mpa.stages.annotate import generate_skipping_bad, prepare_or_error, prompt_problem

    params = GenParams(max_new_tokens=max_new_tokens, temperature=0.0)
    settings = {"model": model_identity(model), "max_new_tokens": max_new_tokens, "id_key": id_key}
    with StageRun(predictions_path, "evaluate", settings=settings, digests={"items": value_digest(items)},
                  force=force) as run, JsonlLog(predictions_path, group_of=lambda r: r[id_key],
                                                id_of=lambda r: r[id_key]) as out:
        todo = [it for it in items if it[0] not in out.done]
        with progress_bar(label, total=len(items), completed=len(items) - len(todo)) as advance:
            for b in range(0, len(todo), batch_size):
                reqs, ok = [], []
                for item_id, image, prompt in todo[b: b + batch_size]:
                    loaded = prepare_or_error(image)
                    problem = loaded if isinstance(loaded, str) else prompt_problem(prompt)
                    if problem is not None:
                        out.append_group([{id_key: item_id, "answer": "", "error": problem}])
                        continue
                    reqs.append(VLMRequest(loaded.image, prompt))
                    ok.append(item_id)
                answers, rejected = generate_skipping_bad(model, reqs, params) if reqs else ([], {})
                out.append_group([{id_key: i, "answer": "", "error": rejected[j]} if j in rejected
                                  else {id_key: i, "answer": a} for j, (i, a) in enumerate(zip(ok, answers,
                                                                                               strict=True))])
                advance(len(todo[b: b + batch_size]))
        run.finish([predictions_path])
        return {r[id_key]: r["answer"] for r in out.records}


def evaluate(
    *,
    model: VLM,
    benchmark: str,
    samples: list[BenchmarkSample],
    predictions_path: str | Path,
    batch_size: int = 8,
    max_new_tokens: int = 16,
    answer_instruction: str = ANSWER_INSTRUCTION,
    label: str = "evaluate",
    answer_prompt: Callable[[str], str] | None = None,
    metric: str = "official",
    force: bool = False,
) -> dict:
    """Answer every sample (resumable ``{question_id, answer}`` jsonl, keyed by the model and the prompts:
    see :func:`answer_all`), then score it.

    ``answer_prompt`` (e.g. ``task.answer_prompt`` of the run's prompt set) turns a question into
    the prompt; without it the question and ``answer_instruction`` are joined by a newline.
    ``metric`` is the headline score (``official`` or ``contains``); both are always in the result.
    """
    from mpa.data.benchmarks import score_predictions

    start = time.perf_counter()
    check_images_exist(samples)
    prompt = answer_prompt or (lambda q: f"{q.strip()}\n{answer_instruction}")
    items = [(s.question_id, s.image, prompt(s.question)) for s in samples]
    predictions = answer_all(model, items, predictions_path, id_key="question_id", batch_size=batch_size,
                             max_new_tokens=max_new_tokens, label=label, force=force)
    result = score_predictions(benchmark, samples, predictions, metric=metric)
    result["seconds"] = time.perf_counter() - start
    result["model"] = model.model_id
    return result


def benchmark_samples(cfg: RunConfig) -> list[BenchmarkSample] | None:
    """The labeled benchmark a run config names (``evaluate.*``), or None when it names none."""
    ev = cfg.evaluate
    if not ev.benchmark:
        return None
    if not ev.annotations:
        raise ValueError("evaluate.benchmark is set but evaluate.annotations is not: give the official file")
    from mpa.data.benchmarks import load_benchmark

    return load_benchmark(ev.benchmark, ev.annotations, questions=ev.questions, images=ev.images,
                          max_samples=ev.max_samples)


def evaluate_with_config(
    cfg: RunConfig,
    predictions_path: str | Path,
    *,
    model: ModelConfig | None = None,
    vlm: VLM | None = None,
    samples: list[BenchmarkSample] | None = None,
    label: str = "evaluate",
) -> dict:
    """Evaluate with every setting taken from a run config: ``model`` (default: the run's student) on the
    run's benchmark, asked with the task's answer prompt (``task.prompts``), headline ``evaluate.metric``.
    ``vlm`` reuses an already loaded model (not closed here); ``samples`` a loaded benchmark."""
    from mpa.config import task_for

    samples = samples if samples is not None else benchmark_samples(cfg)
    if samples is None:
        raise ValueError("nothing to evaluate on: set evaluate.benchmark and evaluate.annotations")
    mc = model or cfg.student
    own = vlm is None
    if vlm is None:
        from mpa.vlm.loader import load_vlm

        vlm = load_vlm(mc)
    try:
        return evaluate(model=vlm, benchmark=cfg.evaluate.benchmark, samples=samples,
                        predictions_path=predictions_path, batch_size=mc.batch_size,
                        max_new_tokens=cfg.evaluate.max_new_tokens, label=label,
                        answer_prompt=task_for(cfg).answer_prompt, metric=cfg.evaluate.metric, force=cfg.force)
    finally:
        if own:
            vlm.close()


def evaluate_config(
    config: str | Path | None,
    overrides: dict | None = None,
    *,
    model: str | None = None,
    benchmark: str | None = None,
    annotations: str | None = None,
    questions: str | None = None,
    images: str | None = None,
    out: str | None = None,
    batch_size: int | None = None,
    max_samples: int | None = None,
    trust_remote_code: bool | None = None,
    force: bool | None = None,
) -> RunConfig:
    """The run config ``mpa evaluate`` works from: ``config`` (or, without one, a config of the flags alone,
    ``model`` as the student), the flags on their fields, then ``overrides`` (``--set``) — presets included.

    ``model`` replaces the student's checkpoint and keeps its other settings (pixels, dtype, backend)."""
    from mpa.config import ConfigError, apply_overrides, parse_config, read_config_data
    from mpa.tasks import task_names

    if config is not None:
        data, source = read_config_data(config), str(config)
    else:
        if model is None or benchmark is None or annotations is None:
            raise ConfigError("mpa evaluate needs --config, or --model, --benchmark and --annotations")
        # PA's teacher and images play no part here; the student is the model evaluated
        data = {"teacher": {"model": model}, "student": {"model": model}, "data": {"images": "."}}
        if benchmark in task_names():
            data["task"] = {"name": benchmark}  # the task's answer prompt (the same for every built-in task)
        source = "mpa evaluate"
    flags = {"evaluate.benchmark": benchmark, "evaluate.annotations": annotations, "evaluate.questions": questions,
             "evaluate.images": images, "evaluate.max_samples": max_samples, "out": out,
             "student.batch_size": batch_size, "student.trust_remote_code": trust_remote_code, "force": force}
    data = apply_overrides(data, {k: v for k, v in flags.items() if v is not None}, source)
    cfg = parse_config(apply_overrides(data, overrides, "--set"), source)
    if model is not None and cfg.student.model != model:
        cfg = cfg.model_copy(update={"student": cfg.student.at(model)})
    if not cfg.evaluate.benchmark or not cfg.evaluate.annotations:
        raise ConfigError(f"{source}: nothing to evaluate on: give --benchmark and --annotations "
                          "(or evaluate.benchmark / evaluate.annotations)")
    return cfg

