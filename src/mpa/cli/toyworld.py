"""``mpa toyworld``: train the toy teacher/student and write toy datasets."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import typer

app = typer.Typer(
    name="toyworld",
    help="The toy world: synthetic VQA data and the tiny teacher/student checkpoints.", no_args_is_help=True
)


@app.command("train")
def train_cmd(
    role: str = typer.Option(
        ...,
        "--role",
        help="teacher (stage 1), teacher_refine (2: says 'none' about absent items), teacher_garbled "
        "(3: also to garbled questions; use --init-from), student, or tiny (tests)",
    ),
    out: Path = typer.Option(..., "--out", help="checkpoint directory to write"),
    steps: int | None = typer.Option(None, "--steps", help="default: the role's preset"),
    seed: int = typer.Option(0, "--seed"),
    batch_size: int = typer.Option(32, "--batch-size"),
    lr: float = typer.Option(2e-3, "--lr"),
    eval_every: int = typer.Option(500, "--eval-every", help="evaluate + save every N steps (0: at the end)"),
    snapshots: bool = typer.Option(False, "--snapshots", help="keep a copy of every evaluated checkpoint"),
    stop_after: int | None = typer.Option(None, "--stop-after", help="stop at this step, keeping the schedule"),
    init_from: Path | None = typer.Option(None, "--init-from", help="continue from this checkpoint"),
    warmup: int = typer.Option(100, "--warmup"),
    aux_weight: float = typer.Option(1.0, "--aux-weight", help="weight of the per-cell auxiliary loss"),
) -> None:
    """Train a toy checkpoint from scratch (deterministic for a given seed); prints final accuracy."""
    from mpa.toyworld.train import ROLES, train

    if role not in ROLES:
        choices = ", ".join(ROLES)
        raise typer.BadParameter(f"unknown role {role!r}; choose one of {choices}", param_hint="--role")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    final = train(
        role,
        out,
        steps=steps,
        seed=seed,
        batch_size=batch_size,
        lr=lr,
        eval_every=eval_every,
        snapshots=snapshots,
        stop_after=stop_after,
        init_from=init_from,
        warmup=warmup,
        aux_weight=aux_weight,
    )
    typer.echo(json.dumps(final, indent=1))


@app.command("make-data")
def make_data_cmd(
    out: Path = typer.Option(..., "--out", help="output directory"),
    n: int = typer.Option(200, "--n", help="number of images (unlabeled) or questions (test)"),
    seed: int = typer.Option(0, "--seed"),
    kind: str = typer.Option("unlabeled", "--kind", help="unlabeled | test"),
) -> None:
    """Write unlabeled toy images (+ truth.jsonl kept outside images/) or a TextVQA-format test set."""
    from mpa.toyworld.data import make_testset, make_unlabeled

    if kind == "unlabeled":
        path = make_unlabeled(out, n, seed)
    elif kind == "test":
        path = make_testset(out, n, seed)
    else:
        raise typer.BadParameter("choose unlabeled or test", param_hint="--kind")
    typer.echo(str(path))
