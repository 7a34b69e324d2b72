"""A registered student is served by MLflow itself, against the real MLflow server (artifacts in S3):

- a fresh Python process loads ``models:/<name>@<alias>`` with ``mlflow.pyfunc`` and answers a
  DataFrame of base64 images and questions, one string per row; the signature says exactly that;
- ``mlflow models serve --env-manager local`` answers a real HTTP request to ``/invocations``;
- registering is idempotent per checkpoint: a rerun, a second writer, a process killed right after
  ``create_model_version`` — one version; a model name with a quote works (no filter injection).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from mpa import tracking
from mpa.config import ModelConfig, parse_config
from mpa.devtools.tinymodels import TINY_QUESTION, tiny_image
from mpa.serving.mlmodel import write_mlmodel
from mpa.tasks import get_task

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_serving import b64png, engine_answers  # noqa: E402


def _checkpoint(tiny_ws, tmp_path) -> Path:
    """The briefly trained tiny Qwen2-VL as an aligned student: an HF checkpoint that is an MLflow Model."""
    ckpt = tmp_path / "run" / "level" / "checkpoint"
    shutil.copytree(tiny_ws["teacher"], ckpt)
    write_mlmodel(ckpt, ModelConfig(model=str(ckpt)), get_task("textvqa"))
    return ckpt


def _tracker(tiny_config, tmp_path, name: str, run: str = "run"):
    cfg = parse_config({**tiny_config, "out": str(tmp_path / run),
                        "tracking": {"registered_model": name, "experiment": "serving-tests"}})
    t = tracking.Tracker(cfg, tmp_path / run, cfg.out)
    t.start()
    return t


def _register(tiny_config, tiny_ws, tmp_path, name: str):
    ckpt = _checkpoint(tiny_ws, tmp_path)
    t = _tracker(tiny_config, tmp_path, name)
    reg = t.register({"out": t.out}, ckpt)
    t.finish()
    return reg, ckpt


CHILD = textwrap.dedent("""
    import json, sys
    import mlflow.pyfunc, pandas as pd
    from mlflow.models import get_model_info
    uri, image, question = sys.argv[1:4]
    model = mlflow.pyfunc.load_model(uri)
    answers = model.predict(pd.DataFrame({"image": [image, image], "question": [question, "Which colour?"]}))
    sig = get_model_info(uri).signature
    print(json.dumps({"answers": answers, "loaded_mpa_before": "mpa" in sys.modules,
                      "inputs": [[c.name, c.type.name] for c in sig.inputs.inputs],
                      "outputs": [[c.name, c.type.name] for c in sig.outputs.inputs]}))
""")


def _child_env() -> dict[str, str]:
    # `mlflow models serve` execs `uvicorn` by name: the venv's bin directory goes first on PATH
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PATH": path}


def test_fresh_process_loads_the_alias_and_answers(servers_env, tiny_config, tiny_ws, tmp_path):
    name = f"serve-{uuid.uuid4().hex[:6]}"
    reg, ckpt = _register(tiny_config, tiny_ws, tmp_path, name)
    assert reg.alias == "challenger" and reg.source.startswith("mlflow-artifacts:/")
    img = tiny_image("blue", 3)
    uri = f"models:/{name}@{reg.alias}"
    res = subprocess.run([sys.executable, "-c", CHILD, uri, b64png(img), TINY_QUESTION], capture_output=True,
                         text=True, timeout=300, env=_child_env(), cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["answers"] == engine_answers(ckpt, [img, img], [TINY_QUESTION, "Which colour?"])
    assert got["answers"][0] == "blue"
    assert got["inputs"] == [["image", "string"], ["question", "string"]]
    assert got["outputs"] == [["answer", "string"]]
    # KServe's storageUri for the alias: the files of that version, in the server's S3 artifact destination
    from mpa import storage
    from mpa.serving.kserve import version_storage_uri

    s3_uri = version_storage_uri(name, reg.alias, servers_env.uri, servers_env.artifacts)
    assert s3_uri.startswith(servers_env.artifacts + "/")
    names = {u.rsplit("/", 1)[-1] for u in storage.list_s3(s3_uri + "/")}
    assert {"MLmodel", "config.json", "model.safetensors", "mpa_serving.json"} <= names


def _post(url: str, body: dict, timeout: float = 120.0) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_mlflow_models_serve_answers_over_http(servers_env, tiny_config, tiny_ws, tmp_path):
    from mpa.devtools.services import free_ports

    name = f"http-{uuid.uuid4().hex[:6]}"
    reg, ckpt = _register(tiny_config, tiny_ws, tmp_path, name)
    port = free_ports(1)[0]
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{name}@{reg.alias}",
         "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1", "-t", "120"],
        stdout=log, stderr=subprocess.STDOUT, env=_child_env(), cwd=tmp_path, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            assert time.monotonic() < deadline, "mlflow models serve not up in 180 s:\n" + (
                tmp_path / "serve.log").read_text()[-3000:]
            time.sleep(1)
        imgs = [tiny_image("red", 1), tiny_image("yellow", 2)]
        body = {"dataframe_split": {"columns": ["image", "question"],
                                    "data": [[b64png(imgs[0]), TINY_QUESTION], [b64png(imgs[1]), TINY_QUESTION]]}}
        status, out = _post(f"http://127.0.0.1:{port}/invocations", body)
        assert status == 200, out
        assert out["predictions"] == engine_answers(ckpt, imgs, [TINY_QUESTION] * 2)
        # a bad request is the client's error, named, not a server fault
        status, out = _post(f"http://127.0.0.1:{port}/invocations",
                            {"dataframe_split": {"columns": ["image", "question"], "data": [["zzz!", "q"]]}})
        assert status == 400 and "row 0: image is not valid base64" in out["message"]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait(timeout=10)
        log.close()


# --- register is idempotent per checkpoint ---------------------------------------------------------------


KILLED_AFTER_CREATE = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    import mlflow
    from mpa import tracking
    from mpa.config import parse_config
    import yaml
    real = mlflow.MlflowClient.create_model_version
    def create_then_die(self, *a, **k):
        real(self, *a, **k)
        os._exit(9)  # killed right after the version exists, before anything else is recorded
    mlflow.MlflowClient.create_model_version = create_then_die
    run_dir = Path(sys.argv[1])
    cfg = parse_config(yaml.safe_load((run_dir / "cfg.yaml").read_text()))
    t = tracking.Tracker(cfg, run_dir, cfg.out)
    t.start()
    t.register({"out": cfg.out}, run_dir / "level" / "checkpoint")
""")


def test_register_is_idempotent_per_checkpoint(servers_env, tiny_config, tiny_ws, tmp_path):
    import yaml

    name = f"it's-{uuid.uuid4().hex[:6]}"  # a quote in the name: filters are quoted, not f-string pasted
    ckpt = _checkpoint(tiny_ws, tmp_path)
    raw = {**tiny_config, "out": str(tmp_path / "run"),
           "tracking": {"registered_model": name, "experiment": "serving-tests"}}
    (tmp_path / "run" / "cfg.yaml").write_text(yaml.safe_dump(raw))
    # 1. killed right after create_model_version: the version exists, nothing else was recorded
    res = subprocess.run([sys.executable, "-c", KILLED_AFTER_CREATE, str(tmp_path / "run")], capture_output=True,
                         text=True, timeout=300, env=_child_env())
    assert res.returncode == 9, res.stderr[-3000:]
    c = tracking.client(os.environ["MLFLOW_TRACKING_URI"])
    [orphan] = tracking.registry.versions_of(c, name)
    assert "mpa.promotion" not in orphan.tags
    # 2. the rerun finds it and finishes the job (promotion) instead of creating another
    t = tracking.Tracker(parse_config(raw), tmp_path / "run", str(tmp_path / "run"))
    t.start()
    reg = t.register({"out": t.out}, ckpt)
    assert reg.version == orphan.version and reg.alias == "challenger"
    # 3. a second writer (another MLflow run, no shared state file) gets the same version
    (tmp_path / "run" / tracking.STATE_FILE).unlink()
    t2 = tracking.Tracker(parse_config(raw), tmp_path / "run", str(tmp_path / "run"))
    t2.start()
    assert t2.run_id != t.run_id and t2.register({"out": t2.out}, ckpt).version == orphan.version
    assert c.list_artifacts(t2.run_id, "checkpoint") == []  # it found the version before uploading anything
    assert [v.version for v in tracking.registry.versions_of(c, name)] == [orphan.version]
    # 4. `mpa promote --name "it's-…"` works (the name goes into a search filter)
    from typer.testing import CliRunner

    from mpa.cli import app

    out = CliRunner().invoke(app, ["promote", "--name", name, "--version", "latest"])
    assert out.exit_code == 0, out.output
    assert '"alias": "challenger"' in out.output


def test_racing_writers_keep_the_oldest_version(servers_env):
    """Two writers both searched before either created: each creates, then keeps the oldest of the checkpoint."""
    c = tracking.client(os.environ["MLFLOW_TRACKING_URI"])
    name = f"race-{uuid.uuid4().hex[:6]}"
    src = f"s3://mpa/race/{name}/checkpoint"  # the server takes no local path without a run
    tags = {tracking.registry.CHECKPOINT_TAG: "d" * 64}
    first = tracking.register_version(c, name, src, None, tags)  # the other writer, done first

    class SearchedBeforeTheOtherCreated:
        """This writer's first search ran before the other writer's create landed (the race, made certain)."""

        def __init__(self, inner):
            self.inner, self.searches = inner, 0

        def __getattr__(self, attr):
            return getattr(self.inner, attr)

        def search_model_versions(self, *a, **k):
            self.searches += 1
            return [] if self.searches == 1 else self.inner.search_model_versions(*a, **k)

    got = tracking.register_version(SearchedBeforeTheOtherCreated(c), name, src, None, tags)
    assert got.version == first.version
    assert [v.version for v in tracking.registry.versions_of(c, name)] == [first.version]


def test_a_name_with_both_quotes_is_refused_in_one_line():
    with pytest.raises(tracking.TrackingError, match="both ' and"):
        tracking.registry.versions_filter("it's \"x\"")
