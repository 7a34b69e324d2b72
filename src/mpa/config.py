"""Run configuration: one pydantic model, the single home of every setting.

CLI flags and KFP parameters map onto these fields. ``load_config`` reads YAML and reports
every invalid field in one readable message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

MatchRule = Literal["exact", "vqa", "relaxed", "anls"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


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


class TaskConfig(_Strict):
    name: str = "textvqa"
    prompt_file: Path | None = None
    metric: MatchRule = "vqa"


class AnnotateConfig(_Strict):
    """PA: sampling, several QA pairs per image, de-duplication and answer length limit."""

    temperature: float = Field(1.0, ge=0.0, description="greedy decoding collapses question diversity")
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    max_new_tokens: int = Field(64, ge=1)
    qa_per_image: int = Field(1, ge=1)
    dedupe_questions: bool = True
    max_answer_words: int | None = Field(None, ge=1, description="default: the task's limit")


class IdentifyConfig(_Strict):
    """PI: the match rule E of paper Eq. 1 and the short-answer decoding of both models."""

    match: MatchRule = "vqa"
    anls_threshold: float = Field(0.5, gt=0.0, le=1.0)
    relaxed_tolerance: float = Field(0.05, ge=0.0)
    max_new_tokens: int = Field(16, ge=1)
    student_only_if_teacher_consistent: bool = Field(
        True, description="skip student inference where the sample can never be kept"
    )


class TrainConfig(_Strict):
    """PL: fine-tune the student on the parity set, loss on answer tokens only (Eq. 3)."""

    epochs: float = Field(1.0, gt=0)
    batch_size: int | None = Field(None, ge=1, description="default: the paper's preset for the family")
    learning_rate: float | None = Field(None, gt=0, description="default: the paper's preset")
    micro_batch_size: int | None = Field(
        None, ge=1, description="samples per forward pass; gradient accumulation makes up batch_size"
    )
    warmup_ratio: float = Field(0.0, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    max_grad_norm: float = Field(1.0, gt=0)
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


class EvalConfig(_Strict):
    benchmark: str | None = None
    annotations: str | None = None
    questions: str | None = None
    images: str | None = None
    max_samples: int | None = Field(None, ge=1)
    max_new_tokens: int = Field(16, ge=1)


class DataConfig(_Strict):
    images: str = Field(..., description="unlabeled image source: a directory or an s3:// prefix")
    max_images: int | None = Field(None, ge=1)


class RunConfig(_Strict):
    task: TaskConfig = Field(default_factory=TaskConfig)
    teacher: ModelConfig
    student: ModelConfig
    data: DataConfig
    annotate: AnnotateConfig = Field(default_factory=AnnotateConfig)
    identify: IdentifyConfig = Field(default_factory=IdentifyConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvalConfig = Field(default_factory=EvalConfig)
    out: str = "runs/latest"
    seed: int = 0

    @model_validator(mode="after")
    def _check_task(self) -> RunConfig:
        from mpa.tasks import get_task

        get_task(self.task.name, self.task.prompt_file, self.task.metric)
        return self


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names the file and the fields."""


def format_validation_error(source: str, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        parts.append(f"{loc}: {err['msg']}")
    return f"invalid config {source}: " + "; ".join(parts)


def load_config(path: str | Path, overrides: dict | None = None) -> RunConfig:
    """Read a YAML run config; ``overrides`` are dotted keys (``train.lora=True``) applied on top."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping at the top level")
    for key, value in (overrides or {}).items():
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return parse_config(data, str(path))


def parse_config(data: dict, source: str = "<dict>") -> RunConfig:
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(source, exc)) from exc
    except (ValueError, FileNotFoundError) as exc:
        raise ConfigError(f"invalid config {source}: {exc}") from exc
