"""Dead dependencies: a hung S3 endpoint, the object store and MLflow killed mid-run (docs/reliability.md).

Real servers on 127.0.0.1: a socket that accepts connections and never answers, and private SeaweedFS
and MLflow servers (``mpa.devtools.services``) killed with SIGKILL while a run is using them. Each
outage must end the run with one clear line within a minute, with the library's *default* timeouts and
retry budgets, and the same call must resume once the server is back.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import yaml

from mpa import storage
from mpa.config import parse_config

pytestmark = pytest.mark.integration

SRC = str(Path(__file__).resolve().parents[1] / "src")
BOUND_S = 60.0
_AWS_AND_MLFLOW = ("AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                   "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_MAX_ATTEMPTS", "MLFLOW_TRACKING_URI",
                   "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT",
                   "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR")


@pytest.fixture
def hung_endpoint():
    """An HTTP endpoint that accepts every connection and never answers."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    srv.settimeout(0.2)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except TimeoutError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.getsockname()[1]}", held
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    srv.close()


def test_a_hung_s3_endpoint_is_one_line_within_a_minute(hung_endpoint, tiny_config, tmp_path):
    endpoint, held = hung_endpoint
    cfg = {**tiny_config, "tracking": {"enabled": False}, "out": "s3://mpa/hung/run"}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {k: v for k, v in os.environ.items() if k not in _AWS_AND_MLFLOW}
    env.update(PYTHONPATH=SRC, AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="k", AWS_SECRET_ACCESS_KEY="s",
               MPA_CACHE=str(tmp_path / "cache"), COLUMNS="400")
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "mpa.cli", "run", "-c", str(path)], capture_output=True, text=True,
                         timeout=300, env=env)
    seconds = time.perf_counter() - t0
    out = res.stdout + res.stderr
    assert res.returncode == 2 and "Traceback" not in out, out[-3000:]
    lines = [ln for ln in out.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and endpoint in lines[0] and "did not answer within 10 s (3 attempts)" in lines[0], out
    assert "resumes" in lines[0]
    assert len(held) == 3  # it waited on the endpoint once per attempt: the retry budget is 3 attempts
    assert seconds < BOUND_S, f"{seconds:.1f} s"


KILLED_AT: list[float] = []


def _kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    KILLED_AT.append(time.perf_counter())


def test_object_store_and_mlflow_killed_mid_run_fail_fast_and_the_run_resumes(tiny_config, tmp_path, monkeypatch):
    """SeaweedFS (MLflow's artifact store) killed mid-run, then MLflow itself killed mid-run."""
    import mpa.orchestrate.local as runner
    from mpa.devtools.services import ObjectServer, TrackingServer
    from mpa.tracking import TrackingUnavailable

    for key in _AWS_AND_MLFLOW:
        monkeypatch.delenv(key, raising=False)
    s3 = ObjectServer(tmp_path / "seaweedfs").start()
    mlflow = TrackingServer(tmp_path / "mlflow", s3).start()
    try:
        for key, value in s3.env().items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow.uri)
        monkeypatch.setenv("MPA_CACHE", str(tmp_path / "cache"))
        storage.configure()
        storage.reset_clients()
        name = f"out-{uuid.uuid4().hex[:6]}"
        cfg = parse_config({**tiny_config, "train": {"batch_size": 4, "learning_rate": 0.01, "epochs": 40},
                            "tracking": {"experiment": "outages", "registered_model": name}})
        real_identify, real_level = runner.identify_with_config, runner.level_with_config

        def run_expecting_outage() -> str:
            with pytest.raises(TrackingUnavailable) as exc:
                runner.run_pipeline(cfg, show=False)
            # from the kill to the error: the stage that was running (seconds on tiny models) and the failing call
            seconds = time.perf_counter() - KILLED_AT[-1]
            assert seconds < BOUND_S, f"{seconds:.1f} s"
            msg = str(exc.value)
            assert "\n" not in msg and mlflow.uri in msg and "resumes" in msg, msg
            return msg

        # 1. the object store behind MLflow's artifacts dies after PA
        def identify_after_s3_dies(*args, **kw):
            _kill(s3.proc)
            return real_identify(*args, **kw)

        monkeypatch.setattr(runner, "identify_with_config", identify_after_s3_dies)
        msg = run_expecting_outage()
        assert "server errors" in msg
        state = yaml.safe_load((Path(cfg.out) / "mlflow_run.json").read_text())
        from mlflow import MlflowClient

        c = MlflowClient(mlflow.uri)
        assert c.get_run(state["run_id"]).info.status == "FAILED"  # MLflow itself was up: the run says so

        # 2. back up; this time MLflow itself dies before PL
        s3.start()
        monkeypatch.setattr(runner, "identify_with_config", real_identify)

        def level_after_mlflow_dies(*args, **kw):
            _kill(mlflow.proc)
            return real_level(*args, **kw)

        monkeypatch.setattr(runner, "level_with_config", level_after_mlflow_dies)
        msg = run_expecting_outage()
        assert "connection refused" in msg

        # 3. both back: the same call resumes and finishes in the same MLflow run
        mlflow.start()
        monkeypatch.setattr(runner, "level_with_config", real_level)
        summary = runner.run_pipeline(cfg, show=False)
        assert summary["annotate"]["n_resumed"] == 12
        assert summary["mlflow"]["run_id"] == state["run_id"]
        c = MlflowClient(mlflow.uri)
        assert c.get_run(state["run_id"]).info.status == "FINISHED"
        assert len(c.search_model_versions(f"name = '{name}'")) == 1
    finally:
        mlflow.stop()
        s3.stop()
        storage.configure()
        storage.reset_clients()
