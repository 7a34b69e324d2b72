"""`mpa config` (the resolved settings) and `mpa evaluate` driven by a run config and presets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mpa.config import ConfigError
from mpa.stages.evaluate import evaluate_config

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "configs" / "example-qwen2vl.yaml"


def _mpa(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "mpa.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_mpa_config_prints_the_resolved_settings():
    res = _mpa("config", "-c", str(EXAMPLE), "--set", "preset=paper", "--set", "train.epochs=2", "--json")
    assert res.returncode == 0, res.stderr
    cfg = json.loads(res.stdout)
    assert cfg["preset"] == "paper" and cfg["train"]["epochs"] == 2.0
    assert cfg["annotate"]["temperature"] == 0.0 and cfg["identify"]["match"] == "contains"
    assert cfg["student"]["min_pixels"] == 100352 and cfg["teacher"]["max_pixels"] == 401408
    assert cfg["train"]["adam_betas"] == [0.9, 0.98] and cfg["train"]["prompt"] == "question"
    assert cfg["evaluate"]["metric"] == "contains" and cfg["evaluate"]["max_new_tokens"] == 128
    plain = _mpa("config", "-c", str(EXAMPLE))  # YAML by default, mpa's own settings
    assert plain.returncode == 0 and yaml.safe_load(plain.stdout)["annotate"]["temperature"] == 1.0


def test_mpa_config_refuses_a_contradiction_in_one_line():
    res = _mpa("config", "-c", str(EXAMPLE), "--set", "preset=paper", "--set", "identify.match=vqa")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "identify.match='vqa' (paper: 'contains')" in res.stderr and "preset_except" in res.stderr


def test_evaluate_config_from_flags_or_a_run_config(tmp_path):
    cfg = evaluate_config(None, {"preset": "paper"}, model="m", benchmark="stvqa", annotations="a.json",
                          batch_size=3)
    assert cfg.student.model == "m" and cfg.student.batch_size == 3 and cfg.task.name == "stvqa"
    assert (cfg.evaluate.metric, cfg.evaluate.max_new_tokens, cfg.student.max_pixels) == ("contains", 128, 401408)
    run = evaluate_config(EXAMPLE, {"preset": "paper"}, model="runs/x/level/checkpoint", out=str(tmp_path))
    assert run.student.model == "runs/x/level/checkpoint" and run.student.batch_size == 32  # the student's settings
    assert run.student.min_pixels == 100352 and run.evaluate.benchmark == "textvqa" and run.out == str(tmp_path)
    with pytest.raises(ConfigError, match="needs --config, or --model, --benchmark and --annotations"):
        evaluate_config(None, model="m")


def test_mpa_evaluate_honours_the_preset(tmp_path):
    """The shipped toy student on a toy test set: `--set preset=paper` makes `contains` the headline and the
    predictions land in <out>/eval/."""
    from mpa.toyworld import STUDENT_CHECKPOINT
    from mpa.toyworld.data import make_testset

    test = make_testset(tmp_path / "t", 7, seed=3)
    args = ["evaluate", "--model", str(STUDENT_CHECKPOINT), "--benchmark", "textvqa",
            "--annotations", str(test / "annotations.json"), "--images", str(test / "images"),
            "--out", str(tmp_path / "run"), "--set", "student.device=cpu"]
    res = _mpa(*args, "--set", "preset=paper", "--set", "preset_except=[student.min_pixels,student.max_pixels]")
    assert res.returncode == 0, res.stderr
    result = json.loads(res.stdout.strip().splitlines()[-1])
    assert result["metric"] == "contains" and result["score"] == result["contains"] and result["n"] == 7
    preds = list((tmp_path / "run" / "eval").glob("textvqa-*.jsonl"))
    assert len(preds) == 1
    mine = _mpa(*args, "--predictions", str(tmp_path / "p.jsonl"))
    assert mine.returncode == 0, mine.stderr
    plain = json.loads(mine.stdout.strip().splitlines()[-1])
    assert plain["metric"] == "vqa" and plain["score"] == plain["official"]  # mpa's default headline


def test_every_command_docs_experiments_names_exists():
    """docs/experiments.md maps the paper's tables onto commands: each one it names must exist."""
    import re

    import typer

    from mpa.cli import app

    root = typer.main.get_command(app)
    text = (ROOT / "docs" / "experiments.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`mpa ([a-z][a-z-]*)(?: ([a-z][a-z-]*))?", text))
    assert {("config", ""), ("split", ""), ("human-study", "likeness-sample")} <= named
    for cmd, sub in named:
        assert cmd in root.commands, f"docs/experiments.md names `mpa {cmd}`, which does not exist"
        group = root.commands[cmd]
        if hasattr(group, "commands") and sub:
            assert sub in group.commands, f"docs/experiments.md names `mpa {cmd} {sub}`, which does not exist"


def test_pathvqa_is_a_task_for_table_7():
    from mpa.config import parse_config, task_for

    cfg = parse_config({"teacher": {"model": "t"}, "student": {"model": "s"}, "data": {"images": "i"},
                        "task": {"name": "pathvqa"}, "preset": "paper"})
    task = task_for(cfg)
    assert task.metric == "vqa" and "pathology" in task.pa_prompt and "Answer: <the answer>" in task.pa_prompt
    assert cfg.task.prompts == "ours"  # the paper prints no PathVQA prompt: the preset keeps mpa's


def test_annotate_keeps_the_answers_period_when_asked():
    """`annotate.strip_answer_period: false` (the paper preset) records the answer as the teacher wrote it."""
    from types import SimpleNamespace

    from mpa.stages.annotate import _records_for_image
    from mpa.tasks import get_task

    teacher = SimpleNamespace(model_id="t")
    raw = ["Question: What is the color of the Nokia phone?, Answer: Brown."]
    task = get_task("textvqa")
    assert _records_for_image("u", "s", raw, task, teacher, None, True)[0].answer == "Brown"
    assert _records_for_image("u", "s", raw, task, teacher, None, True, strip_period=False)[0].answer == "Brown."


def test_evaluate_refuses_to_write_predictions_under_an_s3_out():
    from typer.testing import CliRunner

    from mpa.cli import app
    from mpa.cli.common import UserError

    res = CliRunner().invoke(app, ["evaluate", "--model", "m", "--benchmark", "textvqa", "--annotations", "a.json",
                                   "--out", "s3://bucket/run"])
    assert isinstance(res.exception, UserError) and "give --predictions or a local --out" in str(res.exception)
