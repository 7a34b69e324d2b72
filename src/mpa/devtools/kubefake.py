"""A stand-in for the few Kubernetes API calls the per-run teacher server makes, and for its ``/health``.

No API server can run on a development machine without a container runtime and root, so the tests
of :mod:`mpa.orchestrate.kubeflow.teacher_server` talk HTTP to :class:`FakeKubeAPI` instead: a
plain HTTP server on 127.0.0.1 serving, for any namespace,

- ``POST/GET /apis/apps/v1/namespaces/<ns>/deployments`` (create; list with ``labelSelector``),
  ``GET/PATCH/DELETE .../deployments/<name>`` (a merge patch; a delete's ``preconditions`` on
  ``resourceVersion``/``uid`` answered 409 Conflict when they do not hold);
- the same for ``/api/v1/namespaces/<ns>/services``;
- ``GET /api/v1/namespaces/<ns>/pods`` (list with ``labelSelector``): one synthesized pod per
  Deployment, whose state the test chooses (ready after some seconds, never ready, a waiting
  reason such as ``CrashLoopBackOff``); ``GET .../pods/<name>`` for pods a test adds
  (:meth:`FakeKubeAPI.add_task_pod`: a pipeline task's pod owned by an Argo Workflow).

It answers the way the API server does where our code depends on it (``Status`` bodies with
``reason`` and ``code``; 404 NotFound, 409 AlreadyExists; a 422 for a Deployment whose selector
does not match its pod template or a name that is not a DNS label) and refuses anything else
(400 for set-based selectors, 404 for other paths, both recorded in ``unhandled``). ``deny`` makes
chosen calls fail with 403 Forbidden as RBAC would. It enforces nothing else: no authentication,
no RBAC, no schema validation (the tests run ``kubernetes-validate`` on what the client sends), no
controllers beyond the pod it pretends, no scheduling, no DNS.

:class:`HealthResponder` is a plain HTTP server whose ``/health`` answers 200 (after a number of
503s, if asked); :func:`resolve_to_localhost` makes in-process name lookups of ``*.svc.<domain>``
return 127.0.0.1, so the readiness loop's real ``http://<svc>.<ns>.svc.cluster.local:<port>/health``
request reaches it.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

_PATH = re.compile(r"^/(?:api/v1|apis/apps/v1)/namespaces/([^/]+)/(deployments|services|pods)(?:/([^/]+))?$")
_GROUP = {"deployments": "apps/v1", "services": "v1", "pods": "v1"}
_KIND = {"deployments": "Deployment", "services": "Service", "pods": "Pod"}
_PREFIX = {"deployments": "/apis/apps/v1/", "services": "/api/v1/", "pods": "/api/v1/"}
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")


def _status(code: int, reason: str, message: str, details: dict | None = None) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure" if code >= 400 else "Success",
            "message": message, "reason": reason, "details": details or {}, "code": code}


def parse_selector(text: str) -> dict[str, str]:
    """Equality-based label selectors only (``a=b,c==d``); anything else raises ValueError."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        m = re.fullmatch(r"([^=!\s]+)\s*==?\s*([^=!\s]*)", part)
        if not m:
            raise ValueError(f"the fake API supports equality label selectors only, got {part!r}")
        out[m.group(1)] = m.group(2)
    return out


class _LocalServer:
    """An HTTP server on 127.0.0.1 (a free port) answering from a daemon thread; a context manager."""

    _server: ThreadingHTTPServer | None = None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        return self._server.server_address[1]

    def start(self) -> Self:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class FakeKubeAPI(_LocalServer):
    """In-memory Deployments and Services behind the Kubernetes REST paths the client calls.

    ``ready_after_s``: seconds after a Deployment's creation at which it (and its pod) report ready;
    None: never. ``waiting_reason``/``waiting_message``: while not ready, the pod's container waits
    for this reason (e.g. ``ImagePullBackOff``); default: ``ContainerCreating``; ``restart_count``: the
    container's restarts so far. ``unschedulable``: the scheduler's message instead (the pod stays
    Pending with ``PodScheduled=False``, no containers).
    ``deny``: ``{(method, resource)}`` answered 403 Forbidden, e.g. ``{("POST", "deployments")}``.
    """

    def __init__(
        self,
        ready_after_s: float | None = 0.0,
        waiting_reason: str = "ContainerCreating",
        waiting_message: str = "",
        unschedulable: str | None = None,
        deny: set[tuple[str, str]] | None = None,
        restart_count: int = 0,
    ):
        self.ready_after_s = ready_after_s
        self.restart_count = restart_count
        self.waiting_reason = waiting_reason
        self.waiting_message = waiting_message
        self.unschedulable = unschedulable
        self.deny = set(deny or ())
        self.objects: dict[tuple[str, str, str], dict] = {}  # (resource, namespace, name) -> object
        self.pods: dict[tuple[str, str], dict] = {}  # pods read by name (add_task_pod)
        self.created_at: dict[tuple[str, str, str], float] = {}
        self.requests: list[dict] = []
        self.unhandled: list[str] = []
        self._lock = threading.Lock()

    # -- lifecycle
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def configuration(self) -> Any:
        from kubernetes.client import Configuration

        conf = Configuration(host=self.url)
        conf.retries = 0  # a refused call should fail now, not after urllib3's retries
        return conf

    def write_kubeconfig(self, path: str | os.PathLike) -> str:
        """A kubeconfig whose current context is this fake (no credentials: the fake asks for none)."""
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "fake", "preferences": {},
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
        }
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(config, fh)  # JSON is YAML
        return str(path)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                code, body = fake.handle(self.command, self.path, json.loads(raw) if raw else None)
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _handle

        return Handler

    def add_task_pod(self, namespace: str, name: str, workflow: str | None = "mpa-run-abcde") -> dict:
        """A pipeline task's pod, owned (as Argo makes it) by Workflow ``workflow`` (None: no owner)."""
        owners = [{"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "name": workflow,
                   "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, workflow)), "controller": True,
                   "blockOwnerDeletion": True}] if workflow else []
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": namespace, "uid": str(uuid.uuid4()), "ownerReferences": owners},
               "spec": {"containers": [{"name": "main", "image": "mpa-cpu"}]}, "status": {"phase": "Running"}}
        with self._lock:
            self.pods[namespace, name] = pod
        return pod

    # -- what the tests look at
    def names(self, resource: str, namespace: str | None = None) -> list[str]:
        with self._lock:
            return sorted(n for (r, ns, n) in self.objects if r == resource and namespace in (None, ns))

    def calls(self, method: str | None = None, resource: str | None = None) -> list[dict]:
        return [r for r in self.requests if method in (None, r["method"]) and resource in (None, r["resource"])]

    # -- the API
    def handle(self, method: str, target: str, body: dict | None) -> tuple[int, dict]:
        parts = urlsplit(target)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        m = _PATH.match(parts.path)
        if not m or not parts.path.startswith(_PREFIX[m.group(2)]):
            self.unhandled.append(f"{method} {target}")
            return 404, _status(404, "NotFound", f"the fake API does not serve {method} {parts.path}")
        namespace, resource, name = m.groups()
        self.requests.append({"method": method, "resource": resource, "namespace": namespace, "name": name,
                              "query": query, "body": body})
        if (method, resource) in self.deny:
            verbs = {"POST": "create", "GET": "get" if name else "list", "DELETE": "delete", "PATCH": "patch"}
            verb = verbs.get(method, method)
            group, qualified = ("apps", "deployments.apps") if resource == "deployments" else ("", resource)
            return 403, _status(
                403, "Forbidden",
                f'{qualified} is forbidden: User "system:serviceaccount:{namespace}:mpa-pipeline" cannot {verb} '
                f'resource "{resource}" in API group "{group}" in the namespace "{namespace}"')
        with self._lock:
            if method == "GET" and name is None:
                return self._list(resource, namespace, query)
            if resource == "pods":
                if method == "GET" and (namespace, name) in self.pods:
                    return 200, self.pods[namespace, name]
                if method == "GET":
                    return self._not_found(resource, name)
                self.unhandled.append(f"{method} {target}")
                return 405, _status(405, "MethodNotAllowed", "the fake API only reads and lists pods")
            if method == "POST" and name is None:
                return self._create(resource, namespace, body or {})
            if method == "GET":
                return self._read(resource, namespace, name)
            if method == "DELETE":
                return self._delete(resource, namespace, name, body)
            if method == "PATCH":
                return self._patch(resource, namespace, name, body or {})
        self.unhandled.append(f"{method} {target}")
        return 405, _status(405, "MethodNotAllowed", f"the fake API does not serve {method} {parts.path}")

    def _not_found(self, resource: str, name: str) -> tuple[int, dict]:
        group = "deployments.apps" if resource == "deployments" else resource
        return 404, _status(404, "NotFound", f'{group} "{name}" not found', {"name": name, "kind": resource})

    def _create(self, resource: str, namespace: str, obj: dict) -> tuple[int, dict]:
        meta = obj.get("metadata") or {}
        name = meta.get("name", "")
        problems = []
        if obj.get("kind") != _KIND[resource] or obj.get("apiVersion") != _GROUP[resource]:
            problems.append(f"kind/apiVersion {obj.get('kind')}/{obj.get('apiVersion')} posted to {resource}")
        if not _DNS_LABEL.match(name):
            problems.append(f"metadata.name: Invalid value: {name!r}: a lowercase RFC 1035 label must consist of "
                            "lower case alphanumeric characters or '-', start with a letter, at most 63 characters")
        if meta.get("namespace") not in (None, namespace):
            problems.append(f"metadata.namespace: {meta.get('namespace')!r} does not match the request's {namespace!r}")
        if resource == "deployments":
            selector = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
            labels = (((obj.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}
            if not selector or any(labels.get(k) != v for k, v in selector.items()):
                problems.append("spec.template.metadata.labels: Invalid value: `selector` does not match template "
                                "`labels`")
        if problems:
            return 422, _status(422, "Invalid", f"{_KIND[resource]}.{_GROUP[resource]} {name!r} is invalid: "
                                + "; ".join(problems))
        key = (resource, namespace, name)
        if key in self.objects:
            group = "deployments.apps" if resource == "deployments" else resource
            return 409, _status(409, "AlreadyExists", f'{group} "{name}" already exists', {"name": name})
        stored = json.loads(json.dumps(obj))
        stored["metadata"].update(namespace=namespace, uid=str(uuid.uuid4()), resourceVersion="1", generation=1,
                                  creationTimestamp=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        if resource == "services":
            stored["spec"]["clusterIP"] = "10.96.0.10"
        self.objects[key] = stored
        self.created_at[key] = time.monotonic()
        return 201, self._view(key)

    def _ready(self, key: tuple[str, str, str]) -> bool:
        if self.ready_after_s is None:
            return False
        return time.monotonic() - self.created_at[key] >= self.ready_after_s

    def _view(self, key: tuple[str, str, str]) -> dict:
        obj = json.loads(json.dumps(self.objects[key]))
        if key[0] == "deployments":
            ready = self._ready(key)
            obj["status"] = (
                {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1,
                 "availableReplicas": 1,
                 "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}]}
                if ready else
                {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "unavailableReplicas": 1,
                 "conditions": [{"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable"}]}
            )
        return obj

    def _read(self, resource: str, namespace: str, name: str) -> tuple[int, dict]:
        key = (resource, namespace, name)
        return (200, self._view(key)) if key in self.objects else self._not_found(resource, name)

    def _patch(self, resource: str, namespace: str, name: str, patch: dict) -> tuple[int, dict]:
        """A merge patch (maps merge, ``null`` deletes a key — what a strategic merge patch does to labels);
        every change bumps ``metadata.resourceVersion``."""
        key = (resource, namespace, name)
        if key not in self.objects:
            return self._not_found(resource, name)

        def merge(target: dict, change: dict) -> dict:
            out = dict(target)
            for k, v in change.items():
                if v is None:
                    out.pop(k, None)
                elif isinstance(v, dict) and isinstance(out.get(k), dict):
                    out[k] = merge(out[k], v)
                else:
                    out[k] = v
            return out

        obj = merge(self.objects[key], patch)
        obj["metadata"]["resourceVersion"] = str(int(self.objects[key]["metadata"]["resourceVersion"]) + 1)
        self.objects[key] = obj
        return 200, self._view(key)

    def _delete(self, resource: str, namespace: str, name: str, body: dict | None) -> tuple[int, dict]:
        key = (resource, namespace, name)
        if key not in self.objects:
            return self._not_found(resource, name)
        meta = self.objects[key]["metadata"]
        for field, wanted in ((body or {}).get("preconditions") or {}).items():
            if wanted is not None and meta.get(field) != wanted:
                return 409, _status(409, "Conflict", f"Precondition failed: {field} in precondition: {wanted}, "
                                                     f"{field} in object meta: {meta.get(field)}")
        del self.objects[key]
        self.created_at.pop(key, None)
        ok = _status(200, "", "", {"name": name, "kind": resource})
        ok["status"] = "Success"
        return 200, ok

    def _pod(self, key: tuple[str, str, str]) -> dict:
        dep = self.objects[key]
        name = f"{key[2]}-5d4f8b7c9-x2x7q"
        ready = self._ready(key)
        container = dep["spec"]["template"]["spec"]["containers"][0]["name"]
        state = ({"running": {"startedAt": "2025-01-01T00:00:00Z"}} if ready
                 else {"waiting": {"reason": self.waiting_reason, "message": self.waiting_message}})
        status = {
            "phase": "Running" if ready else "Pending",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False",
                            "reason": None if ready else "ContainersNotReady"}],
            "containerStatuses": [{"name": container, "ready": ready, "restartCount": self.restart_count,
                                   "image": dep["spec"]["template"]["spec"]["containers"][0]["image"],
                                   "imageID": "", "state": state}],
        }
        if not ready and self.unschedulable:
            status = {"phase": "Pending", "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": self.unschedulable}]}
        return {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": key[1], "labels": dep["spec"]["template"]["metadata"]["labels"]},
            "spec": json.loads(json.dumps(dep["spec"]["template"]["spec"])),
            "status": status,
        }

    def _list(self, resource: str, namespace: str, query: dict) -> tuple[int, dict]:
        try:
            wanted = parse_selector(query.get("labelSelector", ""))
        except ValueError as exc:
            return 400, _status(400, "BadRequest", str(exc))
        if resource == "pods":
            items = [self._pod(k) for k in self.objects if k[0] == "deployments" and k[1] == namespace]
        else:
            items = [self._view(k) for k in self.objects if k[0] == resource and k[1] == namespace]
        items = [o for o in items if all((o["metadata"].get("labels") or {}).get(k) == v for k, v in wanted.items())]
        return 200, {"kind": f"{_KIND[resource]}List", "apiVersion": _GROUP[resource],
                     "metadata": {"resourceVersion": "1"}, "items": items}


class HealthResponder(_LocalServer):
    """``GET /health`` → 503 for the first ``unhealthy_hits`` requests, then 200 (vLLM's behaviour while
    it loads, then serves); every other path → 404. Not vLLM: nothing here loads or serves a model."""

    def __init__(self, unhealthy_hits: int = 0):
        self.unhealthy_hits = unhealthy_hits
        self.hits = 0

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        responder = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                if self.path != "/health":
                    self.send_error(404)
                    return
                responder.hits += 1
                self.send_response(503 if responder.hits <= responder.unhealthy_hits else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        return Handler


@contextmanager
def resolve_to_localhost(domain_suffix: str = ".svc.cluster.local") -> Iterator[list[str]]:
    """In this process, look up every host name ending in ``domain_suffix`` as 127.0.0.1 (cluster DNS's
    part, faked); yields the names looked up."""
    real = socket.getaddrinfo
    asked: list[str] = []

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host.endswith(domain_suffix):
            asked.append(host)
            host = "127.0.0.1"
        return real(host, *args, **kwargs)

    socket.getaddrinfo = getaddrinfo
    try:
        yield asked
    finally:
        socket.getaddrinfo = real
