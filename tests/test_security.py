"""Security of the runtime: no write outside its root from outside data, no API key over plain
http to another host, no key in an error, no credential in a KFP run parameter.

Object keys that climb out of a prefix (``../evil``, ``/abs/evil``, ``a/../../evil``) are written
with boto3 to a real S3 server that keeps them: moto's server (SeaweedFS refuses such keys at
PUT, see ``test_seaweedfs_refuses_climbing_keys``; AWS S3 keeps them, like moto).
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from servers import object_server, s3_env  # noqa: F401 - fixtures

from mpa import storage

SECRET_KEY = "sk-test-" + "Q" * 32


# ----------------------------------------------------------------------------- a real S3 server keeping any key
@pytest.fixture(scope="module")
def moto_server():
    """moto's S3 server in its own process: importing it here would load Flask into the test process, whose
    unbound context proxies break libraries that scan every loaded module (vLLM's kernel registry does)."""
    import importlib.util
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    if importlib.util.find_spec("moto") is None:
        pytest.fail("moto[s3] (the [dev] extra) is not installed")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail("moto's S3 server did not start")
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def moto_s3(moto_server, monkeypatch):
    import boto3

    for key, value in {"AWS_ENDPOINT_URL": moto_server, "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                       "AWS_MAX_ATTEMPTS": "1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    storage.configure()
    storage.reset_clients()
    client = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    if "evil" not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
        client.create_bucket(Bucket="evil")
    yield client
    storage.configure()
    storage.reset_clients()


def _plant(client, prefix: str, bad_rel: str) -> str:
    """A good object and one whose key, relative to ``prefix``, is ``bad_rel``; returns the bad key."""
    client.put_object(Bucket="evil", Key=f"{prefix}/config.json", Body=b"{}")
    client.put_object(Bucket="evil", Key=f"{prefix}/summary.json", Body=b"{}")
    bad = f"{prefix}/{bad_rel}"
    client.put_object(Bucket="evil", Key=bad, Body=b"pwned")
    listed = [o["Key"] for o in client.list_objects_v2(Bucket="evil", Prefix=prefix + "/")["Contents"]]
    assert bad in listed, listed  # the server kept the key as written
    return bad


def _bad_rels(tmp_path: Path) -> dict[str, str]:
    return {"dotdot": "../evil", "absolute": "/" + str(tmp_path / "abs" / "evil").lstrip("/"),
            "nested": "a/../../evil"}


def _nothing_escaped(tmp_path: Path) -> None:
    assert not (tmp_path / "abs" / "evil").exists()
    assert not [p for p in tmp_path.rglob("evil")], "a file landed outside its root"


@pytest.mark.parametrize("case", ["dotdot", "absolute", "nested"])
def test_download_dir_refuses_keys_outside_the_root(moto_s3, tmp_path, case):
    prefix = f"dl-{case}"
    bad = _plant(moto_s3, prefix, _bad_rels(tmp_path)[case])
    root = tmp_path / "work" / "root"
    with pytest.raises(storage.UnsafePath) as err:
        storage.download_dir(f"s3://evil/{prefix}", root)
    msg = str(err.value)
    assert f"s3://evil/{bad}" in msg and "outside" in msg and "\n" not in msg
    _nothing_escaped(tmp_path)
    assert not root.exists() or not any(root.rglob("*"))  # every key is checked before anything is written


def test_s3_model_reference_refuses_climbing_keys(moto_s3, tmp_path, monkeypatch):
    from mpa.vlm.hf import resolve_model_ref

    monkeypatch.setenv("MPA_CACHE", str(tmp_path / "cache"))
    bad = _plant(moto_s3, "model", "../evil")
    with pytest.raises(storage.UnsafePath, match=bad.replace(".", r"\.")):
        resolve_model_ref("s3://evil/model/")
    _nothing_escaped(tmp_path)


def test_register_run_dir_from_s3_refuses_climbing_keys(moto_s3, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from mpa.cli import app

    monkeypatch.setenv("MPA_CACHE", str(tmp_path / "cache"))
    bad = _plant(moto_s3, "finished-run", "a/../../evil")
    res = CliRunner().invoke(app, ["register", "--run-dir", "s3://evil/finished-run", "--tracking-uri",
                                   f"sqlite:///{tmp_path / 'mlflow.db'}"])
    assert res.exit_code != 0 and isinstance(res.exception, storage.UnsafePath)
    assert bad in str(res.exception)
    _nothing_escaped(tmp_path)


def test_resuming_an_s3_run_refuses_climbing_keys(moto_s3, tiny_config, tmp_path, monkeypatch):
    from mpa.config import parse_config
    from mpa.orchestrate.local import run_pipeline

    monkeypatch.setenv("MPA_CACHE", str(tmp_path / "cache"))
    bad = _plant(moto_s3, "resumed-run", "../evil")
    cfg = parse_config({**tiny_config, "out": "s3://evil/resumed-run", "tracking": {"enabled": False},
                        "storage": {"work_dir": str(tmp_path / "work" / "run")}})
    with pytest.raises(storage.UnsafePath, match=bad.replace(".", r"\.")):
        run_pipeline(cfg, show=False)
    _nothing_escaped(tmp_path)


def test_registry_download_never_writes_climbing_artifact_keys(moto_s3, tmp_path, monkeypatch):
    """``models:/`` references go through MLflow's artifact download, which checks paths itself (and
    skips a ``..`` key): we check it keeps writing nothing outside the destination."""
    from mpa import tracking

    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", moto_s3.meta.endpoint_url)
    _plant(moto_s3, "registered", "../evil")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    c = tracking.client(uri)
    tracking.register_version(c, "m", "s3://evil/registered", None, {})
    local = tracking.download_model("models:/m/1", uri, dst=tmp_path / "dl" / "m")
    assert (local / "config.json").is_file()
    _nothing_escaped(tmp_path)


def test_safe_join_refuses_symlinks_out_of_the_root(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "outside").mkdir()
    (root / "link").symlink_to(tmp_path / "outside", target_is_directory=True)
    with pytest.raises(storage.UnsafePath, match="symlink"):
        storage.safe_join(root, "link/evil")
    assert storage.safe_join(root, "a/b.json") == root / "a" / "b.json"
    for rel in ("", "/etc/passwd", "..", "a/../../x", "a\\..\\..\\x"):
        with pytest.raises(storage.UnsafePath):
            storage.safe_join(root, rel)


@pytest.mark.integration
def test_seaweedfs_refuses_climbing_keys(s3_env):  # noqa: F811 - the fixture
    """The object store the manifests ship refuses ``..`` keys at PUT and folds ``//``: already clean."""
    from botocore.exceptions import ClientError

    client = storage.s3_client()
    for key in ("sw/../evil", "sw/a/../../evil"):
        with pytest.raises(ClientError, match="InvalidRequest"):
            client.put_object(Bucket="mpa", Key=key, Body=b"x")
    client.put_object(Bucket="mpa", Key="sw//abs/evil", Body=b"x")
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="mpa", Prefix="sw/")["Contents"]]
    assert keys == ["sw/abs/evil"]


# ----------------------------------------------------------------------------- the OpenAI key
@pytest.fixture
def echo_server():
    """An OpenAI-compatible endpoint that answers 400 (or 503 first) and echoes the request headers."""
    script: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            status = script.pop(0) if script else 400
            body = json.dumps({"error": {"message": "bad request", "echo": dict(self.headers)}}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", script
    server.shutdown()


def _openai(base_url: str, **openai):
    from mpa.config import ModelConfig
    from mpa.vlm.openai_backend import OpenAIVLM

    cfg = ModelConfig(model="m", backend="openai",
                      openai={"base_url": base_url, "max_retries": 1, "backoff_base_s": 0.01, **openai})
    return OpenAIVLM(cfg, sleep=lambda s: None)


def _request():
    from PIL import Image

    from mpa.vlm.base import GenParams, VLMRequest

    return VLMRequest(Image.new("RGB", (8, 8)), "q?"), GenParams(max_new_tokens=2, temperature=0.0)


def test_echoed_authorization_header_never_reaches_errors_or_logs(echo_server, monkeypatch, caplog):
    from mpa.vlm.openai_backend import OpenAIRequestError

    url, script = echo_server
    monkeypatch.setenv("OPENAI_API_KEY", SECRET_KEY)
    vlm = _openai(url)
    script.append(503)  # one retry first: its warning names the last error
    with caplog.at_level(logging.WARNING), pytest.raises(OpenAIRequestError) as err:
        vlm.complete(*_request())
    msg = str(err.value)
    assert "HTTP 400" in msg and "authorization" in msg.lower() and "\n" not in msg  # httpx sends it lower-case
    assert SECRET_KEY not in msg and SECRET_KEY[8:20] not in msg
    assert caplog.records and all(SECRET_KEY not in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(("base_url", "allow", "refused"), [
    ("http://teacher.example.com:8000/v1", False, True),
    ("http://10.0.0.5:8000/v1", False, True),
    ("http://mpa-teacher:8000/v1", True, False),  # an in-cluster Service, allowed explicitly
    ("https://api.example.com/v1", False, False),
    ("http://127.0.0.1:8000/v1", False, False),
    ("http://localhost:8000/v1", False, False),
    ("http://[::1]:8000/v1", False, False),
])
def test_api_key_goes_over_plain_http_only_to_loopback(base_url, allow, refused, monkeypatch):
    from mpa.vlm.openai_backend import OpenAIRequestError

    monkeypatch.setenv("OPENAI_API_KEY", SECRET_KEY)
    if refused:
        with pytest.raises(OpenAIRequestError, match="refusing to send the API key over plain http") as err:
            _openai(base_url, allow_plain_http=allow)
        assert "https://" in str(err.value) and "loopback" in str(err.value) and "allow_plain_http" in str(err.value)
        assert SECRET_KEY not in str(err.value)
    else:
        _openai(base_url, allow_plain_http=allow)
    monkeypatch.delenv("OPENAI_API_KEY")
    _openai(base_url)  # no key: nothing to protect


# ----------------------------------------------------------------------------- KFP run parameters
@pytest.mark.parametrize(("key", "value"), [
    ("teacher.options.bearer", "abc"),
    ("student.options.pwd", "abc"),
    ("storage.secret_access_key", "abc"),
    ("teacher.openai.base_url", "https://u:pw@api.example.com/v1"),
    ("storage.endpoint_url", "http://s3:8333/?X-Amz-Signature=abc"),
])
def test_run_parameters_refuse_credentials(key, value):
    from mpa.config import ConfigError
    from mpa.orchestrate.kubeflow.params import run_config

    base = {"teacher": {"model": "t"}, "student": {"model": "s"}, "data": {"images": "/x"}}
    config = {**base}
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
        node[p] = dict(node.get(p, {}))
        node = node[p]
    node[leaf] = value
    with pytest.raises(ConfigError, match="credentials never go in run parameters"):
        run_config(config, {})
    if key == "teacher.openai.base_url":  # the same value as a run parameter of its own
        with pytest.raises(ConfigError, match="credentials never go in run parameters"):
            run_config(base, {"teacher_openai_base_url": value})
    # the ordinary neighbours still pass
    ok = {**base, "teacher": {"model": "t", "openai": {"base_url": "http://mpa-teacher:8000/v1",
                                                       "allow_plain_http": True}}}
    run_config(ok, {"annotate_max_new_tokens": 32})
