"""What the compiled spec asks of a cluster, read as strictly as a KFP >= 2.15 backend reads it
(``spec_rules``): for the committed spec and for a compile with every shipped settings file."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

pytest.importorskip("kfp")
pytest.importorskip("kfp.kubernetes")

from mpa.orchestrate.kubeflow.settings import S3_STAGES, load_settings  # noqa: E402
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
        text = subprocess.run(["kubectl", "kustomize", str(overlay)], capture_output=True, text=True, check=True).stdout
        docs = [d for d in yaml.safe_load_all(text) if d]
        out[overlay.name] = {
            "Secret": secrets,
            "ConfigMap": {d["metadata"]["name"]: set(d.get("data") or {}) for d in docs if d["kind"] == "ConfigMap"},
            "PersistentVolumeClaim": {d["metadata"]["name"]: set() for d in docs
                                      if d["kind"] == "PersistentVolumeClaim"},
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
    loop = next(t for t in spec["root"]["dag"]["tasks"].values() if "parameterIterator" in t)
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
    _, _, platform = compiled
    for overlay, available in cluster.items():
        assert rules.resource_problems(platform, available, f"manifests/overlays/{overlay}") == []


def test_every_image_is_built_by_skaffold(compiled):
    _, spec, _ = compiled
    assert rules.image_problems(spec, skaffold_images()) == []


def test_gpus_only_where_a_model_runs_in_the_pod(compiled):
    settings, spec, platform = compiled
    assert rules.gpu_problems(spec, platform, settings.runs_model) == []


def test_gpu_pods_get_shm_and_training_a_requested_volume(compiled):
    settings, spec, platform = compiled
    executors = rules.platform_executors(platform)
    for label, ex in spec["deploymentSpec"]["executors"].items():
        k8s = executors[label]
        stage = k8s["podMetadata"]["labels"]["mpa/stage"]
        if "accelerator" in ex["container"].get("resources", {}):
            assert {"mountPath": "/dev/shm", "medium": "Memory", "sizeLimit": settings.stage(stage).shm_size,
                    "volumeName": "dshm"} in k8s.get("emptyDirMounts", []), label
        if stage == "level":
            [vol] = k8s["genericEphemeralVolume"]
            assert vol["mountPath"] == settings.scratch_mount and vol["size"] == settings.stage("level").scratch_size
            assert {"name": "MPA_SCRATCH", "value": settings.scratch_mount} in ex["container"]["env"]


def test_s3_credentials_only_where_a_step_reads_s3(compiled):
    _, _, platform = compiled
    for label, ex in rules.platform_executors(platform).items():
        stage = ex["podMetadata"]["labels"]["mpa/stage"]
        has = any(s["secretName"] == "mpa-s3" for s in ex.get("secretAsEnv", []))
        assert has == (stage in S3_STAGES), label


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
