"""Iterative MPA (``rounds`` > 1) on the tiny models: PI again with the previous round's student over the
same PA pool, the teacher never asked twice, early stop on K, MLflow child runs, resume after a kill."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from mpa.config import parse_config
from mpa.orchestrate.local import run_pipeline
from mpa.orchestrate.rounds import TeacherAskedAgain, identify_round, stop_reason
from mpa.records import read_jsonl


def _rounds_config(tiny_config: dict, **iterate) -> dict:
    return tiny_config | {"rounds": 3, "iterate": {"min_k": 1, "stop_when_not_shrinking": False, **iterate},
                          "train": {"batch_size": 4, "learning_rate": 0.003, "epochs": 1}}


def test_rounds_reuse_the_teacher_and_log_child_runs(tiny_config, monkeypatch):
    import mpa.vlm.loader as loader

    loads: list[str] = []
    real = loader.load_vlm
    monkeypatch.setattr(loader, "load_vlm", lambda cfg: loads.append(cfg.model) or real(cfg))
    cfg = parse_config(_rounds_config(tiny_config))
    summary = run_pipeline(cfg, show=False)
    out = Path(cfg.out)
    rounds = summary["rounds"]
    assert [r["round"] for r in rounds] == list(range(1, len(rounds) + 1)) and len(rounds) >= 2
    assert rounds[0]["k_parity"] == summary["identify"]["k_parity"]
    # round 1's teacher answers are round r's, and the teacher model was loaded once (PA + round-1 PI)
    assert loads.count(str(tiny_config["teacher"]["model"])) == 1
    t1 = (out / "pi" / "pi_teacher.jsonl").read_bytes()
    for r in rounds[1:]:
        d = out / "rounds" / str(r["round"])
        assert (d / "pi" / "pi_teacher.jsonl").read_bytes() == t1
        # round r asked round r-1's student
        prev = rounds[r["round"] - 2]["checkpoint"]
        assert prev in loads
        audit = list(read_jsonl(d / "pi" / "audit.jsonl"))
        assert sum(j["kept"] for j in audit) == r["k_parity"]
        if "checkpoint" in r:
            assert Path(r["checkpoint"]).parent == d / "level" and r["eval"]["n"] == 8
    trained = [r for r in rounds if r.get("checkpoint")]
    assert summary["final_checkpoint"] == trained[-1]["checkpoint"]
    # MLflow: the run is the parent, one finished child run per later round with its K
    from mlflow.tracking import MlflowClient

    client = MlflowClient(summary["mlflow"]["tracking_uri"])
    parent = summary["mlflow"]["run_id"]
    exp = client.get_run(parent).info.experiment_id
    children = client.search_runs([exp], filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    assert sorted(c.data.tags["mpa.round"] for c in children) == [str(r["round"]) for r in rounds[1:]]
    for c in children:
        rec = rounds[int(c.data.tags["mpa.round"]) - 1]
        assert c.data.metrics["k_parity"] == rec["k_parity"] and c.info.status == "FINISHED"
    history = client.get_metric_history(parent, "rounds/k_parity")
    assert sorted((m.step, m.value) for m in history) == [(r["round"], r["k_parity"]) for r in rounds[1:]]
    # the registered version is the final round's checkpoint
    assert summary["registered"]["source"]


def test_a_round_below_min_k_stops_before_training(tiny_config):
    cfg = parse_config(_rounds_config(tiny_config, min_k=10_000))
    summary = run_pipeline(cfg, show=False)
    rounds = summary["rounds"]
    assert len(rounds) == 2 and "stopped" in rounds[1] and "checkpoint" not in rounds[1]
    assert "min_k" in rounds[1]["stopped"]
    assert not (Path(cfg.out) / "rounds" / "2" / "level").exists()
    assert summary["final_checkpoint"] == rounds[0]["checkpoint"] == summary["level"]["checkpoint"]


def test_stop_reason_uses_parity_sizes_only(tiny_config):
    cfg = parse_config(_rounds_config(tiny_config, min_k=5, stop_when_not_shrinking=True))
    assert stop_reason(cfg, 0, 10) and "min_k" in stop_reason(cfg, 4, 10)
    assert "shrink" in stop_reason(cfg, 10, 10)
    assert stop_reason(cfg, 9, 10) is None


def test_later_round_refuses_to_ask_the_teacher(tiny_config, tmp_path):
    cfg = parse_config(tiny_config)
    with pytest.raises(TeacherAskedAgain, match="run round 1"):
        identify_round(cfg, tmp_path / "annotations.jsonl", tmp_path / "pi_teacher.jsonl",
                       str(tiny_config["student"]["model"]), tmp_path / "pi")


def test_train_from_base_trains_on_the_union_of_parity_sets(tiny_config):
    cfg = parse_config(_rounds_config(tiny_config, train_from="base") | {"rounds": 2})
    summary = run_pipeline(cfg, show=False)
    r2 = summary["rounds"][1]
    if "stopped" in r2:
        pytest.fail(f"round 2 stopped: {r2['stopped']}")
    union = list(read_jsonl(Path(cfg.out) / "rounds" / "2" / "train_union.jsonl"))
    ids = {r["id"] for r in read_jsonl(Path(cfg.out) / "pi" / "parity.jsonl")}
    ids |= {r["id"] for r in read_jsonl(Path(cfg.out) / "rounds" / "2" / "pi" / "parity.jsonl")}
    assert sorted(r["id"] for r in union) == sorted(ids) and r2["steps"] >= 1


def test_kill_mid_round_and_resume_gives_the_uninterrupted_result(tiny_config, tmp_path):
    """SIGKILL a real `mpa run --rounds 2` once round 2 has started; the rerun ends as a run never killed."""
    base = _rounds_config(tiny_config) | {"tracking": {"enabled": False}}
    ref_cfg = parse_config(base | {"rounds": 2, "out": str(tmp_path / "ref")})
    ref = run_pipeline(ref_cfg, show=False)["rounds"]

    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(base | {"out": str(tmp_path / "killed")}))
    cmd = [sys.executable, "-m", "mpa", "run", "-c", str(path), "--rounds", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    marker = tmp_path / "killed" / "rounds" / "2" / "pi"
    deadline = time.time() + 600
    while not marker.exists():
        if proc.poll() is not None:
            pytest.fail(f"the run ended before round 2 started: {proc.stderr.read()[-2000:]}")
        if time.time() > deadline:
            proc.kill()
            pytest.fail("round 2 never started")
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "summary.json").exists()
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-2000:]
    got = json.loads((tmp_path / "killed" / "summary.json").read_text())["rounds"]

    def essentials(rounds: list[dict]) -> list[tuple]:
        return [(r["k_parity"], r.get("last_loss"), r.get("eval", {}).get("score")) for r in rounds]

    assert essentials(got) == essentials(ref)
