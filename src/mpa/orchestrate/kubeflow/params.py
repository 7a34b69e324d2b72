"""Pipeline parameters → :class:`mpa.config.RunConfig` (the single home of every setting).

Each run parameter of the pipeline maps onto one config field (``PARAM_FIELDS``); anything else
in the config is reachable through ``config_overrides`` (dotted keys, as ``mpa run --set``).
KFP parameters cannot be ``None``, so ``0`` / ``""`` mean "unset, use the config default" for
the optional fields in ``UNSET_IF_EMPTY``. ``shards`` (how many PA/PI pods) steers the pipeline
itself and is not a config field.
"""

from __future__ import annotations

from typing import Any

from mpa.config import RunConfig, parse_config
from mpa.redact import is_secret_key, redact

# pipeline parameter -> dotted RunConfig field
PARAM_FIELDS: dict[str, str] = {
    "task": "task.name",
    "teacher": "teacher.model",
    "teacher_backend": "teacher.backend",
    "student": "student.model",
    "images": "data.images",
    "max_images": "data.max_images",
    "benchmark": "evaluate.benchmark",
    "benchmark_annotations": "evaluate.annotations",
    "benchmark_images": "evaluate.images",
    "eval_max_samples": "evaluate.max_samples",
    "match_rule": "identify.match",
    "qa_per_image": "annotate.qa_per_image",
    "epochs": "train.epochs",
    "train_batch_size": "train.batch_size",
    "learning_rate": "train.learning_rate",
    "lora": "train.lora",
    "seed": "seed",
    "registered_model": "tracking.registered_model",
    "min_improvement": "tracking.promotion_margin",
}
UNSET_IF_EMPTY = {
    "max_images",
    "benchmark_images",
    "eval_max_samples",
    "train_batch_size",
    "learning_rate",
    "registered_model",
}
PIPELINE_ONLY = {"shards", "config_overrides"}


def _set(data: dict, dotted: str, value: Any) -> None:
    node = data
    *parents, leaf = dotted.split(".")
    for p in parents:
        child = node.setdefault(p, {})
        if not isinstance(child, dict):
            raise ValueError(f"config_overrides: {dotted!r} goes through {p!r}, which is not a section")
        node = child
    node[leaf] = value


def config_from_params(params: dict[str, Any], overrides: dict[str, Any] | None = None) -> RunConfig:
    """Build and validate the run config from pipeline parameters (+ dotted ``overrides``)."""
    unknown = set(params) - set(PARAM_FIELDS) - PIPELINE_ONLY
    if unknown:
        raise ValueError(f"unknown pipeline parameters: {', '.join(sorted(unknown))}")
    data: dict[str, Any] = {"out": "kfp"}
    for name, field in PARAM_FIELDS.items():
        if name not in params:
            continue
        value = params[name]
        if name in UNSET_IF_EMPTY and value in (0, 0.0, "", None):
            continue
        _set(data, field, value)
    taken = {PARAM_FIELDS[n]: n for n in params if n in PARAM_FIELDS}
    for key, value in (overrides or {}).items():
        if is_secret_key(key) or redact(value) != value:  # a secret name, or a credential inside the value
            raise ValueError(
                f"config_overrides sets {key!r}: credentials never go in run parameters (they are "
                "stored with the run); give them to the pods as Secrets (manifests/secrets/)"
            )
        if key in taken:
            raise ValueError(f"config_overrides sets {key!r}: use the pipeline parameter {taken[key]!r} instead")
        _set(data, key, value)
    return parse_config(data, "pipeline parameters")
