"""MLflow tracking, registry and promotion for MPA runs.

One MLflow run per pipeline run, with **stage-prefixed keys** (iterative MPA adds a child run per later round):

- tags: ``mpa.task``, ``mpa.teacher``, ``mpa.student``, ``mpa.match_rule``, ``mpa.out``,
  ``mlflow.source.git.commit`` / ``mpa.git_revision``, ``kfp.run_id`` (on Kubeflow);
- params: the whole resolved config, flattened (``train.learning_rate``); secrets never;
- metrics: the parity-set size at every filter (``n_images``, ``n_parsed``,
  ``n_teacher_consistent``, ``n_student_wrong``, ``k_parity``, ``k_over_n``), per benchmark
  ``eval/<benchmark>/<metric>_before|_after|_delta``, ``train/loss`` and ``train/lr`` by step,
  ``time/<stage>_s`` and ``throughput/<stage>_<unit>_per_s``;
- artifacts: the parity set as the run's dataset input (context ``training``), a table of
  parity samples with thumbnails (``tables/parity_samples.json``), ``pi/audit.jsonl``,
  ``charts/before_after.png``, ``summary.json``, ``config.yaml`` and the aligned checkpoint
  (``checkpoint/``, the source of the registered model version).

The run id is kept in ``<run dir>/mlflow_run.json``, so a resumed pipeline run continues the same
MLflow run. With no tracking URI (config or ``MLFLOW_TRACKING_URI``) the store is embedded: a sqlite
file and an artifact folder under ``<run dir>/mlflow/``.

Promotion uses registry **aliases**: ``champion`` moves to a new version only if its primary score
beats the base student's and the current champion's by ``promotion_margin`` points; otherwise
the version gets ``challenger`` and a ``mpa.promotion_reason`` tag.

The code is split by concern: :mod:`mpa.tracking.server` (errors, URIs, the client),
:mod:`mpa.tracking.runlog` (the run tracker), :mod:`mpa.tracking.registry` (register and promote),
:mod:`mpa.tracking.models` (loading ``models:/`` references), :mod:`mpa.tracking.live` (PL's metrics while it
trains). This package face re-exports their
public names.
"""

from mpa.tracking.models import download_model, is_model_uri
from mpa.tracking.registry import (
    CHALLENGER,
    CHAMPION,
    Decision,
    RegisteredVersion,
    decide,
    default_model_name,
    lineage_tags,
    promote,
    register_version,
)
from mpa.tracking.runlog import STATE_FILE, Tracker, before_after_chart, flatten_params, safe_tags
from mpa.tracking.server import (
    TrackingError,
    TrackingUnavailable,
    check_reachable,
    client,
    embedded_uri,
    resolve_uri,
)

__all__ = [
    "CHALLENGER", "CHAMPION", "STATE_FILE", "Decision", "RegisteredVersion", "Tracker", "TrackingError",
    "TrackingUnavailable", "before_after_chart", "check_reachable", "client", "decide", "default_model_name",
    "download_model", "embedded_uri", "flatten_params", "is_model_uri", "lineage_tags", "promote",
    "register_version", "resolve_uri", "safe_tags",
]
