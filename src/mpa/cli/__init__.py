"""The ``mpa`` command line (typer). Every command has ``--help``.

One way to register commands: each module of this package defines ``app = typer.Typer()`` (named
for a group such as ``mpa pipeline …``, unnamed for top-level commands) and lists it in
``COMMAND_MODULES``; the root app mounts them all, core commands at the top and the rest in the groups
``GROUPS`` names (``paper``, ``dev``), each also under its old top-level name (hidden). Command modules
import nothing heavy at module level (``mpa --help`` stays fast). Commands only parse flags and call one
library entry; settings have one home, the pydantic run config (:mod:`mpa.config`), and flags map onto it.
"""

from __future__ import annotations

import copy
import importlib
import logging
import sys
from typing import Annotated

import typer

from mpa.cli.common import UserError
from mpa.redact import install_log_redaction, redact_text
from mpa.ui import console, quiet_library_bars

app = typer.Typer(
    name="mpa",
    help=(
        "Model Parity Aligner: make a small VLM better at a VQA task from unlabeled images and a large VLM.\n\n"
        "Stages: annotate (PA: the teacher writes Q+A per image) → identify (PI: keep what the teacher "
        "reproduces and the student misses) → level (PL: fine-tune the student on that parity set) → "
        "evaluate (official metrics). `mpa run --config run.yaml` does all of them. More: `mpa pipeline` "
        "(Kubeflow), `mpa paper` (the paper's baselines, splits, human study), `mpa dev` (tiny models, "
        "local servers, benchmarks)."
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
    "mpa.cli.config_cmd",  # config (the resolved settings)
)

#: commands (or command groups) that live in a group rather than at the top level; every other command is a
#: core command at the top. Each grouped command keeps its old top-level name as a hidden alias
#: (``mpa make-tiny`` still works; ``mpa dev make-tiny`` is what --help shows).
GROUPS: dict[str, tuple[str, frozenset[str]]] = {
    "paper": ("Reproduce the paper beyond the pipeline: its baselines, ST-VQA holdout split, human study, "
              "TinyLLaVA student, word-recognition and captioning tasks.",
              frozenset({"baseline", "split", "human-study", "convert-tinyllava", "eval-words", "eval-captions",
                         "score-words", "score-captions"})),
    "dev": ("Developer tools: tiny models built locally, the toy world, local MLflow + S3 servers, throughput "
            "benchmarks, the model families the hf backend knows.",
            frozenset({"make-tiny", "make-tiny-family", "services", "toyworld", "bench", "bench-arch", "families"})),
}


def _command_name(cmd: typer.models.CommandInfo) -> str:
    return cmd.name or cmd.callback.__name__.lower().replace("_", "-")  # typer's own rule


def _group_name(grp: typer.models.TyperInfo) -> str | None:
    name = grp.name if isinstance(grp.name, str) else None
    inner = grp.typer_instance.info.name if grp.typer_instance is not None else None
    return name or (inner if isinstance(inner, str) else None)


def _hidden_alias(info: typer.models.CommandInfo | typer.models.TyperInfo):
    alias = copy.copy(info)
    alias.hidden = True
    return alias


def _mount(root: typer.Typer) -> None:
    groups = {g: typer.Typer(name=g, help=text, no_args_is_help=True) for g, (text, _) in GROUPS.items()}
    where = {name: g for g, (_, names) in GROUPS.items() for name in names}
    for module in COMMAND_MODULES:
        sub = importlib.import_module(module).app
        if isinstance(sub.info.name, str):  # a named group module (pipeline, toyworld)
            entries: list[tuple[str | None, str, object]] = [(sub.info.name, "group", sub)]
        else:
            entries = [(_command_name(c), "command", c) for c in sub.registered_commands]
            entries += [(_group_name(g), "typer", g) for g in sub.registered_groups]
        for name, kind, info in entries:
            group = where.get(name or "")
            if kind == "group":
                if group:
                    groups[group].add_typer(info)  # type: ignore[arg-type]
                root.add_typer(info, hidden=bool(group))  # type: ignore[arg-type]
            elif kind == "command":
                if group:
                    groups[group].registered_commands.append(info)  # type: ignore[arg-type]
                root.registered_commands.append(_hidden_alias(info) if group else info)  # type: ignore[arg-type]
            else:
                if group:
                    groups[group].registered_groups.append(info)  # type: ignore[arg-type]
                root.registered_groups.append(_hidden_alias(info) if group else info)  # type: ignore[arg-type]
    for g in groups.values():
        root.add_typer(g)


def _version(value: bool) -> None:
    if value:
        from mpa import __version__

        typer.echo(f"mpa {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version and exit")
    ] = False,
) -> None:
    """Model Parity Aligner."""


_mount(app)


#: the errors that are the user's to fix besides MpaError, ValueError and FileNotFoundError (which the
#: others below mostly are): (module, class) — looked up only when their module is already imported (an
#: instance cannot exist otherwise), so printing an error never imports torch
_OTHER_USER_ERRORS = (("mpa.vlm.hf", "ModelLoadError"), ("mpa.sharding", "IncompleteMerge"))


def user_errors() -> tuple[type[BaseException], ...]:
    """The errors that are the user's to fix: printed as one line, exit code 2 (never a traceback)."""
    from mpa.errors import MpaError

    found: list[type[BaseException]] = [MpaError, UserError, FileNotFoundError, ValueError]
    for module, name in _OTHER_USER_ERRORS:
        if module in sys.modules:
            found.append(getattr(sys.modules[module], name))
    return tuple(found)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    install_log_redaction()  # no log line or error shows a credential
    quiet_library_bars()  # one set of progress bars: ours
    try:
        app()
    except SystemExit:
        raise  # --help, typer.Exit, a usage error: nothing to translate (and nothing heavy to import)
    except Exception as exc:
        if not isinstance(exc, user_errors()):
            raise
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
