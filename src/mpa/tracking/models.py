"""Loading registered models: ``models:/<name>@<alias>`` (or ``/<version>``) references become local
checkpoints the loader reads like any other."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from mpa import storage
from mpa.errors import one_line
from mpa.tracking.server import (
    TrackingError,
    TrackingUnavailable,
    bound_http_waits,
    check_reachable,
    client,
    quiet_mlflow,
    unreachable_cause,
)


def is_model_uri(ref: str) -> bool:
    return str(ref).startswith(("models:/", "runs:/", "mlflow-artifacts:/"))


def download_model(ref: str, tracking_uri: str | None = None, dst: str | Path | None = None) -> Path:
    """Download a ``models:/<name>@<alias>`` (or ``/<version>``) checkpoint to a local directory."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        check_reachable(uri)
    quiet_mlflow()
    bound_http_waits()
    if dst is None:
        dst = storage.cache_dir() / "mlflow-models" / hashlib.sha256(f"{uri}|{ref}".encode()).hexdigest()[:16]
    dst = Path(dst)
    if dst.exists():
        import shutil

        shutil.rmtree(dst)  # aliases move: always fetch what the alias points at now
    dst.mkdir(parents=True)
    try:
        source = ref
        if ref.startswith("models:/"):  # resolve here: MLflow's own resolver ignores tracking_uri for the registry
            name, _, which = ref[len("models:/"):].rstrip("/").partition("@")
            c = client(uri) if uri else __import__("mlflow").MlflowClient()
            if which:
                mv = c.get_model_version_by_alias(name, which)
            else:
                name, _, version = name.partition("/")
                if not version:
                    raise TrackingError(f"{ref}: give models:/<name>@<alias> or models:/<name>/<version>")
                mv = c.get_model_version(name, version)
            source = mv.source
        path = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(dst), tracking_uri=uri))
    except MlflowException as exc:
        cause = unreachable_cause(exc)
        if cause is not None:
            raise TrackingUnavailable(f"cannot load {ref}: MLflow tracking server {uri} is unreachable or failing "
                                      f"({cause}); start it or fix tracking.uri, then re-run") from exc
        raise TrackingError(f"cannot load {ref} from {uri or 'the default MLflow store'}: "
                            f"{one_line(exc.message)}") from exc
    if not (path / "config.json").is_file():
        nested = [p.parent for p in path.rglob("config.json")]
        if len(nested) == 1:
            return nested[0]
        raise TrackingError(f"{ref} is not a Hugging Face checkpoint (no config.json in it)")
    return path
