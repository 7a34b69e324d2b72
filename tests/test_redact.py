"""One secret decider and one redaction (mpa.redact), and a real tiny `mpa run` with 18 planted
secrets: none may reach any file of the run directory, the embedded MLflow store (params, tags,
artifacts) or the command's output."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mpa.redact import REDACTED, RedactingFilter, is_secret_key, redact, redact_text, register_secret

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("key", [
    "api_key", "my_key", "bearer", "token", "auth_token", "password", "pass", "pwd", "sas", "client_secret",
    "secret_access_key", "access_key_id", "hf_token", "authorization", "X-Amz-Signature", "X-Amz-Credential",
    "sig", "apiKey", "clientSecret", "storage.secret_access_key", "teacher.options.bearer", "private_key",
])
def test_secret_names(key):
    assert is_secret_key(key)


@pytest.mark.parametrize("key", [
    "max_new_tokens", "prompt_tokens", "api_key_env", "max_model_len", "kv_cache_memory_bytes", "passes",
    "keyframes", "teacher.openai.allow_plain_http", "base_url", "endpoint_url", "mpa.task", "tags",
    "plan.vision_gflop_per_image_token",
])
def test_ordinary_names(key):
    assert not is_secret_key(key)


def test_the_decider_flags_exactly_the_secret_fields_of_the_run_config():
    """Over every field of RunConfig: only the SecretStr fields are secrets (no setting is hidden by mistake)."""
    from pydantic import BaseModel, SecretStr

    from mpa.config import RunConfig

    def fields(model: type[BaseModel], prefix: str = "") -> dict[str, object]:
        out: dict[str, object] = {}
        for name, f in model.model_fields.items():
            ann = f.annotation
            inner = [a for a in getattr(ann, "__args__", ()) if isinstance(a, type)] or [ann]
            sub = next((a for a in inner if isinstance(a, type) and issubclass(a, BaseModel)), None)
            out[prefix + name] = ann
            if sub is not None:
                out.update(fields(sub, f"{prefix}{name}."))
        return out

    all_fields = fields(RunConfig)
    assert len(all_fields) > 100
    secret = {k for k in all_fields if is_secret_key(k)}
    declared = {k for k, ann in all_fields.items() if SecretStr in getattr(ann, "__args__", (ann,))}
    assert secret == declared == {"storage.access_key_id", "storage.secret_access_key"}


@pytest.mark.parametrize(("text", "secrets"), [
    ("https://alice:pw-123456@api.example.com/v1", ["pw-123456", "alice"]),
    ("http://h:9/?sig=S1g&token=T0k&X-Amz-Signature=deadbeef&x=1", ["S1g", "T0k", "deadbeef"]),
    ('{"error": "bad", "echo": {"Authorization": "Bearer abcdefgh12345"}}', ["abcdefgh12345"]),
    ("Authorization: Basic dXNlcjpwYXNz", ["dXNlcjpwYXNz"]),
    ("calling with Bearer zzzzzzzzzzzz", ["zzzzzzzzzzzz"]),
    ("key sk-proj-ABCDEFGHIJKLMNOP in a log line", ["sk-proj-ABCDEFGHIJKLMNOP"]),
    ("AKIAIOSFODNN7EXAMPLE", ["AKIAIOSFODNN7EXAMPLE"]),
    ("{'password': 'hunter22', 'api_key_env': 'OPENAI_API_KEY'}", ["hunter22"]),
    ("endpoint_url: https://h/?sas=qqqq", ["qqqq"]),
    ("client_secret=abc&grant=x", ["abc"]),
])
def test_redact_text_hides_secrets(text, secrets):
    out = redact_text(text)
    assert REDACTED in out
    for s in secrets:
        assert s not in out, out


@pytest.mark.parametrize("text", [
    "s3://bucket/runs/a/summary.json", "max_new_tokens=16 temperature=1.0", "http://127.0.0.1:5000",
    "OPENAI_API_KEY", "a token of appreciation", "basic understanding of the task",
])
def test_redact_text_keeps_ordinary_text(text):
    assert redact_text(text) == text


def test_registered_values_are_hidden_anywhere():
    register_secret("Zq9-registered-value")
    assert redact_text("the server said: Zq9-registered-value is wrong") == "the server said: *** is wrong"
    register_secret("abc")  # too short to hide safely: ordinary words would vanish
    assert redact_text("abc") == "abc"


def test_redact_structures():
    data = {"options": {"api_key": "k1", "token": "t1", "note": "Bearer bbbbbbbbbbb", "n": 3, "unset_key": None},
            "urls": ["https://u:p@h/x"], "api_key_env": "OPENAI_API_KEY"}
    out = redact(data)
    assert out == {"options": {"api_key": REDACTED, "token": REDACTED, "note": f"Bearer {REDACTED}", "n": 3,
                               "unset_key": None},
                   "urls": [f"https://{REDACTED}@h/x"], "api_key_env": "OPENAI_API_KEY"}
    assert data["options"]["api_key"] == "k1"  # a copy


def test_log_filter_redacts_messages():
    args = ("https://u:pw@h", "sk-" + "a" * 20)
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "retry %s with %s", args, None)
    assert RedactingFilter().filter(record)
    assert record.getMessage() == f"retry https://{REDACTED}@h with sk-{REDACTED}"


# ----------------------------------------------------------------------------- planted secrets, real run
PLANTED = {  # where -> secret value (each unique, so a hit names the leak)
    "teacher.options.api_key": "PLANT01-optapikey",
    "teacher.options.my_key": "PLANT02-optmykey",
    "teacher.options.bearer": "PLANT03-optbearer",
    "teacher.options.token": "PLANT04-opttoken",
    "teacher.options.auth_token": "PLANT05-optauthtoken",
    "student.options.password": "PLANT06-optpassword",
    "student.options.pass": "PLANT07-optpass",
    "student.options.pwd": "PLANT08-optpwd",
    "student.options.sas": "PLANT09-optsas",
    "student.options.client_secret": "PLANT10-optclientsecret",
    "teacher.openai.base_url (user-info)": "PLANT11-urlpassword",
    "storage.endpoint_url ?sig=": "PLANT12-querysig",
    "storage.endpoint_url ?token=": "PLANT13-querytoken",
    "storage.endpoint_url ?X-Amz-Signature=": "PLANT14-queryamzsig",
    "tracking.tags deploy_token": "PLANT15-tagtoken",
    "tracking.tags note (sk- key in a value)": "sk-PLANT16tagvaluekey",
    "storage.access_key_id": "PLANT17-accesskeyid",
    "storage.secret_access_key": "PLANT18-secretaccesskey",
}


def planted_config(tiny_config: dict, out: Path) -> dict:
    p = PLANTED
    raw = {**tiny_config, "out": str(out)}
    raw["annotate"] = {**raw["annotate"], "max_new_tokens": 16}
    raw["train"] = {"batch_size": 4, "learning_rate": 0.003, "epochs": 1}
    raw["teacher"] = {**raw["teacher"], "options": {
        "api_key": p["teacher.options.api_key"], "my_key": p["teacher.options.my_key"],
        "bearer": p["teacher.options.bearer"], "token": p["teacher.options.token"],
        "auth_token": p["teacher.options.auth_token"]},
        "openai": {"base_url": f"https://alice:{p['teacher.openai.base_url (user-info)']}@api.example.com/v1"}}
    raw["student"] = {**raw["student"], "options": {
        "password": p["student.options.password"], "pass": p["student.options.pass"],
        "pwd": p["student.options.pwd"], "sas": p["student.options.sas"],
        "client_secret": p["student.options.client_secret"]}}
    raw["storage"] = {
        "endpoint_url": (f"http://127.0.0.1:9/?sig={p['storage.endpoint_url ?sig=']}"
                         f"&token={p['storage.endpoint_url ?token=']}"
                         f"&X-Amz-Signature={p['storage.endpoint_url ?X-Amz-Signature=']}"),
        "access_key_id": p["storage.access_key_id"], "secret_access_key": p["storage.secret_access_key"]}
    raw["tracking"] = {"tags": {"deploy_token": p["tracking.tags deploy_token"],
                                "note": f"rotated {p['tracking.tags note (sk- key in a value)']} today"}}
    return raw


def scan_for_secrets(roots: list[Path], texts: dict[str, str]) -> dict[str, list[str]]:
    """Every planted secret found in any file under ``roots`` (bytes, so sqlite too) or in ``texts``."""
    hits: dict[str, list[str]] = {}
    needles = {where: value.encode() for where, value in PLANTED.items()}
    for root in roots:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            data = path.read_bytes()
            for where, needle in needles.items():
                if needle in data:
                    hits.setdefault(where, []).append(str(path.relative_to(root)))
    for name, text in texts.items():
        for where, value in PLANTED.items():
            if value in text:
                hits.setdefault(where, []).append(name)
    return hits


@pytest.mark.slow
def test_planted_secrets_reach_no_output_of_a_real_run(tiny_config, tmp_path, monkeypatch):
    """`mpa run` with the embedded MLflow store: scan every file it writes, MLflow's params/tags/artifacts."""
    for key in ("MLFLOW_TRACKING_URI", "AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    out = tmp_path / "run"
    cfg_path = tmp_path / "planted.yaml"  # the user's own config file, outside the run directory
    cfg_path.write_text(yaml.safe_dump(planted_config(tiny_config, out)))
    env = {**os.environ, "MPA_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-m", "mpa", "run", "-c", str(cfg_path)], capture_output=True, text=True,
                         env=env, timeout=900, check=False)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert (out / "summary.json").is_file() and (out / "mlflow" / "mlflow.db").is_file()

    from mpa import tracking

    c = tracking.client(tracking.embedded_uri(out))
    run = c.search_runs([c.get_experiment_by_name("mpa").experiment_id])[0]
    mlflow_texts = {"mlflow params": repr(run.data.params), "mlflow tags": repr(run.data.tags)}
    for mv in c.search_model_versions():
        mlflow_texts[f"model version {mv.name}/{mv.version} tags"] = repr(mv.tags)
    artifacts = {a.path for a in c.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "summary.json"} <= artifacts  # the artifacts are there (and scanned as files)
    hits = scan_for_secrets([out, tmp_path / "cache"],
                            {"stdout": res.stdout, "stderr": res.stderr, **mlflow_texts})
    assert not hits, f"{len(hits)} of {len(PLANTED)} planted secrets leaked: {hits}"
    # what stays useful: the settings themselves, with the secret parts masked
    params = run.data.params
    assert params["teacher.openai.base_url"] == f"https://{REDACTED}@api.example.com/v1"
    assert "sig=***" in params["storage.endpoint_url"] and params["train.epochs"] == "1.0"
    assert run.data.tags["note"] == "rotated sk-*** today" and "deploy_token" not in run.data.tags
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["teacher"]["options"]["api_key"] == REDACTED and saved["storage"]["secret_access_key"] == REDACTED
