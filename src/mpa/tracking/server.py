"""The MLflow server side of tracking: errors, tracking URIs (embedded or a server), bounded HTTP waits,
a client whose unreachable-server errors are one line."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from mpa.errors import MpaError, one_line
from mpa.redact import redact_text

log = logging.getLogger(__name__)


class TrackingError(MpaError, ValueError):
    """A tracking or registry operation that cannot be done; the message says why and what to do."""


class TrackingUnavailable(TrackingError):
    """The MLflow tracking server cannot be reached."""


# ----------------------------------------------------------------------------- URIs and clients
def embedded_uri(run_dir: str | Path) -> str:
    return f"sqlite:///{Path(run_dir).resolve() / 'mlflow' / 'mlflow.db'}"


def resolve_uri(configured: str | None, run_dir: str | Path) -> tuple[str, bool]:
    """The tracking URI to use and whether it is the embedded store."""
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri, False
    (Path(run_dir) / "mlflow").mkdir(parents=True, exist_ok=True)
    return embedded_uri(run_dir), True


def uri_for_run_dir(run_uri: str | None, flag: str | None, source: str) -> str | None:
    """The tracking URI for a command that reads a run directory someone else may have written
    (``mpa register --run-dir D``): the ``--tracking-uri`` flag, else ``$MLFLOW_TRACKING_URI``.

    A URI that ``D/config.yaml`` names is never taken over them: whoever can write a run directory (a shared
    bucket) must not be able to send the user's MLflow credentials to a server of their choosing. A run-dir URI
    that differs from the environment's is refused unless the flag names the server to use.
    """
    env = os.environ.get("MLFLOW_TRACKING_URI") or None
    if flag:
        return flag
    if run_uri and run_uri != env:
        shown = redact_text(run_uri)
        now = f"$MLFLOW_TRACKING_URI ({redact_text(env)})" if env else "no $MLFLOW_TRACKING_URI"
        raise TrackingError(
            f"{source} names the MLflow server {shown}, but this shell has {now}; mpa does not send your "
            f"credentials to a server a run directory names: pass --tracking-uri with the server to use")
    return env


def check_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast, naming ``uri``, when an HTTP tracking server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    import requests

    try:
        requests.get(uri.rstrip("/") + "/health", timeout=timeout_s)
    except requests.RequestException as exc:
        raise TrackingUnavailable(
            f"MLflow tracking server {redact_text(uri)} is unreachable ({type(exc).__name__}); start it "
            "(scripts/services.sh up), fix MLFLOW_TRACKING_URI / tracking.uri, or unset both to track in "
            "the embedded store inside the run directory") from exc


# Bounded waits on the tracking server (a user's own MLFLOW_HTTP_REQUEST_* variables win): with MLflow's
# defaults (7 retries, backoff factor 2, 120 s timeout) a killed server took 493 s to fail a run. Now a
# server that is down fails a call in seconds, one that accepts and never answers within ~3 x 15 s.
HTTP_LIMITS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
               "MLFLOW_HTTP_REQUEST_TIMEOUT": "15"}
# Artifact transfers (a checkpoint the server proxies to the object store) may take long to be answered.
ARTIFACT_TIMEOUT_S = "300"
ARTIFACT_CALLS = frozenset({"log_artifact", "log_artifacts", "log_table", "log_image", "log_inputs",
                            "download_artifacts"})
_OWN_TIMEOUT: list[bool] = []  # whether MLFLOW_HTTP_REQUEST_TIMEOUT is ours (set by bound_http_waits)


def bound_http_waits() -> None:
    """Give MLflow's HTTP client bounded retries and timeouts unless the environment sets its own."""
    if not _OWN_TIMEOUT:
        _OWN_TIMEOUT.append("MLFLOW_HTTP_REQUEST_TIMEOUT" not in os.environ)
    for key, value in HTTP_LIMITS.items():
        os.environ.setdefault(key, value)


NO_ANSWER, REFUSED = "no answer in time", "connection refused or dropped"


def unreachable_cause(exc: BaseException) -> str | None:
    """Why a failed MLflow call means the server (or the store behind it) is down; None for other errors."""
    import requests

    if isinstance(exc, requests.exceptions.Timeout):
        return NO_ANSWER
    if isinstance(exc, requests.exceptions.ConnectionError):
        return REFUSED
    text = str(getattr(exc, "message", exc))
    if "API request to" not in text or "failed with" not in text:
        return None
    if "timeout" in text.lower() or "timed out" in text.lower():
        return NO_ANSWER
    if "too many" in text and "error responses" in text:
        return "it kept answering with server errors (is the artifact store behind it down?)"
    if "refused" in text.lower() or "Max retries exceeded" in text or "Connection aborted" in text:
        return REFUSED
    return one_line(text, 160)


def _refused_request(exc: Exception, call: str, uri: str) -> TrackingError | None:
    """A request MLflow refused as invalid (a bad filter, a name it cannot take), or a full disk under its
    artifact copy, as one line; ``None`` for anything else."""
    from mlflow.exceptions import MlflowException

    if isinstance(exc, OSError) and exc.errno is not None:
        from mpa.safeio import DISK_ERRNOS, write_error

        return TrackingError(str(write_error(exc.filename or "an MLflow artifact", exc))) \
            if exc.errno in DISK_ERRNOS else None
    if not isinstance(exc, MlflowException):
        return None
    text = str(getattr(exc, "message", exc))
    if "No space left on device" in text or "Disk quota exceeded" in text:
        return TrackingError(f"MLflow at {redact_text(uri)} could not store artifacts: the disk is full "
                             f"({one_line(text, 160)}); free space, then re-run the same command")
    if call.startswith("search") and getattr(exc, "error_code", "") == "INVALID_PARAMETER_VALUE":
        # a filter it cannot parse (a name with a quote); other refusals (an alias not found) are the caller's
        return TrackingError(f"MLflow at {redact_text(uri)} refused {call}: {one_line(text, 200)}")
    return None


class GuardedClient:
    """An ``MlflowClient`` whose failures from an unreachable server become one :class:`TrackingUnavailable`.

    After the first such failure every further call fails at once (a run that is failing does not wait
    for the server once more to mark itself failed). Artifact transfers get a longer read timeout.
    """

    def __init__(self, inner: Any, uri: str) -> None:
        self._inner = inner
        self._uri = uri
        self._down: str | None = None

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name.startswith("_") or not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            if self._down is not None:
                raise TrackingUnavailable(self._down)
            longer = name in ARTIFACT_CALLS and _OWN_TIMEOUT == [True]
            if longer:
                os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = ARTIFACT_TIMEOUT_S
            try:
                return attr(*args, **kwargs)
            except Exception as exc:
                cause = unreachable_cause(exc)
                if cause is None:
                    refused = _refused_request(exc, name, self._uri)
                    if refused is not None:
                        raise refused from exc
                    raise
                msg = (f"MLflow tracking server {self._uri} is unreachable or failing ({cause}); start it "
                       "(and the store behind it) or fix tracking.uri / MLFLOW_TRACKING_URI, then re-run the same "
                       "command — finished stages are kept and the run resumes in the same MLflow run")
                if cause in (NO_ANSWER, REFUSED):  # the server itself is gone: later calls fail at once
                    self._down = msg
                raise TrackingUnavailable(msg) from exc
            finally:
                if longer:
                    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = HTTP_LIMITS["MLFLOW_HTTP_REQUEST_TIMEOUT"]

        return call


def client(uri: str) -> Any:
    """An MLflow client for ``uri`` with bounded waits (:func:`bound_http_waits`, :class:`GuardedClient`)."""
    from mlflow import MlflowClient

    bound_http_waits()
    if redact_text(uri) != uri:
        # MLflow prints "View run … at: <host>/#/…" with the host as given, user:password included: the
        # tracker prints the link itself, redacted (Tracker.start)
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    return GuardedClient(MlflowClient(tracking_uri=uri, registry_uri=uri), uri)


def quiet_mlflow() -> None:
    for name in ("mlflow", "alembic", "mlflow.store.db.utils"):
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
