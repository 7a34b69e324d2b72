"""The CLI a user expects: --version, a fast --help (nothing heavy imported), grouped commands with every old
name still working, one-line errors from the pipeline client, unmasked usage hints, did-you-mean."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

MPA = [sys.executable, "-m", "mpa.cli"]
OLD_NAMES = ["annotate", "identify", "level", "evaluate", "score", "run", "tasks", "demo", "register", "promote",
             "run-shard", "merge-shards", "plan", "bench", "baseline", "images", "eval-words", "eval-captions",
             "score-words", "score-captions", "families", "split", "convert-tinyllava", "make-tiny",
             "make-tiny-family", "pipeline", "human-study", "toyworld", "services"]


def _run(args, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **kw.pop("env", {})}
    return subprocess.run([*MPA, *args], capture_output=True, text=True, env=env, timeout=300, **kw)


def test_version():
    from mpa import __version__

    res = _run(["--version"])
    assert res.returncode == 0 and res.stdout.strip() == f"mpa {__version__}"


def test_help_imports_nothing_heavy():
    """What made `mpa --help` take seconds: torch (through the error handler) and pydantic configs."""
    res = subprocess.run([sys.executable, "-X", "importtime", "-m", "mpa.cli", "--help"], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0 and "Usage" in res.stdout
    imported = {line.split("|")[-1].strip() for line in res.stderr.splitlines() if line.startswith("import time:")}
    assert not imported & {"torch", "transformers", "mpa.config", "pydantic", "boto3", "kfp", "mlflow"}


def test_commands_are_grouped_and_old_names_still_work():
    from mpa.cli import app

    runner = CliRunner()
    top = runner.invoke(app, ["--help"]).output
    for shown in ("run", "annotate", "evaluate", "pipeline", "paper", "dev"):
        assert f" {shown} " in top
    for moved in ("make-tiny", "human-study", "convert-tinyllava", "bench", "toyworld"):
        assert f" {moved} " not in top  # in a group now, not in the top-level list
    assert " make-tiny " in runner.invoke(app, ["dev", "--help"]).output
    assert " human-study " in runner.invoke(app, ["paper", "--help"]).output
    for name in OLD_NAMES:
        res = runner.invoke(app, [name, "--help"])
        assert res.exit_code == 0 and "Usage" in res.output, name
    for path in (["dev", "make-tiny"], ["paper", "human-study", "score"], ["dev", "services", "up"],
                 ["dev", "toyworld", "train"], ["human-study", "sample"]):
        assert runner.invoke(app, [*path, "--help"]).exit_code == 0, path


def test_set_usage_hint_is_not_masked_and_unknown_keys_get_did_you_mean(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("teacher: {model: t}\nstudent: {model: s}\ndata: {images: x}\n")
    res = _run(["run", "-c", str(cfg), "--set", "train.epochs"])
    assert res.returncode == 2 and "e.g. --set train.epochs=2" in res.stderr and "***" not in res.stderr
    res = _run(["run", "-c", str(cfg), "--set", "train.learnig_rate=1e-5", "--set", "techer.model=x"])
    assert res.returncode == 2
    assert "train.learnig_rate: Extra inputs are not permitted (did you mean train.learning_rate?)" in res.stderr
    assert "(did you mean teacher?)" in res.stderr


@pytest.mark.parametrize("host", [None, "http://127.0.0.1:9"])
def test_pipeline_run_without_a_reachable_endpoint_is_one_line(host):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    args = ["pipeline", "run", "--package", f"{root}/pipelines/training/mpa/pipeline.yaml",
            "--params", f"{root}/pipelines/training/mpa/params/smoke.yaml"] + (["--host", host] if host else [])
    env = {k: v for k, v in os.environ.items()
           if k not in ("KF_PIPELINES_ENDPOINT", "KFP_ENDPOINT", "KUBERNETES_SERVICE_HOST")}
    res = subprocess.run([*MPA, *args], capture_output=True, text=True, env=env, timeout=120)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2 and len(lines) == 1, res.stderr
    assert "Traceback" not in res.stderr and "port=80" not in res.stderr  # urllib3's own words for localhost:80
    assert ("KF_PIPELINES_ENDPOINT" in lines[0]) and (host is None or "cannot be reached" in lines[0])


def test_pipeline_compile_writes_to_the_current_directory(tmp_path, monkeypatch):
    from mpa.cli.pipeline import app as pipeline_app

    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(pipeline_app, ["compile"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "pipeline.yaml").is_file() and not (tmp_path / "pipelines").exists()
    assert "--config" in CliRunner().invoke(pipeline_app, ["run", "--help"]).output
