"""Developer commands: ``mpa make-tiny``, ``mpa make-tiny-family`` (tiny models built locally, no downloads)
and ``mpa services up|down|status`` (local MLflow + S3 servers). They use :mod:`mpa.devtools`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mpa.cli.common import UserError

DirOpt = Annotated[Path, typer.Option("--dir", help="where the servers keep their data and env.sh")]

app = typer.Typer()


@app.command("make-tiny")
def make_tiny(
    out: Annotated[Path, typer.Option(help="directory to create the tiny models and images in")],
    n_images: Annotated[int, typer.Option(min=1)] = 12,
) -> None:
    """Build tiny random Qwen2-VL teacher/student + images + a TextVQA-format benchmark (no downloads)."""
    from mpa.devtools.tinymodels import make_tiny_workspace

    paths = make_tiny_workspace(out, n_images=n_images)
    typer.echo(json.dumps({k: str(v) for k, v in paths.items()}))


@app.command("make-tiny-family")
def make_tiny_family(
    family: Annotated[str, typer.Option(help="qwen2_vl, qwen2_5_vl, smolvlm, llava or internvl")],
    out: Annotated[Path, typer.Option(help="directory for the checkpoint")],
) -> None:
    """Build a tiny random model of one family locally (no downloads), e.g. a student for a mixed pair."""
    from mpa.devtools.tinymodels import build_tiny

    try:
        typer.echo(json.dumps({"family": family, "model": str(build_tiny(family, out))}))
    except ValueError as exc:
        raise UserError(str(exc)) from exc


services = typer.Typer(name="services", help="Local MLflow + S3 (SeaweedFS) servers for development and demos.",
                       no_args_is_help=True)

@services.command("up")
def up(
    dir: DirOpt = Path(".mpa-services"),
    s3_port: Annotated[int, typer.Option(help="S3 endpoint port")] = 8333,
    mlflow_port: Annotated[int, typer.Option(help="MLflow server port")] = 5000,
) -> None:
    """Start the object server and the MLflow server (detached); print how to point runs at them."""
    from mpa.devtools import services as svc

    state = svc.up(dir, s3_port=s3_port, mlflow_port=mlflow_port)
    typer.echo(f"S3 (SeaweedFS) {state['s3_endpoint']} ready in {state['startup_s']['s3']} s; "
               f"MLflow {state['mlflow_uri']} ready in {state['startup_s']['mlflow']} s")
    typer.echo(f"buckets: s3://{svc.S3_BUCKET} (runs), s3://{svc.MLFLOW_BUCKET}/artifacts (MLflow artifacts)")
    typer.echo(f"point runs at them:  source {dir.resolve() / 'env.sh'}")

@services.command("down")
def down(dir: DirOpt = Path(".mpa-services")) -> None:
    """Stop the servers `mpa services up` started from --dir (data is kept)."""
    from mpa.devtools import services as svc

    typer.echo(json.dumps({"stopped": svc.down(dir)}))

@services.command("status")
def status(dir: DirOpt = Path(".mpa-services")) -> None:
    """Whether the servers are running, and their addresses."""
    from mpa.devtools import services as svc

    typer.echo(json.dumps(svc.status(dir)))


app.add_typer(services)
