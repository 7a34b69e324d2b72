"""PL — Parity Leveler: fine-tune the student on the parity set, loss on answer tokens only (Eq. 3).

Full fine-tuning by default, LoRA (peft) as an option (merged before saving, so the output is
always a plain Hugging Face checkpoint the same loader reads). Batch size and learning rate
default to the paper's presets for the student's family. Training runs through accelerate
(one GPU, several with ``accelerate launch``, or the CPU).
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from mpa.cache import model_identity, text_digest
from mpa.config import ModelConfig, RunConfig, TrainConfig, task_for
from mpa.data.images import load_image
from mpa.records import StageRun, check_input, read_jsonl, write_json_atomic
from mpa.tasks import Task
from mpa.ui import progress_bar, summary_table
from mpa.vlm.adapters import PRESETS
from mpa.vlm.hf import encode_for_training, load_model, load_processor, resolve_model_ref

# Paper, PL settings per S-VLM family: (batch size, learning rate), kept with the family adapters.
DEFAULT_PRESET = (16, 1e-5)


class EmptyParitySet(ValueError):
    """Nothing to train on."""


@dataclass
class LevelSummary:
    checkpoint: str
    n_samples: int
    steps: int
    batch_size: int
    micro_batch_size: int
    learning_rate: float
    lora: bool
    first_loss: float
    last_loss: float
    seconds: float
    samples_per_s: float


def preset_for(model_type: str) -> tuple[int, float]:
    return PRESETS.get(model_type, DEFAULT_PRESET)


def read_training_samples(path: str | Path) -> list[dict[str, Any]]:
    """(image, question, answer) records: parity.jsonl, or annotations.jsonl (parsed ones)."""
    out = []
    for r in read_jsonl(path):
        if r.get("parse_ok", True) and r.get("kept", True) and r.get("question") and r.get("answer"):
            out.append({"image": r["image"], "question": r["question"], "answer": r["answer"]})
    return out


def level(
    *,
    samples_path: str | Path,
    student: ModelConfig,
    task: Task,
    cfg: TrainConfig,
    out_dir: str | Path,
    show: bool = True,
    force: bool = False,
    allow_partial: bool = False,
) -> LevelSummary:
    """Train; save ``out_dir/checkpoint`` (safetensors + processor) and ``out_dir/train_log.jsonl``.

    A finished ``out_dir`` is returned as it is only when it was trained from the same samples, student
    and PL settings; otherwise the run is refused (:class:`~mpa.records.StageMismatch`) unless ``force``,
    which discards the old checkpoint and trains again. Unfinished samples are refused unless ``allow_partial``.
    """
    out_dir = Path(out_dir)
    ckpt = out_dir / "checkpoint"
    summary_path = out_dir / "level_summary.json"
    # keyed by the samples, the student and the PL settings; the lock is held until this function returns
    _stage = StageRun(
        out_dir, "level", force=force, partial_inputs=check_input(samples_path, allow_partial),
        settings={"student": model_identity(student), "train": cfg.model_dump(mode="json"), "task": task.name,
                  "answer_prompt": text_digest(task.answer_prompt("{question}"))},
        inputs={"samples": samples_path}, clear=[ckpt, summary_path, out_dir / "train_log.jsonl"],
    ).begin()
    if (ckpt / "config.json").is_file() and summary_path.is_file():
        return LevelSummary(**json.loads(summary_path.read_text()))
    samples = read_training_samples(samples_path)
    if not samples:
        raise EmptyParitySet(
            f"the parity set {samples_path} is empty: the student already matches the teacher on every "
            "teacher-consistent sample, or nothing parsed. Nothing to train — use more images, "
            "more QA pairs per image, or another match rule."
        )
    start = time.perf_counter()
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import get_scheduler

    set_seed(cfg.seed)
    path = resolve_model_ref(student.model, student.revision)
    processor = load_processor(student, path)
    model = load_model(student, path, device=torch.device("cpu"))
    preset_bs, preset_lr = preset_for(getattr(model.config, "model_type", ""))
    batch_size = cfg.batch_size or preset_bs
    lr = cfg.learning_rate or preset_lr
    micro = min(cfg.micro_batch_size or batch_size, batch_size)
    accum = math.ceil(batch_size / micro)
    if cfg.lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(
            r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
            target_modules="all-linear", task_type="CAUSAL_LM",
        ))
    use_cuda = torch.cuda.is_available() and student.device != "cpu"
    accelerator = Accelerator(
        gradient_accumulation_steps=accum,
        cpu=not use_cuda,
        mixed_precision="bf16" if use_cuda and student.dtype in ("auto", "bfloat16") else "no",
    )
    steps = max(1, math.ceil(len(samples) * cfg.epochs / batch_size))
    rng = random.Random(cfg.seed)
    order: list[int] = []
    while len(order) < steps * batch_size:
        idx = list(range(len(samples)))
        rng.shuffle(idx)
        order.extend(idx)
    order = order[: steps * batch_size]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    scheduler = get_scheduler("linear", optimizer, num_warmup_steps=int(cfg.warmup_ratio * steps),
                              num_training_steps=steps)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    model.train()
    out_dir.mkdir(parents=True, exist_ok=True)
    losses: list[float] = []
    with open(out_dir / "train_log.jsonl", "w", encoding="utf-8") as logf, \
            progress_bar("PL train", total=steps) as advance:
        for step in range(steps):
            step_idx = order[step * batch_size: (step + 1) * batch_size]
            step_loss = 0.0
            for m in range(0, len(step_idx), micro):
                items = [samples[i] for i in step_idx[m: m + micro]]
                batch = encode_for_training(
                    processor,
                    [load_image(s["image"]).image for s in items],
                    [task.answer_prompt(s["question"]) for s in items],
                    [s["answer"] for s in items],
                )
                batch = {k: v.to(accelerator.device) for k, v in batch.items()}
                with accelerator.accumulate(model):
                    loss = model(**batch).loss
                    accelerator.backward(loss)
                    if accelerator.sync_gradients:
                        accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad()
                step_loss += loss.item() * len(items) / len(step_idx)
            losses.append(step_loss)
            logf.write(json.dumps({"step": step + 1, "loss": step_loss, "lr": scheduler.get_last_lr()[0]}) + "\n")
            logf.flush()
            advance(1)
    model = accelerator.unwrap_model(model)
    if cfg.lora:
        model = model.merge_and_unload()
    tmp = out_dir / "checkpoint.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    processor.save_pretrained(tmp)
    shutil.rmtree(ckpt, ignore_errors=True)
    tmp.rename(ckpt)
    seconds = time.perf_counter() - start
    summary = LevelSummary(
        checkpoint=str(ckpt), n_samples=len(samples), steps=steps, batch_size=batch_size,
        micro_batch_size=micro, learning_rate=lr, lora=cfg.lora, first_loss=losses[0],
        last_loss=losses[-1], seconds=seconds, samples_per_s=steps * batch_size / seconds,
    )
    write_json_atomic(summary_path, asdict(summary))
    if show:
        summary_table("PL — parity leveling", asdict(summary))
    return summary


def build_replay_mix(audit_path: str | Path, parity_path: str | Path, fraction: float, seed: int,
                     out_path: str | Path) -> int:
    """Optional, label-free anti-forgetting: parity samples plus ``fraction`` of the mix drawn from
    teacher-consistent samples the student already answers (still pseudo-labels only)."""
    parity = read_training_samples(parity_path)
    pool = [r for r in read_jsonl(audit_path) if r.get("teacher_match") and r.get("student_match")]
    n_replay = round(len(parity) * fraction / (1 - fraction)) if fraction < 1 else len(pool)
    rng = random.Random(seed)
    replay = rng.sample(pool, min(n_replay, len(pool)))
    from mpa.records import write_jsonl_atomic

    rows = parity + [{"image": r["image"], "question": r["question"], "answer": r["answer"]} for r in replay]
    return write_jsonl_atomic(out_path, rows)


def level_with_config(
    cfg: RunConfig,
    out_dir: str | Path,
    *,
    pi_dir: str | Path | None = None,
    samples_path: str | Path | None = None,
    show: bool = True,
) -> LevelSummary:
    """PL with every setting taken from a run config: train the student on ``pi_dir/parity.jsonl`` (mixed with
    replayed samples from ``pi_dir/audit.jsonl`` when ``train.replay_fraction`` > 0), or on ``samples_path``."""
    out_dir = Path(out_dir)
    if samples_path is None:
        if pi_dir is None:
            raise ValueError("level_with_config needs pi_dir (the PI output) or samples_path")
        samples_path = Path(pi_dir) / "parity.jsonl"
        if cfg.train.replay_fraction > 0:
            check_input(samples_path, cfg.allow_partial)  # the mix below has no mark of its own
            out_dir.mkdir(parents=True, exist_ok=True)
            mix = out_dir / "train_mix.jsonl"
            build_replay_mix(Path(pi_dir) / "audit.jsonl", samples_path, cfg.train.replay_fraction,
                             cfg.train.seed, mix)
            samples_path = mix
    return level(samples_path=samples_path, student=cfg.student, task=task_for(cfg), cfg=cfg.train,
                 out_dir=out_dir, show=show, force=cfg.force, allow_partial=cfg.allow_partial)
