"""The compiled Kubeflow pipeline: what a cluster would get (read from the committed YAML), the
stale-compile check, parameter → config mapping, compile-time settings and the client logic
(upload/run argument handling, version naming) without a server."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

pytest.importorskip("kfp")
pytest.importorskip("kfp.kubernetes")

from mpa.orchestrate.kubeflow import client as kc  # noqa: E402
from mpa.orchestrate.kubeflow.params import PARAM_FIELDS, PIPELINE_ONLY, config_from_params  # noqa: E402
from mpa.orchestrate.kubeflow.settings import GPU_STAGES, STAGES, SettingsError, settings_from_dict  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
COMPILED = ROOT / "pipelines" / "compiled" / "mpa.yaml"
GPU_EXECUTORS = {"exec-annotate", "exec-identify", "exec-level"}
CPU_EXECUTORS = {"exec-prepare", "exec-merge", "exec-gate", "exec-register"}


def _load(path: Path) -> tuple[dict, dict]:
    docs = list(yaml.safe_load_all(path.read_text()))
    assert len(docs) == 2, "expected the pipeline spec and the Kubernetes platform spec"
    return docs[0], docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


@pytest.fixture(scope="module")
def spec() -> tuple[dict, dict]:
    return _load(COMPILED)


def _containers(pipeline: dict) -> dict[str, dict]:
    return {name: ex["container"] for name, ex in pipeline["deploymentSpec"]["executors"].items()}


def test_compiled_pipeline_is_not_stale(tmp_path):
    fresh = kc.compile_pipeline(tmp_path / "mpa.yaml")
    assert fresh.read_text() == COMPILED.read_text(), (
        "pipelines/compiled/mpa.yaml is stale: run `mpa pipeline compile` and commit it"
    )


def test_every_stage_has_an_executor(spec):
    pipeline, _ = spec
    names = set(_containers(pipeline))
    assert names >= GPU_EXECUTORS | CPU_EXECUTORS
    assert {"exec-evaluate-student", "exec-evaluate-aligned"} <= names


def test_gpu_requests_on_pa_pi_pl_and_none_on_register(spec):
    pipeline, _ = spec
    containers = _containers(pipeline)
    for name in GPU_EXECUTORS:
        acc = containers[name]["resources"]["accelerator"]
        assert acc["resourceType"] == "nvidia.com/gpu" and int(acc["resourceCount"]) >= 1, name
        assert "mpa-gpu" in containers[name]["image"], name
    for name in CPU_EXECUTORS:
        assert "accelerator" not in containers[name].get("resources", {}), name
        assert "mpa-cpu" in containers[name]["image"], name


def test_memory_and_cpu_requests_and_limits(spec):
    pipeline, _ = spec
    for name, c in _containers(pipeline).items():
        r = c["resources"]
        for key in ("resourceCpuRequest", "resourceCpuLimit", "resourceMemoryRequest", "resourceMemoryLimit"):
            assert r.get(key), f"{name} has no {key}"
    assert _containers(pipeline)["exec-level"]["resources"]["resourceMemoryLimit"] == "96Gi"
    assert _containers(pipeline)["exec-register"]["resources"]["resourceMemoryLimit"] == "2Gi"


def test_gpu_placement_tolerations_and_model_cache(spec):
    _, k8s = spec
    for name in GPU_EXECUTORS:
        ex = k8s[name]
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in ex["tolerations"]
        assert ex["nodeSelector"]["labels"] == {"nvidia.com/gpu.present": "true"}
        assert [m["mountPath"] for m in ex["pvcMount"]] == ["/cache"]
        assert ex["pvcMount"][0]["constant"] == "mpa-model-cache"
    for name in CPU_EXECUTORS:
        ex = k8s[name]
        assert "tolerations" not in ex and "nodeSelector" not in ex and "pvcMount" not in ex, name


def test_secrets_are_references_never_values(spec):
    pipeline, k8s = spec

    def secrets(name: str) -> dict[str, dict]:
        return {s["secretName"]: s for s in k8s[name].get("secretAsEnv", [])}

    for name in k8s:
        assert "mpa-s3" in secrets(name), name
        s3 = {e["envVar"] for e in secrets(name)["mpa-s3"]["keyToEnv"]}
        assert s3 == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
        assert secrets(name)["mpa-s3"]["optional"] is False
    for name in ("exec-annotate", "exec-identify"):
        assert secrets(name)["mpa-openai"]["keyToEnv"] == [{"envVar": "OPENAI_API_KEY", "secretKey": "OPENAI_API_KEY"}]
    assert "mpa-openai" not in secrets("exec-level") and "mpa-openai" not in secrets("exec-register")
    assert {e["envVar"] for e in secrets("exec-register")["mpa-mlflow"]["keyToEnv"]} == {
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
    }
    # plain env in the containers is only these (no credential can hide in the spec)
    plain = {"MPA_MODEL_CACHE", "PYTHONUNBUFFERED", "TOKENIZERS_PARALLELISM"}
    for c in _containers(pipeline).values():
        assert {e["name"] for e in c.get("env", [])} <= plain
    text = COMPILED.read_text()
    for word in ("aws_secret_access_key:", "password:", "api_key:", "token:"):
        assert word not in text.lower().replace(" ", ""), word


def test_fan_out_over_shards_and_fan_in(spec):
    pipeline, _ = spec
    root = pipeline["root"]["dag"]["tasks"]
    loops = [name for name, t in root.items() if "parameterIterator" in t]
    assert len(loops) == 1
    loop_name, loop = loops[0], root[loops[0]]
    assert loop["parameterIterator"]["items"]["inputParameter"].endswith("prepare-Output")
    assert loop["iteratorPolicy"]["parallelismLimit"] == 8
    body = pipeline["components"][loop["componentRef"]["name"]]["dag"]["tasks"]
    assert set(body) == {"annotate", "identify"}
    assert body["identify"]["dependentTasks"] == ["annotate"]
    merge = root["merge"]
    assert merge["inputs"]["artifacts"]["shards"]["taskOutputArtifact"]["producerTask"] == loop_name
    assert pipeline["components"]["comp-merge"]["inputDefinitions"]["artifacts"]["shards"]["isArtifactList"] is True
    assert root["level"]["inputs"]["artifacts"]["parity"]["taskOutputArtifact"]["producerTask"] == "merge"
    # evaluate-before needs only the plan: it runs alongside PA/PI
    assert root["evaluate-student"]["dependentTasks"] == ["prepare"]


def test_register_only_if_better(spec):
    pipeline, _ = spec
    root = pipeline["root"]["dag"]["tasks"]
    conds = [t for t in root.values() if t.get("triggerPolicy", {}).get("condition")]
    assert len(conds) == 1
    cond = conds[0]
    assert "gate-Output" in cond["triggerPolicy"]["condition"] and "== true" in cond["triggerPolicy"]["condition"]
    body = pipeline["components"][cond["componentRef"]["name"]]["dag"]["tasks"]
    assert set(body) == {"register"}
    reg = pipeline["deploymentSpec"]["executors"]["exec-register"]
    assert reg["container"]["image"].endswith(":" + __import__("mpa").__version__)
    assert root["gate"]["inputs"]["parameters"]["score_before"]["taskOutputParameter"]["producerTask"] == (
        "evaluate-student"
    )


def test_components_are_thin_and_install_nothing(spec):
    pipeline, _ = spec
    for name, c in _containers(pipeline).items():
        src = c["command"][-1]
        assert "pip install" not in src and "pip" not in " ".join(c["command"][:-1]), name
        assert "from mpa.orchestrate.kubeflow.steps import" in src, name
        body = re.split(r"\)(?: -> [^\n]+)?:\n", src.split("\ndef ", 1)[1], maxsplit=1)[1]
        assert len([ln for ln in body.splitlines() if ln.strip()]) <= 12, f"{name} is not a thin wrapper"


def test_pipeline_parameters_map_onto_run_config(spec):
    pipeline, _ = spec
    params = set(pipeline["root"]["inputDefinitions"]["parameters"])
    assert params == set(PARAM_FIELDS) | PIPELINE_ONLY
    required = {
        "task",
        "teacher",
        "student",
        "images",
        "benchmark",
        "match_rule",
        "shards",
        "epochs",
        "learning_rate",
        "train_batch_size",
    }
    assert required <= params


# --- params → RunConfig ---------------------------------------------------------------------------


def _params(**kw):
    base = dict(
        task="textvqa",
        teacher="/m/t",
        student="/m/s",
        images="s3://b/img/",
        max_images=0,
        benchmark="textvqa",
        benchmark_annotations="s3://b/val.json",
        benchmark_images="",
        eval_max_samples=0,
        match_rule="anls",
        qa_per_image=2,
        epochs=1.0,
        train_batch_size=0,
        learning_rate=0.0,
        lora=True,
        seed=3,
        min_improvement=0.5,
        registered_model="",
    )
    return {**base, **kw}


def test_config_from_params_maps_every_field():
    cfg = config_from_params(_params(), {"teacher.batch_size": 32, "annotate.max_new_tokens": 40})
    assert cfg.teacher.model == "/m/t" and cfg.student.model == "/m/s" and cfg.data.images == "s3://b/img/"
    assert cfg.identify.match == "anls" and cfg.annotate.qa_per_image == 2 and cfg.train.lora is True
    assert cfg.data.max_images is None and cfg.train.batch_size is None and cfg.train.learning_rate is None
    assert cfg.evaluate.images is None and cfg.evaluate.max_samples is None
    assert cfg.tracking.promotion_margin == 0.5 and cfg.tracking.registered_model is None
    assert cfg.teacher.batch_size == 32 and cfg.annotate.max_new_tokens == 40 and cfg.seed == 3
    cfg = config_from_params(_params(train_batch_size=8, learning_rate=2e-5, registered_model="qwen-aligned"))
    assert cfg.train.batch_size == 8 and cfg.train.learning_rate == 2e-5
    assert cfg.tracking.registered_model == "qwen-aligned"


def test_config_from_params_errors_name_the_input():
    with pytest.raises(ValueError, match="use the pipeline parameter 'teacher'"):
        config_from_params(_params(), {"teacher.model": "x"})
    with pytest.raises(ValueError, match="identify.match"):
        config_from_params(_params(match_rule="fuzzy"))
    with pytest.raises(ValueError, match="credentials never go in run parameters"):
        config_from_params(_params(), {"storage.secret_access_key": "x"})
    with pytest.raises(ValueError, match="credentials never go in run parameters"):
        config_from_params(_params(), {"teacher.options.hf_token": "x"})
    with pytest.raises(ValueError, match="unknown pipeline parameters: bogus"):
        config_from_params({**_params(), "bogus": 1})


# --- compile-time settings --------------------------------------------------------------------


def test_settings_override_resources_at_compile_time(tmp_path):
    settings = settings_from_dict(
        {
            "gpu_image": "registry.example/mpa-gpu@sha256:" + "a" * 64,
            "model_cache_pvc": None,
            "shard_parallelism": 3,
            "stages": {
                "annotate": {
                    "accelerator_count": 2,
                    "accelerator_type": "nvidia.com/gpu",
                    "node_selector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
                    "memory_limit": "80Gi",
                },
                "level": {"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "train"}]},
            },
        }
    )
    pipeline, k8s = _load(kc.compile_pipeline(tmp_path / "p.yaml", settings))
    ann = _containers(pipeline)["exec-annotate"]
    assert ann["resources"]["accelerator"]["resourceCount"] == "2"
    assert ann["resources"]["resourceMemoryLimit"] == "80Gi"
    assert ann["resources"]["resourceCpuRequest"] == "4"  # untouched defaults survive the merge
    assert ann["image"].startswith("registry.example/mpa-gpu@sha256:")
    assert k8s["exec-annotate"]["nodeSelector"]["labels"] == {  # mappings merge with the defaults
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
    }
    assert k8s["exec-level"]["tolerations"] == [
        {"key": "dedicated", "operator": "Equal", "value": "train", "effect": "NoSchedule"}
    ]
    assert all("pvcMount" not in ex for ex in k8s.values())
    assert all(e["name"] != "MPA_MODEL_CACHE" for c in _containers(pipeline).values() for e in c.get("env", []))
    loop = next(t for t in pipeline["root"]["dag"]["tasks"].values() if "parameterIterator" in t)
    assert loop["iteratorPolicy"]["parallelismLimit"] == 3


def test_settings_errors():
    with pytest.raises(SettingsError, match="unknown stages"):
        settings_from_dict({"stages": {"anotate": {}}})
    with pytest.raises(SettingsError, match="accelerator_count"):
        settings_from_dict({"stages": {"level": {"accelerator_count": -1}}})
    with pytest.raises(SettingsError, match="unknown stages"):
        settings_from_dict({"secrets": [{"name": "x", "env": {"a": "A"}, "stages": ["nope"]}]})
    assert set(GPU_STAGES) <= set(STAGES)


def test_example_settings_and_params_files_are_valid():
    from mpa.orchestrate.kubeflow.settings import load_settings

    for path in sorted((ROOT / "pipelines" / "settings").glob("*.yaml")):
        load_settings(path)
    files = sorted((ROOT / "pipelines" / "params").glob("*.yaml"))
    assert files, "pipelines/params/ should hold at least one example"
    for path in files:
        params = kc.load_run_params(path)
        overrides = params.pop("config_overrides", {})
        full = {**_params(), **{k: v for k, v in params.items() if k != "shards"}}
        config_from_params(full, overrides)


# --- client logic without a server ------------------------------------------------------------


def test_version_name_follows_git_revision(tmp_path):
    pkg = tmp_path / "p.yaml"
    pkg.write_text("a: 1\n")
    assert kc.version_name(pkg, ("0123456789ab", False)) == "git-0123456789ab"
    dirty = kc.version_name(pkg, ("0123456789ab", True))
    assert dirty.startswith("git-0123456789ab-dirty-") and dirty == kc.version_name(pkg, ("0123456789ab", True))
    pkg.write_text("a: 2\n")
    assert kc.version_name(pkg, ("0123456789ab", True)) != dirty
    assert kc.version_name(pkg, None).startswith("spec-")
    with pytest.raises(ValueError):
        kc.version_name(pkg, ("not a sha!", False))
    rev = kc.git_revision(ROOT)
    assert rev is not None and len(rev[0]) == 12


def test_connection_flags_win_over_env():
    env = {"KF_PIPELINES_ENDPOINT": "http://env:8888", "KFP_NAMESPACE": "team-env", "KFP_EXISTING_TOKEN": "t-env"}
    c = kc.resolve_connection(env=env)
    assert (c.host, c.namespace, c.token) == ("http://env:8888", "team-env", "t-env")
    c = kc.resolve_connection("http://flag:1", "team-flag", "t-flag", env=env)
    assert (c.host, c.namespace, c.token) == ("http://flag:1", "team-flag", "t-flag")
    c = kc.resolve_connection(env={"KFP_ENDPOINT": "http://kfp-cli:2"})
    assert (c.host, c.namespace, c.token) == ("http://kfp-cli:2", "kubeflow", None)


def test_make_client_builds_a_kfp_client_with_bearer_token():
    # constructing the client does not contact the server
    with pytest.warns(FutureWarning):
        client = kc.make_client(kc.Connection(host="http://127.0.0.1:9", namespace="team-a", token="abc"))
    cfg = client._existing_config
    assert cfg.host == "http://127.0.0.1:9"
    assert cfg.api_key == {"authorization": "abc"} and cfg.api_key_prefix == {"authorization": "Bearer"}
    assert client.get_user_namespace() == "team-a"


class FakeKFP:
    """Records calls; mimics the kfp.Client methods upload/run use (shapes of kfp_server_api objects)."""

    def __init__(self, pipelines=None, final_state="SUCCEEDED"):
        self.pipelines = pipelines or {}  # name -> {"id":..., "versions": {name: id}}
        self.calls: list[tuple] = []
        self.final_state = final_state

    def get_pipeline_id(self, name):
        return self.pipelines.get(name, {}).get("id")

    def upload_pipeline(self, path, pipeline_name=None, description=None, namespace=None):
        self.calls.append(("upload_pipeline", pipeline_name))
        self.pipelines[pipeline_name] = {"id": "p-1", "versions": {pipeline_name: "v-0"}}
        return SimpleNamespace(pipeline_id="p-1")

    def list_pipeline_versions(self, pipeline_id, page_size=10, filter=None, **kw):
        wanted = json.loads(filter)["predicates"][0]["stringValue"]
        for p in self.pipelines.values():
            if p["id"] == pipeline_id and wanted in p["versions"]:
                return SimpleNamespace(pipeline_versions=[SimpleNamespace(pipeline_version_id=p["versions"][wanted])])
        return SimpleNamespace(pipeline_versions=None)

    def upload_pipeline_version(self, path, pipeline_version_name, pipeline_id=None, description=None, **kw):
        assert Path(path).is_file()
        self.calls.append(("upload_pipeline_version", pipeline_version_name))
        vid = f"v-{len(self.calls)}"
        for p in self.pipelines.values():
            if p["id"] == pipeline_id:
                p["versions"][pipeline_version_name] = vid
        return SimpleNamespace(pipeline_version_id=vid)

    def create_experiment(self, name, description=None, namespace=None):
        self.calls.append(("create_experiment", name))
        return SimpleNamespace(experiment_id="e-1")

    def run_pipeline(self, **kw):
        self.calls.append(("run_pipeline", kw))
        return SimpleNamespace(run_id="r-1")

    def wait_for_run_completion(self, run_id, timeout, sleep_duration=5):
        self.calls.append(("wait", run_id, timeout))
        return SimpleNamespace(state=self.final_state)


def test_upload_version_is_idempotent():
    client = FakeKFP()
    first = kc.upload_version(client, COMPILED, "mpa", "git-abc123")
    assert first.created and [c[0] for c in client.calls] == ["upload_pipeline", "upload_pipeline_version"]
    again = kc.upload_version(client, COMPILED, "mpa", "git-abc123")
    assert not again.created and again.version_id == first.version_id
    assert len(client.calls) == 2  # nothing uploaded the second time
    other = kc.upload_version(client, COMPILED, "mpa", "git-def456")
    assert other.created and other.version_id != first.version_id


def test_load_run_params(tmp_path):
    p = tmp_path / "run.yaml"
    p.write_text("teacher: Qwen/Qwen2-VL-7B-Instruct\nshards: 8\nconfig_overrides: {teacher.batch_size: 16}\n")
    params = kc.load_run_params(p, {"shards": 16})
    assert params == {
        "teacher": "Qwen/Qwen2-VL-7B-Instruct",
        "shards": 16,
        "config_overrides": {"teacher.batch_size": 16},
    }
    p.write_text("techer: x\n")
    with pytest.raises(kc.PipelineClientError, match="techer"):
        kc.load_run_params(p)
    with pytest.raises(kc.PipelineClientError, match="not found"):
        kc.load_run_params(tmp_path / "missing.yaml")


def _cli(args, monkeypatch, fake):
    from typer.testing import CliRunner

    from mpa.cli.pipeline import app as pipeline_app

    monkeypatch.setattr(kc, "make_client", lambda conn: fake)
    monkeypatch.setattr(kc, "git_revision", lambda cwd=None: ("0123456789ab", False))
    return CliRunner().invoke(pipeline_app, args)


def test_cli_compile(tmp_path):
    from typer.testing import CliRunner

    from mpa.cli.pipeline import app as pipeline_app

    s = tmp_path / "settings.yaml"
    s.write_text("stages: {level: {accelerator_count: 4}}\n")
    out = tmp_path / "c.yaml"
    res = CliRunner().invoke(
        pipeline_app, ["compile", "--out", str(out), "--settings", str(s), "--gpu-image", "reg.example/gpu:1"]
    )
    assert res.exit_code == 0, res.output
    pipeline, _ = _load(out)
    level = _containers(pipeline)["exec-level"]
    assert level["resources"]["accelerator"]["resourceCount"] == "4" and level["image"] == "reg.example/gpu:1"
    assert json.loads(res.output)["compiled"] == str(out)


def test_cli_run_waits_and_exits_nonzero_on_failure(tmp_path, monkeypatch):
    params = tmp_path / "run.yaml"
    params.write_text("shards: 2\nimages: s3://bucket/images/\n")
    fake = FakeKFP(final_state="FAILED")
    res = _cli(
        [
            "run",
            "--package",
            str(COMPILED),
            "--params",
            str(params),
            "--param",
            "epochs=2",
            "--experiment",
            "ci",
            "--wait",
            "--timeout",
            "60",
        ],
        monkeypatch,
        fake,
    )
    assert res.exit_code == 1, res.output
    run = next(c[1] for c in fake.calls if c[0] == "run_pipeline")
    assert run["params"] == {"shards": 2, "images": "s3://bucket/images/", "epochs": 2}
    assert run["version_id"] and run["pipeline_id"] == "p-1" and run["job_name"].startswith("mpa-git-0123456789ab-")
    assert ("create_experiment", "ci") in fake.calls and ("wait", "r-1", 60) in fake.calls
    assert ("upload_pipeline_version", "git-0123456789ab") in fake.calls

    ok = FakeKFP(final_state="SUCCEEDED")
    res = _cli(["run", "--package", str(COMPILED), "--params", str(params), "--wait"], monkeypatch, ok)
    assert res.exit_code == 0, res.output
    assert json.loads(res.output.strip().splitlines()[-1])["state"] == "succeeded"


def test_cli_upload_and_argument_errors(tmp_path, monkeypatch):
    fake = FakeKFP()
    res = _cli(["upload", "--package", str(COMPILED)], monkeypatch, fake)
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["version"] == "git-0123456789ab" and json.loads(res.output)["created"]
    res = _cli(["upload", "--package", str(COMPILED)], monkeypatch, fake)
    assert json.loads(res.output)["created"] is False
    res = _cli(["upload", "--package", str(tmp_path / "nope.yaml")], monkeypatch, fake)
    assert res.exit_code != 0 and "not found" in res.output
    res = _cli(["run", "--package", str(COMPILED), "--param", "shards"], monkeypatch, fake)
    assert res.exit_code != 0 and "name=value" in res.output


def test_pipeline_group_registers_on_the_main_cli():
    from typer.main import get_command

    from mpa.cli import app

    assert "compile" in get_command(app).commands["pipeline"].commands


@pytest.mark.parametrize("name", ["cpu-dev", "h100"])
def test_example_settings_compile(name, tmp_path):
    from mpa.orchestrate.kubeflow.settings import load_settings

    settings = load_settings(ROOT / "pipelines" / "settings" / f"{name}.yaml")
    pipeline, k8s = _load(kc.compile_pipeline(tmp_path / "p.yaml", settings))
    containers = _containers(pipeline)
    if name == "cpu-dev":
        assert all("accelerator" not in c["resources"] for c in containers.values())
        assert all("mpa-cpu" in c["image"] for c in containers.values())
        assert all("tolerations" not in ex and "pvcMount" not in ex for ex in k8s.values())
    else:
        for ex in ("exec-annotate", "exec-identify", "exec-level"):
            assert k8s[ex]["nodeSelector"]["labels"]["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
        assert containers["exec-level"]["resources"]["resourceMemoryLimit"] == "160Gi"


def test_compiled_spec_loads_as_a_kfp_component():
    from kfp import components

    comp = components.load_component_from_file(str(COMPILED))
    assert comp.name == "mpa"
    assert set(comp.component_spec.inputs) == set(PARAM_FIELDS) | PIPELINE_ONLY
