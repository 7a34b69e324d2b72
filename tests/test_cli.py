"""The CLI as a user meets it: help, one-line errors, and resume after a real kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from mpa.records import read_jsonl

MPA = [sys.executable, "-m", "mpa.cli"]


def _run(args, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([*MPA, *args], capture_output=True, text=True, env=env, timeout=300, **kw)


@pytest.mark.parametrize("cmd", ["annotate", "identify", "level", "evaluate", "score", "run", "tasks"])
def test_every_command_has_help(cmd):
    res = _run([cmd, "--help"])
    assert res.returncode == 0, res.stderr
    assert "Usage" in res.stdout


def _write_config(tiny_config, path: Path, **changes) -> Path:
    cfg = {**tiny_config, **changes}
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_invalid_config_fails_fast_with_one_line(tiny_config, tmp_path):
    bad = _write_config(tiny_config, tmp_path / "bad.yaml", identify={"match": "fuzzy"})
    res = _run(["run", "-c", str(bad)])
    assert res.returncode == 2
    err = res.stderr.strip()
    assert "identify.match" in err and "bad.yaml" in err and "Traceback" not in err


def test_unknown_task_and_empty_source_and_missing_model(tiny_config, tmp_path):
    res = _run(["run", "-c", str(_write_config(tiny_config, tmp_path / "a.yaml", task={"name": "vqa2"}))])
    assert res.returncode == 2 and "unknown task 'vqa2'" in res.stderr
    (tmp_path / "empty").mkdir()
    cfg = _write_config(tiny_config, tmp_path / "b.yaml", data={"images": str(tmp_path / "empty")})
    res = _run(["run", "-c", str(cfg)])
    assert res.returncode == 2 and "no images under" in res.stderr and "Traceback" not in res.stderr
    cfg = _write_config(tiny_config, tmp_path / "c.yaml", teacher={"model": str(tmp_path / "gone")})
    res = _run(["run", "-c", str(cfg)])
    assert res.returncode == 2 and "model directory not found" in res.stderr


def test_score_prints_json(tmp_path):
    fixtures = Path(__file__).parent / "fixtures" / "benchmarks" / "textvqa"
    ann = next(fixtures.glob("*.json"))
    preds = fixtures / "predictions.jsonl"
    res = _run(["score", "--benchmark", "textvqa", "--annotations", str(ann), "--predictions", str(preds)])
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert set(out) >= {"benchmark", "metric", "score", "n"} and out["benchmark"] == "textvqa"


def _kill_when(path: Path, proc: subprocess.Popen, min_lines: int, timeout: float = 120) -> int:
    """SIGKILL ``proc`` once ``path`` holds at least ``min_lines`` lines; return the count seen."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"process finished before it could be killed: {proc.stderr.read()}")
        if path.exists():
            n = path.read_bytes().count(b"\n")
            if n >= min_lines:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return n
        time.sleep(0.02)
    proc.kill()
    pytest.fail("no progress before the timeout")


def test_kill_and_resume_loses_and_duplicates_nothing(tiny_ws, tiny_config, tmp_path):
    """Kill a real `mpa annotate` and a real `mpa identify` mid-run; re-running completes exactly."""
    import shutil

    from PIL import Image

    images = tmp_path / "imgs"
    images.mkdir()
    src = sorted(Path(tiny_ws["images"]).glob("*.png"))
    for i in range(160):  # distinct files: same pictures, different pixels in one corner
        img = Image.open(src[i % len(src)]).convert("RGB")
        img.putpixel((0, 0), (i % 256, i // 256, 7))
        img.save(images / f"im_{i:04d}.png")
    cfg = _write_config(tiny_config, tmp_path / "run.yaml", data={"images": str(images)},
                        teacher={"model": str(tiny_ws["teacher"]), "batch_size": 2},
                        student={"model": str(tiny_ws["student"]), "batch_size": 2})
    out = Path(tiny_config["out"])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([*MPA, "annotate", "-c", str(cfg)], env=env, stderr=subprocess.PIPE, text=True)
    seen = _kill_when(out / "annotations.jsonl", proc, 20)
    assert seen < 160
    res = _run(["annotate", "-c", str(cfg)])
    assert res.returncode == 0, res.stderr
    rows = list(read_jsonl(out / "annotations.jsonl"))
    assert sorted(r["image"] for r in rows) == sorted(str(p) for p in images.glob("*.png"))

    # PI: an uninterrupted reference run on a copy, then a killed-and-resumed run
    ref = tmp_path / "ref"
    shutil.copytree(out, ref)
    res = _run(["identify", "-c", str(cfg), "--out", str(ref)])
    assert res.returncode == 0, res.stderr
    proc = subprocess.Popen([*MPA, "identify", "-c", str(cfg)], env=env, stderr=subprocess.PIPE, text=True)
    _kill_when(out / "pi" / "pi_teacher.jsonl", proc, 30)
    res = _run(["identify", "-c", str(cfg)])
    assert res.returncode == 0, res.stderr
    audit = list(read_jsonl(out / "pi" / "audit.jsonl"))
    assert len(audit) == 160 == len({r["id"] for r in audit})
    assert audit == list(read_jsonl(ref / "pi" / "audit.jsonl"))
    assert json.loads((out / "pi" / "counts.json").read_text())["k_parity"] == len(
        list(read_jsonl(out / "pi" / "parity.jsonl"))
    )
