"""PL — Parity Leveler: fine-tune the student on the parity set, loss on answer tokens only (Eq. 3).

Full fine-tuning by default, LoRA (peft) as an option (merged before saving, so the output is
always a plain Hugging Face checkpoint the same loader reads). Batch size and learning rate
default to the paper's presets for the student's family.

Training is transformers' ``Trainer`` (:mod:`mpa.training.trainer`, ``docs/training.md``) fed by our
answer-only collator; ``train.processes: N`` launches N ranks (torchrun, or accelerate with
``train.accelerate_config``; :mod:`mpa.training.launch`), and under any launcher that sets ``WORLD_SIZE``
(a Kubeflow TrainJob) every process runs this code as one rank. The global batch is
``train.batch_size`` for any number of processes; the loss of a step is the mean cross-entropy over
all answer tokens of the global batch. ``train.save_every_steps: K`` writes Trainer checkpoints a
killed run resumes from (:mod:`mpa.training.resume`). Rank 0 writes ``train_log.jsonl`` (one line per
optimizer step), the checkpoint and ``level_summary.json``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pickle
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import torch

from mpa import safeio
from mpa.cache import model_identity, text_digest
from mpa.config import ModelConfig, RunConfig, TrainConfig, task_for
from mpa.records import StageRun, check_input, read_jsonl, read_training_samples, write_json_atomic
from mpa.tasks import Task
from mpa.training.batches import batch_layout, check_strategy, total_steps
from mpa.training.launch import launched_world_size
from mpa.training.loss import answer_loss_sum, answer_tokens  # noqa: F401 - the loss PL trains with
from mpa.ui import progress_bar, summary_table
from mpa.vlm.adapters import PRESETS, preset_for_config  # noqa: F401 - PRESETS: the paper's per family
from mpa.vlm.hf import TINY_MODEL_PARAMS, load_model, load_processor, resolve_model_ref


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
    world_size: int = 1
    accumulation: int = 1
    strategy: str = "ddp"
    precision: str = "fp32"
    gradient_checkpointing: bool = False
    lr_schedule: str = "linear"
    vision_learning_rate: float | None = None
    resumed_from_step: int = 0
    loop_seconds: float = 0.0  # the optimizer steps alone (no model loading, no saving)
    loop_samples_per_s: float = 0.0


def level_mark_settings(student: ModelConfig, task: Task, cfg: TrainConfig) -> dict[str, Any]:
    """What PL's output is keyed by besides its samples: the student and the settings that change the weights
    (:mod:`mpa.preflight` compares it with an existing mark before anything is loaded)."""
    from mpa.training.resume import NEUTRAL_FIELDS

    return {"student": model_identity(student), "task": task.name,
            "train": {k: v for k, v in cfg.model_dump(mode="json").items() if k not in NEUTRAL_FIELDS},
            "answer_prompt": text_digest(task.train_prompt("{question}"))}


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
    # keyed by the samples, the student and the PL settings that change the weights; the lock is held until
    # this function returns. A rank of a launched multi-process run skips both: its launcher holds them.
    _stage = None if launched_world_size() > 1 else StageRun(
        out_dir, "level", force=force, partial_inputs=check_input(samples_path, allow_partial),
        settings=level_mark_settings(student, task, cfg),
        inputs={"samples": samples_path},
        clear=[ckpt, summary_path, out_dir / "train_log.jsonl", out_dir / "resume"],
    ).begin()
    try:
        if (ckpt / "config.json").is_file() and summary_path.is_file():
            summary = LevelSummary(**json.loads(summary_path.read_text()))
        else:
            samples = read_training_samples(samples_path)
            if not samples:
                raise EmptyParitySet(
                    f"the parity set {samples_path} is empty: the student already matches the teacher on every "
                    "teacher-consistent sample, or nothing parsed. Nothing to train — use more images, "
                    "more QA pairs per image, or another match rule."
                )
            if cfg.processes > 1 and launched_world_size() == 1:
                summary = _launch_local(samples_path, student, task, cfg, out_dir, show)
            else:
                summary = train(samples, samples_path, student, task, cfg, out_dir, show=show)
        if _stage is not None and not _stage.done:
            _stage.finish([summary_path, ckpt])  # level.stage.json: complete, with the outputs' digests
        return summary
    finally:
        if _stage is not None:
            _stage.close()


# --- launching N local processes --------------------------------------------------------------------


def _launch_local(
    samples_path: str | Path, student: ModelConfig, task: Task, cfg: TrainConfig, out_dir: Path, show: bool
) -> LevelSummary:
    from mpa.training.launch import run_processes

    # bad batch arithmetic and strategies are reported here, before any process starts
    batch_layout(resolved_batch(student, cfg)[0], cfg.processes, cfg.micro_batch_size)
    check_strategy(cfg.strategy, torch.cuda.is_available() and student.device != "cpu")
    out_dir.mkdir(parents=True, exist_ok=True)
    spec_path = out_dir / "level_spec.json"
    write_json_atomic(spec_path, make_spec(samples_path, student, task, cfg, out_dir, show=show))
    try:
        run_processes(cfg.processes, spec_path, cfg.accelerate_config)
    finally:
        spec_path.unlink(missing_ok=True)
    return LevelSummary(**json.loads((out_dir / "level_summary.json").read_text()))


def make_spec(samples_path: str | Path, student: ModelConfig, task: Task, cfg: TrainConfig, out_dir: str | Path,
              show: bool = False) -> dict[str, Any]:
    """Everything a worker process needs to run :func:`level` (JSON-safe)."""
    return {"samples_path": str(samples_path), "student": student.model_dump(mode="json"), "task": asdict(task),
            "train": cfg.model_dump(mode="json"), "out_dir": str(out_dir), "show": show}


def run_spec(spec: dict[str, Any]) -> LevelSummary:
    """Run :func:`level` from a :func:`make_spec` dict (one rank of a launched run, or a TrainJob node)."""
    train_cfg = TrainConfig.model_validate({**spec["train"], "processes": 1, "backend": "local"})
    return level(samples_path=spec["samples_path"], student=ModelConfig.model_validate(spec["student"]),
                 task=Task(**spec["task"]), cfg=train_cfg, out_dir=spec["out_dir"], show=bool(spec.get("show")))


def main(argv: list[str] | None = None) -> None:
    """``python -m mpa.stages.level <spec.json>``: one worker process of a launched PL run."""
    from mpa.training.launch import die_with_parent, record_error

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise SystemExit("usage: python -m mpa.stages.level <spec.json>")
    die_with_parent()
    spec_path = Path(args[0])
    try:
        run_spec(json.loads(spec_path.read_text(encoding="utf-8")))
    except BaseException as exc:
        record_error(spec_path, exc)
        raise


# --- the training loop ---------------------------------------------------------------------------------


def resolved_batch(student: ModelConfig, cfg: TrainConfig) -> tuple[int, float]:
    """(global batch size, learning rate): the config's, else the paper's preset for the checkpoint."""
    if cfg.batch_size and cfg.learning_rate:
        return cfg.batch_size, cfg.learning_rate
    preset = preset_for_config(_config_dict(student))
    return cfg.batch_size or preset.batch_size, cfg.learning_rate or preset.learning_rate


def _config_dict(student: ModelConfig) -> dict[str, Any]:
    path = Path(resolve_model_ref(student.model, student.revision))
    if (path / "config.json").is_file():
        return json.loads((path / "config.json").read_text(encoding="utf-8"))
    from transformers import AutoConfig

    kwargs: dict[str, Any] = {"trust_remote_code": student.trust_remote_code}
    if student.revision:
        kwargs["revision"] = student.revision
    return AutoConfig.from_pretrained(str(path), **kwargs).to_dict()


def use_bf16(precision: str, device: torch.device) -> bool:
    if precision == "bf16":
        return True
    if precision == "fp32":
        return False
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def train(
    samples: list[dict[str, Any]],
    samples_path: str | Path,
    student: ModelConfig,
    task: Task,
    cfg: TrainConfig,
    out_dir: str | Path,
    show: bool = True,
) -> LevelSummary:
    """PL in this process with transformers' Trainer: alone, or as one rank of a launched run."""
    from transformers import PrinterCallback, set_seed

    from mpa.training import resume
    from mpa.training.data import AnswerOnlyCollator, ParityDataset
    from mpa.training.trainer import PLTrainer, StepLog, training_arguments

    start, out_dir = time.perf_counter(), Path(out_dir)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the collator tokenizes in forked DataLoader workers
    set_seed(cfg.seed)
    random.seed(cfg.seed)
    on_gpu = torch.cuda.is_available() and student.device != "cpu"
    bf16 = use_bf16(cfg.precision, torch.device("cuda" if on_gpu else "cpu"))
    check_strategy(cfg.strategy, on_gpu)
    path = resolve_model_ref(student.model, student.revision)
    processor = load_processor(student, path)
    # fp32 master weights for what trains; LoRA keeps the frozen weights in bf16
    model = load_model(student.model_copy(update={"dtype": "bfloat16" if bf16 and cfg.lora else "float32"}), path,
                       device=torch.device("cpu"))
    batch_size, lr = resolved_batch(student, cfg)
    layout = batch_layout(batch_size, launched_world_size(), cfg.micro_batch_size)
    steps = total_steps(len(samples), cfg.epochs, batch_size)
    checkpointing = cfg.gradient_checkpointing
    if checkpointing is None:  # real models: activations, not weights, decide whether PL fits (docs/training.md)
        checkpointing = sum(p.numel() for p in model.parameters()) >= TINY_MODEL_PARAMS
    if getattr(model.config, "use_cache", None):
        model.config.use_cache = False
    blocks = sorted({n for m in model.modules() for n in (getattr(m, "_no_split_modules", None) or [])})
    if cfg.lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(
            r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
            target_modules="all-linear", task_type="CAUSAL_LM",
        ))
    args = training_arguments(cfg, out_dir, micro=layout.micro_batch_size, accumulation=layout.accumulation, lr=lr,
                              steps=steps, bf16=bf16, checkpointing=checkpointing, fsdp_blocks=blocks,
                              use_cpu=not on_gpu)
    fp = resume.fingerprint(
        samples_path, cfg.model_dump(mode="json"), {"model": student.model, "revision": student.revision}
    )
    with args.main_process_first(local=False):  # rank 0 drops a save cut by a kill before the others look
        point = resume.resume_point(out_dir / "resume", fp, main=args.process_index == 0) \
            if cfg.save_every_steps else None
    trainer = PLTrainer(model=model, args=args, train_dataset=ParityDataset(samples, task),
                        data_collator=AnswerOnlyCollator(processor), vision_lr=cfg.vision_learning_rate)
    trainer.remove_callback(PrinterCallback)  # the step log and the progress bar report instead
    first_step = (resume.step_of(point) or 0) if point else 0
    main = trainer.is_world_process_zero()
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
    bar = progress_bar("PL train", total=steps, completed=first_step) if main and show else _no_bar()
    loop_start = time.perf_counter()
    # every torch.load while training refuses pickled objects, whatever its caller asks (docs/training.md)
    with bar as advance, mock.patch.dict(os.environ, {"TORCH_FORCE_WEIGHTS_ONLY_LOAD": "1"}):
        trainer.add_callback(StepLog(out_dir / "train_log.jsonl", trainer, batch_size, first_step, advance))
        try:
            trainer.train(resume_from_checkpoint=str(point) if point else None)
        except pickle.UnpicklingError as exc:
            raise resume.UnsafeCheckpoint(resume.refused_load_message(exc, point or out_dir)) from None
    loop_seconds = time.perf_counter() - loop_start
    ckpt = save_final_checkpoint(trainer, processor, cfg, bf16, out_dir)
    if main:  # the checkpoint becomes an MLflow Model (MLmodel, signature, input example) in place
        from mpa.serving.mlmodel import make_mlflow_model

        make_mlflow_model(ckpt, student, task)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    seconds = time.perf_counter() - start
    summary = LevelSummary(
        checkpoint=str(ckpt), n_samples=len(samples), steps=steps, batch_size=batch_size,
        micro_batch_size=layout.micro_batch_size, learning_rate=lr, lora=cfg.lora, first_loss=losses[0],
        last_loss=losses[-1], seconds=seconds, samples_per_s=(steps - first_step) * batch_size / seconds,
        world_size=layout.world_size, accumulation=layout.accumulation, strategy=cfg.strategy,
        precision="bf16" if bf16 else "fp32", gradient_checkpointing=checkpointing, lr_schedule=cfg.lr_schedule,
        vision_learning_rate=cfg.vision_learning_rate, resumed_from_step=first_step, loop_seconds=loop_seconds,
        loop_samples_per_s=(steps - first_step) * batch_size / loop_seconds if loop_seconds else 0.0,
    )
    if main:
        write_json_atomic(out_dir / "level_summary.json", asdict(summary))
        shutil.rmtree(out_dir / "resume", ignore_errors=True)
        if show:
            summary_table("PL — parity leveling", asdict(summary))
    trainer.accelerator.wait_for_everyone()
    return summary


@contextlib.contextmanager
def _no_bar():
    yield lambda n=1: None


def save_final_checkpoint(trainer: Any, processor: Any, cfg: TrainConfig, bf16: bool, out_dir: Path) -> Path:
    """Rank 0 writes ``out_dir/checkpoint``, a plain HF checkpoint (LoRA merged; bf16 when trained in bf16).

    Written under ``checkpoint.tmp`` and renamed: when this returns, the final checkpoint directory is
    complete (the place to add what belongs beside the weights).
    """
    acc, ckpt = trainer.accelerator, out_dir / "checkpoint"
    sharded = trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled
    state = acc.get_state_dict(trainer.model_wrapped) if sharded else None  # a collective when sharded
    if trainer.is_world_process_zero():
        model = acc.unwrap_model(trainer.model)
        if cfg.lora:
            model = model.merge_and_unload()
        tmp = out_dir / "checkpoint.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        if state is not None:
            # gathered copies of tied weights (embeddings = LM head) are separate tensors: keep one name
            every = {n for n, _ in model.named_parameters(remove_duplicate=False)}
            tied = every - dict(model.named_parameters()).keys()
            state = {k: v.to(torch.bfloat16) if bf16 and v.is_floating_point() else v
                     for k, v in state.items() if k not in tied}
        elif bf16:
            model = model.to(torch.bfloat16)
        try:
            model.save_pretrained(tmp, state_dict=state, safe_serialization=True)
            processor.save_pretrained(tmp)
        except (OSError, RuntimeError) as exc:  # safetensors/torch report a full disk as RuntimeError
            if isinstance(exc, OSError) or "No space" in str(exc) or "file write failed" in str(exc):
                raise safeio.write_error(tmp, exc if isinstance(exc, OSError) else
                                         OSError(errno.ENOSPC, "No space left on device")) from None
            raise
        shutil.rmtree(ckpt, ignore_errors=True)
        tmp.rename(ckpt)
    acc.wait_for_everyone()
    return ckpt


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


def training_samples(
    cfg: RunConfig, out_dir: str | Path, *, pi_dir: str | Path | None = None, samples_path: str | Path | None = None
) -> Path:
    """What PL trains on: ``samples_path``, else ``pi_dir/parity.jsonl`` (mixed with replayed samples from
    ``pi_dir/audit.jsonl`` into ``out_dir/train_mix.jsonl`` when ``train.replay_fraction`` > 0)."""
    if samples_path is not None:
        return Path(samples_path)
    if pi_dir is None:
        raise ValueError("level_with_config needs pi_dir (the PI output) or samples_path")
    samples = Path(pi_dir) / "parity.jsonl"
    if cfg.train.replay_fraction > 0:
        check_input(samples, cfg.allow_partial)  # the mix made from it has no stage mark of its own
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        mix = Path(out_dir) / "train_mix.jsonl"
        build_replay_mix(Path(pi_dir) / "audit.jsonl", samples, cfg.train.replay_fraction, cfg.train.seed, mix)
        samples = mix
    return samples


def level_with_config(
    cfg: RunConfig,
    out_dir: str | Path,
    *,
    pi_dir: str | Path | None = None,
    samples_path: str | Path | None = None,
    show: bool = True,
) -> LevelSummary:
    """PL with every setting taken from a run config: train the student on ``pi_dir/parity.jsonl`` (mixed with
    replayed samples from ``pi_dir/audit.jsonl`` when ``train.replay_fraction`` > 0), or on ``samples_path``.

    In this process (or ``train.processes`` local ones). ``train.backend: trainjob`` is run by
    :func:`mpa.orchestrate.kubeflow.trainjob.level_for_backend` (``mpa level`` and the pipeline's level step).
    """
    if cfg.train.backend != "local":
        raise ValueError(
            f"train.backend {cfg.train.backend}: PL as a Kubeflow TrainJob runs from `mpa level` or the pipeline's "
            "level step; this entry trains here — set train.backend: local"
        )
    samples = training_samples(cfg, out_dir, pi_dir=pi_dir, samples_path=samples_path)
    return level(samples_path=samples, student=cfg.student, task=task_for(cfg), cfg=cfg.train,
                 out_dir=Path(out_dir), show=show, force=cfg.force, allow_partial=cfg.allow_partial)


if __name__ == "__main__":
    main()
