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
    assert "mpa pipeline run" in text and "--no-wait" in text
    assert "mpa pipeline wait" in " ".join(run for job, run in _runs() if job == "follow")
    test_job = " ".join(run for job, run in _runs() if job == "test")
    assert "make test" in test_job


HOSTED_LIMIT_MINUTES = 360  # a GitHub-hosted runner cuts a job at 6 h


def _mpa(job: str, sub: str) -> list[list[str]]:
    return [cmd for step in DOC["jobs"][job]["steps"] if "run" in step for cmd in _commands(step["run"])
            if cmd and Path(cmd[0]).name == "mpa" and cmd[1:3] == ["pipeline", sub]]


def test_no_job_is_cut_by_the_hosted_runner_and_a_run_is_stopped_only_on_cancel():
    """Every job of the release path ends before the hosted runner's 6 h: its steps' own bounds add up to less
    than its timeout (so the job's timeout — which GitHub reports as a cancellation — never fires), the wait
    gives up before its step's bound, and then leaves the run going. A run is stopped only when the workflow
    is cancelled: not when CI stopped waiting, a step failed, or a job timed out."""
    assert DOC["defaults"]["run"]["shell"] == "bash"  # -eo pipefail: `mpa … | tee` fails when mpa fails
    for name in ("release", "follow"):
        job = DOC["jobs"][name]
        assert job["timeout-minutes"] < HOSTED_LIMIT_MINUTES, name
        steps = [s for s in job["steps"] if "cancelled()" not in str(s.get("if", ""))]
        assert all("timeout-minutes" in s for s in steps), name
        assert sum(s["timeout-minutes"] for s in steps) < job["timeout-minutes"], name
        stops = [s for s in job["steps"] if "pipeline stop" in s.get("run", "")]
        assert stops and all(s["if"].startswith("cancelled()") and "failure()" not in s["if"] for s in stops), name
    [start] = _mpa("release", "run")
    assert "--no-wait" in start and "--wait" not in start
    [wait] = _mpa("follow", "wait")
    step = next(s for s in DOC["jobs"]["follow"]["steps"] if "pipeline wait" in s.get("run", ""))
    assert int(wait[wait.index("--timeout") + 1]) < step["timeout-minutes"] * 60
    assert "still running" in step["run"] and "exit 0" in step["run"]
    assert DOC["jobs"]["follow"]["needs"] == "release" and "run_id" in DOC["jobs"]["release"]["outputs"]


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
    assert artifacts
    builds = [cmd for _, run in _runs() for cmd in _commands(run) if cmd[:2] == ["skaffold", "build"]]
    assert builds and all(cmd[cmd.index("--file-output") + 1] == "build.json" for cmd in builds)
    assert all("--build-image" not in cmd and "-b" not in cmd for cmd in builds)  # both images, every time
    [compile_cmd] = _mpa("release", "compile")
    assert compile_cmd[compile_cmd.index("--images-from") + 1] == "build.json"
    assert "--gpu-image" not in compile_cmd and "--cpu-image" not in compile_cmd


def test_what_mpa_printed_is_read_from_its_last_line():
    """The kfp client prints "Run details: <link>" to stdout before `mpa pipeline run` prints its JSON line:
    every jq over a file an mpa command wrote reads the last line only."""
    text = WORKFLOW.read_text()
    reads = re.findall(r"[^\n]*jq -r[^\n]*", text)
    assert reads and all(re.search(r"tail -n 1 (run|state)\.json \| jq -r \.\w+", r) for r in reads), reads


def test_a_release_tag_pushes_the_version_the_defaults_name():
    """On a tag v<version>, skaffold also tags the images with the package version: what the pipeline defaults,
    the committed spec and the overlays name (ghcr.io/mpa-project/mpa-{cpu,gpu}:<version>); a tag that is not
    v<version> fails before anything is pushed."""
    step = next(s for s in DOC["jobs"]["release"]["steps"] if "skaffold build" in s.get("run", ""))
    assert 'TAG=(--tag "$VERSION")' in step["run"] and '"${TAG[@]}"' in step["run"]
    assert '"$GITHUB_REF_NAME" != "v$VERSION"' in step["run"] and "mpa.__version__" in step["run"]


@pytest.mark.parametrize("path", sorted(set(re.findall(r"pipelines/[\w/.-]+\.yaml", WORKFLOW.read_text()))))
def test_files_the_workflow_names_exist(path):
    assert (ROOT / path).is_file()
