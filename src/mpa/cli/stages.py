"""The stage commands: ``annotate`` (PA), ``identify`` (PI), ``level`` (PL), ``evaluate``, ``score``, ``run``
(all of them), ``tasks`` and ``demo`` (the toy world). Each calls one library entry; settings come from the
run config (``--config`` + ``--set``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mpa.cli.common import AllowPartialOpt, ConfigOpt, ForceOpt, SetOpt, UserError, preflight, run_config
from mpa.toyworld import DEMO_N_IMAGES, DEMO_N_TEST, DEMO_TEMPERATURE
from mpa.ui import console

if TYPE_CHECKING:
    from mpa.config import RunConfig

app = typer.Typer()


@app.command()
def annotate(
    config: ConfigOpt,
    images: Annotated[str | None, typer.Option(help="unlabeled images: a directory or s3:// prefix")] = None,
    out: Annotated[str | None, typer.Option(help="run directory (annotations.jsonl goes here)")] = None,
    force: ForceOpt = None,
    allow_partial: AllowPartialOpt = None,
    set_: SetOpt = None,
) -> None:
    """PA: the teacher writes one task-specific question + answer per image (resumable)."""
    cfg = run_config(config, set_, **{"data.images": images, "out": out, "force": force,
                                     "allow_partial": allow_partial})
    preflight(cfg, stages=("annotate",), models=("teacher",))
    from mpa.cache import open_run_cache
    from mpa.stages.annotate import annotate_with_config
    from mpa.vlm.loader import load_vlm

    teacher = load_vlm(cfg.teacher)
    try:
        with open_run_cache(cfg, cfg.out) as cache:
            annotate_with_config(cfg, teacher, Path(cfg.out) / "annotations.jsonl", cache=cache)
    finally:
        teacher.close()


@app.command()
def identify(
    config: ConfigOpt,
    out: Annotated[str | None, typer.Option(help="run directory holding annotations.jsonl")] = None,
    match: Annotated[
        str | None,
        typer.Option(help="match rule E: exact, vqa, relaxed, anls, contains (default: the task's rule)"),
    ] = None,
    force: ForceOpt = None,
    allow_partial: AllowPartialOpt = None,
    set_: SetOpt = None,
) -> None:
    """PI: teacher and student answer each generated question; keep E(teacher) ∧ ¬E(student)."""
    cfg = run_config(config, set_, **{"out": out, "identify.match": match, "force": force,
                                     "allow_partial": allow_partial})
    ann = Path(cfg.out) / "annotations.jsonl"
    if not ann.is_file():
        raise UserError(f"no annotations at {ann}: run `mpa annotate` first (same --config/--out)")
    preflight(cfg, stages=("identify",))
    from mpa.cache import open_run_cache
    from mpa.stages.identify import identify_with_config
    from mpa.vlm.loader import LazyVLM

    teacher, student = LazyVLM(cfg.teacher), LazyVLM(cfg.student)
    try:
        with open_run_cache(cfg, cfg.out) as cache:
            identify_with_config(cfg, teacher, student, ann, Path(cfg.out) / "pi", cache=cache)
    finally:
        teacher.release()
        student.release()


@app.command()
def level(
    config: ConfigOpt,
    out: Annotated[str | None, typer.Option(help="run directory holding pi/parity.jsonl")] = None,
    samples: Annotated[Path | None, typer.Option(help="train on this jsonl instead of the parity set")] = None,
    force: ForceOpt = None,
    allow_partial: AllowPartialOpt = None,
    set_: SetOpt = None,
) -> None:
    """PL: fine-tune the student on the parity set (answer-token loss; full or --set train.lora=true).

    --set train.processes=N trains with N data-parallel processes here; --set train.backend=trainjob
    submits a Kubeflow Trainer TrainJob (train.trainjob.*) and brings the checkpoint back."""
    cfg = run_config(config, set_, out=out, force=force, allow_partial=allow_partial)
    path = samples or Path(cfg.out) / "pi" / "parity.jsonl"
    if not Path(path).is_file():
        raise UserError(f"no training samples at {path}: run `mpa identify` first")
    preflight(cfg, stages=("level",), models=("student",))
    from mpa.orchestrate.kubeflow.trainjob import level_for_backend

    where = {"pi_dir": Path(cfg.out) / "pi"} if samples is None else {"samples_path": samples}
    level_for_backend(cfg, Path(cfg.out) / "level", echo=typer.echo, **where)


@app.command()
def evaluate(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="run config YAML: the student, the task's "
                                                "answer prompt, evaluate.* and the preset come from it")] = None,
    model: Annotated[str | None, typer.Option(help="model: HF id, local checkpoint dir or s3:// prefix "
                                              "(default: the config's student)")] = None,
    benchmark: Annotated[str | None, typer.Option(help="textvqa, stvqa, chartqa, okvqa or pathvqa "
                                                  "(sets evaluate.benchmark)")] = None,
    annotations: Annotated[str | None, typer.Option(help="the benchmark's official annotation file "
                                                    "(sets evaluate.annotations)")] = None,
    questions: Annotated[str | None, typer.Option(help="OK-VQA questions file")] = None,
    images: Annotated[str | None, typer.Option(help="image directory (default: beside the annotations)")] = None,
    out: Annotated[str | None, typer.Option(help="run directory: predictions go to <out>/eval/ (sets out)")] = None,
    predictions: Annotated[Path | None, typer.Option(help="where to write predictions jsonl (default: "
                                                     "<out>/eval/<benchmark>-<model>.jsonl)")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="sets student.batch_size")] = None,
    max_samples: Annotated[int | None, typer.Option(min=1)] = None,
    trust_remote_code: Annotated[bool | None, typer.Option(help="only for models that need it (InternVL2)")] = None,
    force: ForceOpt = None,
    set_: SetOpt = None,
) -> None:
    """Answer a labeled benchmark with a model and print its score as JSON (official and contains).

    Takes -c/--set like the other stages: `--set preset=paper` asks with the authors' answer prompt, decodes
    up to their 128 tokens and makes their `contains` rule the headline score. Without -c, --model,
    --benchmark and --annotations say everything. `--force` starts the predictions file afresh (another
    model's predictions there are refused otherwise)."""
    from mpa.config import parse_set_pairs
    from mpa.stages.evaluate import evaluate_config, evaluate_with_config

    cfg = evaluate_config(config, parse_set_pairs(set_), model=model, benchmark=benchmark, annotations=annotations,
                          questions=questions, images=images, out=out, batch_size=batch_size,
                          max_samples=max_samples, trust_remote_code=trust_remote_code, force=force)
    if predictions is None and cfg.out.startswith("s3://"):
        raise UserError(f"out is {cfg.out}: mpa evaluate writes its predictions to a local file; give --predictions "
                        "or a local --out")
    path = predictions or default_predictions_path(cfg)
    result = evaluate_with_config(cfg, path)
    console.print(f"predictions: {path}")
    typer.echo(json.dumps(result))


def default_predictions_path(cfg: RunConfig) -> Path:
    """``<out>/eval/<benchmark>-<model>.jsonl``: one file per model, so two models never share one."""
    import re

    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", cfg.student.model.rstrip("/")).strip("_.")[-80:] or "model"
    return Path(cfg.out) / "eval" / f"{cfg.evaluate.benchmark}-{slug}.jsonl"


@app.command()
def score(
    benchmark: Annotated[str, typer.Option(help="textvqa, stvqa, chartqa or okvqa")],
    annotations: Annotated[str, typer.Option(help="the benchmark's official annotation file")],
    predictions: Annotated[Path, typer.Option(help='jsonl of {"question_id", "answer"}')],
    questions: Annotated[str | None, typer.Option(help="OK-VQA questions file")] = None,
    metric: Annotated[
        str,
        typer.Option(help="headline score: official (the benchmark's metric) or contains (the MPA authors' "
                          "substring rule); both are always printed"),
    ] = "official",
) -> None:
    """Score a predictions file; prints JSON (percent): the headline `score`, `official` and `contains`."""
    from mpa.data.benchmarks import SCORE_CHOICES, load_benchmark, load_predictions, score_predictions

    if metric not in SCORE_CHOICES:
        raise UserError(f"--metric must be one of {', '.join(SCORE_CHOICES)}, got {metric!r}")
    if not predictions.is_file():
        raise UserError(f"predictions file not found: {predictions}")
    samples = load_benchmark(benchmark, annotations, questions=questions)
    result = score_predictions(benchmark, samples, load_predictions(predictions), metric=metric)
    typer.echo(json.dumps(result))


@app.command()
def run(
    config: ConfigOpt,
    out: Annotated[str | None, typer.Option(help="run directory")] = None,
    rounds: Annotated[
        int | None, typer.Option(min=1, help="PI → PL rounds over the same PA pool (iterative MPA; default 1)")
    ] = None,
    force: ForceOpt = None,
    allow_partial: AllowPartialOpt = None,
    set_: SetOpt = None,
) -> None:
    """All stages in-process (PA → PI → PL → evaluate before/after); resumes in the same --out.

    With --rounds R, rounds 2..R run PI again with the previous round's student over the same PA pool
    (the teacher is not asked again), train on the new parity set and evaluate; they stop early when
    the parity set falls below iterate.min_k or stops shrinking.
    """
    cfg = run_config(config, set_, out=out, rounds=rounds, force=force, allow_partial=allow_partial)
    preflight(cfg)  # seconds, no weights: a run that cannot finish fails here, not after PA
    from mpa import storage
    from mpa.orchestrate.local import run_pipeline

    summary = run_pipeline(cfg)
    console.print(f"run summary: {storage.join(cfg.out, 'summary.json')}")
    if "delta" in summary:
        line = {"before": summary["eval_before"]["score"], "after": summary["eval_after"]["score"],
                "k_parity": summary["identify"]["k_parity"]}
        if "rounds" in summary:
            line["rounds"] = [{"k_parity": r["k_parity"], "score": r["eval"]["score"] if r.get("eval") else None}
                              for r in summary["rounds"]]
        typer.echo(json.dumps(line))


@app.command()
def tasks(
    prompts: Annotated[str, typer.Option(help="prompt set: ours (default) or paper (the MPA authors')")] = "ours",
    as_json: Annotated[
        bool, typer.Option("--json", help='print {task: {"pa_prompt", "answer_prompt"}} as one JSON object')
    ] = False,
) -> None:
    """List the built-in tasks, their metric and PI match rule; --json prints the prompts of a prompt set."""
    from mpa.tasks import PROMPT_SETS, describe_prompts, get_task, task_names

    if prompts not in PROMPT_SETS:
        raise UserError(f"--prompts must be one of {', '.join(PROMPT_SETS)}, got {prompts!r}")
    if as_json:
        typer.echo(json.dumps(describe_prompts(prompts), ensure_ascii=False))
        return
    for name in task_names():
        if name == "custom":
            typer.echo("custom: your own PA prompt from task.prompt_file")
            continue
        t = get_task(name)
        typer.echo(f"{name} [metric {t.metric}, PI match {t.default_match_rule}] {t.description}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="output directory (report.json, report.html, chart.png, run/)")] = Path(
        "runs/demo"
    ),
    seed: Annotated[int, typer.Option(help="seed of the fresh unlabeled images, test set and training")] = 0,
    n_images: Annotated[int, typer.Option(min=8, help="unlabeled images for PA")] = DEMO_N_IMAGES,
    n_test: Annotated[int, typer.Option(min=7, help="held-out labeled test questions")] = DEMO_N_TEST,
    temperature: Annotated[
        float, typer.Option(min=0.0, help="PA sampling temperature of the teacher (1.0: cleaner pseudo-labels)")
    ] = DEMO_TEMPERATURE,
    rounds: Annotated[
        int, typer.Option(min=1, help="PI → PL rounds (iterative MPA); the report gains accuracy per round")
    ] = 1,
) -> None:
    """MPA end to end in the toy world (shipped tiny teacher + student): a table, report.json, pictures."""
    from mpa.toyworld.demo import run_demo

    run_demo(out, seed=seed, n_images=n_images, n_test=n_test, temperature=temperature,
             overrides={"rounds": rounds} if rounds > 1 else None)
