"""Upload a compiled pipeline as a version named after the git revision and the spec, run it, wait.

Connection settings follow the kfp client's conventions: ``--host`` or ``KF_PIPELINES_ENDPOINT``
(also ``KFP_ENDPOINT``, the kfp CLI's variable); ``--namespace`` or ``KFP_NAMESPACE``; ``--token``
or ``KFP_EXISTING_TOKEN`` (a bearer token, e.g. from ``kubectl create token``). Inside a cluster,
with none given, the kfp client uses the pod's projected service-account token
(``KF_PIPELINES_SA_TOKEN_PATH``).

The namespace is where runs and experiments live: ``kubeflow`` on a standalone KFP install (the
default here), the user's Profile namespace (e.g. ``kubeflow-user-example-com``) on multi-user
Kubeflow, where a client without one reaches no experiment.

Compiling is the pipeline package's own job (``mpa_kfp.pipelines.training.mpa.pipeline``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

DEFAULT_NAMESPACE = "kubeflow"  # standalone KFP; multi-user Kubeflow: your Profile namespace
FINISHED = {"succeeded", "failed", "skipped", "error", "canceled", "cancelled"}


class PipelineClientError(ValueError):
    """Something about talking to Kubeflow Pipelines that the user must fix (named in the message)."""


# --- the compiled spec ---------------------------------------------------------------------------


def spec_digest(path: str | Path) -> str:
    """A short digest of a compiled pipeline's content."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:10]


# --- naming -------------------------------------------------------------------------------------


def version_name(package: str | Path, revision: tuple[str, bool] | None) -> str:
    """The pipeline version name: ``git-<sha>-<digest>`` (``git-<sha>-dirty-<digest>`` for a dirty
    tree, ``spec-<digest>`` outside git), where the digest is the compiled spec's: settings and
    images are part of it, so a different compile of the same commit gets a different name and the
    same name always means the same spec. Uploading it twice is a no-op (:func:`upload_version`)."""
    digest = spec_digest(package)
    if revision is None:
        return f"spec-{digest}"
    sha, dirty = revision
    if not re.fullmatch(r"[0-9a-f]{4,40}", sha):
        raise ValueError(f"not a git commit: {sha!r}")
    return f"git-{sha}-dirty-{digest}" if dirty else f"git-{sha}-{digest}"


# --- client -------------------------------------------------------------------------------------


@dataclass
class Connection:
    host: str | None
    namespace: str
    token: str | None

    def describe(self) -> str:
        token = "set" if self.token else "none"
        return f"{self.host or '(in-cluster default)'} namespace={self.namespace} token={token}"


def resolve_connection(
    host: str | None = None,
    namespace: str | None = None,
    token: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Connection:
    """Flags win over environment variables (see the module docstring for the names)."""
    env = os.environ if env is None else env
    return Connection(
        host=host or env.get("KF_PIPELINES_ENDPOINT") or env.get("KFP_ENDPOINT") or None,
        namespace=namespace or env.get("KFP_NAMESPACE") or DEFAULT_NAMESPACE,
        token=token or env.get("KFP_EXISTING_TOKEN") or None,
    )


def make_client(conn: Connection) -> Any:
    import kfp

    return kfp.Client(host=conn.host, namespace=conn.namespace, existing_token=conn.token)


def _eq_filter(key: str, value: str) -> str:
    return json.dumps({"predicates": [{"operation": "EQUALS", "key": key, "stringValue": value}]})


@dataclass
class Uploaded:
    pipeline_id: str
    version_id: str
    version_name: str
    created: bool


def upload_version(
    client: Any, package: str | Path, pipeline_name: str, version: str, description: str | None = None
) -> Uploaded:
    """Upload ``package`` as version ``version`` of pipeline ``pipeline_name`` (created if missing).

    Idempotent: if the pipeline already has a version of that name, nothing is uploaded and that
    version is returned (names carry the git revision and the spec's digest).
    """
    package = str(package)
    pipeline_id = client.get_pipeline_id(pipeline_name)
    if pipeline_id is None:
        pipeline = client.upload_pipeline(package, pipeline_name=pipeline_name, description=description)
        pipeline_id = pipeline.pipeline_id
    else:
        found = client.list_pipeline_versions(
            pipeline_id=pipeline_id, page_size=1, filter=_eq_filter("display_name", version)
        )
        existing = list(getattr(found, "pipeline_versions", None) or [])
        if existing:
            return Uploaded(pipeline_id, existing[0].pipeline_version_id, version, created=False)
    v = client.upload_pipeline_version(
        package, pipeline_version_name=version, pipeline_id=pipeline_id, description=description
    )
    return Uploaded(pipeline_id, v.pipeline_version_id, version, created=True)


# --- run ----------------------------------------------------------------------------------------


def package_inputs(package: str | Path) -> dict[str, dict]:
    """The run parameters a compiled pipeline declares (its root ``inputDefinitions``)."""
    docs = list(yaml.safe_load_all(Path(package).read_text(encoding="utf-8")))
    return dict(docs[0]["root"]["inputDefinitions"]["parameters"])


def run_arguments(
    package: str | Path,
    config_file: str | Path | None = None,
    sets: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    shards: int | None = None,
) -> dict[str, Any]:
    """The arguments of a run: the run config (a YAML file as ``mpa run -c`` reads it, with dotted
    ``sets`` on top, as ``mpa run --set``) as ``config``, per-run ``params`` by name, ``shards``.

    Checked here as prepare will check them (the same :func:`mpa.orchestrate.kubeflow.params.run_config`),
    so a bad config fails before anything is uploaded; a secret in either is refused.
    """
    from mpa.config import ConfigError, apply_overrides, read_config_data
    from mpa.orchestrate.kubeflow.params import PIPELINE_ONLY, run_config

    inputs = package_inputs(package)
    try:
        config = read_config_data(config_file) if config_file is not None else {}
        config = apply_overrides(config, dict(sets or {}))
    except ConfigError as exc:
        raise PipelineClientError(str(exc)) from None
    params = dict(params or {})
    named = sorted(set(params) & set(PIPELINE_ONLY))
    if named:
        raise PipelineClientError(f"{', '.join(named)}: give these with --params/--set and --shards, not --param")
    unknown = sorted(set(params) - set(inputs))
    if unknown:
        allowed = ", ".join(n for n in inputs if n not in PIPELINE_ONLY)
        raise PipelineClientError(f"unknown run parameters {unknown}; the pipeline takes: {allowed}")
    try:
        run_config(config, params, source=str(config_file or "the run arguments"))
    except ConfigError as exc:
        raise PipelineClientError(str(exc)) from None
    args: dict[str, Any] = {"config": config, **{k: v for k, v in params.items() if v is not None}}
    if shards is not None:
        if shards < 1:
            raise PipelineClientError(f"--shards must be >= 1, got {shards}")
        args["shards"] = shards
    return args


def run_name(version: str, when: float | None = None) -> str:
    return f"mpa-{version}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime(when))}"


def without_caching(package: str | Path, out: str | Path) -> Path:
    """A copy of the compiled spec ``package`` at ``out`` with caching off for every task in every DAG: the
    root, loop bodies, conditions, exit-handler groups (the kfp client's own override reaches only the
    root DAG's tasks, so annotate/identify in the ParallelFor would still come from the cache)."""
    docs = list(yaml.safe_load_all(Path(package).read_text(encoding="utf-8")))
    spec = docs[0]
    dags = [spec["root"]["dag"], *(c["dag"] for c in spec.get("components", {}).values() if "dag" in c)]
    for dag in dags:
        for task in dag.get("tasks", {}).values():
            task["cachingOptions"] = {**(task.get("cachingOptions") or {}), "enableCache": False}
    out = Path(out)
    out.write_text(yaml.safe_dump_all(docs, sort_keys=False), encoding="utf-8")
    return out


def start_run(
    client: Any,
    experiment: str,
    uploaded: Uploaded,
    params: dict[str, Any],
    *,
    package: str | Path | None = None,
    namespace: str | None = None,
    name: str | None = None,
    enable_caching: bool | None = None,
    service_account: str | None = None,
) -> str:
    """Start a run of the uploaded version; with ``enable_caching=False``, a run of ``package`` (the same
    compiled spec) with caching off in every task.

    The KFP API has no run-level caching switch: the backend reads ``cachingOptions`` per task from the
    spec it runs, and the kfp client (2.17) applies ``enable_caching`` only to a spec it sends itself, i.e.
    a package path, never to a pipeline version id. So a run without the cache is submitted as a spec
    (:func:`without_caching`); in the KFP UI it shows no link to the version (its name still carries it).
    ``enable_caching=True`` runs the version as compiled: tasks compiled uncached (register, the teacher
    server and its cleanup) stay uncached — forcing them on would hand out a deleted server's URL."""
    import tempfile

    exp = client.create_experiment(name=experiment, namespace=namespace)
    common = dict(experiment_id=exp.experiment_id, job_name=name or run_name(uploaded.version_name), params=params,
                  service_account=service_account)
    if enable_caching is False:
        if package is None:
            raise PipelineClientError("a run without the cache needs the compiled package (--package)")
        with tempfile.TemporaryDirectory(prefix="mpa-nocache-") as tmp:
            spec = without_caching(package, Path(tmp) / "pipeline.yaml")
            run = client.run_pipeline(pipeline_package_path=str(spec), enable_caching=False, **common)
        log.info("run %s: every task's cache off (submitted as a spec, not as version %s)", run.run_id,
                 uploaded.version_name)
        return run.run_id
    run = client.run_pipeline(pipeline_id=uploaded.pipeline_id, version_id=uploaded.version_id, **common)
    return run.run_id


def wait(
    client: Any,
    run_id: str,
    timeout_s: int,
    poll_s: int = 30,
    *,
    clock: Callable[[], float] | None = None,
    sleep: Callable[[float], None] | None = None,
    max_errors: int = 5,
) -> str:
    """Follow a run until it finishes (succeeded, failed, skipped, error, canceled); return that
    state in lower case. A refused token (HTTP 401/403, e.g. expired) stops at once with a clear
    error; a few server or network errors in a row are retried; ``TimeoutError`` after ``timeout_s``."""
    clock, sleep = clock or time.monotonic, sleep or time.sleep
    deadline = clock() + timeout_s
    errors = 0
    while True:
        try:
            run = client.get_run(run_id)
        except Exception as exc:  # kfp_server_api.ApiException, urllib3 errors
            status = getattr(exc, "status", None)
            if status in (401, 403):
                raise PipelineClientError(
                    f"the KFP API refused the token (HTTP {status}) while following run {run_id}: it expired or "
                    f"lacks access to the namespace; get a new one (--token / KFP_EXISTING_TOKEN) and follow the "
                    f"run again with `mpa pipeline wait {run_id}`"
                ) from None
            if isinstance(status, int) and status < 500:
                raise PipelineClientError(f"the KFP API answered HTTP {status} for run {run_id}: {exc}") from None
            errors += 1
            if errors >= max_errors:
                raise PipelineClientError(f"{errors} errors in a row while following run {run_id}: {exc}") from None
            log.warning("following run %s: %s (retrying)", run_id, exc)
        else:
            errors = 0
            state = str(getattr(run, "state", "") or "").lower()
            if state in FINISHED:
                return state
        if clock() >= deadline:
            raise TimeoutError(f"run {run_id} did not finish within {timeout_s} s")
        sleep(poll_s)


def stop(client: Any, run_id: str) -> str:
    """Terminate a run unless it has finished; return its state then (``terminating`` if asked to stop)."""
    state = str(getattr(client.get_run(run_id), "state", "") or "").lower()
    if state in FINISHED:
        return state
    client.terminate_run(run_id)
    return "terminating"


def run_succeeded(state: str) -> bool:
    return state == "succeeded"
