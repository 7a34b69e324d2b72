"""Pytest fixtures that start real servers on 127.0.0.1 (random free ports, temp dirs, torn down).

- ``object_server``: SeaweedFS ``weed mini`` (S3 API, enforces credentials), session-scoped;
- ``tracking_server``: ``mlflow server`` (sqlite backend, artifacts proxied to ``s3://mlflow/artifacts``
  on that object server), session-scoped;
- ``s3_env`` / ``servers_env``: point this test's process at them through the standard variables
  (``AWS_ENDPOINT_URL``, ``MLFLOW_S3_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
  ``MLFLOW_TRACKING_URI``), and nothing else;
- ``fresh_object_server``: a private object server a test may stop and restart.

Start-up times are collected in ``STARTUP`` and printed in the terminal summary.
"""

from __future__ import annotations

import pytest

from mpa import storage
from mpa.devtools.services import ObjectServer, TrackingServer

STARTUP: dict[str, float] = {}

_ENV_KEYS = ("AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
             "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_REGION", "AWS_REGION", "MLFLOW_TRACKING_URI",
             "AWS_MAX_ATTEMPTS")


@pytest.fixture(scope="session")
def object_server(tmp_path_factory):
    srv = ObjectServer(tmp_path_factory.mktemp("seaweedfs")).start()
    STARTUP["seaweedfs (weed mini)"] = srv.startup_s
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def tracking_server(object_server, tmp_path_factory):
    srv = TrackingServer(tmp_path_factory.mktemp("mlflow"), object_server).start()
    STARTUP["mlflow server"] = srv.startup_s
    yield srv
    srv.stop()


@pytest.fixture
def fresh_object_server(tmp_path):
    srv = ObjectServer(tmp_path / "seaweedfs-private").start()
    STARTUP["seaweedfs (private, per test)"] = srv.startup_s
    yield srv
    srv.stop()


def _clean_env(monkeypatch) -> None:
    for key in _ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    storage.configure()
    storage.reset_clients()


def use_object_server(monkeypatch, srv: ObjectServer) -> None:
    """Point this process's S3 access at ``srv`` (env vars only, as a user would)."""
    _clean_env(monkeypatch)
    for key, value in srv.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")  # fail over in seconds when a test stops the server
    storage.reset_clients()


@pytest.fixture
def s3_env(object_server, monkeypatch):
    use_object_server(monkeypatch, object_server)
    yield object_server
    storage.configure()
    storage.reset_clients()


@pytest.fixture
def servers_env(tracking_server, s3_env, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_server.uri)
    yield tracking_server


@pytest.fixture
def no_servers_env(monkeypatch, tmp_path):
    """No tracking URI, no S3 settings: the embedded defaults; the model cache in tmp."""
    _clean_env(monkeypatch)
    monkeypatch.setenv("MPA_CACHE", str(tmp_path / "mpa-cache"))
    yield
    storage.configure()
    storage.reset_clients()


def report(terminalreporter) -> None:
    if STARTUP:
        terminalreporter.section("server start-up times")
        for name, secs in STARTUP.items():
            terminalreporter.write_line(f"{name}: {secs:.1f} s")


__all__ = ["object_server", "tracking_server", "fresh_object_server", "s3_env", "servers_env", "no_servers_env",
           "use_object_server", "report"]
