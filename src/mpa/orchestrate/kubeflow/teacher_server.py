"""An ephemeral vLLM teacher server per pipeline run, managed with the ``kubernetes`` Python client.

:func:`start_teacher_server` creates one Deployment (``python -m vllm.entrypoints.openai.api_server``
on a GPU node) and one ClusterIP Service, both labelled ``mpa/run-id=<run id>``; waits until the
Deployment has a ready pod *and* ``GET /health`` answers 200 through the Service's cluster DNS name;
and returns the OpenAI-compatible base URL PA and PI use (``teacher.backend=openai``).
:func:`stop_teacher_server` deletes whatever carries the run's label (nothing there is fine), so the
pipeline's exit handler can call it whatever happened before. A start that fails (timeout, a pod
that cannot start) deletes what it created before raising.

Image, GPUs, resources, placement and extra server flags are compile-time settings
(:class:`mpa.orchestrate.kubeflow.settings.TeacherServerSettings`, the pipeline settings'
``teacher_server`` part); the served model is the run's ``teacher_model`` parameter. Errors are
one line (:class:`TeacherServerError`), naming the object, the namespace and what the cluster said.

What a test without a cluster cannot show (RBAC enforcement, scheduling, image pulls, real start-up
times, Service DNS, admission control) is listed in
``components/deployment/teacher_server/README.md``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from mpa.orchestrate.kubeflow.settings import TeacherServerSettings

if TYPE_CHECKING:
    from kubernetes.client import ApiClient, Configuration, V1Deployment, V1OwnerReference, V1Service

log = logging.getLogger(__name__)

RUN_ID_LABEL = "mpa/run-id"
SPEC_ANNOTATION = "mpa/spec-sha256"
APP_NAME = "mpa-run-teacher"  # not "mpa-teacher": the shared server's Service must not select these pods
NAME_PREFIX = "mpa-teacher-"
POD_NAME_ENV = "KFP_POD_NAME"  # the KFP v2 driver sets it (downward API) in every task's pod
SA_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
VLLM_COMMAND = ["python", "-m", "vllm.entrypoints.openai.api_server"]
MANAGED_FLAGS = ("--model", "--served-model-name", "--host", "--port")  # set from other settings
# A container stuck for one of these reasons will not recover by waiting longer.
FATAL_WAITING_REASONS = frozenset(
    {"InvalidImageName", "ErrImageNeverPull", "CreateContainerConfigError", "CreateContainerError"}
)
# An image that cannot be pulled (a tag never pushed, no pull secret): hopeless once it lasts the settings'
# image_pull_grace_seconds (a registry's passing error recovers within the kubelet's first back-offs).
IMAGE_PULL_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff"})
CRASH_LOOP = "CrashLoopBackOff"  # hopeless after the settings' max_restarts restarts
RBAC_HINT = "the pipeline's service account needs the Role in manifests/base/teacher-server-rbac.yaml"


class TeacherServerError(RuntimeError):
    """The teacher server could not be created, become ready or be deleted (one-line message)."""


@dataclass(frozen=True)
class TeacherServer:
    name: str
    namespace: str
    url: str  # http://<service>.<namespace>.svc.<cluster domain>:<port>
    seconds_to_ready: float
    reused: bool = False

    @property
    def openai_base_url(self) -> str:
        """What ``teacher.openai.base_url`` takes (the OpenAI-compatible API root)."""
        return f"{self.url}/v1"


# --- names and labels ----------------------------------------------------------------------------

_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def _digest(text: str, n: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def _check_run_id(run_id: str) -> str:
    run_id = (run_id or "").strip()
    if not run_id:
        raise ValueError("run_id is empty: pass the pipeline run's id (dsl.PIPELINE_JOB_ID_PLACEHOLDER)")
    if "{{" in run_id or "}}" in run_id:
        raise ValueError(f"run_id {run_id!r} is an unresolved placeholder: the runner did not substitute it")
    return run_id


def run_label(run_id: str) -> str:
    """The ``mpa/run-id`` label value: the run id itself when it is a valid label value (KFP's UUIDs are)."""
    run_id = _check_run_id(run_id)
    if len(run_id) <= 63 and _LABEL_VALUE.match(run_id):
        return run_id
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", run_id).strip("-_.")[:54].rstrip("-_.")
    return f"{slug}-{_digest(run_id)}" if slug else _digest(run_id, 16)


def server_name(run_id: str) -> str:
    """Deployment and Service name: ``mpa-teacher-<run id>``, a DNS-1035 label of at most 63 characters."""
    run_id = _check_run_id(run_id)
    slug = re.sub(r"[^a-z0-9-]+", "-", run_id.lower()).strip("-")
    name = f"{NAME_PREFIX}{slug}".rstrip("-")
    if slug == run_id and len(name) <= 63:
        return name
    return f"{NAME_PREFIX}{slug[: 63 - len(NAME_PREFIX) - 9].rstrip('-')}-{_digest(run_id)}"


def selector(run_id: str) -> str:
    """Label selector for everything a run's server consists of."""
    return f"{RUN_ID_LABEL}={run_label(run_id)}"


def service_url(name: str, namespace: str, port: int, cluster_domain: str = "cluster.local") -> str:
    return f"http://{name}.{namespace}.svc.{cluster_domain}:{port}"


def current_namespace(namespace: str = "", sa_namespace_file: Path = SA_NAMESPACE_FILE) -> str:
    """``namespace`` if given, else the pod's own (from its service-account mount)."""
    if namespace:
        return namespace
    try:
        found = sa_namespace_file.read_text(encoding="utf-8").strip()
    except OSError:
        found = ""
    if not found:
        raise ValueError(f"no namespace given and not running in a pod ({sa_namespace_file} unreadable): pass one")
    return found


def parse_settings(settings: TeacherServerSettings | dict | str | None) -> TeacherServerSettings:
    """Settings from the model, a dict, or JSON text (what the component takes: KFP cannot put a null
    into a compiled constant, and null means something here, e.g. ``model_cache_pvc: null``)."""
    if isinstance(settings, TeacherServerSettings):
        return settings
    try:
        if isinstance(settings, str):
            return TeacherServerSettings.model_validate_json(settings or "{}")
        return TeacherServerSettings.model_validate(settings or {})
    except ValidationError as exc:
        errs = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"invalid teacher server settings: {errs}") from exc


# --- the objects ---------------------------------------------------------------------------------


def build_objects(
    settings: TeacherServerSettings | dict | str,
    run_id: str,
    model: str,
    namespace: str,
    owner: V1OwnerReference | None = None,
) -> tuple[V1Deployment, V1Service]:
    """The Deployment and Service of one run's teacher server, as the client's own model objects
    (``owner``: an owner reference both get, e.g. the run's Workflow)."""
    from kubernetes import client as k

    s = parse_settings(settings)
    if not model:
        raise ValueError("model is empty: name the teacher model the server loads")
    clashing = [a for a in s.args if a.split("=", 1)[0] in MANAGED_FLAGS]
    if clashing:
        raise ValueError(f"teacher server args {clashing} clash with flags set from other settings {MANAGED_FLAGS}")
    name, label = server_name(run_id), run_label(run_id)
    select = {"app.kubernetes.io/instance": name, RUN_ID_LABEL: label}
    labels = {
        "app.kubernetes.io/name": APP_NAME,
        "app.kubernetes.io/component": "teacher",
        "app.kubernetes.io/part-of": "mpa",
        "app.kubernetes.io/managed-by": "mpa",
        **select,
    }

    env = [k.V1EnvVar(name="PYTHONUNBUFFERED", value="1")]
    mounts, volumes = [], []
    if s.model_cache_pvc:
        env.append(k.V1EnvVar(name="HF_HOME", value=f"{s.model_cache_mount.rstrip('/')}/huggingface"))
        mounts.append(k.V1VolumeMount(name="model-cache", mount_path=s.model_cache_mount))
        volumes.append(
            k.V1Volume(
                name="model-cache",
                persistent_volume_claim=k.V1PersistentVolumeClaimVolumeSource(claim_name=s.model_cache_pvc),
            )
        )
    if s.shm_size:
        mounts.append(k.V1VolumeMount(name="shm", mount_path="/dev/shm"))
        shm = k.V1EmptyDirVolumeSource(medium="Memory", size_limit=s.shm_size)
        volumes.append(k.V1Volume(name="shm", empty_dir=shm))
    for secret, key, var in ((s.hf_token_secret, "HF_TOKEN", "HF_TOKEN"),
                             (s.api_key_secret, "OPENAI_API_KEY", "VLLM_API_KEY")):
        if secret:
            ref = k.V1SecretKeySelector(name=secret, key=key, optional=True)
            env.append(k.V1EnvVar(name=var, value_from=k.V1EnvVarSource(secret_key_ref=ref)))

    requests = {"cpu": s.cpu_request, "memory": s.memory_request}
    limits = {"cpu": s.cpu_limit, "memory": s.memory_limit}
    if s.gpus:
        requests[s.accelerator_type] = limits[s.accelerator_type] = str(s.gpus)

    def probe(period: int, failures: int) -> Any:
        return k.V1Probe(
            http_get=k.V1HTTPGetAction(path="/health", port="http"),
            period_seconds=period,
            failure_threshold=failures,
            timeout_seconds=5,
        )

    container = k.V1Container(
        name="vllm",
        image=s.image,
        image_pull_policy=s.image_pull_policy,
        command=list(VLLM_COMMAND),
        args=[f"--model={model}", f"--served-model-name={s.served_name}", "--host=0.0.0.0", f"--port={s.port}",
              *s.args],
        env=env,
        ports=[k.V1ContainerPort(name="http", container_port=s.port, protocol="TCP")],
        # the start-up probe gives the whole ready timeout to download and load the model
        startup_probe=probe(10, max(1, -(-s.ready_timeout_seconds // 10))),
        readiness_probe=probe(10, 3),
        liveness_probe=probe(30, 3),
        resources=k.V1ResourceRequirements(requests=requests, limits=limits),
        security_context=k.V1SecurityContext(
            allow_privilege_escalation=False, capabilities=k.V1Capabilities(drop=["ALL"])
        ),
        volume_mounts=mounts or None,
    )
    pod = k.V1PodSpec(
        containers=[container],
        service_account_name=s.service_account,
        automount_service_account_token=False,
        security_context=k.V1PodSecurityContext(
            run_as_non_root=True,
            run_as_user=10001,
            run_as_group=10001,
            fs_group=10001,
            seccomp_profile=k.V1SeccompProfile(type="RuntimeDefault"),
        ),
        node_selector=dict(s.node_selector) or None,
        tolerations=[
            k.V1Toleration(key=t.key, operator=t.operator, value=t.value, effect=t.effect) for t in s.tolerations
        ]
        or None,
        image_pull_secrets=[k.V1LocalObjectReference(name=n) for n in s.image_pull_secrets] or None,
        volumes=volumes or None,
    )
    owners = [owner] if owner is not None else None

    def meta() -> Any:
        return k.V1ObjectMeta(name=name, namespace=namespace, labels=dict(labels),
                              annotations={RUN_ID_LABEL: run_id}, owner_references=owners)

    deployment = k.V1Deployment(
        api_version="apps/v1",
        kind="Deployment",
        metadata=meta(),
        spec=k.V1DeploymentSpec(
            replicas=1,
            selector=k.V1LabelSelector(match_labels=select),
            strategy=k.V1DeploymentStrategy(type="Recreate"),  # never two GPU pods for one server
            template=k.V1PodTemplateSpec(metadata=k.V1ObjectMeta(labels=labels), spec=pod),
        ),
    )
    service = k.V1Service(
        api_version="v1",
        kind="Service",
        metadata=meta(),
        spec=k.V1ServiceSpec(
            type="ClusterIP",
            selector=select,
            ports=[k.V1ServicePort(name="http", port=s.port, target_port="http", protocol="TCP")],
        ),
    )
    for obj in (deployment, service):  # what was asked for, so a re-run can tell its own objects apart
        obj.metadata.annotations[SPEC_ANNOTATION] = _spec_digest(obj)
    return deployment, service


def _spec_digest(obj: Any) -> str:
    from kubernetes.client import ApiClient

    data = ApiClient().sanitize_for_serialization(obj.spec)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


# --- talking to the API server -------------------------------------------------------------------


@contextmanager
def kube_api(configuration: Configuration | None = None) -> Iterator[ApiClient]:
    """An API client: ``configuration`` if given, else the pod's service account, else the kubeconfig."""
    from kubernetes import client, config

    if configuration is None:
        configuration = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException:
            try:
                # KUBECONFIG read now (the client reads it once, at import)
                config.load_kube_config(config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration)
            except (config.ConfigException, OSError) as exc:
                raise TeacherServerError(
                    f"no Kubernetes credentials: not in a pod with a service-account token and no usable "
                    f"kubeconfig ({_one_line(exc)})"
                ) from exc
    api = client.ApiClient(configuration)
    try:
        yield api
    finally:
        api.close()


def _one_line(value: object, limit: int = 400) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _api_message(exc: Exception) -> str:
    from kubernetes.client.exceptions import ApiException

    if isinstance(exc, ApiException):
        detail = ""
        try:
            detail = json.loads(exc.body or "{}").get("message", "")
        except (ValueError, AttributeError):
            detail = exc.body or ""
        text = f"HTTP {exc.status} {exc.reason}" + (f": {detail}" if detail else "")
        return _one_line(text + (f"; {RBAC_HINT}" if exc.status == 403 else ""))
    return _one_line(f"{type(exc).__name__}: {exc}")


def _call(what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run one API call; anything but success becomes a one-line :class:`TeacherServerError`."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        return fn(*args, **kwargs)
    except (ApiException, HTTPError, OSError) as exc:
        raise TeacherServerError(f"{what}: {_api_message(exc)}") from exc


def _status(exc: Exception) -> int | None:
    from kubernetes.client.exceptions import ApiException

    return exc.status if isinstance(exc, ApiException) else None


def _create(kind: str, create: Callable, read: Callable, obj: Any, namespace: str) -> bool:
    """Create ``obj``; an identical one of the same run already there is used (returns True), anything
    else of that name is an error."""
    name = obj.metadata.name
    try:
        _call(f"cannot create {kind} {namespace}/{name}", create, namespace, obj)
        log.info("created %s %s/%s", kind, namespace, name)
        return False
    except TeacherServerError as exc:
        if _status(exc.__cause__) != 409:  # 409 AlreadyExists: see whose it is
            raise
    existing = _call(f"cannot read existing {kind} {namespace}/{name}", read, name, namespace)
    theirs = existing.metadata.annotations or {}
    ours = obj.metadata.annotations
    if theirs.get(RUN_ID_LABEL) == ours[RUN_ID_LABEL] and theirs.get(SPEC_ANNOTATION) == ours[SPEC_ANNOTATION]:
        log.info("%s %s/%s already exists for this run with the same spec: using it", kind, namespace, name)
        return True
    raise TeacherServerError(
        f"{kind} {namespace}/{name} already exists but was made for run {theirs.get(RUN_ID_LABEL)!r} or with "
        f"another spec; delete it (kubectl delete deploy,svc -n {namespace} -l {RUN_ID_LABEL}="
        f"{obj.metadata.labels[RUN_ID_LABEL]}) and retry"
    )


def _health(url: str, timeout_s: float = 5.0) -> str | None:
    """None when ``GET url`` answers 200, else why not."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return None if resp.status == 200 else f"HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return _one_line(getattr(exc, "reason", exc))


@dataclass(frozen=True)
class PodState:
    text: str  # one line: what the server's pod is doing
    reason: str = ""  # the container's waiting reason, if it waits
    restarts: int = 0


def _pod_state(core: Any, namespace: str, label_selector: str) -> PodState:
    """What the server's pod is doing."""
    pods = _call(f"cannot list pods in {namespace}", core.list_namespaced_pod, namespace,
                 label_selector=label_selector).items
    if not pods:
        return PodState("no pod yet (see the Deployment's ReplicaSet events: quota, admission, node capacity)")
    pod = pods[0]
    status = pod.status
    phase = status.phase if status else "Unknown"
    for cs in (status.container_statuses or []) if status else []:
        waiting = cs.state.waiting if cs.state else None
        if waiting and waiting.reason:
            last = cs.last_state.terminated if cs.last_state and cs.last_state.terminated else None
            ended = f"; last exit {last.exit_code} ({last.reason})" if last else ""
            restarts = cs.restart_count or 0
            text = f"pod {pod.metadata.name} {phase}: {waiting.reason} {waiting.message or ''}".rstrip() + ended
            return PodState(_one_line(f"{text} (restarts: {restarts})"), waiting.reason, restarts)
        if cs.state and cs.state.running and not cs.ready:
            return PodState(f"pod {pod.metadata.name} running, not ready yet (restarts: {cs.restart_count})",
                            restarts=cs.restart_count or 0)
    for cond in (status.conditions or []) if status else []:
        if cond.status != "True" and cond.reason:
            text = f"pod {pod.metadata.name} {phase}: {cond.type} {cond.reason} {cond.message or ''}"
            return PodState(_one_line(text))
    return PodState(f"pod {pod.metadata.name} {phase}")


def _hopeless(state: PodState, pulling_for: float, s: TeacherServerSettings) -> str:
    """Why waiting longer cannot help ("" while it still can): what the readiness wait fails on at once."""
    if state.reason in FATAL_WAITING_REASONS:
        return state.reason
    if state.reason in IMAGE_PULL_REASONS and pulling_for >= s.image_pull_grace_seconds:
        return (f"the image cannot be pulled ({pulling_for:.0f}s): check that {s.image} was pushed and that "
                f"image_pull_secrets grant access")
    if state.reason == CRASH_LOOP and state.restarts >= s.max_restarts:
        return f"the server crashed {state.restarts} times (max_restarts {s.max_restarts}): see its logs"
    return ""


def workflow_owner(api: ApiClient, namespace: str, pod_name: str) -> V1OwnerReference | None:
    """An owner reference to the Argo Workflow that owns pod ``pod_name`` (KFP runs every task in a pod
    its run's Workflow owns); None, with a warning, when there is none or it cannot be read."""
    from kubernetes import client

    try:
        pod = _call(f"cannot read this pod {namespace}/{pod_name}", client.CoreV1Api(api).read_namespaced_pod,
                    pod_name, namespace)
    except TeacherServerError as exc:
        log.warning("%s: the teacher server gets no owner (it outlives a deleted run)", exc)
        return None
    for ref in pod.metadata.owner_references or []:
        if ref.kind == "Workflow" and ref.api_version.startswith("argoproj.io/"):
            # no blockOwnerDeletion: that would need update rights on the Workflow's finalizers
            return client.V1OwnerReference(api_version=ref.api_version, kind=ref.kind, name=ref.name, uid=ref.uid)
    log.warning("pod %s/%s has no Argo Workflow owner: the teacher server gets none", namespace, pod_name)
    return None


def wait_ready(
    api: ApiClient, name: str, namespace: str, url: str, label_selector: str, settings: TeacherServerSettings
) -> float:
    """Seconds until the Deployment has a ready pod and ``url/health`` answers 200; a one-line error at
    the settings' ``ready_timeout_seconds``, or as soon as the pod cannot start (:func:`_hopeless`: a bad
    image name, an image that cannot be pulled, a crash loop past ``max_restarts``)."""
    from kubernetes import client

    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    timeout_s, poll_s = settings.ready_timeout_seconds, settings.poll_seconds
    start = time.monotonic()
    state, said = "not observed yet", ""
    pulling_since: float | None = None
    while True:
        dep = _call(f"cannot read Deployment {namespace}/{name}", apps.read_namespaced_deployment, name, namespace)
        ready = dep.status is not None and (dep.status.ready_replicas or 0) >= 1
        if ready:
            problem = _health(f"{url}/health")
            if problem is None:
                return time.monotonic() - start
            state = f"pod ready but GET {url}/health: {problem}"
        else:
            pod = _pod_state(core, namespace, label_selector)
            state, now = pod.text, time.monotonic()
            pulling_since = (pulling_since or now) if pod.reason in IMAGE_PULL_REASONS else None
            why = _hopeless(pod, now - pulling_since if pulling_since is not None else 0.0, settings)
            if why:
                raise TeacherServerError(f"teacher server {namespace}/{name} cannot start: {state}; {why}")
        elapsed = time.monotonic() - start
        if state != said:
            log.info("teacher server %s/%s after %.0fs: %s", namespace, name, elapsed, state)
            said = state
        if elapsed >= timeout_s:
            raise TeacherServerError(f"teacher server {namespace}/{name} not ready after {timeout_s:g}s: {state}")
        time.sleep(min(poll_s, timeout_s - elapsed))


# --- the two entry points ------------------------------------------------------------------------


def start_teacher_server(
    settings: TeacherServerSettings | dict | str | None,
    run_id: str,
    model: str,
    namespace: str = "",
    configuration: Configuration | None = None,
) -> TeacherServer:
    """Create this run's teacher server, wait until it answers ``/health`` through its Service, return it.

    On any failure after the first object is created, everything carrying the run's label is
    deleted before the error is raised.
    """
    from kubernetes import client

    s = parse_settings(settings)
    namespace = current_namespace(namespace)
    build_objects(s, run_id, model, namespace)  # bad settings fail here, before any API call
    with kube_api(configuration) as api:
        pod_name = os.environ.get(POD_NAME_ENV, "")
        owner = workflow_owner(api, namespace, pod_name) if s.owned_by_workflow and pod_name else None
        deployment, service = build_objects(s, run_id, model, namespace, owner)
        name = deployment.metadata.name
        url = service_url(name, namespace, s.port, s.cluster_domain)
        apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
        try:
            reused = _create("Deployment", apps.create_namespaced_deployment, apps.read_namespaced_deployment,
                             deployment, namespace)
            reused &= _create("Service", core.create_namespaced_service, core.read_namespaced_service,
                              service, namespace)
            seconds = wait_ready(api, name, namespace, url, selector(run_id), s)
        except BaseException as exc:
            try:
                _delete_all(api, run_id, namespace)
            except TeacherServerError as cleanup:
                log.error("after %s: %s", type(exc).__name__, cleanup)
                if isinstance(exc, TeacherServerError):
                    raise TeacherServerError(f"{exc} (and the cleanup failed: {cleanup})") from exc
            raise
    log.info("teacher server %s ready after %.0fs: %s", name, seconds, url)
    return TeacherServer(name=name, namespace=namespace, url=url, seconds_to_ready=seconds, reused=reused)


def _delete_all(api: ApiClient, run_id: str, namespace: str) -> list[str]:
    from kubernetes import client

    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    sel = selector(run_id)
    body = client.V1DeleteOptions(propagation_policy="Background")  # the ReplicaSet and pod go with it
    deleted = []
    for kind, lister, deleter in (
        ("Deployment", apps.list_namespaced_deployment, apps.delete_namespaced_deployment),
        ("Service", core.list_namespaced_service, core.delete_namespaced_service),
    ):
        found = _call(f"cannot list {kind}s -l {sel} in {namespace}", lister, namespace, label_selector=sel).items
        for obj in found:
            name = obj.metadata.name
            try:
                deleter(name, namespace, body=body)
            except Exception as exc:
                if _status(exc) == 404:  # gone in between: what we wanted
                    continue
                raise TeacherServerError(f"cannot delete {kind} {namespace}/{name}: {_api_message(exc)}") from exc
            log.info("deleted %s %s/%s", kind, namespace, name)
            deleted.append(f"{kind}/{name}")
    return deleted


def stop_teacher_server(run_id: str, namespace: str = "", configuration: Configuration | None = None) -> list[str]:
    """Delete every Deployment and Service labelled with this run's id; returns ``Kind/name`` of each
    one deleted (an empty list when nothing was there: deleting twice is fine)."""
    namespace = current_namespace(namespace)
    with kube_api(configuration) as api:
        deleted = _delete_all(api, run_id, namespace)
    if not deleted:
        log.info("no teacher server of run %s in %s (never started or already deleted)", run_id, namespace)
    return deleted
