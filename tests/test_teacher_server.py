"""The per-run teacher server (:mod:`mpa.orchestrate.kubeflow.teacher_server`) against the ``kubernetes``
client's own models, the Kubernetes OpenAPI schema (``kubernetes-validate``, strict) and a local fake of
the few API calls it makes (:mod:`mpa.devtools.kubefake`), with a plain HTTP ``/health`` responder
standing in for vLLM. What none of this proves (RBAC enforcement, scheduling, image pulls, real start-up
times, Service DNS, admission control) is listed in ``components/deployment/teacher_server/README.md``."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import yaml

pytest.importorskip("kubernetes")

from kubernetes.client import ApiClient  # noqa: E402

from mpa.devtools.kubefake import FakeKubeAPI, HealthResponder, resolve_to_localhost  # noqa: E402
from mpa.orchestrate.kubeflow import teacher_server as ts  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RUN = "3f2a9c1e-0b7d-4c55-9a0e-6f1d2b3c4d5e"  # what KFP's PIPELINE_JOB_ID_PLACEHOLDER resolves to
MODEL = "Qwen/Qwen2-VL-7B-Instruct"
OTHER = "7d1c0e2b-aaaa-4bbb-8ccc-0123456789ab"  # another run


def _name(settings: dict | None = None, model: str = MODEL) -> str:
    return ts.server_name(_fast(**(settings or {})), model)
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def _k8s_version() -> str:
    import kubernetes_validate

    root = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    versions = [p.name.split("-")[0].lstrip("v") for p in root.glob("v*-local-strict")]
    return max(versions, key=lambda v: tuple(int(x) for x in v.split(".")))


def _validate_strictly(obj: dict) -> None:
    import kubernetes_validate

    kubernetes_validate.validate(obj, _k8s_version(), strict=True)  # raises on any schema violation


def _plain(obj) -> dict:
    return ApiClient().sanitize_for_serialization(obj)


def _fast(**kw) -> dict:
    return {"poll_seconds": 0.05, "ready_timeout_seconds": 5, **kw}


@pytest.fixture(autouse=True)
def _not_in_a_task_pod(monkeypatch):
    monkeypatch.delenv("KFP_POD_NAME", raising=False)


@pytest.fixture
def health():
    with HealthResponder() as responder:
        yield responder


@pytest.fixture
def dns():
    with resolve_to_localhost() as asked:
        yield asked


# --- the objects ---------------------------------------------------------------------------------


def test_objects_validate_against_the_kubernetes_schema():
    dep, svc = ts.build_objects({}, RUN, MODEL, "mpa")
    for obj in (dep, svc):
        data = _plain(obj)
        _validate_strictly(data)
        assert data["metadata"]["namespace"] == "mpa"
    data = _plain(dep)
    pod = data["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["command"] == ["python", "-m", "vllm.entrypoints.openai.api_server"]
    assert c["args"][:4] == [f"--model={MODEL}", "--served-model-name=teacher", "--host=0.0.0.0", "--port=8000"]
    assert {c[p]["httpGet"]["path"] for p in ("startupProbe", "readinessProbe", "livenessProbe")} == {"/health"}
    assert c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"] >= 1800  # the ready timeout
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == "mpa-services"
    assert c["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    assert data["spec"]["strategy"] == {"type": "Recreate"}
    env = {e["name"]: e for e in c["env"]}
    assert env["VLLM_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "mpa-openai", "key": "OPENAI_API_KEY",
                                                                "optional": True}
    assert env["HF_HOME"]["value"] == "/cache/huggingface"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["model-cache"]["persistentVolumeClaim"] == {"claimName": "mpa-model-cache"}
    assert volumes["shm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "8Gi"}
    port = _plain(svc)["spec"]["ports"][0]
    assert port == {"name": "http", "port": 8000, "protocol": "TCP", "targetPort": "http"}


def test_objects_are_named_after_what_they_serve_and_marked_with_the_run_using_them():
    dep, svc = (_plain(o) for o in ts.build_objects({}, RUN, MODEL, "mpa"))
    name = ts.server_name({}, MODEL)
    digest = ts.server_digest({}, MODEL)
    assert re.fullmatch(rf"mpa-teacher-qwen2-vl-7b-instruct-{digest}", name)
    for obj in (dep, svc):
        assert obj["metadata"]["name"] == name and obj["metadata"]["labels"]["mpa/teacher-server"] == digest
        assert obj["metadata"]["annotations"]["mpa/run-id"] == RUN  # who created it (not part of its identity)
    assert dep["metadata"]["labels"][f"run.mpa/{RUN}"] == "true" and f"run.mpa/{RUN}" not in svc["metadata"]["labels"]
    template = dep["spec"]["template"]["metadata"]["labels"]
    assert not [k for k in template if RUN in k or RUN in template[k]]  # the pod is the same for every run
    assert dep["spec"]["selector"]["matchLabels"] == svc["spec"]["selector"] == {
        "app.kubernetes.io/instance": name, "mpa/teacher-server": digest}
    assert all(template[k] == v for k, v in svc["spec"]["selector"].items())  # the Service selects the pod
    assert ts.pod_selector(name) == f"app.kubernetes.io/instance={name}"
    # another run: the same objects, only the mark and the creator differ
    other = _plain(ts.build_objects({}, OTHER, MODEL, "mpa")[0])
    assert other["spec"] == dep["spec"] and other["metadata"]["name"] == name


def test_the_name_changes_with_what_is_served_and_nothing_else():
    base = ts.server_name({}, MODEL)
    assert ts.server_name({}, MODEL) == base  # every run, every call
    served = [ts.server_name({}, "Qwen/Qwen2-VL-2B-Instruct"), ts.server_name({"image": "reg/vllm:2"}, MODEL),
              ts.server_name({"args": ["--max-model-len=4096"]}, MODEL), ts.server_name({"gpus": 2}, MODEL),
              ts.server_name({"served_name": "t2"}, MODEL)]
    assert len({base, *served}) == 1 + len(served)
    waiting = [ts.server_name({"poll_seconds": 1, "max_restarts": 5, "image_pull_grace_seconds": 1,
                               "owned_by_workflow": False}, MODEL)]
    assert waiting == [base]
    odd = ["/models/my.Checkpoint_v2/", "s3://bucket/" + "x" * 200, "---", "ABC"]
    assert all(DNS_1035.match(ts.server_name({}, m)) for m in odd), [ts.server_name({}, m) for m in odd]
    assert all(len(ts.user_label(r).split("/", 1)[1]) <= 63 and LABEL_VALUE.match(ts.user_label(r).split("/")[1])
               for r in (RUN, "Run_With.Odd/Chars and CAPS", "x" * 200))


def test_like_the_shared_teacher_server_but_never_behind_its_service():
    """The optional shared server (manifests/components/teacher-vllm) runs the same vLLM flags (whose
    existence tests/test_manifests.py checks against ``--help``) and resources; its Service must not
    select a per-run server's pod."""
    shared = list(yaml.safe_load_all((ROOT / "manifests/components/teacher-vllm/teacher.yaml").read_text()))
    theirs = next(d for d in shared if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    dep = _plain(ts.build_objects({}, RUN, MODEL, "mpa")[0])
    ours = dep["spec"]["template"]["spec"]["containers"][0]
    assert ours["args"][1:] == theirs["args"][1:] and ours["command"] == theirs["command"]
    assert ours["resources"] == theirs["resources"]
    selector = next(d for d in shared if d["kind"] == "Service")["spec"]["selector"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert any(labels.get(k) != v for k, v in selector.items())


def test_gpus_placement_image_and_args_come_from_the_settings():
    settings = {
        "image": "registry.example/mpa-gpu:1.2.3",
        "image_pull_secrets": ["regcred"],
        "gpus": 2,
        "accelerator_type": "amd.com/gpu",
        "node_selector": {"gpu.example/type": "mi300"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "teacher", "effect": "NoExecute"}],
        "args": ["--tensor-parallel-size=2", "--max-model-len=4096"],
        "served_name": "qwen-teacher",
        "port": 8080,
        "model_cache_pvc": None,
        "shm_size": None,
        "api_key_secret": None,
    }
    dep, svc = (_plain(o) for o in ts.build_objects(settings, RUN, MODEL, "team-a"))
    _validate_strictly(dep)
    _validate_strictly(svc)
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["image"] == "registry.example/mpa-gpu:1.2.3"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert c["resources"]["requests"]["amd.com/gpu"] == c["resources"]["limits"]["amd.com/gpu"] == "2"
    assert "nvidia.com/gpu" not in c["resources"]["limits"]
    assert pod["nodeSelector"] == {"gpu.example/type": "mi300"}
    assert pod["tolerations"] == [{"key": "dedicated", "operator": "Equal", "value": "teacher", "effect": "NoExecute"}]
    assert c["args"] == [f"--model={MODEL}", "--served-model-name=qwen-teacher", "--host=0.0.0.0", "--port=8080",
                         "--tensor-parallel-size=2", "--max-model-len=4096"]
    assert "volumes" not in pod and "volumeMounts" not in c
    assert "VLLM_API_KEY" not in {e["name"] for e in c["env"]}
    assert svc["spec"]["ports"][0]["port"] == 8080 and c["ports"][0]["containerPort"] == 8080

    default = _plain(ts.build_objects({}, RUN, MODEL, "mpa")[0])["spec"]["template"]["spec"]
    assert default["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert default["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert default["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    no_gpu = _plain(ts.build_objects({"gpus": 0}, RUN, MODEL, "mpa")[0])
    assert "nvidia.com/gpu" not in no_gpu["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]


def test_bad_settings_are_one_line_errors():
    with pytest.raises(ValueError, match=r"--port.*clash"):
        ts.build_objects({"args": ["--port=9000"]}, RUN, MODEL, "mpa")
    with pytest.raises(ValueError, match="invalid teacher server settings: gpu: Extra inputs") as err:
        ts.build_objects({"gpu": 1}, RUN, MODEL, "mpa")
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="model is empty"):
        ts.build_objects({}, RUN, "", "mpa")


def test_run_labels_are_valid_for_any_run_id():
    assert ts.run_label(RUN) == RUN
    odd = ["Run_With.Odd/Chars and CAPS", "x" * 200, "-leading-and-trailing-", "ABC", "abc"]
    labels = [ts.run_label(r) for r in odd]
    assert all(len(v) <= 63 and LABEL_VALUE.match(v) for v in labels), labels
    assert len(set(labels)) == len(odd)  # "ABC" and "abc" are different runs, and stay apart
    assert labels == [ts.run_label(r) for r in odd]  # deterministic: cleanup finds the mark start set
    for bad in ("", "   ", "{{$.pipeline_job_uuid}}"):
        with pytest.raises(ValueError, match="run_id"):
            ts.user_label(bad)


def test_namespace_from_the_argument_or_the_pod(tmp_path):
    assert ts.current_namespace("team-a") == "team-a"
    mounted = tmp_path / "namespace"
    mounted.write_text("kubeflow-user\n")
    assert ts.current_namespace("", sa_namespace_file=mounted) == "kubeflow-user"
    with pytest.raises(ValueError, match="no namespace given and not running in a pod"):
        ts.current_namespace("", sa_namespace_file=tmp_path / "absent")


# --- against the fake API ------------------------------------------------------------------------


def test_create_wait_ready_and_hand_out_the_url(health, dns):
    health.unhealthy_hits = 2  # vLLM answers 503 while it loads
    with FakeKubeAPI(ready_after_s=0.3) as api:
        server = ts.start_teacher_server(_fast(port=health.port), RUN, MODEL, "mpa", api.configuration())
        name = _name({"port": health.port})
        url = f"http://{name}.mpa.svc.cluster.local:{health.port}"
        assert (server.name, server.url, server.reused) == (name, url, False)
        assert server.openai_base_url == url + "/v1"
        assert server.seconds_to_ready >= 0.3  # not before the Deployment said it was ready
        assert health.hits == 3 and set(dns) == {f"{name}.mpa.svc.cluster.local"}  # through the Service's name
        assert api.names("deployments", "mpa") == api.names("services", "mpa") == [name]
        # what went over the wire is valid Kubernetes
        posted = [c["body"] for c in api.calls("POST")]
        assert [p["kind"] for p in posted] == ["Deployment", "Service"]
        for body in posted:
            _validate_strictly(body)
        assert {c["resource"] for c in api.calls("GET")} == {"deployments", "pods"}
        assert all(c["query"].get("labelSelector") == f"app.kubernetes.io/instance={name}"
                   for c in api.calls("GET", "pods"))
        assert api.unhandled == []


def test_never_ready_times_out_with_one_line_and_deletes_what_it_made(dns):
    with FakeKubeAPI(ready_after_s=None, waiting_reason="ImagePullBackOff",
                     waiting_message='Back-off pulling image "registry.example/mpa-gpu:1.2.3"') as api:
        t0 = time.monotonic()
        with pytest.raises(ts.TeacherServerError) as err:
            ts.start_teacher_server(_fast(ready_timeout_seconds=1), RUN, MODEL, "mpa", api.configuration())
        assert 1.0 <= time.monotonic() - t0 < 10
        msg = str(err.value)
        assert "\n" not in msg
        assert msg.startswith(f"teacher server mpa/{_name({'ready_timeout_seconds': 1})} not ready after 1s: pod ")
        assert "ImagePullBackOff" in msg and "registry.example/mpa-gpu:1.2.3" in msg
        assert api.names("deployments") == api.names("services") == []
        deletes = api.calls("DELETE")
        assert {c["resource"] for c in deletes} == {"deployments", "services"}
        assert all(c["body"]["propagationPolicy"] == "Background" for c in api.calls("DELETE", "deployments"))


def test_no_gpu_node_times_out_naming_the_scheduler_message(dns):
    why = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are available."
    with FakeKubeAPI(ready_after_s=None, unschedulable=why) as api:
        with pytest.raises(ts.TeacherServerError) as err:
            ts.start_teacher_server(_fast(ready_timeout_seconds=1), RUN, MODEL, "mpa", api.configuration())
        assert str(err.value).endswith(f"-x2x7q Pending: PodScheduled Unschedulable {why}")
        assert api.names("deployments") == []


def test_ready_pod_whose_health_never_answers_times_out(health, dns):
    health.unhealthy_hits = 10**9
    with FakeKubeAPI(ready_after_s=0.0) as api:
        with pytest.raises(ts.TeacherServerError, match=r"not ready after 1s: pod ready but GET http://.*/health: "
                                                        r"HTTP 503$"):
            ts.start_teacher_server(_fast(port=health.port, ready_timeout_seconds=1), RUN, MODEL, "mpa",
                                    api.configuration())
        assert api.names("deployments") == api.names("services") == []


def test_a_pod_that_cannot_start_fails_before_the_timeout(dns):
    with FakeKubeAPI(ready_after_s=None, waiting_reason="CrashLoopBackOff", restart_count=2,
                     waiting_message="back-off 40s restarting failed container=vllm") as api:
        t0 = time.monotonic()
        with pytest.raises(ts.TeacherServerError, match=r"cannot start: pod .* CrashLoopBackOff back-off 40s .*"
                                                        r"\(restarts: 2\); the server crashed 2 times"):
            ts.start_teacher_server(_fast(ready_timeout_seconds=600), RUN, MODEL, "mpa", api.configuration())
        assert time.monotonic() - t0 < 10
        assert api.names("deployments") == []


def test_a_crash_loop_below_max_restarts_is_waited_for(dns):
    """vLLM may crash once while another pod frees the GPU: only max_restarts restarts are hopeless."""
    with (FakeKubeAPI(ready_after_s=None, waiting_reason="CrashLoopBackOff", restart_count=1) as api,
          pytest.raises(ts.TeacherServerError, match=r"not ready after 1s: .*CrashLoopBackOff")):
        ts.start_teacher_server(_fast(ready_timeout_seconds=1, max_restarts=3), RUN, MODEL, "mpa", api.configuration())


@pytest.mark.parametrize("reason", ["ErrImagePull", "ImagePullBackOff"])
def test_an_image_that_cannot_be_pulled_fails_in_one_line_not_after_the_timeout(dns, reason):
    """A tag never pushed: the start fails once pulling has failed for image_pull_grace_seconds, naming the
    image, instead of holding the GPU node until ready_timeout_seconds (1800 s by default)."""
    image = "registry.example/mpa-gpu:never-pushed"
    message = f'Back-off pulling image "{image}"'
    with FakeKubeAPI(ready_after_s=None, waiting_reason=reason, waiting_message=message) as api:
        t0 = time.monotonic()
        with pytest.raises(ts.TeacherServerError) as err:
            ts.start_teacher_server(_fast(image=image, ready_timeout_seconds=1800, image_pull_grace_seconds=0.2),
                                    RUN, MODEL, "mpa", api.configuration())
        assert time.monotonic() - t0 < 10
        msg = str(err.value)
        name = _name({"image": image, "ready_timeout_seconds": 1800})
        assert "\n" not in msg and msg.startswith(f"teacher server mpa/{name} cannot start: pod ")
        assert reason in msg and "the image cannot be pulled" in msg and f"check that {image} was pushed" in msg
        assert api.names("deployments") == api.names("services") == []


def test_an_invalid_image_name_fails_at_once(dns):
    with FakeKubeAPI(ready_after_s=None, waiting_reason="InvalidImageName",
                     waiting_message='couldn\'t parse image name "Registry/MPA:bad"') as api:
        t0 = time.monotonic()
        with pytest.raises(ts.TeacherServerError, match=r"cannot start: .*InvalidImageName .*; InvalidImageName$"):
            ts.start_teacher_server(_fast(ready_timeout_seconds=1800), RUN, MODEL, "mpa", api.configuration())
        assert time.monotonic() - t0 < 10


def test_stop_is_idempotent_and_touches_only_its_runs_server(health, dns):
    with FakeKubeAPI() as api:
        conf = api.configuration()
        assert ts.stop_teacher_server(RUN, "mpa", conf) == []  # never started: fine
        ts.start_teacher_server(_fast(port=health.port), RUN, MODEL, "mpa", conf)
        ts.start_teacher_server(_fast(port=health.port), OTHER, "Qwen/Qwen2-VL-2B-Instruct", "mpa", conf)
        name = _name({"port": health.port})
        assert ts.stop_teacher_server(RUN, "mpa", conf) == [f"Deployment/{name}", f"Service/{name}"]
        assert ts.stop_teacher_server(RUN, "mpa", conf) == []  # already gone: fine
        other = _name({"port": health.port}, "Qwen/Qwen2-VL-2B-Instruct")
        assert api.names("deployments") == api.names("services") == [other]
        assert ts.stop_teacher_server(RUN, "other-namespace", conf) == []
        assert api.unhandled == []


def test_two_runs_share_one_server_and_the_last_to_stop_deletes_it(health, dns):
    """Same model and settings: one server, one URL (so the cache keys downstream of it match across runs);
    the first run to finish leaves it to the other, the last one deletes it."""
    with FakeKubeAPI() as api:
        conf = api.configuration()
        a = ts.start_teacher_server(_fast(port=health.port), RUN, MODEL, "mpa", conf)
        b = ts.start_teacher_server(_fast(port=health.port), OTHER, MODEL, "mpa", conf)
        assert (a.reused, b.reused, b.url) == (False, True, a.url)
        assert len(api.calls("POST", "deployments")) == 2 and api.names("deployments") == [a.name]  # one 409
        labels = api.objects["deployments", "mpa", a.name]["metadata"]["labels"]
        assert ts.users(labels) == sorted([RUN, OTHER])
        assert ts.stop_teacher_server(RUN, "mpa", conf) == []  # OTHER still uses it
        assert api.names("deployments") == api.names("services") == [a.name]
        assert ts.stop_teacher_server(OTHER, "mpa", conf) == [f"Deployment/{a.name}", f"Service/{a.name}"]
        assert api.names("deployments") == api.names("services") == []
        deletes = api.calls("DELETE", "deployments")
        assert deletes[0]["body"]["preconditions"]["resourceVersion"]  # only the object it saw unmarked
        assert deletes[0]["body"]["propagationPolicy"] == "Background"


def test_a_retried_start_after_the_server_was_deleted_creates_it_again_at_the_same_url(health, dns):
    """A KFP Retry keeps the succeeded exit handler, which already deleted the server: PA/PI retried start it
    again (create-or-get) and get the same URL, so their cache keys do not change either."""
    with FakeKubeAPI() as api:
        conf = api.configuration()
        first = ts.start_teacher_server(_fast(port=health.port), RUN, MODEL, "mpa", conf)
        again = ts.start_teacher_server(_fast(port=health.port), RUN, MODEL, "mpa", conf)  # still there: found
        assert (first.reused, again.reused, again.url) == (False, True, first.url)
        ts.stop_teacher_server(RUN, "mpa", conf)  # the exit handler
        retried = ts.start_teacher_server(_fast(port=health.port), RUN, MODEL, "mpa", conf)
        assert (retried.reused, retried.url) == (False, first.url) and api.names("deployments") == [first.name]


def test_a_join_during_the_last_stop_keeps_the_server(health, dns):
    """The delete carries the resourceVersion of the object it saw without marks: a run that marked it in
    between changes that, the delete is refused (409) and the server stays for the new run."""
    with FakeKubeAPI() as api:
        conf = api.configuration()
        server = ts.start_teacher_server(_fast(port=health.port), RUN, MODEL, "mpa", conf)
        real = api._patch

        def join_meanwhile(resource, namespace, name, patch):
            code, body = real(resource, namespace, name, patch)
            if patch["metadata"]["labels"].get(ts.user_label(RUN), "") is None:  # RUN's unmark: OTHER marks now
                real(resource, namespace, name, {"metadata": {"labels": {ts.user_label(OTHER): "true"}}})
            return code, body

        api._patch = join_meanwhile
        assert ts.stop_teacher_server(RUN, "mpa", conf) == []
        assert api.names("deployments") == api.names("services") == [server.name]
        assert api.calls("DELETE", "deployments") and not api.calls("DELETE", "services")


def test_a_server_of_that_name_serving_something_else_is_refused(health, dns):
    with FakeKubeAPI() as api:
        conf = api.configuration()
        dep, _ = ts.build_objects(_fast(port=health.port), RUN, MODEL, "mpa")
        dep.metadata.annotations[ts.SPEC_ANNOTATION] = "edited-by-hand"
        api.handle("POST", "/apis/apps/v1/namespaces/mpa/deployments", _plain(dep))
        with pytest.raises(ts.TeacherServerError, match=r"already exists but serves something else .*; delete it "
                                                        rf"\(kubectl delete deploy,svc -n mpa {dep.metadata.name}\)"):
            ts.start_teacher_server(_fast(port=health.port), OTHER, MODEL, "mpa", conf)


def test_the_runs_workflow_owns_the_server(health, dns, monkeypatch, caplog):
    """Deleting a run deletes its Argo Workflow; the server goes with it even if no exit handler ran."""
    monkeypatch.setenv("KFP_POD_NAME", "mpa-run-abcde-system-container-impl-123")
    with FakeKubeAPI() as api:
        pod = api.add_task_pod("mpa", "mpa-run-abcde-system-container-impl-123", workflow="mpa-run-abcde")
        ts.start_teacher_server(_fast(port=health.port), RUN, MODEL, "mpa", api.configuration())
        workflow = pod["metadata"]["ownerReferences"][0]
        for body in (c["body"] for c in api.calls("POST")):
            _validate_strictly(body)
            assert body["metadata"]["ownerReferences"] == [
                {k: workflow[k] for k in ("apiVersion", "kind", "name", "uid")}]  # no blockOwnerDeletion
        assert api.calls("GET", "pods")[0]["name"] == "mpa-run-abcde-system-container-impl-123"

    with FakeKubeAPI() as api, caplog.at_level("WARNING"):  # a pod no Workflow owns (e.g. another runner)
        api.add_task_pod("mpa", "mpa-run-abcde-system-container-impl-123", workflow=None)
        ts.start_teacher_server(_fast(port=health.port), RUN, MODEL, "mpa", api.configuration())
        assert all("ownerReferences" not in c["body"]["metadata"] for c in api.calls("POST"))
        assert "has no Argo Workflow owner" in caplog.text

    with FakeKubeAPI() as api:  # not wanted: the pod is not even read
        ts.start_teacher_server(_fast(port=health.port, owned_by_workflow=False), RUN, MODEL, "mpa",
                                api.configuration())
        assert [c["name"] for c in api.calls("GET", "pods")] == []


def test_forbidden_is_one_line_naming_the_rbac(dns):
    with FakeKubeAPI(deny={("POST", "deployments")}) as api:
        with pytest.raises(ts.TeacherServerError) as err:
            ts.start_teacher_server(_fast(), RUN, MODEL, "mpa", api.configuration())
        msg = str(err.value)
        assert "\n" not in msg and msg.startswith(f"cannot create Deployment mpa/{_name()}: HTTP 403 Forbidden")
        assert "manifests/base/teacher-server-rbac.yaml" in msg
        assert api.names("services") == []
    with FakeKubeAPI(ready_after_s=None, deny={("DELETE", "services")}) as api:
        with pytest.raises(ts.TeacherServerError) as err:
            ts.start_teacher_server(_fast(ready_timeout_seconds=1), RUN, MODEL, "mpa", api.configuration())
        msg = str(err.value)
        assert "\n" not in msg and "not ready after 1s" in msg
        name = _name({"ready_timeout_seconds": 1})
        assert f"(and the cleanup failed: cannot delete Service mpa/{name}: HTTP 403 Forbidden" in msg
        assert api.names("deployments") == []  # what could be deleted was


def test_an_unreachable_api_server_is_one_line():
    from kubernetes.client import Configuration

    with FakeKubeAPI() as api:
        host = api.url
    conf = Configuration(host=host)  # the fake has stopped: nothing listens there now
    conf.retries = 0
    with pytest.raises(ts.TeacherServerError, match=rf"^cannot list Deployments -l run.mpa/{RUN}=true in mpa: ") as err:
        ts.stop_teacher_server(RUN, "mpa", conf)
    assert "\n" not in str(err.value)


# --- RBAC: the Role grants what the library calls, and no more ------------------------------------

VERB = {("POST", False): "create", ("GET", True): "get", ("GET", False): "list", ("DELETE", True): "delete",
        ("PATCH", True): "patch"}


def test_the_role_grants_exactly_the_calls_made(health, dns, monkeypatch):
    monkeypatch.setenv("KFP_POD_NAME", "task-pod")
    with FakeKubeAPI() as api:
        api.add_task_pod("mpa", "task-pod")
        conf = api.configuration()
        ts.start_teacher_server(_fast(port=health.port), RUN, MODEL, "mpa", conf)
        ts.start_teacher_server(_fast(port=health.port), RUN, MODEL, "mpa", conf)  # 409 → read
        ts.stop_teacher_server(RUN, "mpa", conf)
    with FakeKubeAPI(ready_after_s=None) as api2, pytest.raises(ts.TeacherServerError):
        ts.start_teacher_server(_fast(ready_timeout_seconds=1), RUN, MODEL, "mpa", api2.configuration())
    used = {(c["resource"], VERB[c["method"], c["name"] is not None]) for c in api.requests + api2.requests}

    docs = list(yaml.safe_load_all((ROOT / "manifests/base/teacher-server-rbac.yaml").read_text()))
    role = next(d for d in docs if d["kind"] == "Role")
    granted = set()
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
        assert "secrets" not in rule["resources"] and "resourceNames" not in rule
        for resource in rule["resources"]:
            assert rule["apiGroups"] == (["apps"] if resource == "deployments" else [""])
            granted |= {(resource, verb) for verb in rule["verbs"]}
    assert granted == used
    binding = next(d for d in docs if d["kind"] == "RoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "mpa-pipeline"}]
    kustomization = yaml.safe_load((ROOT / "manifests/base/kustomization.yaml").read_text())
    assert "teacher-server-rbac.yaml" in kustomization["resources"]


def test_no_credentials_is_one_line(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    with pytest.raises(ts.TeacherServerError, match="^no Kubernetes credentials: not in a pod") as err:
        ts.stop_teacher_server(RUN, "mpa")
    assert "\n" not in str(err.value)


def test_a_retried_pa_pi_shard_makes_sure_of_the_server_under_the_runs_mark(health, dns, monkeypatch):
    """What a retried annotate/identify does (``ensure_teacher_server``, the run's id from MPA_RUN_ID): the
    exit handler of the failed attempt deleted the server; the shard creates it again at the same URL, marked
    for the run, so the run's after-merge cleanup deletes it; a shard whose wait fails leaves the run's mark
    (the other shards use the server)."""
    with FakeKubeAPI() as api:
        conf = api.configuration()
        settings = _fast(port=health.port)
        first = ts.start_teacher_server(settings, RUN, MODEL, "mpa", conf)
        ts.stop_teacher_server(RUN, "mpa", conf)  # the exit handler of the failed attempt
        assert api.names("deployments") == []
        monkeypatch.delenv(ts.RUN_ID_ENV, raising=False)
        assert ts.ensure_teacher_server(settings, MODEL, first.openai_base_url, "mpa", conf) == first.openai_base_url
        assert api.names("deployments") == []  # outside a KFP run: nothing to mark, the URL as it was
        monkeypatch.setenv(ts.RUN_ID_ENV, RUN)
        url = ts.ensure_teacher_server(settings, MODEL, first.openai_base_url, "mpa", conf)
        assert url == first.openai_base_url and api.names("deployments") == [first.name]
        labels = api.objects["deployments", "mpa", first.name]["metadata"]["labels"]
        assert ts.users(labels) == [RUN]
        with pytest.raises(ts.TeacherServerError, match="settings differ"):
            ts.ensure_teacher_server(settings, MODEL, "http://elsewhere:8000/v1", "mpa", conf)
        assert ts.stop_teacher_server(RUN, "mpa", conf) == [f"Deployment/{first.name}", f"Service/{first.name}"]


def test_a_shard_whose_wait_fails_keeps_the_runs_mark(dns, monkeypatch):
    monkeypatch.setenv(ts.RUN_ID_ENV, RUN)
    with FakeKubeAPI(ready_after_s=None, waiting_reason="ContainerCreating") as api:
        conf = api.configuration()
        with pytest.raises(ts.TeacherServerError, match="not ready after 1s"):
            ts.ensure_teacher_server(_fast(ready_timeout_seconds=1), MODEL, "", "mpa", conf)
        name = _name({"ready_timeout_seconds": 1})
        assert api.names("deployments") == [name]  # not released: the run's other shards use it
        assert ts.users(api.objects["deployments", "mpa", name]["metadata"]["labels"]) == [RUN]
