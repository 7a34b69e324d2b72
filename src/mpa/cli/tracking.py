"""``mpa register`` / ``mpa promote``: the MLflow registry."""

from __future__ import annotations

import json
from typing import Annotated

import typer

TrackingOpt = Annotated[
    str | None, typer.Option("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI)")]


app = typer.Typer()


@app.command("register")
def register_cmd(
    run_dir: Annotated[str, typer.Option("--run-dir", help="a finished run directory (local or s3://)")],
    name: Annotated[str | None, typer.Option(help="registered model name (default: from the config)")] = None,
    tracking_uri: TrackingOpt = None,
    promote: Annotated[bool, typer.Option(help="move the champion/challenger aliases afterwards")] = True,
    margin: Annotated[float | None, typer.Option(help="promotion margin in score points")] = None,
) -> None:
    """Register a run's aligned student as a new model version (tagged with its lineage), then promote it."""
    from mpa.stages.register import register as run_register

    v = run_register(run_dir=run_dir, tracking_uri=tracking_uri, name=name, promote=promote, margin=margin)
    typer.echo(json.dumps(v.__dict__))

@app.command("promote")
def promote_cmd(
    name: Annotated[str, typer.Option(help="registered model name")],
    version: Annotated[str, typer.Option(help="model version, or 'latest'")] = "latest",
    margin: Annotated[float, typer.Option(help="score points to beat the base student and the champion by")] = 0.0,
    tracking_uri: TrackingOpt = None,
    require_champion: Annotated[bool, typer.Option(
        "--require-champion", help="exit 1 unless the version became (or is) champion (a CI gate)")] = False,
) -> None:
    """Give a model version `champion` (if it beats the base student and the champion) or `challenger`.

    Reads the scores from the version's tags (``mpa.score``, ``mpa.base_score``); the reason is tagged
    as ``mpa.promotion_reason``. Prints JSON with the alias and the reason; exit code 0 unless
    --require-champion and it stayed challenger.
    """
    import os

    from mpa import tracking

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise tracking.TrackingError("no tracking URI: pass --tracking-uri or set MLFLOW_TRACKING_URI "
                                     "(for a run's embedded store: sqlite:///<run dir>/mlflow/mlflow.db)")
    tracking.check_reachable(uri)
    d = tracking.promote(tracking.client(uri), name, version, margin=margin)
    typer.echo(json.dumps(d.__dict__ | {"name": name}))
    if require_champion and d.alias != tracking.CHAMPION:
        raise typer.Exit(1)
