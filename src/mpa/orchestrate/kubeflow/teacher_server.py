"""A vLLM teacher server started for pipeline runs, managed with the ``kubernetes`` Python client.

:func:`start_teacher_server` creates one Deployment (``python -m vllm.entrypoints.openai.api_server``
on a GPU node) and one ClusterIP Service; waits until the Deployment has a ready pod *and* ``GET
/health`` answers 200 through the Service's cluster DNS name; and returns the OpenAI-compatible base
URL PA and PI use (``teacher.backend=openai``).

**Named after what it serves, not after the run.** The name (and so the URL) is
``mpa-teacher-<model>-<digest>``, the digest over the model and the server settings: the same teacher
gets the same URL in every run, so the cache keys of every task downstream of the URL stay stable
across runs, and starting it again (a retried task, a second run) finds it instead of failing
(create-or-get). Each run using a server marks its Deployment with a label ``run.mpa/<run id>``;
:func:`stop_teacher_server` removes the run's mark and deletes the server only when no other run's
mark is left (the delete carries the marked object's resourceVersion as a precondition, so a run that
joins at that instant keeps it). Deleting twice, or a run that never started one, is fine. A start
that fails takes back its mark the same way.

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

RUN_ID_LABEL = "mpa/run-id"  # annotation: the run that created the server
SERVER_LABEL = "mpa/teacher-server"  # the server's digest (model + settings), on everything it consists of
USER_PREFIX = "run.mpa/"  # label key prefix: one label run.mpa/<run id>=true per run using the server
SPEC_ANNOTATION = "mpa/spec-sha256"
APP_NAME = "mpa-run-teacher"  # not "mpa-teacher": the shared server's Service must not select these pods
NAME_PREFIX = "mpa-teacher-"
POD_NAME_ENV = "KFP_POD_NAME"  # the KFP v2 driver sets it (downward API) in every task's pod
# PA/PI read their run's id from this variable, which the pipeline fills from the pod's label (downward API):
# the KFP API server labels every pod of a run pipeline/runid=<run id>, the value PIPELINE_JOB_ID_PLACEHOLDER
# resolves to. As an environment variable it is in no task's cache key (an input parameter would be).
RUN_ID_ENV = "MPA_RUN_ID"
RUN_ID_POD_LABEL = "pipeline/runid"
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


# settings that change only how a start waits or who owns the objects, not what is served
_WAIT_ONLY = {"enabled", "poll_seconds", "image_pull_grace_seconds", "max_restarts", "owned_by_workflow"}


def server_digest(settings: TeacherServerSettings | dict | str | None, model: str) -> str:
    """What the server serves, as a digest: the model and every setting that shapes the server."""
    s = parse_settings(settings)
    what = {"model": model, "settings": s.model_dump(mode="json", exclude=_WAIT_ONLY)}
    return _digest(json.dumps(what, sort_keys=True), 10)


def server_name(settings: TeacherServerSettings | dict | str | None, model: str) -> str:
    """Deployment and Service name: ``mpa-teacher-<model>-<digest>`` (a DNS-1035 label of at most 63
    characters), the same for the same model and settings in every run."""
    if not model:
        raise ValueError("model is empty: name the teacher model the server loads")
    tail = model.rstrip("/").rsplit("/", 1)[-1].lower()
    slug = re.sub(r"[^a-z0-9]+", "-", tail).strip("-")[: 63 - len(NAME_PREFIX) - 11].rstrip("-")
    digest = server_digest(settings, model)
    return f"{NAME_PREFIX}{slug}-{digest}" if slug else f"{NAME_PREFIX}{digest}"


def user_label(run_id: str) -> str:
    """The label key marking a run's use of a server: ``run.mpa/<run id>`` (value ``true``)."""
    return f"{USER_PREFIX}{run_label(run_id)}"


def users(labels: dict[str, str] | None) -> list[str]:
    """The runs (label values of :func:`run_label`) a server's labels mark as using it."""
    return sorted(k[len(USER_PREFIX):] for k in (labels or {}) if k.startswith(USER_PREFIX))


def pod_selector(name: str) -> str:
    """Label selector of a server's pods."""
    return f"app.kubernetes.io/instance={name}"


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
    _check_run_id(run_id)
    name, digest = server_name(s, model), server_digest(s, model)
    select = {"app.kubernetes.io/instance": name, SERVER_LABEL: digest}
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

    def meta(**extra: str) -> Any:
        return k.V1ObjectMeta(name=name, namespace=namespace, labels={**labels, **extra},
                              annotations={RUN_ID_LABEL: run_id}, owner_references=owners)

    deployment = k.V1Deployment(
        api_version="apps/v1",
        kind="Deployment",
        metadata=meta(**{user_label(run_id): "true"}),  # this run uses it
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


def _create(kind: str, create: Callable, read: Callable, obj: Any, namespace: str) -> Any:
    """Create ``obj``; returns None when created, else the existing object of that name if it serves the
    same thing (same server digest and spec); anything else of that name is an error."""
    name = obj.metadata.name
    try:
        _call(f"cannot create {kind} {namespace}/{name}", create, namespace, obj)
        log.info("created %s %s/%s", kind, namespace, name)
        return None
    except TeacherServerError as exc:
        if _status(exc.__cause__) != 409:  # 409 AlreadyExists: see what it is
            raise
    existing = _call(f"cannot read existing {kind} {namespace}/{name}", read, name, namespace)
    theirs_labels, theirs = existing.metadata.labels or {}, existing.metadata.annotations or {}
    if (theirs_labels.get(SERVER_LABEL) == obj.metadata.labels[SERVER_LABEL]
            and theirs.get(SPEC_ANNOTATION) == obj.metadata.annotations[SPEC_ANNOTATION]):
        return existing
    raise TeacherServerError(
        f"{kind} {namespace}/{name} already exists but serves something else (not made by mpa for this model and "
        f"these settings); delete it (kubectl delete deploy,svc -n {namespace} {name}) and retry"
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
    release_on_failure: bool = True,
) -> TeacherServer:
    """Create the server for ``model`` and these settings, or find it (then mark this run as using it),
    wait until it answers ``/health`` through its Service, return it.

    On any failure after the run's mark is set, the mark is taken back (and the server deleted if no
    other run uses it) before the error is raised, unless ``release_on_failure`` is false (a PA/PI shard:
    the other shards of the run use the server, the run's cleanups take the mark back).
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
            reused = _create_or_join(apps, deployment, run_id, namespace)
            _ensure_service(core, service, namespace, fresh=not reused)
            seconds = wait_ready(api, name, namespace, url, pod_selector(name), s)
        except BaseException as exc:
            if not release_on_failure:
                raise
            try:
                _release(api, run_id, namespace)
            except TeacherServerError as cleanup:
                log.error("after %s: %s", type(exc).__name__, cleanup)
                if isinstance(exc, TeacherServerError):
                    raise TeacherServerError(f"{exc} (and the cleanup failed: {cleanup})") from exc
            raise
    log.info("teacher server %s ready after %.0fs: %s", name, seconds, url)
    return TeacherServer(name=name, namespace=namespace, url=url, seconds_to_ready=seconds, reused=reused)


def ensure_teacher_server(
    settings: TeacherServerSettings | dict | str | None,
    model: str,
    url: str,
    namespace: str = "",
    configuration: Configuration | None = None,
) -> str:
    """The per-run server's URL for a PA/PI task, after making sure the server is there: found, or created
    again under this run's mark. A KFP Retry re-runs a failed PA/PI but keeps the cleanups that succeeded
    (the exit handler deleted the server when the first attempt failed); the server comes back at the same
    URL (its name depends on what it serves), and the retried run's after-merge cleanup deletes it. A failure
    here never takes the run's mark back: the run's other shards use the server.

    The run's id comes from ``MPA_RUN_ID`` (:data:`RUN_ID_ENV`); without it (outside a KFP run) ``url`` is
    returned as it is, with one warning."""
    run_id = os.environ.get(RUN_ID_ENV, "")
    if not run_id:
        log.warning("%s is not set: cannot re-create the teacher server if it is gone; calling %s as it is",
                    RUN_ID_ENV, url)
        return url
    server = start_teacher_server(settings, run_id, model, namespace, configuration, release_on_failure=False)
    if url and server.openai_base_url != url:
        raise TeacherServerError(f"the teacher server for {model} is at {server.openai_base_url}, not at {url} "
                                 "as the teacher_server task said: its settings differ from this task's")
    return server.openai_base_url


def _create_or_join(apps: Any, deployment: Any, run_id: str, namespace: str) -> bool:
    """Create the Deployment (False) or mark this run on the one serving the same thing (True)."""
    name, mark = deployment.metadata.name, {"metadata": {"labels": {user_label(run_id): "true"}}}
    for _ in range(3):  # it may be deleted between "already exists" and the mark: create it again
        existing = _create("Deployment", apps.create_namespaced_deployment, apps.read_namespaced_deployment,
                           deployment, namespace)
        if existing is None:
            return False
        try:
            apps.patch_namespaced_deployment(name, namespace, mark)
        except Exception as exc:
            if _status(exc) == 404:
                continue
            raise TeacherServerError(f"cannot mark Deployment {namespace}/{name} as used by run {run_id}: "
                                     f"{_api_message(exc)}") from exc
        others = [u for u in users(existing.metadata.labels) if u != run_label(run_id)]
        log.info("teacher server %s/%s exists (used by %d other run(s)): using it", namespace, name, len(others))
        return True
    raise TeacherServerError(f"Deployment {namespace}/{name} keeps being deleted while this run starts it")


def _ensure_service(core: Any, service: Any, namespace: str, fresh: bool) -> None:
    """The Service in front of the Deployment. With a Deployment just created, a Service already there is
    a previous server's, being deleted by its last run's cleanup: replace it, so that cleanup (which deletes
    only the Service it saw, by uid) does not take this one."""
    name = service.metadata.name
    existing = _create("Service", core.create_namespaced_service, core.read_namespaced_service, service, namespace)
    if existing is None or not fresh:
        return
    from kubernetes.client import V1DeleteOptions, V1Preconditions

    try:
        core.delete_namespaced_service(name, namespace, body=V1DeleteOptions(
            preconditions=V1Preconditions(uid=existing.metadata.uid)))
    except Exception as exc:
        if _status(exc) not in (404, 409):
            raise TeacherServerError(f"cannot replace Service {namespace}/{name}: {_api_message(exc)}") from exc
    if _create("Service", core.create_namespaced_service, core.read_namespaced_service, service, namespace):
        log.info("Service %s/%s was re-created meanwhile: using it", namespace, name)


def _release(api: ApiClient, run_id: str, namespace: str) -> list[str]:
    """Take back this run's mark from every server it marked; delete a server no run marks any more (the
    Deployment with the marked object's resourceVersion as precondition: a run that joined meanwhile keeps
    it; its Service by the uid seen before). Returns ``Kind/name`` of what was deleted."""
    from kubernetes import client

    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    key = user_label(run_id)
    sel = f"{key}=true"
    found = _call(f"cannot list Deployments -l {sel} in {namespace}", apps.list_namespaced_deployment, namespace,
                  label_selector=sel).items
    deleted = []
    for dep in found:
        name = dep.metadata.name
        try:
            svc_uid = core.read_namespaced_service(name, namespace).metadata.uid
        except Exception as exc:
            if _status(exc) != 404:
                raise TeacherServerError(f"cannot read Service {namespace}/{name}: {_api_message(exc)}") from exc
            svc_uid = None
        try:
            left = apps.patch_namespaced_deployment(name, namespace, {"metadata": {"labels": {key: None}}})
        except Exception as exc:
            if _status(exc) == 404:  # gone in between: what we wanted
                continue
            raise TeacherServerError(f"cannot unmark Deployment {namespace}/{name}: {_api_message(exc)}") from exc
        others = users(left.metadata.labels)
        if others:
            log.info("teacher server %s/%s: still used by %d other run(s), kept", namespace, name, len(others))
            continue
        body = client.V1DeleteOptions(propagation_policy="Background",  # the ReplicaSet and pod go with it
                                      preconditions=client.V1Preconditions(resource_version=left.metadata.resource_version))
        try:
            apps.delete_namespaced_deployment(name, namespace, body=body)
        except Exception as exc:
            if _status(exc) == 409:  # changed since: another run marked it
                log.info("teacher server %s/%s: another run started using it meanwhile, kept", namespace, name)
                continue
            if _status(exc) != 404:
                raise TeacherServerError(f"cannot delete Deployment {namespace}/{name}: {_api_message(exc)}") from exc
        log.info("deleted Deployment %s/%s", namespace, name)
        deleted.append(f"Deployment/{name}")
        if svc_uid is None:
            continue
        try:
            core.delete_namespaced_service(name, namespace, body=client.V1DeleteOptions(
                preconditions=client.V1Preconditions(uid=svc_uid)))
        except Exception as exc:
            if _status(exc) not in (404, 409):  # gone, or already replaced by a new server's
                raise TeacherServerError(f"cannot delete Service {namespace}/{name}: {_api_message(exc)}") from exc
            continue
        log.info("deleted Service %s/%s", namespace, name)
        deleted.append(f"Service/{name}")
    return deleted


def stop_teacher_server(run_id: str, namespace: str = "", configuration: Configuration | None = None) -> list[str]:
    """This run stops using its teacher server: its mark is taken back, and a server no other run uses is
    deleted. Returns ``Kind/name`` of each object deleted (empty when another run still uses the server,
    or nothing was there: stopping twice is fine)."""
    namespace = current_namespace(namespace)
    with kube_api(configuration) as api:
        deleted = _release(api, run_id, namespace)
    if not deleted:
        log.info("run %s deleted no teacher server in %s (none marked, or still used by another run)", run_id,
                 namespace)
    return deleted
