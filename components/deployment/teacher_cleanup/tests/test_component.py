"""The ``teacher_cleanup`` component: its compiled interface, its body against a local fake of the
Kubernetes API (through a kubeconfig), and one run on the KFP local runner (a subprocess, as the
launcher runs it). See ../../teacher_server/README.md for what the fake does not prove."""

from __future__ import annotations

import pytest

pytest.importorskip("kfp")
pytest.importorskip("kubernetes")

from mpa.devtools.kubefake import FakeKubeAPI, HealthResponder, resolve_to_localhost  # noqa: E402
from mpa.orchestrate.kubeflow.teacher_server import start_teacher_server  # noqa: E402

RUN = "5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9"
OTHER = "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"


@pytest.fixture
def kubeconfig(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with FakeKubeAPI() as api:
        monkeypatch.setenv("KUBECONFIG", api.write_kubeconfig(tmp_path / "kubeconfig"))
        with HealthResponder() as health, resolve_to_localhost():
            for run, model in ((RUN, "m"), (OTHER, "other")):  # a server each (one model each)
                start_teacher_server({"port": health.port, "poll_seconds": 0.05}, run, model, "mpa",
                                     api.configuration())
        yield api


def _server(api: FakeKubeAPI, model: str) -> str:
    """The name of the one server serving ``model`` (servers are named after what they serve)."""
    [name] = [n for n in api.names("deployments") if n.startswith(f"mpa-teacher-{model}-")]
    return name


def test_interface():
    from google.protobuf import json_format

    from mpa_kfp.components.deployment.teacher_cleanup import teacher_cleanup

    root = json_format.MessageToDict(teacher_cleanup.pipeline_spec)["root"]
    assert {k: v["parameterType"] for k, v in root["inputDefinitions"]["parameters"].items()} == {
        "run_id": "STRING", "namespace": "STRING"}
    assert root["outputDefinitions"]["parameters"]["Output"]["parameterType"] == "LIST"


def test_deletes_its_run_and_only_its_run_twice_over(kubeconfig):
    from mpa_kfp.components.deployment.teacher_cleanup import teacher_cleanup

    name, other = _server(kubeconfig, "m"), _server(kubeconfig, "other")
    assert teacher_cleanup.python_func(run_id=RUN, namespace="mpa") == [f"Deployment/{name}", f"Service/{name}"]
    assert teacher_cleanup.python_func(run_id=RUN, namespace="mpa") == []
    assert kubeconfig.names("deployments") == kubeconfig.names("services") == [other]


@pytest.mark.timeout(300)
def test_on_the_local_runner(kubeconfig, tmp_path, monkeypatch):
    from kfp import local

    from mpa_kfp.components.deployment.teacher_cleanup import teacher_cleanup

    monkeypatch.chdir(tmp_path)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    name, other = _server(kubeconfig, "m"), _server(kubeconfig, "other")
    task = teacher_cleanup(run_id=RUN, namespace="mpa")
    assert task.output == [f"Deployment/{name}", f"Service/{name}"]
    assert kubeconfig.names("deployments") == [other]
