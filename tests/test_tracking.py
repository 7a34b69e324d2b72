"""mpa.tracking with the embedded store (sqlite in the run directory, no servers)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from servers import no_servers_env  # noqa: F401 - fixture
from typer.testing import CliRunner

from mpa import tracking
from mpa.config import parse_config
from mpa.redact import is_secret_key


def test_params_never_contain_secrets(tiny_config):
    raw = {**tiny_config, "storage": {"access_key_id": "AKIA-SECRET", "secret_access_key": "very-secret"}}
    raw["teacher"] = {**raw["teacher"], "options": {"api_key": "sk-123", "temperature_hint": 1}}
    params = tracking.flatten_params(parse_config(raw).model_dump(mode="json"))
    assert params["train.learning_rate"] == "0.003" and params["teacher.options.temperature_hint"] == "1"
    assert not any(s in v for v in params.values() for s in ("AKIA-SECRET", "very-secret", "sk-123"))
    assert not any(k.startswith("storage.access_key") or k.endswith("api_key") for k in params)
    assert "teacher.openai.api_key_env" in params  # the *name* of the env var is not a secret
    assert params["annotate.max_new_tokens"] == "24"  # "token" inside a longer word is not a secret
    for key in ("secret_access_key", "api_key", "password", "hf_token", "access_key_id", "authorization"):
        assert is_secret_key(key), key
    for key in ("max_new_tokens", "max_model_len", "api_key_env", "kv_cache_memory_bytes"):
        assert not is_secret_key(key), key


@pytest.mark.parametrize(("score", "base", "champ", "margin", "alias", "why"), [
    (60.0, 50.0, None, 0.0, "champion", "beats the base student"),
    (60.0, 50.0, 55.0, 1.0, "champion", "and champion"),
    (60.0, 50.0, 59.5, 1.0, "challenger", "does not beat champion"),
    (50.5, 50.0, None, 1.0, "challenger", "does not beat the base student"),
    (None, 50.0, None, 0.0, "challenger", "no benchmark score"),
])
def test_promotion_rule(score, base, champ, margin, alias, why):
    got, reason = tracking.decide(score, base, champ, margin, "3")
    assert got == alias and why in reason


@pytest.mark.usefixtures("no_servers_env")
def test_promote_moves_aliases_in_the_registry(tmp_path):
    uri = tracking.embedded_uri(tmp_path)
    (tmp_path / "mlflow").mkdir()
    c = tracking.client(uri)
    src = tmp_path / "ckpt"
    src.mkdir()
    (src / "config.json").write_text("{}")

    def version(score, base):
        tags = {"mpa.score": str(score), "mpa.base_score": str(base), "mpa.benchmark": "textvqa"}
        return tracking.register_version(c, "m", str(src), None, tags).version

    v1 = version(60, 50)
    assert tracking.promote(c, "m", v1).alias == "champion"
    v2 = version(61, 50)
    d = tracking.promote(c, "m", v2, margin=2.0)
    assert d.alias == "challenger" and f"champion v{v1}" in d.reason
    mv2 = c.get_model_version("m", v2)
    assert mv2.tags["mpa.promotion"] == "challenger" and "margin 2" in mv2.tags["mpa.promotion_reason"]
    assert c.get_model_version_by_alias("m", "champion").version == v1
    v3 = version(70, 50)
    assert tracking.promote(c, "m", "latest", margin=2.0).alias == "champion"
    assert c.get_model_version_by_alias("m", "champion").version == v3
    assert c.get_model_version_by_alias("m", "challenger").version == v2
    # the CLI does the same for CI
    res = CliRunner().invoke(_app(), ["promote", "--name", "m", "--version", v2, "--tracking-uri", uri])
    assert res.exit_code == 0 and '"alias": "challenger"' in res.output
    gate = ["promote", "--name", "m", "--version", v2, "--tracking-uri", uri, "--require-champion"]
    assert CliRunner().invoke(_app(), gate).exit_code == 1


def _app():
    from mpa.cli import app

    return app


def test_unreachable_server_fails_fast_naming_it():
    from mpa.devtools.services import free_ports

    uri = f"http://127.0.0.1:{free_ports(1)[0]}"
    t0 = time.perf_counter()
    with pytest.raises(tracking.TrackingUnavailable, match=uri):
        tracking.check_reachable(uri)
    assert time.perf_counter() - t0 < 5


@pytest.mark.usefixtures("no_servers_env")
def test_embedded_default_tracks_registers_and_loads(tiny_config, tiny_ws, tmp_path):
    from mpa.config import ModelConfig
    from mpa.orchestrate.local import run_pipeline
    from mpa.vlm.loader import load_vlm

    raw = {**tiny_config, "train": {"batch_size": 4, "learning_rate": 0.01, "epochs": 40}}
    raw["evaluate"] = {**raw["evaluate"], "images": str(tiny_ws["bench_images"])}
    cfg = parse_config(raw)
    summary = run_pipeline(cfg, show=False)
    out = Path(cfg.out)
    uri = summary["mlflow"]["tracking_uri"]
    assert uri == tracking.embedded_uri(out) and (out / "mlflow" / "mlflow.db").is_file()
    c = tracking.client(uri)
    run = c.get_run(summary["mlflow"]["run_id"])
    assert run.info.status == "FINISHED" and run.info.artifact_uri.startswith((out / "mlflow").resolve().as_uri())
    assert run.data.metrics["k_parity"] == summary["identify"]["k_parity"]
    assert [i.dataset.name for i in run.inputs.dataset_inputs] == ["parity-set"]
    name = tracking.default_model_name(cfg)
    assert summary["registered"]["name"] == name and summary["registered"]["alias"] == "champion"
    assert (out / "mlflow" / "artifacts").is_dir()
    local = tracking.download_model(f"models:/{name}@champion", uri, dst=tmp_path / "champion")
    load_vlm(ModelConfig(model=str(local))).close()
    # a run made with tracking off can be registered afterwards with `mpa register`
    raw2 = {**raw, "out": str(tmp_path / "untracked"), "tracking": {"enabled": False}}
    run_pipeline(parse_config(raw2), show=False)
    assert not (tmp_path / "untracked" / "mlflow").exists()
    res = CliRunner().invoke(_app(), ["register", "--run-dir", str(tmp_path / "untracked"), "--name", "later",
                                      "--tracking-uri", uri])
    assert res.exit_code == 0, res.output
    assert c.get_model_version("later", "1").tags["mpa.task"] == "textvqa"


@pytest.mark.usefixtures("no_servers_env")
def test_failed_promotion_leaves_no_version_behind(tiny_config, tmp_path, monkeypatch):
    cfg = parse_config({**tiny_config, "out": str(tmp_path / "run")})
    ckpt = tmp_path / "run" / "level" / "checkpoint"
    ckpt.mkdir(parents=True)
    (ckpt / "config.json").write_text("{}")
    tracker = tracking.Tracker(cfg, tmp_path / "run", cfg.out)
    tracker.start()

    def broken_promote(*a, **k):
        raise RuntimeError("registry went away")

    real_promote = tracking.promote
    monkeypatch.setattr("mpa.tracking.runlog.promote", broken_promote)
    with pytest.raises(RuntimeError, match="registry went away"):
        tracker.register({"out": cfg.out}, ckpt)
    name = tracking.default_model_name(cfg)
    assert tracker.client.search_model_versions(f"name = '{name}'") == []
    monkeypatch.setattr("mpa.tracking.runlog.promote", real_promote)
    # the same call succeeds once the registry is back, with a fresh version
    v = tracker.register({"out": cfg.out}, ckpt)
    assert v.alias == "challenger" and "no benchmark score" in v.reason
