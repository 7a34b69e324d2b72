"""PL on transformers' ``Trainer``: the settings mapping, the answer-only loss, the step log and live metrics.

What the Trainer brings: DDP / FSDP / DeepSpeed through accelerate, bf16, gradient checkpointing,
DataLoader workers, checkpoints and ``resume_from_checkpoint``. What is ours: the loss (a mean over
the answer tokens of the whole global batch, whatever the number of processes and micro-batches —
the Trainer's ``num_items_in_batch``), logits only where an answer token is predicted, a vision-tower
learning rate (a second parameter group), ``level/train_log.jsonl`` and live MLflow metrics.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from mpa import safeio
from mpa.config import TrainConfig
from mpa.tracking.live import LiveMetrics
from mpa.training.loss import accepts_logits_to_keep, answer_loss_sum

#: Parameter-name segments of the vision tower (Qwen2-VL ``visual`` holds its merger too).
VISION_MODULES = ("visual", "vision_tower", "vision_model")
SCHEDULES = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}
#: TrainingArguments fields mpa sets from ``train.*`` (one home per value): not allowed in ``train.trainer_args``
MAPPED = {
    "per_device_train_batch_size": "batch_size / micro_batch_size", "gradient_accumulation_steps": "batch_size",
    "learning_rate": "learning_rate", "max_steps": "epochs", "num_train_epochs": "epochs",
    "lr_scheduler_type": "lr_schedule", "warmup_steps": "warmup_ratio", "warmup_ratio": "warmup_ratio",
    "weight_decay": "weight_decay", "max_grad_norm": "max_grad_norm", "adam_beta1": "adam_betas",
    "adam_beta2": "adam_betas", "bf16": "precision", "gradient_checkpointing": "gradient_checkpointing",
    "seed": "seed", "data_seed": "seed", "output_dir": "(the level directory)", "save_steps": "save_every_steps",
    "save_strategy": "save_every_steps", "dataloader_num_workers": "dataloader_workers", "fsdp": "strategy",
    "average_tokens_across_devices": "(the loss: a mean over the global batch's answer tokens)",
}


class TrainerArgsError(ValueError):
    """``train.trainer_args`` names something that is not a free TrainingArguments field."""


def is_vision_param(name: str) -> bool:
    return any(p in name.split(".") for p in VISION_MODULES)


def param_groups(model: torch.nn.Module, lr: float, vision_lr: float | None) -> list[dict[str, Any]]:
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if vision_lr is None:
        return [{"params": [p for _, p in named], "lr": lr}]
    vision = [p for n, p in named if is_vision_param(n)]
    if not vision:
        raise ValueError(
            "train.vision_learning_rate is set but the student has no trainable vision-tower parameters "
            f"(none named {', '.join(VISION_MODULES)})"
        )
    rest = [p for n, p in named if not is_vision_param(n)]
    return [g for g in ({"params": rest, "lr": lr}, {"params": vision, "lr": vision_lr}) if g["params"]]


def training_arguments(
    cfg: TrainConfig, out_dir: Path, *, micro: int, accumulation: int, lr: float, steps: int, bf16: bool,
    checkpointing: bool, fsdp_blocks: list[str] | None = None, use_cpu: bool = True,
) -> TrainingArguments:
    """``train.*`` → TrainingArguments; ``train.trainer_args`` adds any other field."""
    fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    for key in cfg.trainer_args:
        if key in MAPPED:
            raise TrainerArgsError(f"train.trainer_args.{key} is set by train.{MAPPED[key]}: set that instead")
        if key not in fields:
            raise TrainerArgsError(f"train.trainer_args.{key} is not a transformers TrainingArguments field")
    kw: dict[str, Any] = {
        "output_dir": str(out_dir / "resume"), "per_device_train_batch_size": micro,
        "gradient_accumulation_steps": accumulation, "learning_rate": lr, "max_steps": steps,
        "lr_scheduler_type": SCHEDULES[cfg.lr_schedule], "warmup_steps": int(cfg.warmup_ratio * steps),
        "weight_decay": cfg.weight_decay, "max_grad_norm": cfg.max_grad_norm, "adam_beta1": cfg.adam_betas[0],
        "adam_beta2": cfg.adam_betas[1], "bf16": bf16, "gradient_checkpointing": checkpointing,
        "gradient_checkpointing_kwargs": {"use_reentrant": False}, "seed": cfg.seed, "data_seed": cfg.seed,
        "save_strategy": "steps" if cfg.save_every_steps else "no", "save_steps": cfg.save_every_steps or 500,
        "save_total_limit": 1, "save_safetensors": True, "dataloader_num_workers": cfg.dataloader_workers,
        "dataloader_persistent_workers": cfg.dataloader_workers > 0, "logging_steps": 1, "report_to": "none",
        "disable_tqdm": True, "remove_unused_columns": False, "ddp_find_unused_parameters": False,
        "optim": "adamw_torch_fused", "average_tokens_across_devices": True, "use_cpu": use_cpu,
    }
    if cfg.strategy == "fsdp":
        kw["fsdp"] = "full_shard auto_wrap"
        kw["fsdp_config"] = {"version": 2, "transformer_layer_cls_to_wrap": fsdp_blocks or [],
                             "state_dict_type": "FULL_STATE_DICT", "reshard_after_forward": True}
    kw.update(cfg.trainer_args)
    if "save_safetensors" not in fields:
        kw.pop("save_safetensors")
    return TrainingArguments(**kw)


class PLTrainer(Trainer):
    """``Trainer`` with the answer-only loss and a vision-tower learning rate."""

    loss_is_scaled_for_ga = True  # our loss is already divided by the global batch's answer tokens

    def __init__(self, *args: Any, vision_lr: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.vision_lr = vision_lr
        self.model_accepts_loss_kwargs = True  # makes the Trainer count the answer tokens (num_items_in_batch)
        self.keep_logits = accepts_logits_to_keep(self.model)
        self.answer_tokens = 0

    def create_optimizer(self, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:
        if self.optimizer is None:
            opt_model = self.model if model is None else model
            groups = param_groups(opt_model, self.args.learning_rate, self.vision_lr)
            cls, kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            self.optimizer = cls([{**g, "weight_decay": self.args.weight_decay} for g in groups], **kwargs)
        return self.optimizer

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: torch.nn.Module | None = None) -> None:
        """Weights back from a checkpoint through ``from_pretrained``. transformers 5.19's own resume does
        ``load_state_dict(strict=False)`` on the file as saved, whose keys ``save_pretrained`` converted to the
        checkpoint format (Qwen2-VL: ``model.layers.*`` for ``model.language_model.layers.*``): it matched no
        key and silently resumed from the initial weights. Here every key must match (strict)."""
        model = self.model if model is None else model
        if hasattr(model, "peft_config") or self.is_fsdp_enabled or self.is_deepspeed_enabled:
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        dtype = next(model.parameters()).dtype
        saved = type(model).from_pretrained(resume_from_checkpoint, dtype=dtype)
        model.load_state_dict(saved.state_dict(), strict=True)

    def compute_loss(self, model: torch.nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: torch.Tensor | int | None = None) -> torch.Tensor:
        n = int(num_items_in_batch) if num_items_in_batch is not None else int((inputs["labels"][:, 1:] != -100).sum())
        self.answer_tokens = n
        loss = answer_loss_sum(model, inputs, self.keep_logits) / max(n, 1)
        # DDP/FSDP average gradients over processes: scale back to the global batch's mean
        return loss * self.accelerator.num_processes


class StepLog(TrainerCallback):
    """Rank 0: one ``train_log.jsonl`` line per optimizer step, and the same numbers to the MLflow run the runner
    handed over (:class:`mpa.tracking.live.LiveMetrics`), while it trains."""

    def __init__(self, path: Path, trainer: PLTrainer, batch_size: int, first_step: int, advance: Any) -> None:
        self.path, self.trainer, self.batch_size, self.advance = path, trainer, batch_size, advance
        self.step_lr, self.last = 0.0, time.perf_counter()
        self.live = LiveMetrics.from_env(trainer.is_world_process_zero())  # the runner's MLflow run, if any
        if trainer.is_world_process_zero():
            kept = []
            if first_step and path.is_file():
                kept = [ln + "\n" for ln in path.read_text(encoding="utf-8").splitlines()
                        if ln.strip() and json.loads(ln)["step"] <= first_step]
            safeio.write_atomic(path, "".join(kept), durable=False)

    def on_optimizer_step(self, args: Any, state: Any, control: Any, lr_scheduler: Any = None, **kw: Any) -> None:
        self.step_lr = lr_scheduler.get_last_lr()[0] if lr_scheduler is not None else args.learning_rate

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kw: Any) -> None:
        if not state.is_world_process_zero or not logs or "loss" not in logs:
            return
        now = time.perf_counter()
        row = {"step": state.global_step, "loss": float(logs["loss"]), "lr": self.step_lr,
               "grad_norm": float(logs.get("grad_norm") or 0.0), "answer_tokens": self.trainer.answer_tokens,
               "samples": self.batch_size, "seconds": now - self.last}  # seconds: this step's wall time
        self.last = now
        with safeio.open_append(self.path) as f:  # never through a planted symlink; a short write fails loudly
            f.write(json.dumps(row) + "\n")
        self.advance(1)
        if self.live is not None:
            self.live.log(state.global_step, {"loss": row["loss"], "lr": row["lr"], "grad_norm": row["grad_norm"],
                                              "samples_per_s": self.batch_size / max(row["seconds"], 1e-9)})

    def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.live is not None:
            self.live.close()


