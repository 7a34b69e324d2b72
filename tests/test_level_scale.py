"""PL on the Trainer across processes, for real: torchrun ranks with gloo on the CPU, a SIGKILLed run resumed
from Trainer checkpoints (and a poisoned one refused), bf16 + checkpointing, live MLflow metrics.

Each test launches real worker processes (``train.processes``) or kills a real ``mpa level`` process;
a 2-process run takes some seconds on two cores (process start-up and rendezvous dominate).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from mpa.config import ModelConfig, TrainConfig
from mpa.devtools.tinymodels import TINY_COLORS, TINY_QUESTION
from mpa.stages.level import level
from mpa.tasks import get_task
from mpa.training.resume import UnsafeCheckpoint, step_of

REPO = Path(__file__).resolve().parents[1]
#: 1 vs 2 processes, same global batch: per-step losses agree to this relative difference
MAX_REL_LOSS_DIFF = 1e-4


@pytest.fixture
def samples(tiny_ws, tmp_path) -> Path:
    colors = list(TINY_COLORS)
    rows = [
        {"image": str(p), "question": TINY_QUESTION, "answer": colors[i % len(colors)]}
        for i, p in enumerate(sorted(Path(tiny_ws["images"]).glob("*.png")))
    ]
    path = tmp_path / "parity.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _train(tiny_ws, samples, out, **train) -> tuple:
    cfg = TrainConfig(**{"batch_size": 4, "learning_rate": 3e-3, "epochs": 2, **train})
    summary = level(samples_path=samples, student=ModelConfig(model=str(tiny_ws["student"])),
                    task=get_task("textvqa"), cfg=cfg, out_dir=out, show=False)
    log = [json.loads(line) for line in (Path(out) / "train_log.jsonl").read_text().splitlines()]
    return summary, log


class _Payload:
    """Unpickling this creates a file: the proof a loader ran code from the run directory."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "1"}


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b))


def test_two_processes_give_the_one_process_losses(tiny_ws, samples, tmp_path):
    """Same global batch on 1 process and 2 DDP processes (via `mpa level --set`, micro-batch 1)."""
    one, log1 = _train(tiny_ws, samples, tmp_path / "one")
    assert one.world_size == 1 and len(log1) == one.steps == 6
    # the user's way: the CLI with --set train.processes=2, micro-batch 1 -> 2 accumulation steps per process
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "teacher": {"model": str(tiny_ws["teacher"])}, "student": {"model": str(tiny_ws["student"])},
        "data": {"images": str(tiny_ws["images"])}, "out": str(tmp_path / "ddp"),
        "train": {"batch_size": 4, "learning_rate": 3e-3, "epochs": 2, "micro_batch_size": 1},
        "tracking": {"enabled": False},
    }))
    proc = subprocess.run(
        [sys.executable, "-m", "mpa", "level", "-c", str(config), "--samples", str(samples),
         "--set", "train.processes=2"],
        env=_env(), capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = json.loads((tmp_path / "ddp" / "level" / "level_summary.json").read_text())
    log2 = [json.loads(x) for x in (tmp_path / "ddp" / "level" / "train_log.jsonl").read_text().splitlines()]
    assert (ddp["world_size"], ddp["micro_batch_size"], ddp["accumulation"]) == (2, 1, 2)
    assert [r["step"] for r in log2] == [r["step"] for r in log1]
    assert max(_rel(a["loss"], b["loss"]) for a, b in zip(log1, log2, strict=True)) < MAX_REL_LOSS_DIFF
    assert [r["answer_tokens"] for r in log2] == [r["answer_tokens"] for r in log1]
    w1 = load_file(str(tmp_path / "one" / "checkpoint" / "model.safetensors"))
    w2 = load_file(str(tmp_path / "ddp" / "level" / "checkpoint" / "model.safetensors"))
    assert set(w1) == set(w2)
    assert max(float((w1[k] - w2[k]).abs().max()) for k in w1) < 1e-4


def test_killed_run_resumes_to_the_uninterrupted_result(tiny_ws, samples, tmp_path):
    """SIGKILL a real PL process after its first Trainer checkpoint; a copy with a poisoned scheduler.pt and
    rng_state.pth is refused without running the payload; the re-run continues there and ends bit-identical."""
    train = {"epochs": 10, "save_every_steps": 2}
    full, full_log = _train(tiny_ws, samples, tmp_path / "full", **train)
    out = tmp_path / "killed"
    script = (
        "import sys, json; from pathlib import Path; from mpa.config import ModelConfig, TrainConfig; "
        "from mpa.stages.level import level; from mpa.tasks import get_task; "
        f"level(samples_path={str(samples)!r}, student=ModelConfig(model={str(tiny_ws['student'])!r}), "
        f"task=get_task('textvqa'), cfg=TrainConfig(batch_size=4, learning_rate=3e-3, **{train!r}), "
        f"out_dir={str(out)!r}, show=False)"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not any(step_of(p) for p in (out / "resume").glob("checkpoint-*")):
        assert proc.poll() is None, "PL ended before its first save: " + proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert not (out / "level_summary.json").exists() and not (out / "checkpoint").exists()
    poisoned = tmp_path / "poisoned"
    shutil.copytree(out, poisoned)
    marker = tmp_path / "payload-ran"
    for ckpt in (poisoned / "resume").glob("checkpoint-*"):
        for name in ("scheduler.pt", "rng_state.pth"):
            torch.save({"state": _Payload(str(marker))}, ckpt / name)
    with pytest.raises(UnsafeCheckpoint, match=r"checkpoint-\d+ holds a file that is not plain tensors"):
        _train(tiny_ws, samples, poisoned, **train)
    assert not marker.exists()
    resumed, log = _train(tiny_ws, samples, out, **train)
    assert resumed.resumed_from_step >= 2
    assert [(r["step"], r["loss"]) for r in log] == [(r["step"], r["loss"]) for r in full_log]
    a = load_file(str(tmp_path / "full" / "checkpoint" / "model.safetensors"))
    b = load_file(str(out / "checkpoint" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not (out / "resume").exists()  # cleared once the checkpoint is written


def test_a_failing_worker_is_named(tiny_ws, samples, tmp_path):
    bad = tmp_path / "bad.jsonl"
    rows = samples.read_text().splitlines()[:3]
    rows.append(json.dumps({"image": str(tmp_path / "missing.png"), "question": "q?", "answer": "red"}))
    bad.write_text("\n".join(rows) + "\n")
    from mpa.training.launch import LaunchError

    with pytest.raises(LaunchError, match=r"PL worker rank \d of 2 failed: .*missing.png"):
        _train(tiny_ws, bad, tmp_path / "o", processes=2, epochs=1)
    assert not list((tmp_path / "o").glob("level_spec.json*"))


def test_bad_batch_split_fails_before_any_process_starts(tiny_ws, samples, tmp_path):
    from mpa.training.batches import BatchLayoutError

    with pytest.raises(BatchLayoutError, match="cannot be split evenly over 3 processes"):
        _train(tiny_ws, samples, tmp_path / "o", processes=3)


def test_bf16_checkpointing_cosine_and_vision_lr_train_and_save_bf16(tiny_ws, samples, tmp_path):
    summary, log = _train(tiny_ws, samples, tmp_path / "o", precision="bf16", gradient_checkpointing=True,
                          lr_schedule="cosine", warmup_ratio=0.34, vision_learning_rate=1e-2)
    assert (summary.precision, summary.gradient_checkpointing, summary.lr_schedule) == ("bf16", True, "cosine")
    lrs = [r["lr"] for r in log]
    assert lrs[0] < lrs[1] < lrs[2] == pytest.approx(3e-3) and lrs[-1] < lrs[3] < lrs[2]  # warm-up, cosine decay
    assert log[-1]["loss"] < log[0]["loss"]
    weights = load_file(str(tmp_path / "o" / "checkpoint" / "model.safetensors"))
    assert {v.dtype for v in weights.values()} == {torch.bfloat16}


def test_live_metrics_go_to_the_open_mlflow_run(tiny_ws, samples, tmp_path):
    import mlflow

    from mpa.tracking.live import live_env

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    run = client.create_run(client.create_experiment("pl"))
    with live_env(uri, run.info.run_id, 1):  # the runner hands its run to PL this way
        summary, log = _train(tiny_ws, samples, tmp_path / "o")
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert [(m.step, m.value) for m in history] == [(r["step"], r["loss"]) for r in log]
    assert len(log) == summary.steps


def test_a_finished_level_is_marked_complete_and_a_rerun_reuses_it(tiny_ws, samples, tmp_path):
    """level.stage.json reaches complete: true with the outputs' digests, on 1 and on 2 processes (the launcher
    holds the mark); a rerun with the same settings returns the summary without training again."""
    from mpa.records import read_mark

    for processes in (1, 2):
        out = tmp_path / f"p{processes}"
        summary, _ = _train(tiny_ws, samples, out, epochs=1, processes=processes)
        mark = read_mark(out)
        assert mark is not None and mark.complete, processes
        assert set(mark.outputs) == {"level_summary.json", "checkpoint"}
        mtime = (out / "checkpoint" / "model.safetensors").stat().st_mtime_ns
        again, _ = _train(tiny_ws, samples, out, epochs=1, processes=processes)
        assert again == summary and (out / "checkpoint" / "model.safetensors").stat().st_mtime_ns == mtime
