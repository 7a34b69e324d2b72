"""A full `mpa run` on tiny models against a real MLflow server and a real S3 server, and its failures.

- the happy path: images from an s3:// prefix, ``out`` on s3://, tracked in the MLflow server;
  metrics, the dataset input, the registered version, the alias and the checkpoint objects are
  checked through the MLflow client and boto3, and ``models:/<name>@champion`` loads in the engine;
- object server down mid-run: a clear error, then the same call resumes and finishes;
- wrong credentials mid-run: a clear error and no model version left registered;
- MLflow unreachable: fails fast with the URI in the message (also through the CLI).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from mpa import storage
from mpa.config import parse_config

pytestmark = pytest.mark.integration


def _cfg(tiny_config: dict, **over) -> dict:
    cfg = {**tiny_config, "train": {"batch_size": 4, "learning_rate": 0.01, "epochs": 40}}
    # the tiny benchmark's images lie beside its annotations (the loader's default image dir)
    cfg["tracking"] = {"experiment": "mpa-it", "registered_model": f"it-{uuid.uuid4().hex[:6]}"}
    cfg.update(over)
    return cfg


def _client():
    from mlflow import MlflowClient

    return MlflowClient(os.environ["MLFLOW_TRACKING_URI"])


def test_full_run_against_real_mlflow_and_s3(servers_env, tiny_config, tiny_ws, tmp_path, monkeypatch):
    from mpa.orchestrate.local import run_pipeline
    from mpa.tracking import download_model

    monkeypatch.setenv("MPA_CACHE", str(tmp_path / "cache"))
    tag = uuid.uuid4().hex[:8]
    images = f"s3://mpa/it-{tag}/images"
    storage.copy_dir(tiny_ws["images"], images)
    out = f"s3://mpa/it-{tag}/run"
    secret = os.environ["AWS_SECRET_ACCESS_KEY"]
    raw = _cfg(tiny_config, data={"images": images}, out=out)
    raw["storage"] = {"access_key_id": os.environ["AWS_ACCESS_KEY_ID"], "secret_access_key": secret}
    cfg = parse_config(raw)
    t0 = time.perf_counter()
    summary = run_pipeline(cfg, show=False)
    print(f"full tiny run against the servers: {time.perf_counter() - t0:.1f} s")

    c = _client()
    run = c.get_run(summary["mlflow"]["run_id"])
    assert run.info.status == "FINISHED"
    m = run.data.metrics
    for key in ("n_images", "n_parsed", "n_teacher_consistent", "n_student_wrong", "k_parity", "k_over_n"):
        assert key in m, key
    assert m["n_images"] == 12 and m["k_parity"] == summary["identify"]["k_parity"] > 0
    assert {"eval/textvqa/vqa_before", "eval/textvqa/vqa_after", "eval/textvqa/vqa_delta"} <= set(m)
    assert m["eval/textvqa/vqa_delta"] == pytest.approx(summary["delta"])
    assert {"time/annotate_s", "time/identify_s", "time/level_s", "throughput/annotate_images_per_s",
            "throughput/train_samples_per_s"} <= set(m)
    loss = c.get_metric_history(run.info.run_id, "train/loss")
    assert len(loss) == summary["level"]["steps"] and sorted(p.step for p in loss)[0] == 1
    tags = run.data.tags
    assert tags["mpa.task"] == "textvqa" and tags["mpa.match_rule"] == "vqa" and tags["mpa.out"] == out
    assert tags["mpa.teacher"] == str(tiny_ws["teacher"])
    params = run.data.params
    assert params["train.learning_rate"] == "0.01" and params["out"] == out
    assert not any(secret in v for v in params.values())
    assert not any("secret" in k or "access_key" in k for k in params)
    # the parity set is the run's training dataset input
    inputs = run.inputs.dataset_inputs
    assert [i.dataset.name for i in inputs] == ["parity-set"]
    assert any(t.key == "mlflow.data.context" and t.value == "training" for t in inputs[0].tags)
    assert out in inputs[0].dataset.source
    arts = {a.path for a in c.list_artifacts(run.info.run_id)}
    assert {"pi", "tables", "charts", "checkpoint", "summary.json", "config.yaml"} <= arts
    assert {a.path for a in c.list_artifacts(run.info.run_id, "pi")} >= {"pi/audit.jsonl"}
    assert [a.path for a in c.list_artifacts(run.info.run_id, "charts")] == ["charts/before_after.png"]
    # registered, tagged with lineage, promoted by alias
    name = cfg.tracking.registered_model
    versions = c.search_model_versions(f"name = '{name}'")
    assert len(versions) == 1
    mv = versions[0]
    assert mv.run_id == run.info.run_id
    assert mv.tags["mpa.base_student"] == str(tiny_ws["student"]) and mv.tags["mpa.k_parity"] == str(
        summary["identify"]["k_parity"])
    assert summary["delta"] > 0, "the tiny student should learn the colours"
    assert c.get_model_version_by_alias(name, "champion").version == mv.version
    # the checkpoint objects are in the bucket: the run's outputs and the MLflow artifacts
    run_keys = storage.list_s3(out + "/level/checkpoint/")
    assert any(k.endswith("model.safetensors") for k in run_keys) and any(k.endswith("config.json") for k in run_keys)
    assert storage.exists(out + "/summary.json") and storage.exists(out + "/pi/parity.jsonl")
    art_keys = storage.list_s3("s3://mlflow/artifacts/")
    assert any(run.info.run_id in k and k.endswith("checkpoint/model.safetensors") for k in art_keys)
    # models:/<name>@champion gives back a checkpoint the engine loads
    from mpa.config import ModelConfig
    from mpa.vlm.loader import load_vlm

    local = download_model(f"models:/{name}@champion")
    vlm = load_vlm(ModelConfig(model=str(local)))
    vlm.close()

    # re-running the same command resumes: same MLflow run, no second version
    again = run_pipeline(cfg, show=False)
    assert again["mlflow"]["run_id"] == run.info.run_id
    assert again["annotate"]["n_resumed"] == 12
    assert len(c.search_model_versions(f"name = '{name}'")) == 1

    # `mpa promote` on its own (CI): the champion stays champion
    from typer.testing import CliRunner

    from mpa.cli import app

    res = CliRunner().invoke(app, ["promote", "--name", name, "--version", mv.version])
    assert res.exit_code == 0, res.output
    assert '"alias": "champion"' in res.output
    # `mpa register` from the run directory on S3 (masked secrets in its config.yaml come from the env)
    res = CliRunner().invoke(app, ["register", "--run-dir", out, "--name", name + "-copy"])
    assert res.exit_code == 0, res.output
    copy = c.get_model_version_by_alias(name + "-copy", "champion")
    assert copy.tags["mpa.pipeline_run"] == run.info.run_id


def test_object_server_down_mid_run_then_resume(tracking_server, fresh_object_server, tiny_config, tmp_path,
                                                monkeypatch):
    from servers import use_object_server

    import mpa.orchestrate.local as runner

    use_object_server(monkeypatch, fresh_object_server)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_server.uri)
    monkeypatch.setenv("MPA_CACHE", str(tmp_path / "cache"))
    cfg = parse_config(_cfg(tiny_config, out="s3://mpa/down/run"))
    real_identify = runner.identify_with_config

    def identify_after_outage(*args, **kw):
        fresh_object_server.stop()  # the object server dies after PA's outputs were synced
        return real_identify(*args, **kw)

    monkeypatch.setattr(runner, "identify_with_config", identify_after_outage)
    t0 = time.perf_counter()
    with pytest.raises(storage.StorageUnavailable) as exc:
        runner.run_pipeline(cfg, show=False)
    msg = str(exc.value)
    assert fresh_object_server.endpoint in msg and "unreachable" in msg and "resume" in msg
    assert time.perf_counter() - t0 < 60
    state = yaml.safe_load((runner.local_work_dir(cfg) / "mlflow_run.json").read_text())
    c = _client()
    assert c.get_run(state["run_id"]).info.status == "FAILED"

    fresh_object_server.start()  # same data, ports and credentials
    storage.reset_clients()
    monkeypatch.setattr(runner, "identify_with_config", real_identify)
    summary = runner.run_pipeline(cfg, show=False)
    assert summary["annotate"]["n_resumed"] == 12  # PA's work was kept
    assert summary["mlflow"]["run_id"] == state["run_id"]
    assert c.get_run(state["run_id"]).info.status == "FINISHED"
    assert storage.exists("s3://mpa/down/run/level/checkpoint/config.json")
    assert len(c.search_model_versions(f"name = '{cfg.tracking.registered_model}'")) == 1
    # another machine (an empty working copy) resumes from what the bucket holds
    elsewhere = cfg.model_copy(update={"storage": cfg.storage.model_copy(update={"work_dir": str(tmp_path / "m2")})})
    again = runner.run_pipeline(elsewhere, show=False)
    assert again["annotate"]["n_resumed"] == 12 and again["mlflow"]["run_id"] == state["run_id"]
    assert (tmp_path / "m2" / "level" / "checkpoint" / "config.json").is_file()
    assert len(c.search_model_versions(f"name = '{cfg.tracking.registered_model}'")) == 1


def test_wrong_credentials_mid_run_registers_nothing(servers_env, tiny_config, tmp_path, monkeypatch):
    import mpa.orchestrate.local as runner

    monkeypatch.setenv("MPA_CACHE", str(tmp_path / "cache"))
    cfg = parse_config(_cfg(tiny_config, out=f"s3://mpa/creds-{uuid.uuid4().hex[:6]}/run"))
    real_level = runner.level_with_config

    def level_then_rotate_secret(*args, **kw):
        result = real_level(*args, **kw)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "rotated-and-wrong")
        storage.reset_clients()
        return result

    monkeypatch.setattr(runner, "level_with_config", level_then_rotate_secret)
    with pytest.raises(storage.AccessDenied) as exc:
        runner.run_pipeline(cfg, show=False)
    assert "rejected the credentials" in str(exc.value) and servers_env.uri not in str(exc.value)
    c = _client()
    assert c.search_model_versions(f"name = '{cfg.tracking.registered_model}'") == []
    # and with wrong credentials from the start, nothing runs at all
    with pytest.raises(storage.AccessDenied):
        runner.run_pipeline(cfg.model_copy(update={"out": "s3://mpa/creds-other/run"}), show=False)


def test_mlflow_unreachable_fails_fast_with_the_uri(tiny_config, tmp_path, monkeypatch):
    from mpa.devtools.services import free_ports
    from mpa.orchestrate.local import run_pipeline
    from mpa.tracking import TrackingUnavailable

    uri = f"http://127.0.0.1:{free_ports(1)[0]}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    cfg = parse_config(_cfg(tiny_config))
    t0 = time.perf_counter()
    with pytest.raises(TrackingUnavailable, match=uri.replace(".", r"\.")):
        run_pipeline(cfg, show=False)
    assert time.perf_counter() - t0 < 10
    assert not Path(cfg.out).exists()  # nothing was started
    # the user-facing command: one line naming the URI, exit code 2
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(_cfg(tiny_config)))
    res = subprocess.run([sys.executable, "-m", "mpa.cli", "run", "-c", str(path)], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "MLFLOW_TRACKING_URI": uri})
    assert res.returncode == 2, res.stderr[-2000:]
    assert uri in res.stdout + res.stderr and "Traceback" not in res.stderr
