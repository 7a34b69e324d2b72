"""manifests/serving: the promoted student as a KServe InferenceService — rendered with ``kubectl kustomize``,
built-in kinds validated strictly with kubernetes-validate, the InferenceService against the part of KServe's
CRD schema it uses (tests/fixtures/kserve, vendored from kserve/kserve), with a GPU and the HF/vLLM runtime."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from kubectl import kubectl
from test_manifests import _k8s_version

from mpa.serving.kserve import DEFAULT_ARTIFACTS_DESTINATION, storage_uri
from mpa.tracking import TrackingError

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((ROOT / "tests" / "fixtures" / "kserve" / "inferenceservice-v1beta1.schema.yaml").read_text())
PLACEHOLDER = "s3://REPLACE-WITH-VERSION-STORAGE-URI"


@pytest.fixture(scope="module")
def rendered() -> str:
    out = subprocess.run([kubectl(), "kustomize", str(ROOT / "manifests" / "serving")], capture_output=True,
                         text=True, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _docs(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def _isvc(text: str) -> dict:
    [isvc] = [d for d in _docs(text) if d["kind"] == "InferenceService"]
    return isvc


def test_builtin_kinds_validate_strictly(rendered, tmp_path):
    builtin = [d for d in _docs(rendered) if d["kind"] != "InferenceService"]
    assert {d["kind"] for d in builtin} == {"ServiceAccount", "NetworkPolicy"}
    path = tmp_path / "builtin.yaml"
    path.write_text(yaml.safe_dump_all(builtin))
    res = subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", "-k", _k8s_version(),
                          str(path)], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stdout + res.stderr


def test_inferenceservice_validates_against_the_kserve_crd_schema(rendered):
    jsonschema.Draft202012Validator(SCHEMA).validate(_isvc(rendered))


def test_the_schema_check_bites():
    isvc = yaml.safe_load((ROOT / "manifests" / "serving" / "inferenceservice.yaml").read_text())
    v = jsonschema.Draft202012Validator(SCHEMA)
    bad = yaml.safe_load(yaml.safe_dump(isvc))
    bad["spec"]["predictor"]["model"]["storageURI"] = bad["spec"]["predictor"]["model"].pop("storageUri")
    assert not v.is_valid(bad)  # a misspelt field
    bad = yaml.safe_load(yaml.safe_dump(isvc))
    bad["spec"]["predictor"]["model"]["resources"]["limits"]["nvidia.com/gpu"] = "one"
    assert not v.is_valid(bad)  # not a quantity
    bad = yaml.safe_load(yaml.safe_dump(isvc))
    del bad["spec"]["predictor"]["model"]["modelFormat"]["name"]
    assert not v.is_valid(bad)


def test_one_gpu_hf_runtime_with_vllm_and_s3_credentials(rendered):
    isvc = _isvc(rendered)
    pred = isvc["spec"]["predictor"]
    model = pred["model"]
    assert model["modelFormat"]["name"] == "huggingface" and "--backend=vllm" in model["args"]
    assert "--model_dir=/mnt/models" in model["args"]
    assert model["resources"]["requests"]["nvidia.com/gpu"] == model["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pred["tolerations"]
    assert model["storageUri"] == PLACEHOLDER
    accounts = {d["metadata"]["name"]: d for d in _docs(rendered) if d["kind"] == "ServiceAccount"}
    sa = accounts[pred["serviceAccountName"]]
    assert {"name": "mpa-s3"} in sa["secrets"]
    [np] = [d for d in _docs(rendered) if d["kind"] == "NetworkPolicy"]
    assert np["spec"]["podSelector"]["matchLabels"] == {"serving.kserve.io/inferenceservice": isvc["metadata"]["name"]}


def test_rollout_substitution_of_docs_gives_a_valid_service(rendered):
    """docs/serving.md's third command: the placeholder replaced by the version's storage URI."""
    uri = storage_uri("mlflow-artifacts:/3/abc123/artifacts/checkpoint")
    assert uri == f"{DEFAULT_ARTIFACTS_DESTINATION}/3/abc123/artifacts/checkpoint"
    isvc = _isvc(rendered.replace(PLACEHOLDER, uri))
    jsonschema.Draft202012Validator(SCHEMA).validate(isvc)
    assert isvc["spec"]["predictor"]["model"]["storageUri"] == uri


@pytest.mark.parametrize(("source", "want"), [
    ("s3://bucket/pipeline-root/level/model/", "s3://bucket/pipeline-root/level/model"),
    ("mlflow-artifacts://mlflow:5000/1/r/artifacts/checkpoint", "s3://mpa-mlflow/artifacts/1/r/artifacts/checkpoint"),
])
def test_storage_uri_of_a_version_source(source, want):
    assert storage_uri(source) == want


def test_a_local_source_is_refused_in_one_line():
    with pytest.raises(TrackingError, match="not in an object store KServe can read"):
        storage_uri("/home/me/runs/x/level/checkpoint")
