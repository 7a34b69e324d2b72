"""Register — the aligned student of a finished run becomes a model version in the MLflow registry.

The checkpoint (``<run dir>/level/checkpoint``) is logged as artifacts of the run's MLflow run and
registered with ``MlflowClient.create_model_version(source=<artifact URI>)``, tagged with its
lineage (teacher, base student, task, K, scores, pipeline run). Then, unless told not to, the
version is promoted by aliases (``champion`` / ``challenger``, see :func:`mpa.tracking.promote`).

The checkpoint is an MLflow Model (PL writes it so, :mod:`mpa.serving.mlmodel`; an older one gets its
``MLmodel`` here), so the version loads with ``mlflow.pyfunc.load_model("models:/<name>@<alias>")``.
Registering is idempotent per checkpoint (tag ``mpa.checkpoint_digest``): a rerun or a second writer
gets the existing version.

``mpa run`` does this at its end; ``mpa register --run-dir DIR`` does it for a run made with
tracking off, or whose registration failed; the run directory may be an ``s3://`` prefix.
"""

from __future__ import annotations

import json
from pathlib import Path

from mpa import storage
from mpa.config import RunConfig, parse_config
from mpa.tracking import RegisteredVersion, Tracker, TrackingError


def load_run(run_dir: str | Path) -> tuple[RunConfig, dict, Path]:
    """The resolved config, summary and a local copy of a finished run directory (local or s3://)."""
    run_dir = str(run_dir)
    if storage.is_s3(run_dir):
        local = storage.cache_dir() / "registered-runs" / __import__("hashlib").sha256(
            run_dir.encode()).hexdigest()[:16]
        storage.download_dir(run_dir, local)
    else:
        local = Path(run_dir)
    summary_path, config_path = local / "summary.json", local / "config.yaml"
    if not summary_path.is_file() or not config_path.is_file():
        raise TrackingError(f"{run_dir} is not a finished run directory (needs summary.json and config.yaml): "
                            "run `mpa run` to the end first")
    from mpa import safeyaml

    try:
        data = safeyaml.load(config_path.read_text(encoding="utf-8")) or {}
    except safeyaml.YamlTooLarge as exc:
        raise TrackingError(f"{config_path} refused: {exc}") from None
    data["out"] = run_dir
    for section in ("storage",):  # secrets are masked in config.yaml: take them from the environment
        for key in ("access_key_id", "secret_access_key"):
            if str((data.get(section) or {}).get(key, "")).startswith("*"):
                data[section][key] = None
    return parse_config(data, str(config_path)), json.loads(summary_path.read_text()), local


def register(
    *,
    run_dir: str | Path,
    tracking_uri: str | None = None,
    name: str | None = None,
    promote: bool = True,
    margin: float | None = None,
    checkpoint_uri: str | None = None,
) -> RegisteredVersion:
    """Register the run's aligned checkpoint (and promote it); return the new version.

    ``checkpoint_uri``: the checkpoint is already stored there (e.g. a Kubeflow pipeline's Model
    artifact in S3); the version registers that URI as its source, nothing is uploaded again and
    the run directory needs no ``level/checkpoint``.
    """
    from mpa.tracking.server import uri_for_run_dir

    cfg, summary, local = load_run(run_dir)
    updates = {"enabled": True, "promote": promote,
               "uri": uri_for_run_dir(cfg.tracking.uri, tracking_uri, f"{run_dir}/config.yaml")}
    if name:
        updates["registered_model"] = name
    if margin is not None:
        updates["promotion_margin"] = margin
    cfg = cfg.model_copy(update={"tracking": cfg.tracking.model_copy(update=updates)})
    ckpt = local / "level" / "checkpoint"
    if checkpoint_uri is None and not (ckpt / "config.json").is_file():
        raise TrackingError(f"no aligned checkpoint in {run_dir}/level/checkpoint: run the PL stage first")
    if checkpoint_uri is None:  # a checkpoint PL wrote before it wrote MLflow Models (or without MLflow)
        from mpa.config import task_for
        from mpa.serving.mlmodel import has_mlmodel, write_mlmodel

        if not has_mlmodel(ckpt):
            write_mlmodel(ckpt, cfg.student, task_for(cfg))
    tracker = Tracker(cfg, local, str(run_dir))
    tracker.start()
    try:
        version = tracker.register(summary, ckpt, source=checkpoint_uri)
        tracker.finish("FINISHED")
    except BaseException:
        tracker.finish("FAILED")
        raise
    if storage.is_s3(run_dir):
        storage.write_bytes(storage.join(run_dir, "mlflow_run.json"), (local / "mlflow_run.json").read_bytes())
    return version
