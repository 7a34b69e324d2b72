"""Run parameters of the pipeline → :class:`mpa.config.RunConfig` (the single home of every setting).

The pipeline takes the same run config as ``mpa run -c`` (the ``config`` parameter, a mapping)
plus ``shards``. The few fields people change per run are also pipeline parameters of their own,
so the KFP UI shows them; they are declared once, in the ``prepare`` component's signature
(``components/data_processing/prepare/component.py``), and named after the config field they
set: the dotted path with ``_`` for ``.`` (``teacher_model`` → ``teacher.model``,
``tracking_promotion_margin`` → ``tracking.promotion_margin``). :func:`config_field` resolves a
name against the RunConfig model itself, so no second table exists to drift. Every one of them is
optional: unset (``None``) keeps what the config says (or the config default); set, it overrides
the config.

Credentials never travel in run parameters (KFP stores them with the run): a secret field in the
config mapping or among the parameters (by its name, :func:`mpa.redact.is_secret_key`, or a credential
inside its value: ``https://user:pw@…``, ``?sig=…``) is refused.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel

from mpa.config import ConfigError, RunConfig, apply_overrides, parse_config
from mpa.redact import is_secret_key, redact_text

PIPELINE_ONLY = ("config", "shards")  # the run config itself, and how many PA/PI shard pods


def _model_of(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _resolve(model: type[BaseModel], words: list[str]) -> list[str]:
    """Every dotted field of ``model`` whose path, joined with ``_``, spells ``words``."""
    found = []
    for i in range(1, len(words) + 1):
        head = "_".join(words[:i])
        field = model.model_fields.get(head)
        if field is None:
            continue
        rest = words[i:]
        if not rest:
            found.append(head)
            continue
        sub = _model_of(field.annotation)
        if sub is not None:
            found += [f"{head}.{tail}" for tail in _resolve(sub, rest)]
    return found


def config_field(param: str) -> str:
    """The dotted RunConfig field a run parameter sets (``data_max_images`` → ``data.max_images``)."""
    found = _resolve(RunConfig, param.split("_"))
    if len(found) != 1:
        what = "no" if not found else f"{len(found)} ({', '.join(found)})"
        raise ValueError(f"run parameter {param!r} names {what} RunConfig fields; name it after one field")
    return found[0]


def secret_keys(data: Any, prefix: str = "") -> list[str]:
    """Dotted keys of ``data`` (nested mappings) that name a secret."""
    out: list[str] = []
    if isinstance(data, dict):
        for key, value in data.items():
            full = f"{prefix}{key}"
            if is_secret_key(str(key)) or (isinstance(value, str) and redact_text(value) != value):
                out.append(full)
            out += secret_keys(value, full + ".")
    return out


def refuse_secrets(data: dict | None, what: str) -> None:
    found = secret_keys(data or {})
    if found:
        raise ConfigError(
            f"{what} sets {', '.join(found)}: credentials never go in run parameters (KFP stores them with "
            "the run); give them to the pods as Secrets (manifests/secrets/)"
        )


def run_config(config: dict | None, params: dict[str, Any], source: str = "pipeline parameters") -> RunConfig:
    """The run config of a pipeline run: ``config`` (as ``mpa run -c`` reads it) with every run
    parameter that is set (not ``None``) on top."""
    if config is not None and not isinstance(config, dict):
        raise ConfigError(f"{source}: config must be a mapping (a run config), got {type(config).__name__}")
    refuse_secrets(config, "the run config")
    overrides = {config_field(name): value for name, value in params.items() if value is not None}
    refuse_secrets(overrides, "the run parameters")
    return parse_config(apply_overrides(copy.deepcopy(config or {}), overrides, source), source)
