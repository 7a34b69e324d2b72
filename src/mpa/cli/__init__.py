"""The ``mpa`` command line (typer). Every command has ``--help``.

One way to register commands: each module of this package defines ``app = typer.Typer()`` (named
for a group such as ``mpa pipeline …``, unnamed for top-level commands) and lists it in
``COMMAND_MODULES``; the root app mounts them all. Commands only parse flags and call one library
entry; settings have one home, the pydantic run config (:mod:`mpa.config`), and flags map onto it.
"""

from __future__ import annotations

import importlib
import logging
import sys

import typer

from mpa.cli.common import UserError
from mpa.redact import install_log_redaction, redact_text
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

COMMAND_MODULES = (
    "mpa.cli.stages",  # annotate, identify, level, evaluate, score, run, tasks, demo
    "mpa.cli.tracking",  # register, promote
    "mpa.cli.teachers",  # run-shard, merge-shards, plan, bench
    "mpa.cli.benchmarks",  # baseline, images, eval-words, eval-captions, score-*, families
    "mpa.cli.pipeline",  # pipeline compile|upload|run
    "mpa.cli.paper",  # split, human-study sample|score, convert-tinyllava
    "mpa.cli.toyworld",  # toyworld train|make-data
    "mpa.cli.dev",  # make-tiny, make-tiny-family, services up|down|status
)

for _name in COMMAND_MODULES:
    app.add_typer(importlib.import_module(_name).app)


def user_errors() -> tuple[type[BaseException], ...]:
    """The errors that are the user's to fix: printed as one line, exit code 2 (never a traceback)."""
    from mpa.config import ConfigError
    from mpa.data.images import ImageSourceError
    from mpa.errors import MpaError
    from mpa.sharding import IncompleteMerge
    from mpa.stages.level import EmptyParitySet
    from mpa.vlm.hf import ModelLoadError

    return (MpaError, UserError, ConfigError, ImageSourceError, ModelLoadError, EmptyParitySet, IncompleteMerge,
            FileNotFoundError, ValueError)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    install_log_redaction()  # no log line or error shows a credential
    try:
        app()
    except user_errors() as exc:
        console.print(f"[red]error:[/] {redact_text(str(exc))}", soft_wrap=True)
        sys.exit(2)
    except OSError as exc:  # a full or read-only disk under a library's own write (checkpoint, MLflow artifacts)
        from mpa.safeio import DISK_ERRNOS, write_error

        if exc.errno not in DISK_ERRNOS:
            raise
        console.print(f"[red]error:[/] {redact_text(str(write_error(exc.filename or 'a file', exc)))}",
                      soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
