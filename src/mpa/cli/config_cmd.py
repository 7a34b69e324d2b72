"""``mpa config``: print the settings a run config resolves to (presets applied) and exit.

Its own module so the command can move into a command group without touching the others.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from mpa.cli.common import ConfigOpt, SetOpt, run_config

app = typer.Typer()


@app.command("config")
def show_config(
    config: ConfigOpt,
    set_: SetOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object (default: YAML)")] = False,
) -> None:
    """Print the resolved run config — every setting, with `preset` applied and `--set` on top — and exit.

    The way to check what a run will do before it runs: `mpa config -c run.yaml --set preset=paper --json`.
    A setting that contradicts the preset is refused by name (see docs/experiments.md). Credentials are
    masked. PL's batch size and learning rate, when unset, come from the student's family at training time
    (`mpa families`)."""
    import yaml

    cfg = run_config(config, set_)
    data = cfg.model_dump(mode="json")
    if as_json:
        typer.echo(json.dumps(data, ensure_ascii=False))
    else:
        typer.echo(yaml.safe_dump(data, sort_keys=False, allow_unicode=True).rstrip())
