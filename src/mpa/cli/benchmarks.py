"""``mpa baseline`` / ``images`` / ``eval-words`` / ``eval-captions`` / ``score-words`` / ``score-captions`` /
``families``: the paper's baselines, unlabeled sources and beyond-VQA evaluations."""

import json
from pathlib import Path
from typing import Annotated

import typer

from mpa.cli.common import ConfigOpt, SetOpt, UserError, run_config

app = typer.Typer()


@app.command()
def baseline(
    mode: Annotated[str, typer.Argument(help="zero-shot | no-pi (MPA without PI) | few-shot (SFT on N labels)")],
    config: ConfigOpt,
    out: Annotated[str | None, typer.Option(help="run directory (results go to <out>/baselines/<mode>)")] = None,
    shots: Annotated[int | None, typer.Option(min=1, help="few-shot: number of labeled samples")] = None,
    train_annotations: Annotated[
        str | None, typer.Option(help="few-shot: the benchmark's official train annotation file")
    ] = None,
    train_questions: Annotated[str | None, typer.Option(help="few-shot, OK-VQA: train questions file")] = None,
    train_images: Annotated[str | None, typer.Option(help="few-shot: train image directory")] = None,
    train_benchmark: Annotated[
        str | None, typer.Option(help="few-shot: format of the train file (default: evaluate.benchmark)")
    ] = None,
    lora: Annotated[
        bool | None, typer.Option("--lora/--full", help="few-shot/no-pi: LoRA or full fine-tuning")
    ] = None,
    set_: SetOpt = None,
) -> None:
    """Run one of the paper's baselines on your data with the same config as `mpa run`; prints JSON."""
    from mpa.orchestrate.baselines import MODES, BaselineError, run_baseline

    if mode not in MODES:
        raise UserError(f"unknown baseline {mode!r}; choose one of: {', '.join(MODES)}")
    cfg = run_config(config, set_, **{"out": out, "train.lora": lora})
    try:
        s = run_baseline(
            cfg,
            mode,
            shots=shots,
            train_annotations=train_annotations,
            train_questions=train_questions,
            train_images=train_images,
            train_benchmark=train_benchmark,
        )
    except BaselineError as exc:
        raise UserError(str(exc)) from exc
    typer.echo(json.dumps({k: s.get(k) for k in ("mode", "score", "delta", "n_train", "out") if k in s}))

@app.command()
def images(
    source: Annotated[
        str,
        typer.Option(
            help="dir, s3:// prefix, bench:<name>:<annotations>[:<images>] or hf:<dataset>[:<split>[:<column>]]"
        ),
    ],
    out: Annotated[Path, typer.Option(help="directory to fill with the images (links or copies)")],
    max_images: Annotated[int | None, typer.Option(min=1)] = None,
    questions: Annotated[str | None, typer.Option(help="OK-VQA questions file (bench:okvqa:…)")] = None,
) -> None:
    """Make an unlabeled image directory for PA (data.images) from any source; labels are dropped."""
    from mpa.data.sources import materialize

    path = materialize(source, out, max_images, questions=questions)
    typer.echo(json.dumps({"images": str(path), "n": sum(1 for _ in path.iterdir())}))

def _vlm(model: str, batch_size: int, trust_remote_code: bool):
    from mpa.config import ModelConfig
    from mpa.vlm.loader import load_vlm

    return load_vlm(ModelConfig(model=model, batch_size=batch_size, trust_remote_code=trust_remote_code))

@app.command("eval-words")
def eval_words(
    model: Annotated[str, typer.Option(help="HF id, local checkpoint dir or s3:// prefix")],
    gt: Annotated[str, typer.Option(help='ICDAR2015 word-recognition gt.txt (word_1.png, "text")')],
    images: Annotated[str | None, typer.Option(help="word image directory (default: beside gt)")] = None,
    predictions: Annotated[Path, typer.Option()] = Path("words_predictions.jsonl"),
    batch_size: Annotated[int, typer.Option(min=1)] = 8,
    trust_remote_code: Annotated[bool, typer.Option(help="only for models that need it (InternVL2)")] = False,
) -> None:
    """Word recognition rate of a model on cropped words (ICDAR2015 format); prints JSON."""
    from mpa.extra_metrics import evaluate_words, load_icdar2015_words

    samples = load_icdar2015_words(gt, images)
    typer.echo(
        json.dumps(
            evaluate_words(_vlm(model, batch_size, trust_remote_code), samples, predictions, batch_size=batch_size)
        )
    )

@app.command("eval-captions")
def eval_captions(
    model: Annotated[str, typer.Option(help="HF id, local checkpoint dir or s3:// prefix")],
    annotations: Annotated[str, typer.Option(help="TextCaps json or {image_id, references} jsonl")],
    images: Annotated[str | None, typer.Option(help="image directory (default: beside annotations)")] = None,
    predictions: Annotated[Path, typer.Option()] = Path("captions_predictions.jsonl"),
    batch_size: Annotated[int, typer.Option(min=1)] = 8,
    tokenizer: Annotated[str, typer.Option(help="auto (PTB if java), ptb or python")] = "auto",
    trust_remote_code: Annotated[bool, typer.Option(help="only for models that need it (InternVL2)")] = False,
) -> None:
    """Text-aware captioning: BLEU-1, ROUGE-L, CIDEr of a model's captions; prints JSON."""
    from mpa.extra_metrics import evaluate_captions, load_caption_references

    samples = load_caption_references(annotations, images)
    typer.echo(
        json.dumps(
            evaluate_captions(
                _vlm(model, batch_size, trust_remote_code),
                samples,
                predictions,
                batch_size=batch_size,
                tokenizer=tokenizer,
            )
        )
    )

@app.command("score-words")
def score_words(
    gt: Annotated[str, typer.Option(help="ICDAR2015 gt.txt")],
    predictions: Annotated[str, typer.Option(help='jsonl of {"id"|"question_id", "answer"} (id = word_N)')],
) -> None:
    """Score word-recognition predictions (WRR, normalised and exact); prints JSON."""
    from mpa.extra_metrics import load_icdar2015_words, read_predictions, word_recognition_rate

    typer.echo(json.dumps(word_recognition_rate(load_icdar2015_words(gt), read_predictions(predictions))))

@app.command("score-captions")
def score_captions(
    annotations: Annotated[str, typer.Option(help="TextCaps json or {image_id, references} jsonl")],
    predictions: Annotated[str, typer.Option(help='jsonl of {"image_id", "caption"}')],
    tokenizer: Annotated[str, typer.Option(help="auto (PTB if java), ptb or python")] = "auto",
) -> None:
    """Score captions (BLEU-1, ROUGE-L, CIDEr); prints JSON."""
    from mpa.extra_metrics import caption_scores, load_caption_references, read_predictions

    refs = {s.id: s.references for s in load_caption_references(annotations)}
    typer.echo(json.dumps(caption_scores(refs, read_predictions(predictions), tokenizer=tokenizer)))

@app.command()
def families() -> None:
    """Model families the hf backend adapts to, their PL preset and whether they need remote code."""
    from mpa.vlm.adapters import ADAPTERS

    for a in ADAPTERS:
        remote = " (trust_remote_code)" if a.needs_remote_code else ""
        typer.echo(
            f"{a.family}: model types {', '.join(a.model_types)}; PL batch {a.preset.batch_size}, "
            f"lr {a.preset.learning_rate:g}{remote}"
        )

@app.command("bench-arch")
def bench_arch(
    workdir: Annotated[Path, typer.Option(help="scratch directory (models are built here, logs and bench_arch.json)")
                       ] = Path("runs/bench_arch"),
    teacher: Annotated[str, typer.Option(help="teacher architecture (mpa.archs)")] = "qwen2-vl-7b",
    student: Annotated[str, typer.Option(help="student architecture (mpa.archs)")] = "qwen2-vl-2b",
    layers: Annotated[int | None, typer.Option(min=1, help="decoder layers to keep (default: all)")] = None,
    vision_layers: Annotated[int | None, typer.Option(min=1, help="vision blocks to keep (default: all)")] = None,
    width: Annotated[float, typer.Option(min=0.01, max=1.0, help="fraction of hidden/MLP width to keep")] = 1.0,
    n_images: Annotated[int, typer.Option(min=1, help="images per pass")] = 8,
    batch_size: Annotated[int, typer.Option(min=1, help="batched HF: requests per generate call")] = 8,
    backends: Annotated[str, typer.Option(help="comma list: hf_per_sample, hf_batched, vllm_offline")] = (
        "hf_per_sample,hf_batched,vllm_offline"),
    pl_steps: Annotated[int, typer.Option(min=0, help="PL steps of the student to time (0: skip)")] = 2,
    pl_micro_batch: Annotated[int, typer.Option(min=1)] = 2,
    dtype: Annotated[str, typer.Option(help="float32 (CPU) or bfloat16 (GPU)")] = "float32",
) -> None:
    """PA, PI and PL at the paper's architecture sizes with random weights (nothing downloaded): images/s,
    tokens/s, FLOP/s, the fraction of this machine's matmul peak, the plan's prediction; last line JSON."""
    from mpa.archbench import run_arch_bench

    try:
        res = run_arch_bench(workdir, teacher=teacher, student=student, layers=layers, vision_layers=vision_layers,
                             width=width, n_images=n_images, batch_size=batch_size,
                             backends=[b for b in backends.split(",") if b], pl_steps=pl_steps,
                             pl_micro_batch=pl_micro_batch, dtype=dtype, echo=typer.echo)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    typer.echo(json.dumps({"ratios": res["ratios"], "goals": res["goals"]}))
