"""Compile the pipeline, upload it as a version named after the git revision, run it, wait.

Connection settings follow the kfp client's conventions: ``--host`` or ``KF_PIPELINES_ENDPOINT``
(also ``KFP_ENDPOINT``, the kfp CLI's variable); ``--namespace`` or ``KFP_NAMESPACE`` (default
``kubeflow``); ``--token`` or ``KFP_EXISTING_TOKEN`` (a bearer token, e.g. from
``kubectl create token``). Inside a cluster, with none given, the kfp client uses the pod's
projected service-account token (``KF_PIPELINES_SA_TOKEN_PATH``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mpa.orchestrate.kubeflow.settings import PipelineSettings

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[4]
COMPILED = REPO_ROOT / "pipelines" / "compiled" / "mpa.yaml"
FINISHED = {"succeeded", "failed", "skipped", "error", "canceled", "cancelled"}


class PipelineClientError(RuntimeError):
    """Something about talking to Kubeflow Pipelines that the user must fix (named in the message)."""


# --- compile ------------------------------------------------------------------------------------


def compile_pipeline(out: str | Path, settings: PipelineSettings | None = None) -> Path:
    """Compile the MPA pipeline (with ``settings`` applied) to a KFP IR YAML file."""
    from kfp import compiler

    from mpa.orchestrate.kubeflow.pipeline import build_pipeline

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(settings), str(out))
    return out


def spec_digest(path: str | Path) -> str:
    """A short digest of a compiled pipeline's content."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:10]


# --- naming -------------------------------------------------------------------------------------


def git_revision(cwd: str | Path | None = None) -> tuple[str, bool] | None:
    """``(short commit, dirty)`` of the work tree at ``cwd``, or ``None`` outside git."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return sha, bool(status)


def version_name(package: str | Path, revision: tuple[str, bool] | None) -> str:
    """The pipeline version name: ``git-<sha>``; a dirty tree or no git adds the spec's digest
    (``git-<sha>-dirty-<digest>``, ``spec-<digest>``), so the same name always means the same spec.
    Uploading the same revision twice is therefore a no-op (see :func:`upload_version`)."""
    if revision is None:
        return f"spec-{spec_digest(package)}"
    sha, dirty = revision
    if not re.fullmatch(r"[0-9a-f]{4,40}", sha):
        raise ValueError(f"not a git commit: {sha!r}")
    return f"git-{sha}-dirty-{spec_digest(package)}" if dirty else f"git-{sha}"


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
        namespace=namespace or env.get("KFP_NAMESPACE") or "kubeflow",
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
    version is returned (names carry the git revision, and the spec digest when the tree is dirty).
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


def load_run_params(path: str | Path | None, sets: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Run parameters from a YAML mapping (``{param: value}``), with ``--param k=v`` on top;
    every name must be a parameter of the pipeline."""
    from mpa.orchestrate.kubeflow.pipeline import DEFAULT_PARAMS

    params: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise PipelineClientError(f"run parameters file not found: {p}")
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise PipelineClientError(f"{p}: run parameters must be a mapping of parameter: value")
        params.update(data)
    params.update(sets or {})
    allowed = set(DEFAULT_PARAMS) | {"config_overrides"}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise PipelineClientError(
            f"unknown pipeline parameters {unknown}; the pipeline takes: {', '.join(sorted(allowed))}"
        )
    return params


def run_name(version: str, when: float | None = None) -> str:
    return f"mpa-{version}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime(when))}"


def start_run(
    client: Any,
    experiment: str,
    uploaded: Uploaded,
    params: dict[str, Any],
    *,
    namespace: str | None = None,
    name: str | None = None,
    enable_caching: bool | None = None,
    service_account: str | None = None,
) -> str:
    exp = client.create_experiment(name=experiment, namespace=namespace)
    run = client.run_pipeline(
        experiment_id=exp.experiment_id,
        job_name=name or run_name(uploaded.version_name),
        params=params,
        pipeline_id=uploaded.pipeline_id,
        version_id=uploaded.version_id,
        enable_caching=enable_caching,
        service_account=service_account,
    )
    return run.run_id


def wait(client: Any, run_id: str, timeout_s: int, poll_s: int = 30) -> str:
    """Follow a run until it finishes; return its final state (lower case)."""
    result = client.wait_for_run_completion(run_id, timeout=timeout_s, sleep_duration=poll_s)
    return str(getattr(result, "state", "") or "").lower()


def run_succeeded(state: str) -> bool:
    return state == "succeeded"
