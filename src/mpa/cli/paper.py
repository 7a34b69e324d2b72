"""``mpa split`` / ``mpa human-study sample|score`` / ``mpa convert-tinyllava``: what reproducing the
paper's tables needs beyond the pipeline (its ST-VQA holdout, its human study, its TinyLLaVA student)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer()


@app.command()
def split(
    benchmark: Annotated[str, typer.Option(help="format: stvqa (split by file_path) or textvqa (by image_id)")],
    annotations: Annotated[Path, typer.Option(help="the train annotation file, e.g. ST-VQA's train_task_1.json")],
    out: Annotated[Path, typer.Option(help="directory for train.json, holdout.json and split.json")],
    holdout: Annotated[float, typer.Option(help="fraction of the images held out, 0 < f < 1")] = 0.15,
    seed: Annotated[int, typer.Option(help="seed of the image shuffle (same seed, same split)")] = 0,
    holdout_file: Annotated[Path | None, typer.Option(
        help="a fixed holdout instead of a drawn one, e.g. the MPA authors' "
             "train_task_1_onePerImage_val.json: copied as it is; train.json drops its images")] = None,
) -> None:
    """Hold out a fraction of a train split's images (ST-VQA's test answers are not public), or a fixed file.

    Writes OUT/train.json and OUT/holdout.json in the input's own format (no image in both) and
    OUT/split.json (seed or fixed file, counts, the sources' SHA-256). With --holdout-file the holdout is
    that file, byte for byte (the paper's ST-VQA numbers are on the authors' file). Evaluate on the holdout
    with `mpa evaluate --benchmark stvqa --annotations OUT/holdout.json --images <ST-VQA image root>`.
    """
    from mpa.data.split import split_benchmark, split_by_file

    if holdout_file is not None:
        typer.echo(json.dumps(split_by_file(benchmark, annotations, holdout_file, out)))
        return
    typer.echo(json.dumps(split_benchmark(benchmark, annotations, holdout, seed, out)))

study = typer.Typer(
    name="human-study",
    help="The paper's human study (Table 4): rate pseudo-labels before and after PI, blinded.",
    no_args_is_help=True,
)

@study.command("sample")
def study_sample(
    run: Annotated[Path, typer.Option(help="run directory holding annotations.jsonl and pi/parity.jsonl")],
    out: Annotated[Path, typer.Option(help="the sheet to write (.csv); .html and .key.json go beside it")],
    n: Annotated[int, typer.Option(help="items in all, half before PI and half after (the paper: 500)")] = 500,
    seed: Annotated[int, typer.Option(help="seed of the draw and of the shuffle")] = 0,
) -> None:
    """Draw N pseudo-labels (N/2 from PA, N/2 from the parity set), shuffled and blinded.

    Give each rater a copy of the CSV and the HTML (images, questions, answers, instructions);
    keep the .key.json (which item is from which set) away from them. Raters write 1 or 0 in the
    columns answer_correct, answerable, task_relevant and human_like.
    """
    from mpa.human_study import sample_sheet

    typer.echo(json.dumps(sample_sheet(run, n, out, seed=seed)))

@study.command("score")
def study_score(
    sheets: Annotated[list[Path], typer.Argument(help="filled sheets, one per rater")],
    key: Annotated[Path, typer.Option(help="the .key.json written by `human-study sample`")],
) -> None:
    """Answer correctness, answerability, task relevance, human-likeness before/after PI + rater agreement.

    Prints JSON: per measure the share of 1-ratings before and after PI (and per rater), and with two
    or more raters the percent agreement and Cohen's (2 raters) or Fleiss' (3+) kappa.
    """
    from mpa.human_study import score_sheets

    typer.echo(json.dumps(score_sheets(sheets, key)))


@study.command("likeness-sample")
def likeness_sample(
    run: Annotated[Path, typer.Option(help="run directory holding pi/parity.jsonl")],
    benchmark: Annotated[str, typer.Option(help="format of the human questions: textvqa, stvqa, chartqa, okvqa")],
    annotations: Annotated[str, typer.Option(help="a benchmark annotation file with human-written questions "
                                             "(e.g. TextVQA_0.5.1_train.json)")],
    out: Annotated[Path, typer.Option(help="the sheet to write (.csv); .html and .key.json go beside it")],
    questions: Annotated[str | None, typer.Option(help="OK-VQA questions file")] = None,
    images: Annotated[str | None, typer.Option(help="the benchmark's image directory")] = None,
    n: Annotated[int, typer.Option(help="items in all: half post-PI, half human questions")] = 200,
    seed: Annotated[int, typer.Option(help="seed of the draw and of the shuffle")] = 0,
) -> None:
    """The paper's human-likeness study: post-PI items mixed, blind, with real human questions.

    Raters write 1 (a person wrote it) or 0 (a machine did) in the column human_written; keep the
    .key.json away from them. Score with `mpa human-study likeness-score`.
    """
    from mpa.human_study import likeness_sheet

    typer.echo(json.dumps(likeness_sheet(run, benchmark, annotations, out, n, questions=questions, images=images,
                                         seed=seed)))


@study.command("likeness-score")
def likeness_score(
    sheets: Annotated[list[Path], typer.Argument(help="filled sheets, one per rater")],
    key: Annotated[Path, typer.Option(help="the .key.json written by `human-study likeness-sample`")],
) -> None:
    """Human-likeness (the paper's Table 4 score): the share of post-PI items taken for human-written.

    Prints JSON: human_likeness (pooled and per rater), the same share for the real human questions
    (human_questions_taken_for_human, the control) and, with two or more raters, their agreement.
    """
    from mpa.human_study import score_likeness

    typer.echo(json.dumps(score_likeness(sheets, key)))


app.add_typer(study)

@app.command("convert-tinyllava")
def convert_tinyllava_cmd(
    src: Annotated[Path, typer.Option(help="an original TinyLLaVA checkpoint directory, e.g. TinyLLaVA-2.0B")],
    out: Annotated[Path, typer.Option(help="new directory for the transformers-native LLaVA checkpoint")],
    vision_heads: Annotated[
        int | None, typer.Option(help="SigLIP attention heads (default: 16, so400m's, when its width is 1152)")
    ] = None,
    tokenizer: Annotated[
        Path | None, typer.Option(help="load the tokenizer from here instead of --src")
    ] = None,
) -> None:
    """Convert TinyLLaVA-2.0B (bczhou/TinyLLaVA-2.0B, TinyLLaVABench format) to a stock LLaVA checkpoint.

    The result loads with AutoModelForImageTextToText and vLLM without remote code and is an mpa
    student like any other (`student.model: OUT`), with TinyLLaVA's chat format and the paper's PL
    preset (batch 16, lr 1e-4). That this is the paper's "TinyLLaVA-2B" is our inference: the paper
    names no checkpoint. Download the checkpoint first (e.g. `hf download bczhou/TinyLLaVA-2.0B
    --local-dir SRC`); prints JSON.
    """
    from mpa.vlm.tinyllava import convert_tinyllava

    path = convert_tinyllava(src, out, vision_heads=vision_heads, tokenizer=tokenizer)
    typer.echo(json.dumps({"model": str(path)}))
