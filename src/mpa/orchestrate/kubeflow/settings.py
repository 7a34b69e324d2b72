"""Compile-time settings of the pipeline: images, per-stage resources, secrets, model cache.

These are what a cluster operator decides (GPU type and count, memory, node placement, which
Secrets hold credentials); they are baked into the compiled spec, unlike the run parameters.
Defaults are sensible for a GPU cluster with the NVIDIA device plugin; a YAML file passed to
``mpa pipeline compile --settings`` overrides any part of them (deep merge), e.g.::

    stages:
      annotate: {accelerator_count: 2, node_selector: {nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3}}
      level: {memory_limit: 160Gi}
    model_cache_pvc: null        # no shared model cache

Secret *values* never appear here or in the spec: only Secret names and which key becomes which
environment variable (kfp-kubernetes ``use_secret_as_env``).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mpa import __version__

STAGES = ("prepare", "annotate", "identify", "merge", "level", "evaluate", "gate", "register")
GPU_STAGES = ("annotate", "identify", "level")  # PA, PI, PL always want an accelerator by default
DEFAULT_REGISTRY = "ghcr.io/mpa-project"
DEFAULT_GPU_IMAGE = f"{DEFAULT_REGISTRY}/mpa-gpu:{__version__}"
DEFAULT_CPU_IMAGE = f"{DEFAULT_REGISTRY}/mpa-cpu:{__version__}"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Toleration(_Strict):
    key: str
    operator: Literal["Exists", "Equal"] = "Exists"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = "NoSchedule"


_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?$")
_SUFFIX = {None: 1, "m": Decimal("0.001"), "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15,
           "E": 10**18, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}


def parse_quantity(text: str) -> Decimal:
    """A Kubernetes resource quantity (``500m``, ``2``, ``1.5Gi``, ``1e3``) as a number of base units."""
    m = _QUANTITY.match(str(text).strip())
    if not m:
        raise ValueError(f"{text!r} is not a Kubernetes quantity (e.g. 500m, 2, 512Mi, 4Gi)")
    try:
        return Decimal(m.group(1)) * Decimal(_SUFFIX[m.group(2)])
    except InvalidOperation:
        raise ValueError(f"{text!r} is not a Kubernetes quantity (e.g. 500m, 2, 512Mi, 4Gi)") from None


class StageResources(_Strict):
    image: Literal["gpu", "cpu"] = "cpu"
    cpu_request: str | None = "1"
    cpu_limit: str | None = "2"
    memory_request: str | None = "2Gi"
    memory_limit: str | None = "4Gi"
    accelerator_type: str | None = None
    accelerator_count: int = Field(0, ge=0)
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    model_cache: bool = False
    retries: int = Field(0, ge=0)
    timeout_seconds: int | None = Field(None, ge=1)
    caching: bool = True

    @model_validator(mode="after")
    def _requests_within_limits(self) -> StageResources:
        """Quantities must parse, and a request may not exceed its limit (Kubernetes rejects such a pod)."""
        for kind in ("cpu", "memory"):
            request, limit = getattr(self, f"{kind}_request"), getattr(self, f"{kind}_limit")
            values = {name: parse_quantity(v) for name, v in ((f"{kind}_request", request), (f"{kind}_limit", limit))
                      if v is not None}
            if any(v <= 0 for v in values.values()):
                raise ValueError(f"{kind} request and limit must be positive, got {request!r} / {limit!r}")
            if len(values) == 2 and values[f"{kind}_request"] > values[f"{kind}_limit"]:
                raise ValueError(f"{kind}_request {request} is above {kind}_limit {limit}: Kubernetes would "
                                 "reject the pod; raise the limit or lower the request")
        return self


class SecretEnv(_Strict):
    """A Kubernetes Secret exposed as environment variables to some stages."""

    name: str
    env: dict[str, str] = Field(..., description="secret key -> environment variable")
    stages: list[str] = Field(default_factory=lambda: list(STAGES))
    optional: bool = False


def _gpu(**kw) -> StageResources:
    base = dict(
        image="gpu",
        accelerator_type="nvidia.com/gpu",
        accelerator_count=1,
        node_selector={"nvidia.com/gpu.present": "true"},
        tolerations=[Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")],
        model_cache=True,
    )
    return StageResources(**{**base, **kw})


def _default_stages() -> dict[str, StageResources]:
    return {
        "prepare": StageResources(cpu_request="1", cpu_limit="4", memory_request="2Gi", memory_limit="4Gi"),
        "annotate": _gpu(cpu_request="4", cpu_limit="8", memory_request="32Gi", memory_limit="48Gi", retries=2),
        "identify": _gpu(cpu_request="4", cpu_limit="8", memory_request="32Gi", memory_limit="48Gi", retries=2),
        "merge": StageResources(cpu_request="500m", cpu_limit="1", memory_request="1Gi", memory_limit="2Gi"),
        "level": _gpu(cpu_request="8", cpu_limit="16", memory_request="64Gi", memory_limit="96Gi"),
        "evaluate": _gpu(cpu_request="4", cpu_limit="8", memory_request="24Gi", memory_limit="32Gi"),
        "gate": StageResources(cpu_request="100m", cpu_limit="500m", memory_request="256Mi", memory_limit="512Mi"),
        "register": StageResources(
            cpu_request="500m", cpu_limit="1", memory_request="1Gi", memory_limit="2Gi", caching=False
        ),
    }


def _default_secrets() -> list[SecretEnv]:
    return [
        SecretEnv(
            name="mpa-s3",
            env={"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"},
        ),
        SecretEnv(
            name="mpa-openai", env={"OPENAI_API_KEY": "OPENAI_API_KEY"}, stages=["annotate", "identify"], optional=True
        ),
        SecretEnv(
            name="mpa-hf",
            env={"HF_TOKEN": "HF_TOKEN"},
            stages=["annotate", "identify", "level", "evaluate"],
            optional=True,
        ),
        SecretEnv(
            name="mpa-mlflow",
            env={
                "MLFLOW_TRACKING_USERNAME": "MLFLOW_TRACKING_USERNAME",
                "MLFLOW_TRACKING_PASSWORD": "MLFLOW_TRACKING_PASSWORD",
            },
            stages=["register"],
            optional=True,
        ),
    ]


class PipelineSettings(_Strict):
    name: str = "mpa"
    description: str = "Model Parity Aligner: PA → PI → PL → evaluate → register (arXiv 2509.16633)"
    gpu_image: str = DEFAULT_GPU_IMAGE
    cpu_image: str = DEFAULT_CPU_IMAGE
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = "IfNotPresent"
    image_pull_secrets: list[str] = Field(default_factory=list)
    shard_parallelism: int = Field(8, ge=1, description="at most this many PA/PI shard pods at once")
    model_cache_pvc: str | None = Field("mpa-model-cache", description="ReadWriteMany PVC; null: none")
    model_cache_mount: str = "/cache"
    config_map: str | None = Field("mpa-config", description="non-secret env: endpoints, tracking URI")
    config_map_keys: list[str] = Field(
        default_factory=lambda: [
            "AWS_ENDPOINT_URL",
            "AWS_DEFAULT_REGION",
            "MLFLOW_TRACKING_URI",
            "MLFLOW_S3_ENDPOINT_URL",
        ]
    )
    secrets: list[SecretEnv] = Field(default_factory=_default_secrets)
    stages: dict[str, StageResources] = Field(default_factory=_default_stages)

    def stage(self, name: str) -> StageResources:
        return self.stages[name]


class SettingsError(ValueError):
    """Unusable compile-time settings; the message names the file and the fields."""


def _deep_merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def settings_from_dict(data: dict | None, source: str = "<dict>") -> PipelineSettings:
    """Defaults deep-merged with ``data`` (only what differs needs stating)."""
    data = data or {}
    unknown = set(data.get("stages") or {}) - set(STAGES)
    if unknown:
        raise SettingsError(f"{source}: unknown stages {sorted(unknown)}; stages are {', '.join(STAGES)}")
    merged = _deep_merge(PipelineSettings().model_dump(), data)
    try:
        settings = PipelineSettings.model_validate(merged)
    except ValidationError as exc:
        errs = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise SettingsError(f"invalid pipeline settings {source}: {errs}") from exc
    for secret in settings.secrets:
        bad = set(secret.stages) - set(STAGES)
        if bad:
            raise SettingsError(f"{source}: secret {secret.name} names unknown stages {sorted(bad)}")
    return settings


def load_settings(path: str | Path | None) -> PipelineSettings:
    if path is None:
        return PipelineSettings()
    path = Path(path)
    if not path.is_file():
        raise SettingsError(f"settings file not found: {path}")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise SettingsError(f"{path}: settings must be a mapping")
    return settings_from_dict(data, str(path))
