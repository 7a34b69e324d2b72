"""PL — Parity Leveler: fine-tune the student on the parity set, loss on answer tokens only (Eq. 3).

Full fine-tuning by default, LoRA (peft) as an option (merged before saving, so the output is
always a plain Hugging Face checkpoint the same loader reads). Batch size and learning rate
default to the paper's presets for the student's family.

Scale (``docs/training.md``):

- **Processes.** ``train.processes: N`` starts N data-parallel processes on this machine
  (:mod:`mpa.training.launch`); under any launcher that sets ``WORLD_SIZE`` (``torchrun``, a
  Kubeflow TrainJob) every process runs this same code as one rank. CPU: gloo; GPU: NCCL.
- **The global batch** is ``train.batch_size`` for any number of processes:
  micro-batch × accumulation × processes (:mod:`mpa.training.batches`).
- **The loss** of an optimizer step is the mean cross-entropy over all answer tokens of the global
  batch: each micro-batch contributes its token *sum*, divided by the global answer-token count.
  This is what one forward pass over the whole batch would compute, so 1 and N processes, and any
  micro-batch size, give the same loss and the same gradients (up to float summation order).
- **Memory.** ``train.precision``: bf16 compute with fp32 master weights and AdamW state (LoRA: the
  frozen weights stored in bf16); gradient checkpointing (default on for real models);
  ``train.strategy: fsdp`` shards weights, gradients and AdamW state over the processes; logits
  are computed only where an answer token is predicted.
- **Resume.** ``train.save_every_steps: K`` saves model, optimizer, scheduler, data position and
  RNG every K steps; a killed run started again continues from the last save and ends with the
  result of an uninterrupted run (:mod:`mpa.training.resume`).
- Only rank 0 writes ``train_log.jsonl`` (one line per optimizer step, the global-batch loss), the
  checkpoint and ``level_summary.json``.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import random
import shutil
import sys
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
from mpa.training.batches import batch_layout, micro_batches, sample_order, total_steps
from mpa.training.distributed import (
    DistContext,
    full_state_dict,
    gradient_sync,
    init_distributed,
    launched_world_size,
    unwrap,
    wrap_model,
)
from mpa.ui import progress_bar, summary_table
from mpa.vlm.adapters import PRESETS, preset_for_config
from mpa.vlm.hf import TINY_MODEL_PARAMS, encode_for_training, load_model, load_processor, resolve_model_ref

# Paper, PL settings per S-VLM family: (batch size, learning rate), kept with the family adapters.
DEFAULT_PRESET = (16, 1e-5)
#: Parameter-name segments of the vision tower (Qwen2-VL ``visual`` holds its merger too).
VISION_MODULES = ("visual", "vision_tower", "vision_model")
SCHEDULES = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}


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


def preset_for(model_type: str) -> tuple[int, float]:
    return PRESETS.get(model_type, DEFAULT_PRESET)


def read_training_samples(path: str | Path) -> list[dict[str, Any]]:
    """(image, question, answer) records: parity.jsonl, or annotations.jsonl (parsed ones)."""
    out = []
    for r in read_jsonl(path):
        if r.get("parse_ok", True) and r.get("kept", True) and r.get("question") and r.get("answer"):
            out.append({"image": r["image"], "question": r["question"], "answer": r["answer"]})
    return out


def level_mark_settings(student: ModelConfig, task: Task, cfg: TrainConfig) -> dict[str, Any]:
    """What PL's output is keyed by besides its samples: the student and the settings that change the weights
    (:mod:`mpa.preflight` compares it with an existing mark before anything is loaded)."""
    from mpa.training.resume import NEUTRAL_FIELDS

    return {"student": model_identity(student), "task": task.name,
            "train": {k: v for k, v in cfg.model_dump(mode="json").items() if k not in NEUTRAL_FIELDS},
            "answer_prompt": text_digest(task.answer_prompt("{question}"))}


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
    if (ckpt / "config.json").is_file() and summary_path.is_file():
        return LevelSummary(**json.loads(summary_path.read_text()))
    samples = read_training_samples(samples_path)
    if not samples:
        raise EmptyParitySet(
            f"the parity set {samples_path} is empty: the student already matches the teacher on every "
            "teacher-consistent sample, or nothing parsed. Nothing to train — use more images, "
            "more QA pairs per image, or another match rule."
        )
    if cfg.processes > 1 and launched_world_size() == 1:
        return _launch_local(samples_path, student, task, cfg, out_dir, show)
    return train(samples, samples_path, student, task, cfg, out_dir, show=show)


# --- launching N local processes --------------------------------------------------------------------


def _launch_local(
    samples_path: str | Path, student: ModelConfig, task: Task, cfg: TrainConfig, out_dir: Path, show: bool
) -> LevelSummary:
    from mpa.training.launch import run_processes

    # bad batch arithmetic is reported here, before any process starts
    batch_layout(resolved_batch(student, cfg)[0], cfg.processes, cfg.micro_batch_size)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec_path = out_dir / "level_spec.json"
    write_json_atomic(spec_path, make_spec(samples_path, student, task, cfg, out_dir, show=show))
    try:
        run_processes(cfg.processes, "mpa.stages.level", [str(spec_path)])
    finally:
        spec_path.unlink(missing_ok=True)
    return LevelSummary(**json.loads((out_dir / "level_summary.json").read_text()))


def make_spec(
    samples_path: str | Path, student: ModelConfig, task: Task, cfg: TrainConfig, out_dir: str | Path,
    show: bool = False,
) -> dict[str, Any]:
    """Everything a worker process needs to run :func:`level` (JSON-safe)."""
    return {
        "samples_path": str(samples_path),
        "student": student.model_dump(mode="json"),
        "task": asdict(task),
        "train": cfg.model_dump(mode="json"),
        "out_dir": str(out_dir),
        "show": show,
    }


def run_spec(spec: dict[str, Any]) -> LevelSummary:
    """Run :func:`level` from a :func:`make_spec` dict (one rank of a launched run, or a TrainJob node)."""
    train_cfg = TrainConfig.model_validate({**spec["train"], "processes": 1, "backend": "local"})
    return level(
        samples_path=spec["samples_path"],
        student=ModelConfig.model_validate(spec["student"]),
        task=Task(**spec["task"]),
        cfg=train_cfg,
        out_dir=spec["out_dir"],
        show=bool(spec.get("show", False)),
    )


def main(argv: list[str] | None = None) -> None:
    """``python -m mpa.stages.level <spec.json>``: one worker process of a launched PL run."""
    from torch.distributed.elastic.multiprocessing.errors import record

    from mpa.training.launch import die_with_parent

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise SystemExit("usage: python -m mpa.stages.level <spec.json>")
    die_with_parent()
    spec = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    record(run_spec)(spec)


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


def is_vision_param(name: str) -> bool:
    parts = name.split(".")
    return any(p in parts for p in VISION_MODULES)


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


def _accepts_logits_to_keep(model: torch.nn.Module) -> bool:
    base = unwrap(model)
    base = base.get_base_model() if hasattr(base, "get_base_model") else base
    try:
        return "logits_to_keep" in inspect.signature(type(base).forward).parameters
    except (TypeError, ValueError):
        return False


def answer_loss_sum(model: torch.nn.Module, batch: dict[str, torch.Tensor], keep_logits: bool) -> torch.Tensor:
    """Cross-entropy summed over the answer tokens of a micro-batch (fp32).

    With ``keep_logits`` the model computes logits only at the positions that predict an answer
    token (``logits_to_keep`` with the positions), not over the whole prompt and image.
    """
    batch = dict(batch)
    labels = batch.pop("labels")
    targets = labels[:, 1:]
    if keep_logits:
        positions = (targets != -100).any(dim=0).nonzero().squeeze(1)
        logits = model(**batch, logits_to_keep=positions).logits
        targets = targets[:, positions]
    else:
        logits = model(**batch).logits[:, :-1]
    return torch.nn.functional.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100, reduction="sum"
    )


def answer_tokens(labels: torch.Tensor) -> int:
    """Tokens the loss is taken over (labels predicted from the previous position)."""
    return int((labels[:, 1:] != -100).sum())


def train(
    samples: list[dict[str, Any]],
    samples_path: str | Path,
    student: ModelConfig,
    task: Task,
    cfg: TrainConfig,
    out_dir: str | Path,
    show: bool = True,
) -> LevelSummary:
    """The PL loop in this process: alone, or as one rank of the launcher's process group."""
    ctx = init_distributed(student.device)
    try:
        return _train(ctx, samples, samples_path, student, task, cfg, Path(out_dir), show)
    finally:
        ctx.close()


def _train(
    ctx: DistContext,
    samples: list[dict[str, Any]],
    samples_path: str | Path,
    student: ModelConfig,
    task: Task,
    cfg: TrainConfig,
    out_dir: Path,
    show: bool,
) -> LevelSummary:
    from transformers import get_scheduler

    from mpa.training import resume

    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    bf16 = use_bf16(cfg.precision, ctx.device)
    path = resolve_model_ref(student.model, student.revision)
    processor = load_processor(student, path)
    # fp32 master weights for what trains; LoRA keeps the frozen weights in bf16
    load_dtype = "bfloat16" if bf16 and cfg.lora else "float32"
    model = load_model(student.model_copy(update={"dtype": load_dtype}), path, device=torch.device("cpu"))
    preset = preset_for_config(model.config.to_dict())
    batch_size = cfg.batch_size or preset.batch_size
    lr = cfg.learning_rate or preset.learning_rate
    layout = batch_layout(batch_size, ctx.world_size, cfg.micro_batch_size)
    steps = total_steps(len(samples), cfg.epochs, batch_size)
    order = sample_order(len(samples), steps, batch_size, cfg.seed)
    n_params = sum(p.numel() for p in model.parameters())
    checkpointing = cfg.gradient_checkpointing
    if checkpointing is None:  # real models: activations, not weights, decide whether PL fits (docs/training.md)
        checkpointing = n_params >= TINY_MODEL_PARAMS
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if getattr(model.config, "use_cache", None):
        model.config.use_cache = False
    if cfg.lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(
            r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
            target_modules="all-linear", task_type="CAUSAL_LM",
        ))
    model.to(ctx.device)
    wrapped = wrap_model(model, ctx, cfg.strategy, bf16)
    keep_logits = _accepts_logits_to_keep(wrapped)
    # fused: one kernel per step, no full-size temporaries (foreach AdamW allocates a copy of the state)
    optimizer = torch.optim.AdamW(
        param_groups(unwrap(wrapped), lr, cfg.vision_learning_rate), lr=lr, weight_decay=cfg.weight_decay,
        fused=True,
    )
    trainable = [p for g in optimizer.param_groups for p in g["params"]]
    scheduler = get_scheduler(
        SCHEDULES[cfg.lr_schedule], optimizer, num_warmup_steps=int(cfg.warmup_ratio * steps), num_training_steps=steps
    )
    resume_dir = out_dir / "resume"
    fp = resume.fingerprint(
        samples_path, cfg.model_dump(mode="json"), {"model": student.model, "revision": student.revision}
    )
    point = resume.load(resume_dir, wrapped, optimizer, scheduler, fp, ctx) if cfg.save_every_steps else None
    first_step = point.step if point else 0
    losses: list[float] = list(point.losses) if point else []
    log_path = out_dir / "train_log.jsonl"
    if ctx.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        kept = [ln for ln in _log_lines(log_path) if json.loads(ln)["step"] <= first_step] if point else []
        log_path.write_text("".join(kept), encoding="utf-8")
    wrapped.train()
    autocast = (
        (lambda: torch.autocast(device_type=ctx.device.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    )
    bar = progress_bar("PL train", total=steps, completed=first_step) if ctx.is_main and show else _no_bar()
    loop_start = time.perf_counter()
    with open(log_path, "a", encoding="utf-8") if ctx.is_main else contextlib.nullcontext() as logf, bar as advance:
        for step in range(first_step, steps):
            encoded = []
            for ids in micro_batches(order, step, layout, ctx.rank):
                items = [samples[i] for i in ids]
                encoded.append(encode_for_training(
                    processor,
                    [load_image(s["image"]).image for s in items],
                    [task.answer_prompt(s["question"]) for s in items],
                    [s["answer"] for s in items],
                ))
            n_tokens = ctx.all_reduce_sum(sum(answer_tokens(b["labels"]) for b in encoded))
            local_sum = 0.0
            for i, batch in enumerate(encoded):
                batch = {k: v.to(ctx.device) for k, v in batch.items()}
                with gradient_sync(wrapped, sync=i == len(encoded) - 1):
                    with autocast():
                        loss_sum = answer_loss_sum(wrapped, batch, keep_logits)
                    # DDP and FSDP average gradients over processes: scale back to a global-batch mean
                    (loss_sum * (ctx.world_size / max(n_tokens, 1.0))).backward()
                local_sum += float(loss_sum.detach())
            step_loss = ctx.all_reduce_sum(local_sum) / max(n_tokens, 1.0)
            grad_norm = torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
            grad_norm = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm
            step_lr = scheduler.get_last_lr()[0]  # the rate this step is taken with
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(step_loss)
            if ctx.is_main:
                logf.write(json.dumps({
                    "step": step + 1, "loss": step_loss, "lr": step_lr,
                    "grad_norm": float(grad_norm), "answer_tokens": int(n_tokens), "samples": batch_size,
                }) + "\n")
                logf.flush()
            advance(1)
            if cfg.save_every_steps and (step + 1) % cfg.save_every_steps == 0 and step + 1 < steps:
                resume.save(resume_dir, step + 1, wrapped, optimizer, scheduler, losses, fp, ctx)
    loop_seconds = time.perf_counter() - loop_start
    ckpt = out_dir / "checkpoint"
    _save_checkpoint(wrapped, processor, ctx, cfg, bf16, out_dir, ckpt)
    seconds = time.perf_counter() - start
    summary = LevelSummary(
        checkpoint=str(ckpt), n_samples=len(samples), steps=steps, batch_size=batch_size,
        micro_batch_size=layout.micro_batch_size, learning_rate=lr, lora=cfg.lora, first_loss=losses[0],
        last_loss=losses[-1], seconds=seconds, samples_per_s=(steps - first_step) * batch_size / seconds,
        world_size=ctx.world_size, accumulation=layout.accumulation, strategy=cfg.strategy,
        precision="bf16" if bf16 else "fp32", gradient_checkpointing=checkpointing, lr_schedule=cfg.lr_schedule,
        vision_learning_rate=cfg.vision_learning_rate, resumed_from_step=first_step, loop_seconds=loop_seconds,
        loop_samples_per_s=(steps - first_step) * batch_size / loop_seconds if loop_seconds else 0.0,
    )
    if ctx.is_main:
        write_json_atomic(out_dir / "level_summary.json", asdict(summary))
        resume.clear(resume_dir)
        if show:
            summary_table("PL — parity leveling", asdict(summary))
    ctx.barrier()
    return summary


@contextlib.contextmanager
def _no_bar():
    yield lambda n=1: None


def _log_lines(path: Path) -> list[str]:
    if not path.is_file():
        return []
    return [ln + "\n" for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]


def _save_checkpoint(
    wrapped: torch.nn.Module, processor: Any, ctx: DistContext, cfg: TrainConfig, bf16: bool, out_dir: Path,
    ckpt: Path,
) -> None:
    """Rank 0 writes a plain HF checkpoint (LoRA merged; bf16 when trained in bf16); atomic rename."""
    state = full_state_dict(wrapped, ctx) if cfg.strategy == "fsdp" else None  # a collective under FSDP
    if ctx.is_main:
        model = unwrap(wrapped)
        if cfg.lora:
            model = model.merge_and_unload()
        tmp = out_dir / "checkpoint.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        if state is None:
            if bf16:
                model = model.to(torch.bfloat16)
            model.save_pretrained(tmp, safe_serialization=True)
        else:
            # gathered copies of tied weights (embeddings = LM head) are separate tensors: keep one name
            every = {n for n, _ in model.named_parameters(remove_duplicate=False)}
            tied = every - {n for n, _ in model.named_parameters()}
            state = {k: v for k, v in state.items() if k not in tied}
            if bf16:
                state = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in state.items()}
            model.save_pretrained(tmp, state_dict=state, safe_serialization=True)
        processor.save_pretrained(tmp)
        shutil.rmtree(ckpt, ignore_errors=True)
        tmp.rename(ckpt)
    ctx.barrier()


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
