"""The Kubeflow side of the library and the house it lives in: run parameters → RunConfig,
compile-time settings, the client logic (version names, run arguments, following a run) against a
recording fake of the kfp client, the CLI, every metadata.yaml against one schema, and the wheel
(every component and pipeline folder in it, and an installed wheel compiles the committed spec).
What the compiled spec asks of a cluster: pipelines/training/mpa/tests/."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

pytest.importorskip("kfp")
pytest.importorskip("kfp.kubernetes")

from mpa.config import ConfigError  # noqa: E402
from mpa.orchestrate.kubeflow import client as kc  # noqa: E402
from mpa.orchestrate.kubeflow.params import config_field, run_config  # noqa: E402
from mpa.orchestrate.kubeflow.settings import (  # noqa: E402
    MODEL_STAGES,
    STAGES,
    PipelineSettings,
    SettingsError,
    load_settings,
    settings_from_dict,
)
from mpa_kfp.pipelines.training.mpa.pipeline import COMPILED, PARAMS_DIR, compile_pipeline  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
COMPONENT_DIRS = sorted(p.parent for p in (ROOT / "components").glob("*/*/component.py"))
PIPELINE_DIRS = sorted(p.parent for p in (ROOT / "pipelines").glob("*/*/pipeline.py"))
SCHEMA = ROOT / "components" / "metadata.schema.json"


def _load(path: Path) -> tuple[dict, dict]:
    docs = list(yaml.safe_load_all(path.read_text()))
    return docs[0], docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


BASE = {
    "teacher": {"model": "/m/t"},
    "student": {"model": "/m/s"},
    "data": {"images": "s3://b/img/"},
    "evaluate": {"benchmark": "textvqa", "annotations": "s3://b/val.json"},
}


# --- the house --------------------------------------------------------------------------------


def test_every_component_and_pipeline_folder_is_complete():
    assert {d.name for d in COMPONENT_DIRS} >= {"prepare", "annotate", "identify", "merge", "level",
                                               "evaluate_base", "evaluate_checkpoint", "gate", "register"}
    for d in COMPONENT_DIRS + PIPELINE_DIRS:
        for name in ("metadata.yaml", "README.md", "__init__.py", "tests"):
            assert (d / name).exists(), f"{d.relative_to(ROOT)} has no {name}"
        assert list((d / "tests").glob("test_*.py")), f"{d.relative_to(ROOT)}/tests has no tests"
    for d in PIPELINE_DIRS:
        assert (d / "pipeline.yaml").is_file() and list((d / "settings").glob("*.yaml"))


def test_every_metadata_yaml_follows_the_schema():
    import jsonschema

    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    files = [*sorted((ROOT / "components").glob("*/*/metadata.yaml")),
             *sorted((ROOT / "pipelines").glob("*/*/metadata.yaml"))]
    assert len(files) == len(COMPONENT_DIRS) + len(PIPELINE_DIRS)
    for f in files:
        meta = yaml.safe_load(f.read_text())
        errors = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(meta)]
        assert not errors, f"{f.relative_to(ROOT)}: {errors}"
        assert meta["name"] == f.parent.name
        kfp = {d["name"]: d["version"] for d in meta["dependencies"]["kubeflow"]}
        assert kfp["Pipelines"] == ">=2.15.0", f"{f.relative_to(ROOT)}: the pipeline needs a KFP >= 2.15 backend"
    bad = {**yaml.safe_load(files[0].read_text()), "stability": "experimental"}
    assert list(validator.iter_errors(bad))  # the schema does reject


def test_component_readmes_name_every_input_and_output():
    import importlib

    for d in COMPONENT_DIRS:
        module = importlib.import_module(f"mpa_kfp.components.{d.parent.name}.{d.name}")
        spec = getattr(module, d.name).component_spec
        readme = (d / "README.md").read_text()
        for name in [*(spec.inputs or {}), *(spec.outputs or {})]:
            assert f"`{name}`" in readme, f"{d.relative_to(ROOT)}/README.md does not describe {name}"


def test_pyproject_lists_every_package():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    on_disk = {".".join(p.parent.relative_to(ROOT / "src").parts) for p in (ROOT / "src").rglob("__init__.py")}
    for folder in ("components", "pipelines"):
        on_disk |= {"mpa_kfp." + ".".join(p.parent.relative_to(ROOT).parts)
                    for p in (ROOT / folder).rglob("__init__.py") if "tests" not in p.parts}
    assert listed == on_disk, f"missing: {sorted(on_disk - listed)}; extra: {sorted(listed - on_disk)}"
    assert cfg["package-dir"] == {"": "src", "mpa_kfp.components": "components", "mpa_kfp.pipelines": "pipelines"}


@pytest.mark.timeout(300)
def test_the_wheel_ships_every_component_and_an_installed_wheel_compiles_the_pipeline(tmp_path):
    """A real ``pip wheel . --no-deps`` of the tracked files; then the wheel installed on its own
    (``--target``) compiles the same spec as the committed one."""
    src = tmp_path / "src"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    for rel in filter(None, (f.decode() for f in files)):
        if (ROOT / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, src / rel)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", str(src), "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist")],
                   check=True, capture_output=True)
    [wheel] = (tmp_path / "dist").glob("mpa-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for d in COMPONENT_DIRS + PIPELINE_DIRS:
        rel = "mpa_kfp/" + d.relative_to(ROOT).as_posix()
        for f in ("component.py", "pipeline.py", "pipeline.yaml", "metadata.yaml", "README.md"):
            if (d / f).exists():
                assert f"{rel}/{f}" in names, f"{rel}/{f} is not in the wheel"
        for sub in ("settings", "params"):
            for f in (d / sub).glob("*.yaml"):
                assert f"{rel}/{sub}/{f.name}" in names
    assert not any("/tests/" in n for n in names)
    target = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True, capture_output=True)
    out = tmp_path / "compiled.yaml"
    code = (
        "import mpa, mpa_kfp.pipelines.training.mpa.pipeline as p, sys;"
        f"assert mpa.__file__.startswith({str(target)!r}) and p.__file__.startswith({str(target)!r}), p.__file__;"
        f"p.compile_pipeline({str(out)!r})"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(target), "HOME": str(tmp_path)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=tmp_path)
    assert out.read_text() == COMPILED.read_text()


# --- run parameters → RunConfig ---------------------------------------------------------------


def test_run_parameter_names_resolve_to_config_fields():
    assert config_field("teacher_model") == "teacher.model"
    assert config_field("data_max_images") == "data.max_images"
    assert config_field("tracking_promotion_margin") == "tracking.promotion_margin"
    assert config_field("teacher_openai_base_url") == "teacher.openai.base_url"
    assert config_field("seed") == "seed"
    with pytest.raises(ValueError, match="names no RunConfig fields"):
        config_field("min_improvement")


def test_run_config_is_the_config_with_the_parameters_that_are_set():
    cfg = run_config({**BASE, "train": {"epochs": 3.0}}, {"train_epochs": None, "identify_match": "anls",
                                                          "tracking_promotion_margin": 0.5, "seed": 3})
    assert cfg.train.epochs == 3.0  # None: the config's value stays
    assert cfg.identify.match == "anls" and cfg.tracking.promotion_margin == 0.5 and cfg.seed == 3
    assert cfg.data.max_images is None and cfg.train.learning_rate is None  # never 0 / "" for "unset"
    assert run_config(None, {"teacher_model": "/t", "student_model": "/s", "data_images": "/i"}).teacher.model == "/t"


def test_run_config_errors_name_the_input():
    with pytest.raises(ConfigError, match="identify.match"):
        run_config(BASE, {"identify_match": "fuzzy"})
    with pytest.raises(ConfigError, match="storage.secret_access_key: credentials never go in run parameters"):
        run_config({**BASE, "storage": {"secret_access_key": "x"}}, {})
    with pytest.raises(ConfigError, match="teacher.options.hf_token"):
        run_config({**BASE, "teacher": {"model": "/t", "options": {"hf_token": "x"}}}, {})
    with pytest.raises(ConfigError, match="must be a mapping"):
        run_config(["not", "a", "mapping"], {})  # type: ignore[arg-type]


# --- compile-time settings --------------------------------------------------------------------


def test_settings_override_resources_at_compile_time(tmp_path):
    settings = settings_from_dict(
        {
            "gpu_image": "registry.example/mpa-gpu@sha256:" + "a" * 64,
            "model_cache_pvc": None,
            "shard_parallelism": 3,
            "stages": {
                "annotate": {"accelerator_count": 2, "memory_limit": "80Gi",
                             "node_selector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}},
                "level": {"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "train"}],
                          "timeout_seconds": 7200},
            },
        }
    )
    pipeline, k8s = _load(compile_pipeline(tmp_path / "p.yaml", settings))
    ann = pipeline["deploymentSpec"]["executors"]["exec-annotate"]["container"]
    assert ann["resources"]["accelerator"]["resourceCount"] == "2" and ann["resources"]["resourceMemoryLimit"] == "80Gi"
    assert ann["resources"]["resourceCpuRequest"] == "4"  # untouched defaults survive the merge
    assert ann["image"].startswith("registry.example/mpa-gpu@sha256:")
    # a node selector given is the whole selector (sections merge, values replace)
    assert k8s["exec-annotate"]["nodeSelector"]["labels"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert k8s["exec-identify"]["nodeSelector"]["labels"] == {"nvidia.com/gpu.present": "true"}  # not stated
    assert k8s["exec-level"]["tolerations"] == [
        {"key": "dedicated", "operator": "Equal", "value": "train", "effect": "NoSchedule"}]
    assert int(k8s["exec-level"]["activeDeadlineSeconds"]) == 7200
    assert all("pvcMount" not in ex for ex in k8s.values())
    loop = next(t for t in pipeline["root"]["dag"]["tasks"].values() if "parameterIterator" in t)
    assert loop["iteratorPolicy"]["parallelismLimit"] == 3


def test_settings_sections_merge_and_values_replace():
    """Sections (stages, a stage, teacher_server) merge key by key; a mapping or list that is a value replaces
    the default whole, so an explicit empty mapping or list means none (cpu-dev.yaml's ``node_selector: {}``)."""
    defaults = PipelineSettings()
    s = settings_from_dict({"stages": {"level": {"node_selector": {}, "tolerations": [], "memory_limit": "80Gi"}},
                            "teacher_server": {"node_selector": {}, "gpus": 2}})
    level = s.stage("level")
    assert (level.node_selector, level.tolerations, level.memory_limit) == ({}, [], "80Gi")
    assert level.accelerator_count == 1 and level.scratch_size == defaults.stage("level").scratch_size
    assert s.stage("identify") == defaults.stage("identify")  # stages not named keep every default
    assert (s.teacher_server.node_selector, s.teacher_server.gpus) == ({}, 2)
    assert s.teacher_server.tolerations == defaults.teacher_server.tolerations
    s = settings_from_dict({"stages": {"level": {"node_selector": {"pool": "a100"}}}})
    assert s.stage("level").node_selector == {"pool": "a100"}


def test_cpu_dev_settings_place_no_pod_on_gpu_nodes(tmp_path):
    settings = load_settings(ROOT / "pipelines" / "training" / "mpa" / "settings" / "cpu-dev.yaml")
    assert all(not settings.stage(n).node_selector and not settings.stage(n).tolerations for n in STAGES)
    _, k8s = _load(compile_pipeline(tmp_path / "p.yaml", settings))
    assert not [label for label, ex in k8s.items() if "nodeSelector" in ex]


def test_images_given_at_compile_time_reach_the_teacher_server(tmp_path):
    """--gpu-image reaches the per-run teacher server's Deployment (its image follows gpu_image unless the
    settings file states one); --cpu-image reaches the CPU pods."""
    from typer.testing import CliRunner

    from mpa.cli.pipeline import app as pipeline_app

    ephemeral = ROOT / "pipelines" / "training" / "mpa" / "settings" / "ephemeral-teacher.yaml"
    s = load_settings(ephemeral, {"gpu_image": "reg.example/gpu:7", "cpu_image": "reg.example/cpu:7"})
    assert (s.gpu_image, s.teacher_server.image, s.cpu_image) == ("reg.example/gpu:7",) * 2 + ("reg.example/cpu:7",)
    stated = tmp_path / "stated.yaml"
    stated.write_text(ephemeral.read_text() + "  image: reg.example/vllm:1\n")
    assert load_settings(stated, {"gpu_image": "reg.example/gpu:7"}).teacher_server.image == "reg.example/vllm:1"

    out = tmp_path / "c.yaml"
    res = CliRunner().invoke(pipeline_app, ["compile", "--out", str(out), "--settings", str(ephemeral),
                                            "--gpu-image", "reg.example/gpu:7"])
    assert res.exit_code == 0, res.output
    spec, _ = _load(out)
    constants = [json.loads(v["runtimeValue"]["constant"]) for _, comp in _all_tasks(spec)
                 for k, v in comp.get("inputs", {}).get("parameters", {}).items()
                 if k == "server" and "runtimeValue" in v]
    assert constants and all(c["image"] == "reg.example/gpu:7" for c in constants), constants
    assert "ghcr.io/mpa-project/mpa-gpu" not in out.read_text()


def _all_tasks(spec: dict):
    for dag in [spec["root"]["dag"]] + [c["dag"] for c in spec.get("components", {}).values() if "dag" in c]:
        yield from dag.get("tasks", {}).items()


def test_settings_errors():
    with pytest.raises(SettingsError, match="unknown stages"):
        settings_from_dict({"stages": {"anotate": {}}})
    with pytest.raises(SettingsError, match="accelerator_count"):
        settings_from_dict({"stages": {"level": {"accelerator_count": -1}}})
    with pytest.raises(SettingsError, match="unknown stages"):
        settings_from_dict({"secrets": [{"name": "x", "env": {"a": "A"}, "stages": ["nope"]}]})
    with pytest.raises(SettingsError, match="stages.annotate requests a GPU but teacher_in_pod is false"):
        settings_from_dict({"teacher_in_pod": False, "stages": {"annotate": {"accelerator_count": 1}}})
    with pytest.raises(SettingsError, match="stages.merge requests a GPU but no model runs there"):
        settings_from_dict({"stages": {"merge": {"accelerator_count": 1}}})
    assert set(MODEL_STAGES) <= set(STAGES)


def test_teacher_placement_decides_annotates_pod():
    assert PipelineSettings().stage("annotate").accelerator_count == 1
    for s in (PipelineSettings(teacher_in_pod=False), settings_from_dict({"teacher_in_pod": False})):
        assert s.stage("annotate").accelerator_count == 0 and s.stage("annotate").image == "cpu"
        assert s.stage("identify").accelerator_count == 1 and not s.runs_model("annotate")


def test_retry_window_covers_every_attempt():
    res = PipelineSettings().stage("annotate")
    assert res.retries == 2
    assert res.retry_window_seconds() == 3 * res.timeout_seconds + 60 + 120


# --- client logic without a server ------------------------------------------------------------


def test_version_name_follows_git_revision_and_the_spec(tmp_path):
    pkg = tmp_path / "p.yaml"
    pkg.write_text("a: 1\n")
    clean = kc.version_name(pkg, ("0123456789ab", False))
    assert clean == f"git-0123456789ab-{kc.spec_digest(pkg)}"
    dirty = kc.version_name(pkg, ("0123456789ab", True))
    assert dirty.startswith("git-0123456789ab-dirty-")
    pkg.write_text("a: 2\n")  # another compile of the same commit (settings, images): another version
    assert kc.version_name(pkg, ("0123456789ab", False)) != clean
    assert kc.version_name(pkg, None).startswith("spec-")
    with pytest.raises(ValueError):
        kc.version_name(pkg, ("not a sha!", False))
    from mpa.provenance import git_revision

    rev = git_revision(ROOT)
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
    with pytest.warns(FutureWarning):  # constructing the client does not contact the server
        client = kc.make_client(kc.Connection(host="http://127.0.0.1:9", namespace="team-a", token="abc"))
    cfg = client._existing_config
    assert cfg.host == "http://127.0.0.1:9"
    assert cfg.api_key == {"authorization": "abc"} and cfg.api_key_prefix == {"authorization": "Bearer"}
    assert client.get_user_namespace() == "team-a"


class ApiError(Exception):
    def __init__(self, status):
        super().__init__(f"HTTP {status}")
        self.status = status


class FakeKFP:
    """Records calls; mimics the kfp.Client methods upload/run/wait use (shapes of kfp_server_api objects)."""

    def __init__(self, pipelines=None, states=("SUCCEEDED",)):
        self.pipelines = pipelines or {}
        self.calls: list[tuple] = []
        self.states = list(states)

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

    def terminate_run(self, run_id):
        self.calls.append(("terminate_run", run_id))

    def get_run(self, run_id):
        self.calls.append(("get_run", run_id))
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        if isinstance(state, Exception):
            raise state
        return SimpleNamespace(state=state)


def _wait(fake, timeout=100):
    now = [0.0]
    return kc.wait(fake, "r-1", timeout, poll_s=10, clock=lambda: now[0],
                   sleep=lambda s: now.__setitem__(0, now[0] + s))


def test_wait_stops_on_every_final_state_and_handles_errors():
    assert _wait(FakeKFP(states=["PENDING", "RUNNING", "SUCCEEDED"])) == "succeeded"
    assert _wait(FakeKFP(states=["RUNNING", "CANCELING", "CANCELED"])) == "canceled"  # not a wait until timeout
    assert _wait(FakeKFP(states=["RUNNING", ApiError(503), ApiError(502), "FAILED"])) == "failed"  # transient
    fake = FakeKFP(states=["RUNNING", ApiError(401)])
    with pytest.raises(kc.PipelineClientError, match=r"refused the token \(HTTP 401\).*mpa pipeline wait r-1"):
        _wait(fake)
    assert sum(c[0] == "get_run" for c in fake.calls) == 2  # no retry loop on a refused token
    with pytest.raises(kc.PipelineClientError, match="5 errors in a row"):
        _wait(FakeKFP(states=[ApiError(500)]))
    with pytest.raises(TimeoutError):
        _wait(FakeKFP(states=["RUNNING"]), timeout=30)


def test_upload_version_is_idempotent():
    client = FakeKFP()
    first = kc.upload_version(client, COMPILED, "mpa", "git-abc123-d1")
    assert first.created and [c[0] for c in client.calls] == ["upload_pipeline", "upload_pipeline_version"]
    again = kc.upload_version(client, COMPILED, "mpa", "git-abc123-d1")
    assert not again.created and again.version_id == first.version_id and len(client.calls) == 2
    other = kc.upload_version(client, COMPILED, "mpa", "git-abc123-d2")
    assert other.created and other.version_id != first.version_id


def test_run_arguments_take_a_run_config(tmp_path):
    p = tmp_path / "run.yaml"
    p.write_text(yaml.safe_dump(BASE))
    args = kc.run_arguments(COMPILED, p, {"teacher.batch_size": 16}, {"train_epochs": 2.0}, shards=8)
    assert args == {"config": {**BASE, "teacher": {"model": "/m/t", "batch_size": 16}}, "train_epochs": 2.0,
                    "shards": 8}
    with pytest.raises(kc.PipelineClientError, match="unknown run parameters \\['epochs'\\]"):
        kc.run_arguments(COMPILED, p, params={"epochs": 2})
    with pytest.raises(kc.PipelineClientError, match="--shards"):
        kc.run_arguments(COMPILED, p, params={"shards": 2})
    with pytest.raises(kc.PipelineClientError, match="credentials never go in run parameters"):
        kc.run_arguments(COMPILED, p, {"storage.secret_access_key": "x"})
    with pytest.raises(kc.PipelineClientError, match="train.epochs"):
        kc.run_arguments(COMPILED, p, {"train.epochs": "many"})
    with pytest.raises(kc.PipelineClientError, match="not found"):
        kc.run_arguments(COMPILED, tmp_path / "missing.yaml")


@pytest.mark.parametrize("path", sorted(PARAMS_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_params_files_are_valid_run_arguments(path):
    assert kc.run_arguments(COMPILED, path)["config"]


# --- the CLI ----------------------------------------------------------------------------------


def _cli(args, monkeypatch, fake):
    from typer.testing import CliRunner

    from mpa.cli.pipeline import app as pipeline_app

    monkeypatch.setattr(kc, "make_client", lambda conn: fake)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")  # no --host: the in-cluster client (the fake)
    monkeypatch.setattr("mpa.provenance.git_revision", lambda cwd=None: ("0123456789ab", False))
    monkeypatch.setattr(kc.time, "sleep", lambda s: None)
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
    level = pipeline["deploymentSpec"]["executors"]["exec-level"]["container"]
    assert level["resources"]["accelerator"]["resourceCount"] == "4" and level["image"] == "reg.example/gpu:1"
    assert json.loads(res.output)["compiled"] == str(out)


def test_cli_run_takes_a_run_config_waits_and_exits_nonzero_unless_it_succeeds(tmp_path, monkeypatch):
    params = tmp_path / "run.yaml"
    params.write_text(yaml.safe_dump(BASE))
    fake = FakeKFP(states=["RUNNING", "FAILED"])
    res = _cli(["run", "--package", str(COMPILED), "--params", str(params), "--param", "train_epochs=2",
                "--set", "train.lora=true", "--shards", "2", "--experiment", "ci", "--wait", "--timeout", "600"],
               monkeypatch, fake)
    assert res.exit_code == 1, res.output
    run = next(c[1] for c in fake.calls if c[0] == "run_pipeline")
    assert run["params"] == {"config": {**BASE, "train": {"lora": True}}, "train_epochs": 2, "shards": 2}
    version = f"git-0123456789ab-{kc.spec_digest(COMPILED)}"
    assert run["job_name"].startswith(f"mpa-{version}-") and ("upload_pipeline_version", version) in fake.calls
    assert ("create_experiment", "ci") in fake.calls
    res = _cli(["run", "--package", str(COMPILED), "--params", str(params), "--wait"], monkeypatch,
               FakeKFP(states=["CANCELED"]))
    assert res.exit_code == 1 and json.loads(res.output.strip().splitlines()[-1])["state"] == "canceled"
    res = _cli(["run", "--package", str(COMPILED), "--params", str(params), "--wait"], monkeypatch, FakeKFP())
    assert res.exit_code == 0 and json.loads(res.output.strip().splitlines()[-1])["state"] == "succeeded"


def test_stop_terminates_only_a_run_that_has_not_finished(monkeypatch):
    running = FakeKFP(states=["RUNNING"])
    res = _cli(["stop", "r-1"], monkeypatch, running)
    assert res.exit_code == 0 and json.loads(res.output)["state"] == "terminating"
    assert ("terminate_run", "r-1") in running.calls
    done = FakeKFP(states=["FAILED"])
    assert json.loads(_cli(["stop", "r-1"], monkeypatch, done).output)["state"] == "failed"
    assert not any(c[0] == "terminate_run" for c in done.calls)


def test_cli_wait_follows_a_run(monkeypatch):
    res = _cli(["wait", "r-9"], monkeypatch, FakeKFP(states=["RUNNING", "SUCCEEDED"]))
    assert res.exit_code == 0 and json.loads(res.output)["state"] == "succeeded"


def test_cli_upload_and_argument_errors(tmp_path, monkeypatch):
    fake = FakeKFP()
    res = _cli(["upload", "--package", str(COMPILED)], monkeypatch, fake)
    assert res.exit_code == 0 and json.loads(res.output)["created"], res.output
    assert json.loads(_cli(["upload", "--package", str(COMPILED)], monkeypatch, fake).output)["created"] is False
    res = _cli(["upload", "--package", str(tmp_path / "nope.yaml")], monkeypatch, fake)
    assert res.exit_code != 0 and "not found" in res.output
    res = _cli(["run", "--package", str(COMPILED), "--param", "shards"], monkeypatch, fake)
    assert res.exit_code != 0 and "--param expects a dotted setting" in res.output


def test_pipeline_group_registers_on_the_main_cli():
    from typer.main import get_command

    from mpa.cli import app

    assert {"compile", "upload", "run", "wait", "stop"} <= set(get_command(app).commands["pipeline"].commands)


def test_compiled_spec_loads_as_a_kfp_component():
    from kfp import components

    comp = components.load_component_from_file(str(COMPILED))
    assert comp.name == "mpa" and {"config", "shards", "teacher_model"} <= set(comp.component_spec.inputs)


def test_example_settings_compile(tmp_path):
    settings = load_settings(ROOT / "pipelines" / "training" / "mpa" / "settings" / "cpu-dev.yaml")
    pipeline, k8s = _load(compile_pipeline(tmp_path / "p.yaml", settings))
    containers = [ex["container"] for ex in pipeline["deploymentSpec"]["executors"].values()]
    assert all("accelerator" not in c["resources"] and "mpa-cpu" in c["image"] for c in containers)
    assert all("tolerations" not in ex and "pvcMount" not in ex and "nodeSelector" not in ex for ex in k8s.values())


# --- images: what skaffold pushed is what the spec names ---------------------------------------------


def _skaffold_build(tmp_path: Path, only: str | None = None) -> tuple[Path, dict[str, str]]:
    """What `skaffold build -p gpu --default-repo ghcr.io/acme --file-output build.json` writes: each
    artifact's name as skaffold.yaml spells it, and the pushed reference — rewritten into the default repo
    (ghcr.io is not a multi-level registry for skaffold, so the original name is escaped into one path
    component), tagged by the tag policy (the commit) and pinned by the digest the push returned."""
    tags = {
        "ghcr.io/mpa-project/mpa-cpu": "ghcr.io/acme/ghcr_io_mpa-project_mpa-cpu:4b78807@sha256:" + "1c" * 32,
        "ghcr.io/mpa-project/mpa-gpu": "ghcr.io/acme/ghcr_io_mpa-project_mpa-gpu:4b78807@sha256:" + "9f" * 32,
    }
    builds = [{"imageName": name, "tag": tag} for name, tag in tags.items() if only in (None, name.rsplit("/")[-1])]
    path = tmp_path / "build.json"
    path.write_text(json.dumps({"builds": builds}))
    return path, tags


def test_the_documented_compile_names_the_images_skaffold_pushed(tmp_path, monkeypatch):
    """docs/kubeflow.md's compile command, run as written on a realistic build output: every executor and
    the per-run teacher server name the pushed references, nothing names the unpushed defaults."""
    import shlex

    from typer.testing import CliRunner

    from mpa.cli.pipeline import app as pipeline_app

    doc = (ROOT / "docs" / "kubeflow.md").read_text()
    command = next(line for line in doc.replace("\\\n", " ").splitlines()
                   if line.startswith("mpa pipeline compile") and "--images-from" in line)
    args = shlex.split(command.split("#")[0])[2:]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pipelines").symlink_to(ROOT / "pipelines")
    _, tags = _skaffold_build(tmp_path)
    ephemeral = str(ROOT / "pipelines" / "training" / "mpa" / "settings" / "ephemeral-teacher.yaml")
    args[args.index("--settings") + 1] = ephemeral  # the documented h100.yaml, plus the teacher server
    res = CliRunner().invoke(pipeline_app, args)
    assert res.exit_code == 0, res.output
    out = tmp_path / args[args.index("--out") + 1]
    spec, _ = _load(out)
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == set(tags.values())
    servers = [json.loads(v["runtimeValue"]["constant"]) for _, t in _all_tasks(spec)
               for k, v in t.get("inputs", {}).get("parameters", {}).items() if k == "server"]
    assert servers and all(s["image"] == tags["ghcr.io/mpa-project/mpa-gpu"] for s in servers)
    assert "mpa-project/mpa-" not in out.read_text().replace("ghcr_io_mpa-project_mpa-", "")
    assert json.loads(res.output)["gpu_image"] == tags["ghcr.io/mpa-project/mpa-gpu"]


def test_images_from_a_partial_or_foreign_build_output(tmp_path):
    from mpa.orchestrate.kubeflow.settings import DEFAULT_GPU_IMAGE, images_from_build

    path, tags = _skaffold_build(tmp_path, only="mpa-cpu")  # skaffold build -b mpa-cpu
    assert images_from_build(path) == {"cpu_image": tags["ghcr.io/mpa-project/mpa-cpu"]}
    settings = load_settings(None, images_from_build(path))
    assert settings.gpu_image == DEFAULT_GPU_IMAGE and settings.cpu_image == tags["ghcr.io/mpa-project/mpa-cpu"]
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"builds": [{"imageName": "mpa-gpu", "tag": "mpa-gpu:abc"}]}))
    with pytest.raises(SettingsError, match=r"builds none of .*mpa-project/mpa-cpu.* \(it lists \['mpa-gpu'\]\)"):
        images_from_build(other)
    other.write_text("not json")
    with pytest.raises(SettingsError, match="not a skaffold build output .*skaffold build --file-output"):
        images_from_build(other)


# --- --no-cache: what the real kfp client sends --------------------------------------------------


def _recording_client(monkeypatch) -> tuple[object, list]:
    """A real kfp.Client (kfp 2.17) whose only network calls — create the experiment, create the run — are
    recorded instead of sent: what run_pipeline builds from its arguments is the client's own code."""
    with pytest.warns(FutureWarning):
        client = kc.make_client(kc.Connection(host="http://127.0.0.1:9", namespace="team-a", token="t"))
    sent: list = []
    monkeypatch.setattr(client, "create_experiment", lambda name, namespace=None: SimpleNamespace(experiment_id="e-1"))
    monkeypatch.setattr(client._run_api, "run_service_create_run",
                        lambda run: sent.append(run) or SimpleNamespace(run_id="r-1"))
    return client, sent


def _task_caching(spec: dict) -> dict[str, bool | None]:
    dags = [spec["root"]["dag"], *(c["dag"] for c in spec.get("components", {}).values() if "dag" in c)]
    return {name: (t.get("cachingOptions") or {}).get("enableCache") for d in dags for name, t in d["tasks"].items()}


def test_no_cache_turns_caching_off_in_every_task_the_backend_runs(monkeypatch):
    """The kfp client ignores enable_caching for a pipeline version id, and applies it only to the root DAG for a
    package: --no-cache sends the spec with every task's cache off, loop body and condition included."""
    uploaded = kc.Uploaded("p-1", "v-1", "git-0123456789ab-d1", created=False)
    client, sent = _recording_client(monkeypatch)
    assert kc.start_run(client, "ci", uploaded, {"shards": 2}, package=COMPILED, enable_caching=False) == "r-1"
    [run] = sent
    assert run.pipeline_version_reference is None and run.runtime_config.parameters == {"shards": 2}
    spec = run.pipeline_spec["pipeline_spec"]
    caching = _task_caching(spec)
    compiled = _task_caching(_load(COMPILED)[0])
    assert set(caching) == set(compiled) and {"annotate", "identify"} <= set(caching)  # the loop body too
    # protobuf drops a false enableCache: absent is off, as for register (compiled `cachingOptions: {}`)
    assert compiled["annotate"] is True and compiled["register"] is None and not any(caching.values()), caching
    assert run.pipeline_spec["platform_spec"]["platforms"]["kubernetes"]  # secrets, volumes, node selectors kept

    client, sent = _recording_client(monkeypatch)  # default and --cache: the uploaded version, as compiled
    for flag in (None, True):
        kc.start_run(client, "ci", uploaded, {}, package=COMPILED, enable_caching=flag)
    assert all(r.pipeline_spec is None and r.pipeline_version_reference.pipeline_version_id == "v-1" for r in sent)
    with pytest.raises(kc.PipelineClientError, match="needs the compiled package"):
        kc.start_run(client, "ci", uploaded, {}, enable_caching=False)


def test_cli_no_cache_reaches_the_run(tmp_path, monkeypatch):
    params = tmp_path / "run.yaml"
    params.write_text(yaml.safe_dump(BASE))
    fake = FakeKFP()
    res = _cli(["run", "--package", str(COMPILED), "--params", str(params), "--no-cache"], monkeypatch, fake)
    assert res.exit_code == 0, res.output
    run = next(c[1] for c in fake.calls if c[0] == "run_pipeline")
    assert run["enable_caching"] is False and run["pipeline_package_path"].endswith(".yaml")
    assert "version_id" not in run
