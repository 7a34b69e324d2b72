"""What every command module shares: the config options, the one way to build a run config, UserError."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mpa.errors import MpaError

if TYPE_CHECKING:  # mpa.config (pydantic) is imported when a command runs, not for --help
    from mpa.config import RunConfig

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="run config YAML (see configs/ for examples)")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="override a config value, dotted: --set train.lora=true (repeatable)"),
]

ForceOpt = Annotated[
    bool | None,
    typer.Option("--force", help="redo a stage whose output was made with other inputs or settings (it is refused "
                 "otherwise); sets `force`"),
]
AllowPartialOpt = Annotated[
    bool | None,
    typer.Option("--allow-partial", help="go on from an earlier stage's unfinished output (refused otherwise); "
                 "sets `allow_partial`"),
]


class UserError(MpaError):
    """An error caused by input; printed as one line, exit code 2."""


def run_config(path: Path, sets: list[str] | None, **flags: object) -> RunConfig:
    """The run config from ``--config``, with flags (dotted field → value; None = not given) and ``--set`` on top."""
    from mpa.config import load_config, parse_set_pairs

    overrides = {k: v for k, v in flags.items() if v is not None}
    overrides.update(parse_set_pairs(sets))
    return load_config(path, overrides)


def preflight(cfg: RunConfig, **kw: object) -> None:
    """The run's preflight (:func:`mpa.preflight.preflight`): models, data, endpoints, buckets, marks; no weights."""
    from mpa.preflight import preflight as run_preflight

    run_preflight(cfg, **kw)  # type: ignore[arg-type]
