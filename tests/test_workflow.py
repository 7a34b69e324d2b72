"""The CI workflow: triggers, and every command it calls exists — make targets in the Makefile,
`mpa` subcommands with the options given (parsed by the real CLI, nothing executed), skaffold
profiles and the files it names."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yaml"
DOC = yaml.safe_load(WORKFLOW.read_text())
ON = DOC.get("on", DOC.get(True))  # YAML 1.1 reads the key `on` as True


def _runs() -> list[tuple[str, str]]:
    return [(job, step["run"]) for job, spec in DOC["jobs"].items() for step in spec["steps"] if "run" in step]


def _commands(script: str) -> list[list[str]]:
    """Shell commands of a step, split at ``|``, ``||``, ``&&``, ``;`` outside quotes; redirections dropped."""
    out = []
    for line in script.splitlines():
        lex = shlex.shlex(line, posix=True, punctuation_chars="|;&>")
        lex.whitespace_split = True
        cmd: list[str] = []
        redirect = False
        for tok in lex:
            if redirect:
                redirect = False
            elif tok in (">", ">>"):
                redirect = True
            elif tok and set(tok) <= set("|;&"):
                out.append(cmd) if cmd else None
                cmd = []
            else:
                cmd.append(tok)
        if cmd:
            out.append(cmd)
    return out


def test_triggers_push_to_main_tags_and_pull_requests():
    assert ON["push"]["branches"] == ["main"] and ON["push"]["tags"]
    assert "pull_request" in ON
    release = DOC["jobs"]["release"]
    assert release["needs"] == "test" and "push" in release["if"]


def test_release_job_does_what_the_issue_asks():
    text = " ".join(run for job, run in _runs() if job == "release")
    assert "skaffold build" in text and "mpa pipeline compile" in text and "mpa pipeline upload" in text
    assert "mpa pipeline run" in text and "--wait" in text
    test_job = " ".join(run for job, run in _runs() if job == "test")
    assert "make test" in test_job


def test_make_targets_exist():
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([A-Za-z0-9_.-]+):", makefile, flags=re.M))
    used = {cmd[1] for _, run in _runs() for cmd in _commands(run) if cmd and cmd[0] == "make"}
    assert used and used <= targets, used - targets


def test_mpa_commands_parse_with_the_real_cli():
    import typer

    from mpa.cli import app

    root = typer.main.get_command(app)
    seen = 0
    for _, run in _runs():
        for cmd in _commands(run):
            if not cmd or Path(cmd[0]).name != "mpa":
                continue
            group = root
            args = cmd[1:]
            while args and hasattr(group, "commands") and args[0] in group.commands:
                group = group.commands[args[0]]
                args = args[1:]
            assert not hasattr(group, "commands"), f"not a command: {' '.join(cmd)}"
            group.make_context(group.name, list(args))  # raises on unknown options or bad values
            seen += 1
    assert seen >= 3


def test_skaffold_profiles_and_build_output_match():
    skaffold = yaml.safe_load((ROOT / "skaffold.yaml").read_text())
    profiles = {p["name"] for p in skaffold["profiles"]}
    artifacts = {a["image"] for p in skaffold["profiles"] for a in p.get("build", {}).get("artifacts", [])}
    for _, run in _runs():
        for cmd in _commands(run):
            if cmd[:2] == ["skaffold", "build"] and "--profile" in cmd:
                assert cmd[cmd.index("--profile") + 1] in profiles
    names = set(re.findall(r'imageName == "([^"]+)"', WORKFLOW.read_text()))
    assert names and names <= artifacts


@pytest.mark.parametrize("path", sorted(set(re.findall(r"pipelines/[\w/.-]+\.yaml", WORKFLOW.read_text()))))
def test_files_the_workflow_names_exist(path):
    assert (ROOT / path).is_file()
