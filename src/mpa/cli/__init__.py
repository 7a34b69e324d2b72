"""The ``mpa`` command line (typer). Every command has ``--help``.

Settings have one home, the pydantic config (``mpa.config``); flags here map onto it.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from mpa.toyworld import DEMO_N_IMAGES, DEMO_N_TEST, DEMO_TEMPERATURE
from mpa.ui import console

app = typer.Typer(
    name="mpa",
    help=(
        "Model Parity Aligner: make a small VLM better at a VQA task from unlabeled images and a large VLM.\n\n"
        "Stages: annotate (PA: the teacher writes Q+A per image) → identify (PI: keep what the teacher "
        "reproduces and the student misses) → level (PL: fine-tune the student on that parity set) → "
        "evaluate (official metrics). `mpa run --config run.yaml` does all of them."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="run config YAML (see configs/ for examples)")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="override a config value, dotted: --set train.lora=true (repeatable)"),
]


class UserError(Exception):
    """An error caused by input; printed as one line, exit code 2."""


def _overrides(pairs: list[str] | None) -> dict:
    import yaml

    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise UserError(f"--set expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def _config(path: Path, sets: list[str] | None, **flags: object):
    from mpa.config import load_config

    overrides = {k: v for k, v in flags.items() if v is not None}
    overrides.update(_overrides(sets))
    return load_config(path, overrides)


def _models(cfg):
    from mpa.vlm.base import load_vlm

    return load_vlm(cfg)


@app.command()
def annotate(
    config: ConfigOpt,
    images: Annotated[str | None, typer.Option(help="unlabeled images: a directory or s3:// prefix")] = None,
    out: Annotated[str | None, typer.Option(help="run directory (annotations.jsonl goes here)")] = None,
    set_: SetOpt = None,
) -> None:
    """PA: the teacher writes one task-specific question + answer per image (resumable)."""
    from mpa.cache import open_run_cache
    from mpa.stages.annotate import annotate_with_config

    cfg = _config(config, set_, **{"data.images": images, "out": out})
    cache = open_run_cache(cfg, cfg.out)
    annotate_with_config(cfg, _models(cfg.teacher), Path(cfg.out) / "annotations.jsonl", cache=cache)
    if cache is not None:
        cache.close()


@app.command()
def identify(
    config: ConfigOpt,
    out: Annotated[str | None, typer.Option(help="run directory holding annotations.jsonl")] = None,
    match: Annotated[str | None, typer.Option(help="match rule E: exact, vqa (default), relaxed, anls")] = None,
    set_: SetOpt = None,
) -> None:
    """PI: teacher and student answer each generated question; keep E(teacher) ∧ ¬E(student)."""
    from mpa.cache import open_run_cache
    from mpa.orchestrate.local import LazyVLM
    from mpa.stages.identify import identify_with_config

    cfg = _config(config, set_, **{"out": out, "identify.match": match})
    ann = Path(cfg.out) / "annotations.jsonl"
    if not ann.is_file():
        raise UserError(f"no annotations at {ann}: run `mpa annotate` first (same --config/--out)")
    cache = open_run_cache(cfg, cfg.out)
    identify_with_config(cfg, LazyVLM(cfg.teacher), LazyVLM(cfg.student), ann, Path(cfg.out) / "pi", cache=cache)
    if cache is not None:
        cache.close()


@app.command()
def level(
    config: ConfigOpt,
    out: Annotated[str | None, typer.Option(help="run directory holding pi/parity.jsonl")] = None,
    samples: Annotated[Path | None, typer.Option(help="train on this jsonl instead of the parity set")] = None,
    set_: SetOpt = None,
) -> None:
    """PL: fine-tune the student on the parity set (answer-token loss; full or --set train.lora=true)."""
    from mpa.stages.level import level as run_level
    from mpa.tasks import get_task

    cfg = _config(config, set_, out=out)
    task = get_task(cfg.task.name, cfg.task.prompt_file, cfg.task.metric)
    path = samples or Path(cfg.out) / "pi" / "parity.jsonl"
    if not Path(path).is_file():
        raise UserError(f"no training samples at {path}: run `mpa identify` first")
    run_level(samples_path=path, student=cfg.student, task=task, cfg=cfg.train, out_dir=Path(cfg.out) / "level")


@app.command()
def evaluate(
    model: Annotated[str, typer.Option(help="model: HF id, local checkpoint dir or s3:// prefix")],
    benchmark: Annotated[str, typer.Option(help="textvqa, stvqa, chartqa or okvqa")],
    annotations: Annotated[str, typer.Option(help="the benchmark's official annotation file")],
    questions: Annotated[str | None, typer.Option(help="OK-VQA questions file")] = None,
    images: Annotated[str | None, typer.Option(help="image directory (default: beside the annotations)")] = None,
    predictions: Annotated[Path, typer.Option(help="where to write predictions jsonl")] = Path("predictions.jsonl"),
    batch_size: Annotated[int, typer.Option(min=1)] = 8,
    max_samples: Annotated[int | None, typer.Option(min=1)] = None,
    trust_remote_code: Annotated[bool, typer.Option(help="only for models that need it (InternVL2)")] = False,
) -> None:
    """Answer a labeled benchmark with a model and print its official score as JSON."""
    from mpa.config import ModelConfig
    from mpa.data.benchmarks import load_benchmark
    from mpa.stages.evaluate import evaluate as run_evaluate

    samples = load_benchmark(benchmark, annotations, questions=questions, images=images, max_samples=max_samples)
    vlm = _models(ModelConfig(model=model, batch_size=batch_size, trust_remote_code=trust_remote_code))
    result = run_evaluate(model=vlm, benchmark=benchmark, samples=samples, predictions_path=predictions,
                          batch_size=batch_size)
    typer.echo(json.dumps(result))


@app.command()
def score(
    benchmark: Annotated[str, typer.Option(help="textvqa, stvqa, chartqa or okvqa")],
    annotations: Annotated[str, typer.Option(help="the benchmark's official annotation file")],
    predictions: Annotated[Path, typer.Option(help='jsonl of {"question_id", "answer"}')],
    questions: Annotated[str | None, typer.Option(help="OK-VQA questions file")] = None,
) -> None:
    """Score a predictions file with the benchmark's official metric; prints JSON (score in percent)."""
    from mpa.data.benchmarks import load_benchmark, load_predictions, score_predictions

    if not predictions.is_file():
        raise UserError(f"predictions file not found: {predictions}")
    samples = load_benchmark(benchmark, annotations, questions=questions)
    result = score_predictions(benchmark, samples, load_predictions(predictions))
    typer.echo(json.dumps(result))


@app.command()
def run(config: ConfigOpt, out: Annotated[str | None, typer.Option(help="run directory")] = None,
        set_: SetOpt = None) -> None:
    """All stages in-process (PA → PI → PL → evaluate before/after); resumes in the same --out."""
    from mpa.orchestrate.local import run_pipeline

    cfg = _config(config, set_, out=out)
    summary = run_pipeline(cfg)
    from mpa import storage

    console.print(f"run summary: {storage.join(cfg.out, 'summary.json')}")
    if "delta" in summary:
        typer.echo(json.dumps({"before": summary["eval_before"]["score"], "after": summary["eval_after"]["score"],
                               "k_parity": summary["identify"]["k_parity"]}))


@app.command()
def tasks() -> None:
    """List the built-in tasks, their metric and their PA prompt."""
    from mpa.tasks import get_task, task_names

    for name in task_names():
        if name == "custom":
            typer.echo("custom: your own PA prompt from task.prompt_file")
            continue
        t = get_task(name)
        typer.echo(f"{name} [{t.metric}] {t.description}")


@app.command("make-tiny")
def make_tiny(
    out: Annotated[Path, typer.Option(help="directory to create the tiny models and images in")],
    n_images: Annotated[int, typer.Option(min=1)] = 12,
) -> None:
    """Build tiny random Qwen2-VL teacher/student + images + a TextVQA-format benchmark (no downloads)."""
    from mpa.devtools.tinymodels import make_tiny_workspace

    paths = make_tiny_workspace(out, n_images=n_images)
    typer.echo(json.dumps({k: str(v) for k, v in paths.items()}))


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
) -> None:
    """MPA end to end in the toy world (shipped tiny teacher + student): a table, report.json, pictures."""
    from mpa.toyworld.demo import run_demo

    run_demo(out, seed=seed, n_images=n_images, n_test=n_test, temperature=temperature)


def _mount_toyworld() -> None:
    from mpa.cli.toyworld import app as toyworld_app

    app.add_typer(toyworld_app, name="toyworld", help="The toy world: synthetic data and the tiny checkpoints.")


_mount_toyworld()


# Command groups that live beside their code: each module defines ``register(app)``.
PLUGIN_MODULES = (
    "mpa.cli.tracking",  # mpa register / promote / services
    "mpa.cli.pipeline",  # mpa pipeline compile|upload|run
    "mpa.cli.teachers",  # mpa plan / bench / merge-shards
    "mpa.cli.benchmarks",  # baselines and extra evaluations
)


def _register_plugins() -> None:
    import importlib

    for name in PLUGIN_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        register = getattr(module, "register", None)
        if register is not None:
            register(app)


_register_plugins()


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from mpa.redact import install_log_redaction, redact_text

    install_log_redaction()  # no log line or error shows a credential
    from mpa.config import ConfigError
    from mpa.data.images import ImageSourceError
    from mpa.stages.level import EmptyParitySet
    from mpa.vlm.hf import ModelLoadError

    try:
        app()
    except (UserError, ConfigError, ImageSourceError, ModelLoadError, EmptyParitySet, FileNotFoundError) as exc:
        console.print(f"[red]error:[/] {redact_text(str(exc))}")
        sys.exit(2)
    except ValueError as exc:
        console.print(f"[red]error:[/] {redact_text(str(exc))}")
        sys.exit(2)


if __name__ == "__main__":
    main()
