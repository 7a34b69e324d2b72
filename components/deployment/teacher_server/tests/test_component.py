"""The ``teacher_server`` component: its compiled interface, and its body run against a local fake of
the Kubernetes API reached through a kubeconfig (the code path a laptop takes; in a pod the client
reads the service-account token instead). See ../README.md for what the fake does not prove."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("kfp")
pytest.importorskip("kubernetes")

from mpa.devtools.kubefake import FakeKubeAPI, HealthResponder, resolve_to_localhost  # noqa: E402
from mpa.orchestrate.kubeflow.teacher_server import TeacherServerError, server_name  # noqa: E402

RUN = "0b8e6f7a-1c2d-4e5f-8a9b-0c1d2e3f4a5b"


@pytest.fixture
def kubeconfig(tmp_path, monkeypatch):
    """Point the kubernetes client at a fresh fake API through KUBECONFIG (not in a pod)."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with FakeKubeAPI(ready_after_s=0.2) as api:
        monkeypatch.setenv("KUBECONFIG", api.write_kubeconfig(tmp_path / "kubeconfig"))
        yield api


def test_interface():
    from google.protobuf import json_format

    from mpa_kfp.components.deployment.teacher_server import teacher_server

    spec = json_format.MessageToDict(teacher_server.pipeline_spec)
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert {k: v["parameterType"] for k, v in params.items()} == {
        "model": "STRING", "run_id": "STRING", "server": "STRING", "namespace": "STRING"}
    assert params["namespace"]["defaultValue"] == ""
    assert spec["root"]["outputDefinitions"]["parameters"]["Output"]["parameterType"] == "STRING"
    executor = next(iter(spec["deploymentSpec"]["executors"].values()))["container"]
    assert "pip install" not in " ".join(executor["command"])  # the image has mpa; nothing installed at run time


def test_the_example_pipeline_deletes_the_server_in_an_exit_handler(tmp_path):
    import yaml
    from kfp import compiler

    from mpa.orchestrate.kubeflow.teacher_server import parse_settings
    from mpa_kfp.components.deployment.teacher_server.example_pipelines import teacher_server_example

    out = tmp_path / "example.yaml"
    compiler.Compiler().compile(teacher_server_example, str(out))
    spec = yaml.safe_load(out.read_text())
    root = spec["root"]["dag"]["tasks"]
    exit_task = root["teacher-cleanup"]
    assert exit_task["triggerPolicy"] == {"strategy": "ALL_UPSTREAM_TASKS_COMPLETED"}  # runs after failures too
    assert exit_task["dependentTasks"] == ["exit-handler-1"]
    inner = spec["components"]["comp-exit-handler-1"]["dag"]["tasks"]
    start = inner["teacher-server"]
    run_ids = {t["inputs"]["parameters"]["run_id"]["runtimeValue"]["constant"] for t in (exit_task, start)}
    assert run_ids == {"{{$.pipeline_job_uuid}}"}  # both tasks name the same run
    assert inner["served-models"]["inputs"]["parameters"]["base_url"]["taskOutputParameter"] == {
        "outputParameterKey": "Output", "producerTask": "teacher-server"}
    assert not any(t["cachingOptions"].get("enableCache") for t in (exit_task, start, inner["served-models"]))
    server = start["inputs"]["parameters"]["server"]["runtimeValue"]["constant"]
    assert parse_settings(server).model_cache_pvc == "mpa-model-cache"  # JSON text: nulls survive compilation
    assert parse_settings('{"model_cache_pvc": null}').model_cache_pvc is None


def test_starts_the_server_and_returns_the_openai_base_url(kubeconfig):
    from mpa_kfp.components.deployment.teacher_server import teacher_server

    with HealthResponder() as health, resolve_to_localhost():
        port = health.port
        server = json.dumps({"port": port, "poll_seconds": 0.05, "ready_timeout_seconds": 5})
        url = teacher_server.python_func(model="Qwen/Qwen2-VL-7B-Instruct", run_id=RUN, server=server, namespace="mpa")
        assert health.hits == 1
    name = server_name(server, "Qwen/Qwen2-VL-7B-Instruct")  # named after what it serves, not the run
    assert name.startswith("mpa-teacher-qwen2-vl-7b-instruct-") and RUN not in url
    assert url == f"http://{name}.mpa.svc.cluster.local:{port}/v1"
    assert kubeconfig.names("deployments", "mpa") == [name]
    body = kubeconfig.calls("POST", "deployments")[0]["body"]
    assert body["spec"]["template"]["spec"]["containers"][0]["args"][0] == "--model=Qwen/Qwen2-VL-7B-Instruct"


def test_a_server_that_never_gets_ready_fails_and_leaves_nothing(kubeconfig):
    from mpa_kfp.components.deployment.teacher_server import teacher_server

    kubeconfig.ready_after_s = None
    with pytest.raises(TeacherServerError, match="not ready after 1s"):
        teacher_server.python_func(model="m", run_id=RUN, namespace="mpa",
                                   server='{"ready_timeout_seconds": 1, "poll_seconds": 0.1}')
    assert kubeconfig.names("deployments") == kubeconfig.names("services") == []
