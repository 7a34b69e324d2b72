"""Where KServe reads a registered student from: the ``storageUri`` of ``manifests/serving/``.

A version registered by ``mpa run`` has the source ``mlflow-artifacts:/<experiment>/<run>/artifacts/checkpoint``:
MLflow's proxied artifact store, which KServe's storage initializer cannot read. The files lie in the
server's ``--artifacts-destination`` (``s3://mpa-mlflow/artifacts`` in ``manifests/base/mlflow.yaml``) under the
same path, so the storage URI is that prefix + the path. A version registered by the Kubeflow pipeline
already has an ``s3://`` source (the level step's Model artifact): it is used as it is.

``python -m mpa.serving.kserve --name <registered model> [--alias champion]`` prints it.
"""

from __future__ import annotations

import argparse
import os
import sys
from urllib.parse import urlparse

from mpa.tracking.server import TrackingError

#: The MLflow server's --artifacts-destination in manifests/base/mlflow.yaml.
DEFAULT_ARTIFACTS_DESTINATION = "s3://mpa-mlflow/artifacts"
ENV_DESTINATION = "MPA_MLFLOW_ARTIFACTS_DESTINATION"


def storage_uri(source: str, artifacts_destination: str = DEFAULT_ARTIFACTS_DESTINATION) -> str:
    """The ``s3://`` URI of a model version's files, from its registry ``source``."""
    parsed = urlparse(source)
    if parsed.scheme == "s3":
        return source.rstrip("/")
    if parsed.scheme == "mlflow-artifacts":
        if not artifacts_destination.startswith("s3://"):
            raise TrackingError(f"the MLflow artifacts destination must be an s3:// prefix, got "
                                f"{artifacts_destination!r}")
        return artifacts_destination.rstrip("/") + "/" + parsed.path.strip("/")
    raise TrackingError(f"model version source {source!r} is not in an object store KServe can read (s3://, or "
                        "mlflow-artifacts:/ proxied to S3): register with a tracking server whose artifacts go to S3")


def version_storage_uri(name: str, alias: str, tracking_uri: str,
                        artifacts_destination: str = DEFAULT_ARTIFACTS_DESTINATION) -> str:
    """``storage_uri`` of the version ``models:/<name>@<alias>`` points at now."""
    from mpa.tracking.server import check_reachable, client

    check_reachable(tracking_uri)
    mv = client(tracking_uri).get_model_version_by_alias(name, alias)
    return storage_uri(str(mv.source), artifacts_destination)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mpa.serving.kserve",
                                description="Print the s3:// storageUri of a registered student for KServe.")
    p.add_argument("--name", required=True, help="registered model name")
    p.add_argument("--alias", default="champion", help="registry alias (default: champion)")
    p.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"),
                   help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI)")
    p.add_argument("--artifacts-destination", default=os.environ.get(ENV_DESTINATION, DEFAULT_ARTIFACTS_DESTINATION),
                   help=f"the MLflow server's --artifacts-destination (default: ${ENV_DESTINATION}, else "
                        f"{DEFAULT_ARTIFACTS_DESTINATION})")
    args = p.parse_args(argv)
    if not args.tracking_uri:
        print("error: no tracking URI: pass --tracking-uri or set MLFLOW_TRACKING_URI", file=sys.stderr)
        return 2
    try:
        print(version_storage_uri(args.name, args.alias, args.tracking_uri, args.artifacts_destination))
    except Exception as exc:  # noqa: BLE001 - one line for the terminal, whatever MLflow raised
        print(f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
