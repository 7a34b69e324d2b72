"""What the compiled spec asks of a cluster, read as strictly as a KFP >= 2.15 backend reads it
(``spec_rules``): for the committed spec and for a compile with every shipped settings file."""

from __future__ import annotations

import functools
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("kfp")
pytest.importorskip("kfp.kubernetes")

from mpa.orchestrate.kubeflow.settings import (  # noqa: E402
    DEFAULT_CPU_IMAGE,
    DEFAULT_GPU_IMAGE,
    S3_STAGES,
    load_settings,
    settings_from_dict,
)
from mpa_kfp.pipelines.training.mpa.pipeline import COMPILED, SETTINGS_DIR, compile_pipeline  # noqa: E402

from . import spec_rules as rules  # noqa: E402

ROOT = Path(__file__).resolve().parents[4]
MANIFESTS = ROOT / "manifests"
SETTINGS = [None, *sorted(SETTINGS_DIR.glob("*.yaml"))]


def _docs(path: Path) -> tuple[dict, dict]:
    spec, platform = list(yaml.safe_load_all(path.read_text()))
    return spec, platform


@pytest.fixture(scope="module", params=SETTINGS, ids=lambda p: "committed" if p is None else p.stem)
def compiled(request, tmp_path_factory):
    """``(settings, spec, platform)``: the committed spec (default settings) or a fresh compile."""
    if request.param is None:
        return load_settings(None), *_docs(COMPILED)
    settings = load_settings(request.param)
    path = compile_pipeline(tmp_path_factory.mktemp("c") / "p.yaml", settings)
    return settings, *_docs(path)


@functools.cache
def _rendered(overlay: str) -> list[dict]:
    """``kubectl kustomize manifests/overlays/<overlay>``."""
    text = subprocess.run(["kubectl", "kustomize", str(MANIFESTS / "overlays" / overlay)], capture_output=True,
                          text=True, check=True).stdout
    return [d for d in yaml.safe_load_all(text) if d]


@pytest.fixture(scope="module")
def cluster() -> dict[str, dict]:
    """What each overlay deploys (``kubectl kustomize``) plus the Secret templates (never applied by
    an overlay: created by hand from manifests/secrets/)."""
    secrets = {}
    for f in (MANIFESTS / "secrets").glob("*.yaml"):
        doc = yaml.safe_load(f.read_text())
        secrets[doc["metadata"]["name"]] = set(doc.get("stringData") or {}) | set(doc.get("data") or {})
    out = {}
    for overlay in sorted((MANIFESTS / "overlays").iterdir()):
        docs = _rendered(overlay.name)
        out[overlay.name] = {
            "Secret": secrets,
            "ConfigMap": {d["metadata"]["name"]: set(d.get("data") or {}) for d in docs if d["kind"] == "ConfigMap"},
            "PersistentVolumeClaim": {d["metadata"]["name"]: set() for d in docs
                                      if d["kind"] == "PersistentVolumeClaim"},
            "ServiceAccount": {d["metadata"]["name"]: set() for d in docs if d["kind"] == "ServiceAccount"},
        }
    return out


def skaffold_images() -> set[str]:
    """Every image skaffold.yaml builds, in any profile (read now: image names may change)."""
    built = set()
    for doc in yaml.safe_load_all((ROOT / "skaffold.yaml").read_text()):
        for section in [doc, *doc.get("profiles", [])]:
            built |= {a["image"] for a in section.get("build", {}).get("artifacts", [])}
    return built


def test_parameter_types_agree_along_every_edge(compiled):
    _, spec, _ = compiled
    assert rules.type_problems(spec) == []


def test_loop_items_are_integers(compiled):
    _, spec, _ = compiled
    [loop] = [t for _, _, dag in rules.dags(spec) for t in dag.get("tasks", {}).values() if "parameterIterator" in t]
    comp = spec["components"][loop["componentRef"]["name"]]
    item = loop["parameterIterator"]["itemInput"]
    assert comp["inputDefinitions"]["parameters"][item]["parameterType"] == "NUMBER_INTEGER"


def test_collected_and_if_references_resolve(compiled):
    _, spec, _ = compiled
    assert rules.reference_problems(spec) == []


def test_every_task_has_a_timeout_and_no_retry_caps_it(compiled):
    _, spec, platform = compiled
    assert rules.retry_problems(spec, platform) == []


def test_secrets_config_maps_and_pvcs_exist_in_every_overlay(compiled, cluster):
    _, spec, platform = compiled
    for overlay, available in cluster.items():
        assert rules.resource_problems(platform, available, f"manifests/overlays/{overlay}", spec) == []


def test_the_launcher_stores_artifacts_in_the_object_store_the_steps_use():
    """Every artifact (each round's checkpoint included) goes through the launcher's S3 provider: its endpoint
    is the mpa-config object store, fully qualified (pipeline pods run in the KFP namespace)."""
    for overlay in sorted(p.name for p in (MANIFESTS / "overlays").iterdir()):
        maps = {d["metadata"]["name"]: d["data"] for d in _rendered(overlay) if d["kind"] == "ConfigMap"}
        s3 = yaml.safe_load(maps["kfp-launcher"]["providers"])["s3"]["default"]
        assert maps["kfp-launcher"]["defaultPipelineRoot"].startswith("s3://"), overlay
        assert "http://" + s3["endpoint"] == maps["mpa-config"]["AWS_ENDPOINT_URL"], overlay
        assert s3["endpoint"].split(":")[0].endswith(".svc.cluster.local"), overlay


def test_every_image_is_built_by_skaffold(compiled):
    _, spec, _ = compiled
    assert rules.image_problems(spec, skaffold_images()) == []


def test_gpus_only_where_a_model_runs_in_the_pod(compiled):
    settings, spec, platform = compiled
    assert rules.gpu_problems(spec, platform, settings.runs_model) == []


def test_gpu_pods_get_shm_and_training_a_size_limited_scratch_dir(compiled):
    settings, spec, platform = compiled
    executors = rules.platform_executors(platform)
    for label, ex in spec["deploymentSpec"]["executors"].items():
        k8s = executors[label]
        stage = k8s["podMetadata"]["labels"]["mpa/stage"]
        if "accelerator" in ex["container"].get("resources", {}):
            assert {"mountPath": "/dev/shm", "medium": "Memory", "sizeLimit": settings.stage(stage).shm_size,
                    "volumeName": "dshm"} in k8s.get("emptyDirMounts", []), label
        if stage in ("level", "round"):  # an emptyDir: writable by the non-root user on any node
            assert {"mountPath": settings.scratch_mount, "sizeLimit": settings.stage(stage).scratch_size,
                    "volumeName": "scratch"} in k8s["emptyDirMounts"], label
            assert {"name": "MPA_SCRATCH", "value": settings.scratch_mount} in ex["container"]["env"]


MODEL_CACHE = {"mpa-model-cache": "MPA_MODEL_CACHE"}  # the PVC with a prepare path: steps.use_model_cache falls back


def test_every_volume_a_pod_writes_is_writable_by_its_user(compiled):
    _, spec, platform = compiled
    assert rules.volume_problems(spec, platform, MODEL_CACHE) == []


def test_rounds_not_asked_for_start_no_pod(compiled):
    _, spec, _ = compiled
    assert rules.round_problems(spec) == []


def test_optional_run_parameters_never_reach_a_sub_dag_input_that_refuses_null(compiled):
    _, spec, _ = compiled
    assert rules.nullable_input_problems(spec) == []


def test_nothing_run_specific_enters_a_cache_key(compiled):
    _, spec, _ = compiled
    assert rules.cache_key_problems(spec) == []


@pytest.mark.parametrize("path", SETTINGS, ids=lambda p: "defaults" if p is None else p.stem)
def test_the_spec_runs_exactly_the_images_the_compile_was_given(path, tmp_path):
    """Images by digest, as skaffold reports them: every task and the per-run teacher server run those."""
    gpu, cpu = "registry.example/mpa/mpa-gpu@sha256:" + "a" * 64, "registry.example/mpa/mpa-cpu@sha256:" + "b" * 64
    data = yaml.safe_load(path.read_text()) if path else {}
    settings = settings_from_dict({**data, "gpu_image": gpu, "cpu_image": cpu}, str(path))
    spec, _ = _docs(compile_pipeline(tmp_path / "p.yaml", settings))
    assert rules.image_given_problems(spec, gpu, cpu) == []


def test_the_committed_spec_runs_the_release_images():
    spec, _ = _docs(COMPILED)
    assert rules.image_given_problems(spec, DEFAULT_GPU_IMAGE, DEFAULT_CPU_IMAGE) == []


def test_s3_credentials_only_where_a_step_reads_s3(compiled):
    _, _, platform = compiled
    for label, ex in rules.platform_executors(platform).items():
        stage = ex["podMetadata"]["labels"]["mpa/stage"]
        has = any(s["secretName"] == "mpa-s3" for s in ex.get("secretAsEnv", []))
        assert has == (stage in S3_STAGES), label


def test_exit_tasks_wait_for_their_group(compiled):
    _, spec, _ = compiled
    assert rules.exit_handler_problems(spec) == []


def test_a_teacher_server_is_deleted_after_merge_and_whatever_happens_and_feeds_only_pa_pi(compiled):
    settings, spec, platform = compiled
    assert rules.teacher_server_problems(spec, platform) == []
    assert len(rules.teacher_servers(spec)) == int(settings.teacher_server.enabled)


def _ephemeral(tmp_path) -> tuple[Any, dict, dict]:
    settings = load_settings(SETTINGS_DIR / "ephemeral-teacher.yaml")
    return settings, *_docs(compile_pipeline(tmp_path / "p.yaml", settings))


def test_prepare_knows_the_teacher_server_starts_after_it(tmp_path):
    """prepare's preflight skips the teacher only when the pipeline starts a server per run (it does not exist
    yet when prepare runs): the compiled pipeline says so with MPA_TEACHER_SERVER=1, and only then."""
    from mpa.orchestrate.kubeflow.steps import TEACHER_SERVER_ENV

    _, spec, _ = _ephemeral(tmp_path)
    assert rules._executor_env(spec, "exec-prepare").get(TEACHER_SERVER_ENV) == "1"
    default, _ = _docs(COMPILED)
    assert TEACHER_SERVER_ENV not in rules._executor_env(default, "exec-prepare")


def test_the_teacher_server_pod_is_small_and_its_deployment_holds_the_gpu(tmp_path):
    """The task pod only talks to the API server (no GPU, CPU image); the Deployment it creates from the
    compiled settings asks for the GPU, on GPU nodes, with the GPU image."""
    from mpa.orchestrate.kubeflow.teacher_server import build_objects

    settings, spec, platform = _ephemeral(tmp_path)
    executors = spec["deploymentSpec"]["executors"]
    for label in ("exec-teacher-server", "exec-teacher-cleanup"):
        container = executors[label]["container"]
        assert "accelerator" not in container["resources"] and "mpa-cpu" in container["image"], label
        assert container["resources"]["resourceMemoryLimit"] == "512Mi", label
        k8s = rules.platform_executors(platform)[label]
        assert "nodeSelector" not in k8s and "tolerations" not in k8s and "pvcMount" not in k8s, label
    [server] = rules.teacher_servers(spec)
    run_id = "0b8e6f7a-1c2d-4e5f-8a9b-0c1d2e3f4a5b"
    deployment, _ = build_objects(json.dumps(server), run_id, "Qwen/Qwen2-VL-7B-Instruct", "mpa")
    pod = deployment.spec.template.spec
    assert pod.containers[0].resources.limits["nvidia.com/gpu"] == "1" and "mpa-gpu" in pod.containers[0].image
    assert pod.node_selector == {"nvidia.com/gpu.present": "true"}
    assert [t.key for t in pod.tolerations] == ["nvidia.com/gpu"]
    assert server["image"] == settings.gpu_image  # follows the pipeline's GPU image unless stated


def test_an_ephemeral_teacher_takes_four_run_parameters_away_and_needs_teacher_model(tmp_path):
    from mpa_kfp.pipelines.training.mpa.pipeline import RUN_PARAMETERS, SERVED_TEACHER

    _, spec, _ = _ephemeral(tmp_path)
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    assert set(inputs) == {p.name for p in RUN_PARAMETERS} - set(SERVED_TEACHER)
    assert not inputs["teacher_model"].get("isOptional") and "defaultValue" not in inputs["teacher_model"]
    assert "server loads it" in inputs["teacher_model"]["description"]
    root = spec["root"]["dag"]["tasks"]
    group = spec["components"]["comp-exit-handler-1"]["dag"]["tasks"]
    assert root["prepare"]["inputs"]["parameters"]["teacher_model"] == {"componentInputParameter": "teacher_model"}
    assert root["exit-handler-1"]["inputs"]["parameters"]["pipelinechannel--teacher_model"] == \
        {"componentInputParameter": "teacher_model"}  # one model for prepare and the server
    assert group["teacher-server"]["inputs"]["parameters"]["model"]["componentInputParameter"] == \
        "pipelinechannel--teacher_model"
    assert root["exit-handler-1"]["dependentTasks"] == ["prepare"]  # a bad config holds no GPU
    prepare = spec["deploymentSpec"]["executors"]["exec-prepare"]["container"]
    assert {"name": "MPA_TEACHER_IN_POD", "value": "0"} in prepare["env"]  # prepare accepts the openai backend


def test_annotate_is_a_cpu_pod_when_the_teacher_is_a_server(tmp_path):
    settings = load_settings(SETTINGS_DIR / "shared-teacher.yaml")
    spec, platform = _docs(compile_pipeline(tmp_path / "p.yaml", settings))
    ann = spec["deploymentSpec"]["executors"]["exec-annotate"]["container"]
    assert "accelerator" not in ann["resources"] and "mpa-cpu" in ann["image"]
    assert "accelerator" in spec["deploymentSpec"]["executors"]["exec-identify"]["container"]["resources"]
    prepare = spec["deploymentSpec"]["executors"]["exec-prepare"]["container"]
    assert {"name": "MPA_TEACHER_IN_POD", "value": "0"} in prepare["env"]  # prepare refuses a teacher in the pod


def test_the_rules_catch_what_a_backend_rejects(tmp_path):
    """Each rule finds the problem it is for (a spec broken on purpose, one problem per rule)."""
    spec, platform = _docs(COMPILED)
    loop_name, loop = next((k, t) for k, t in spec["root"]["dag"]["tasks"].items() if "parameterIterator" in t)
    comp = spec["components"][loop["componentRef"]["name"]]
    comp["inputDefinitions"]["parameters"][loop["parameterIterator"]["itemInput"]]["parameterType"] = "STRING"
    assert any("declared NUMBER_INTEGER, gets STRING" in p for p in rules.type_problems(spec))
    loop["taskInfo"]["name"] = "shards"  # what ParallelFor(name="shards") compiles to
    assert any("the driver finds no producer" in p for p in rules.reference_problems(spec))
    spec["root"]["dag"]["tasks"]["merge"]["inputs"]["artifacts"]["shards"]["taskOutputArtifact"]["producerTask"] = "x"
    assert any("producer task 'x'" in p for p in rules.type_problems(spec))
    task = comp["dag"]["tasks"]["annotate"]
    task["retryPolicy"]["backoffMaxDuration"] = "3600s"  # the SDK's default
    assert any("annotate: backoffMaxDuration 3600s caps" in p for p in rules.retry_problems(spec, platform))
    ex = rules.platform_executors(platform)["exec-level"]
    ex["secretAsEnv"].append({"secretName": "nope", "keyToEnv": [{"secretKey": "K", "envVar": "K"}]})
    assert rules.resource_problems(platform, {"Secret": {}, "ConfigMap": {}, "PersistentVolumeClaim": {}}, "x")
    assert rules.image_problems(spec, {"other"})
    assert rules.gpu_problems(spec, platform, lambda stage: False)


def test_the_teacher_server_rules_catch_a_leaked_or_unused_server(tmp_path):
    """A spec compiled with an ephemeral teacher, broken on purpose one way at a time."""
    import copy

    _, good, platform = _ephemeral(tmp_path)
    assert rules.teacher_server_problems(good, platform) == [] and rules.exit_handler_problems(good) == []

    def broken(edit) -> tuple[dict, list[str]]:
        spec = copy.deepcopy(good)
        edit(spec["root"]["dag"]["tasks"], spec["components"]["comp-exit-handler-1"]["dag"]["tasks"])
        return spec, rules.teacher_server_problems(spec, platform) + rules.exit_handler_problems(spec)

    def caching_on(root, group):
        root["teacher-cleanup"]["cachingOptions"] = {"enableCache": True}
        group["teacher-server"]["cachingOptions"] = {"enableCache": True}

    _, found = broken(caching_on)
    assert any("served from the cache" in p for p in found) and any("delete nothing" in p for p in found)
    _, found = broken(lambda root, group: root["teacher-cleanup"]["inputs"]["parameters"]["run_id"]
                      ["runtimeValue"].update(constant="another-run"))
    assert any("teacher_cleanup deletes run 'another-run'" in p for p in found)
    _, found = broken(lambda root, group: root["teacher-cleanup"].update(dependentTasks=[]))
    assert any("not inside an exit handler" in p for p in found) and any("waits for nothing" in p for p in found)
    early = next(k for k, t in good["components"]["comp-exit-handler-1"]["dag"]["tasks"].items()
                 if t["taskInfo"]["name"] == "teacher-cleanup-after-merge")
    _, found = broken(lambda root, group: group.pop(early))
    assert any("no teacher_cleanup task waits for merge" in p for p in found)
    _, found = broken(lambda root, group: group["level"]["inputs"].setdefault("parameters", {}).update(
        url={"taskOutputParameter": {"producerTask": "teacher-server", "outputParameterKey": "Output"}}))
    assert any("level takes the server's URL" in p for p in found)
    loop = next(k for k, t in good["components"]["comp-exit-handler-1"]["dag"]["tasks"].items()
                if "parameterIterator" in t)
    _, found = broken(lambda root, group: group.pop(loop))
    assert any("do not take the server's URL as teacher_url" in p for p in found)
    loop_body = good["components"][good["components"]["comp-exit-handler-1"]["dag"]["tasks"][loop]["componentRef"]
                                   ["name"]]["dag"]["tasks"]
    pa_inputs = loop_body["annotate"]["inputs"]["parameters"]
    saved = dict(pa_inputs)
    pa_inputs.pop("teacher_server")
    pa_inputs.pop("teacher_model")
    found = rules.teacher_server_problems(good, platform)
    assert any("annotate does not get the server's settings as teacher_server" in p for p in found)
    assert any("annotate does not get teacher_model" in p for p in found)
    pa_inputs.update(saved)
    no_env = copy.deepcopy(platform)
    rules.platform_executors(no_env)["exec-identify"].pop("fieldPathAsEnv")
    assert any("exec-identify has no MPA_RUN_ID" in p for p in rules.teacher_server_problems(good, no_env))
    assert rules.teacher_server_problems(good, platform) == []
    _, found = broken(lambda root, group: root["prepare"]["inputs"]["parameters"].update(
        teacher_openai_base_url={"componentInputParameter": "teacher_model"}))
    assert any("prepare takes teacher_openai_base_url" in p for p in found)
    _, found = broken(lambda root, group: root["prepare"]["inputs"]["parameters"]["teacher_backend"]
                      ["runtimeValue"].update(constant="hf"))
    assert any("not openai" in p for p in found)
    _, found = broken(lambda root, group: root["prepare"]["inputs"]["parameters"].pop(
        "teacher_openai_allow_plain_http"))
    assert any("teacher_openai_allow_plain_http" in p for p in found)
    spec, _ = broken(lambda root, group: None)
    constant = spec["components"]["comp-exit-handler-1"]["dag"]["tasks"]["teacher-server"]["inputs"]["parameters"][
        "server"]["runtimeValue"]
    server = json.loads(constant["constant"])
    server.update(model_cache_pvc="nope", api_key_secret="missing", image="elsewhere/vllm:1")
    constant["constant"] = json.dumps(server)
    available = {"Secret": {"mpa-hf": {"HF_TOKEN"}}, "ConfigMap": {"mpa-config": {"AWS_ENDPOINT_URL"}},
                 "PersistentVolumeClaim": {"mpa-model-cache": set()}, "ServiceAccount": {"mpa-services": set()}}
    found = rules.resource_problems({}, available, "x", spec)
    assert found == ["Secret missing is not in x", "PersistentVolumeClaim nope is not in x"]
    assert rules.image_problems(spec, {"mpa-cpu", "mpa-gpu"}) == [
        "the teacher server runs elsewhere/vllm:1, which skaffold.yaml does not build (mpa-cpu, mpa-gpu)"]
    assert rules.image_given_problems(spec, DEFAULT_GPU_IMAGE, DEFAULT_CPU_IMAGE) == [
        f"the teacher server runs elsewhere/vllm:1, not the image the compile was given ({DEFAULT_GPU_IMAGE})"]


BEFORE = Path(__file__).parent / "fixtures"  # the committed spec and the ephemeral-teacher compile before issue 19


def test_the_new_rules_fail_on_the_specs_before_issue_19():
    """What would have stopped or overcharged the first real run, found by the rules on the specs as they were
    (``fixtures/*-before-issue-19.yaml``): the default spec and the ephemeral-teacher compile."""
    for name in ("pipeline-before-issue-19.yaml", "ephemeral-teacher-before-issue-19.yaml"):
        spec, platform = _docs(BEFORE / name)
        volumes = rules.volume_problems(spec, platform, MODEL_CACHE)
        assert {p.split(":")[0] for p in volumes} == {"exec-level", "exec-mpa-round", "exec-mpa-round-2"}, name
        assert all("generic ephemeral volume 'scratch'" in p for p in volumes)
        found = rules.round_problems(spec)
        assert "mpa-round (round 2) starts a GPU pod when the run asks for rounds=1" in found, name
        assert "mpa-round-2 (round 3) starts a GPU pod when the run asks for rounds=2" in found, name
    spec, platform = _docs(BEFORE / "pipeline-before-issue-19.yaml")
    assert rules.nullable_input_problems(spec) == [] and rules.cache_key_problems(spec) == []
    spec, platform = _docs(BEFORE / "ephemeral-teacher-before-issue-19.yaml")
    nulls = rules.nullable_input_problems(spec)
    assert "root/exit-handler-1: sub-DAG input 'pipelinechannel--rounds' gets an optional run parameter that is null " \
        "when unset, and is not optional: the driver stops the run" in nulls
    assert len(nulls) == 16  # every optional run parameter without a default that the group took
    assert rules.cache_key_problems(spec) == [
        "comp-exit-handler-1/prepare: ['teacher_openai_base_url'] come from other tasks, so the run spec (and every "
        "later cache key) depends on them"]
    teacher = rules.teacher_server_problems(spec, platform)
    assert any("no teacher_cleanup task waits for merge" in p for p in teacher)
    assert any("prepare takes teacher_openai_base_url" in p for p in teacher)
    assert any("do not take the server's URL as teacher_url" in p for p in teacher)  # it went through prepare
    # the images the old CLI compiled with --gpu-image X: the teacher server kept the default tag
    server = rules.teacher_servers(spec)[0]
    assert rules.image_given_problems(spec, "reg/mpa-gpu@sha256:1", "reg/mpa-cpu@sha256:2", None) and \
        server["image"] == DEFAULT_GPU_IMAGE


def test_the_volume_rule_wants_a_prepare_path_for_every_pvc(tmp_path):
    spec, platform = _docs(COMPILED)
    assert rules.volume_problems(spec, platform, {}) and all(
        "has no prepare path" in p for p in rules.volume_problems(spec, platform, {}))
    ex = rules.platform_executors(platform)["exec-level"]
    ex["emptyDirMounts"].append({"volumeName": "x", "mountPath": "/x"})
    assert "exec-level: emptyDir 'x' has no size limit" in rules.volume_problems(spec, platform, MODEL_CACHE)
    for e in spec["deploymentSpec"]["executors"]["exec-level"]["container"]["env"]:
        if e["name"] == "MPA_MODEL_CACHE":
            e["value"] = "/elsewhere"
    assert any("the code's fallback for an unwritable volume never sees it" in p
               for p in rules.volume_problems(spec, platform, MODEL_CACHE))


def test_a_sub_dag_input_fed_by_an_optional_run_parameter_must_be_optional(tmp_path):
    _, spec, _ = _ephemeral(tmp_path)
    group = spec["root"]["dag"]["tasks"]["exit-handler-1"]
    group["inputs"]["parameters"]["pipelinechannel--seed"] = {"componentInputParameter": "seed"}
    spec["components"]["comp-exit-handler-1"]["inputDefinitions"]["parameters"]["pipelinechannel--seed"] = {
        "parameterType": "NUMBER_INTEGER"}
    assert rules.nullable_input_problems(spec) == [
        "root/exit-handler-1: sub-DAG input 'pipelinechannel--seed' gets an optional run parameter that is null when "
        "unset, and is not optional: the driver stops the run"]
    spec["components"]["comp-exit-handler-1"]["inputDefinitions"]["parameters"]["pipelinechannel--seed"][
        "isOptional"] = True
    assert rules.nullable_input_problems(spec) == []
