"""PL's loss, learning rate and throughput reach the MLflow run while it trains (mpa.tracking.live), on 1 and
on 2 processes (rank 0 only), in a real MLflow store (the embedded sqlite store a run uses by default)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from mpa import tracking
from mpa.config import ModelConfig, TrainConfig
from mpa.devtools.tinymodels import TINY_COLORS, TINY_QUESTION
from mpa.tasks import get_task
from mpa.tracking.live import LiveMetrics, live_env


@pytest.fixture
def store(tmp_path):
    (tmp_path / "mlflow").mkdir()
    uri = tracking.embedded_uri(tmp_path)
    c = tracking.client(uri)
    run_id = c.create_run("0").info.run_id
    return uri, run_id, c


def _steps(c, run_id, key="train/loss") -> list[int]:
    return [m.step for m in sorted(c.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))]


def test_points_are_sent_every_n_steps_while_training_runs(store):
    uri, run_id, c = store
    live = LiveMetrics(uri, run_id, every=2)
    live.log(1, {"loss": 3.0, "lr": 1e-3})
    assert _steps(c, run_id) == []  # held until step 2
    live.log(2, {"loss": 2.5, "lr": 1e-3})
    assert _steps(c, run_id) == [1, 2] and _steps(c, run_id, "train/lr") == [1, 2]  # in the run, mid-training
    live.log(3, {"loss": 2.0, "lr": 5e-4})
    assert _steps(c, run_id) == [1, 2]
    live.close()
    assert _steps(c, run_id) == [1, 2, 3]
    # a resumed PL re-trains from its last save (step 1): steps the run holds are not sent twice
    again = LiveMetrics(uri, run_id, every=2)
    for step in (2, 3, 4):
        again.log(step, {"loss": 1.0})
    again.close()
    assert _steps(c, run_id) == [1, 2, 3, 4]
    history = sorted(c.get_metric_history(run_id, "train/loss"), key=lambda m: m.step)
    assert [m.value for m in history] == [3.0, 2.5, 2.0, 1.0]
    stamps = [m.timestamp for m in history]
    assert stamps == sorted(stamps)  # each point carries the time its step was logged


def test_a_dead_server_switches_live_metrics_off_not_training(caplog):
    from mpa.devtools.services import free_ports

    live = LiveMetrics(f"http://127.0.0.1:{free_ports(1)[0]}", "no-run", every=1)
    with caplog.at_level(logging.WARNING, logger="mpa.tracking.live"):
        live.log(1, {"loss": 1.0})
        live.log(2, {"loss": 1.0})
    assert live.off and sum("switched off" in r.message for r in caplog.records) == 1


def test_only_a_handed_over_run_and_rank_0_log(monkeypatch):
    with live_env("sqlite:///x.db", "r1", 5):
        assert LiveMetrics.from_env(is_main=False) is None
        live = LiveMetrics.from_env(is_main=True)
        assert live is not None and (live.run_id, live.every) == ("r1", 5)
    assert LiveMetrics.from_env(is_main=True) is None  # the block's variables are gone after it
    with live_env("sqlite:///x.db", "r1", 0):  # tracking.live_every_steps: 0 switches it off
        assert LiveMetrics.from_env() is None


@pytest.mark.parametrize("processes", [1, 2])
def test_pl_sends_its_steps_live_on_one_and_two_processes(processes, store, tiny_ws, tmp_path):
    from mpa.stages.level import level

    uri, run_id, c = store
    colors = list(TINY_COLORS)
    rows = [{"image": str(p), "question": TINY_QUESTION, "answer": colors[i % len(colors)]}
            for i, p in enumerate(sorted(Path(tiny_ws["images"]).glob("*.png")))]
    (tmp_path / "parity.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with live_env(uri, run_id, 2):
        s = level(samples_path=tmp_path / "parity.jsonl", student=ModelConfig(model=str(tiny_ws["student"])),
                  task=get_task("textvqa"), out_dir=tmp_path / "level", show=False,
                  cfg=TrainConfig(batch_size=4, learning_rate=3e-3, epochs=1, processes=processes))
    assert s.world_size == processes and s.steps == 3
    train_log = [json.loads(x) for x in (tmp_path / "level" / "train_log.jsonl").read_text().splitlines()]
    # one point per optimizer step (rank 0 only: 2 processes do not log twice), the global-batch loss
    assert _steps(c, run_id) == [1, 2, 3]
    history = sorted(c.get_metric_history(run_id, "train/loss"), key=lambda m: m.step)
    assert [m.value for m in history] == pytest.approx([r["loss"] for r in train_log])
    assert _steps(c, run_id, "train/lr") == [1, 2, 3] and _steps(c, run_id, "train/samples_per_s") == [1, 2, 3]
    assert all(m.value > 0 for m in c.get_metric_history(run_id, "train/samples_per_s"))
    stamps = [m.timestamp for m in history]
    assert stamps == sorted(stamps)
