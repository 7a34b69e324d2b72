"""The PL plan: memory per GPU under each strategy (full fp32, bf16 mixed, FSDP over N GPUs, LoRA), whether
it fits the configured GPU, and PL time from FLOPs (6 × parameters × tokens)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mpa.config import RunConfig
from mpa.costplan.models import (
    NAMED_STUDENTS,
    checkpoint_pixel_cap,
    named_student,
    qwen_image_tokens,
    safetensors_params,
)

#: share of a device's memory a plan may use (CUDA context, allocator fragmentation take the rest)
USABLE_MEMORY = 0.9
GIB = 1024**3


@dataclass
class StudentArch:
    """What the PL memory model needs to know about the student."""

    name: str
    config: dict[str, Any]
    params: float
    vision_params: float
    hidden: int
    layers: int
    kv_dim: int
    intermediate: int
    vocab: int
    tied: bool
    v_hidden: int
    v_layers: int
    v_intermediate: int
    patch_pixels: int  # input values per vision patch (channels x temporal x patch^2)
    source: str

    @property
    def lm_params(self) -> float:
        return self.params - self.vision_params

    def block_params(self) -> float:
        """Parameters of the largest FSDP unit: a decoder layer, or the root (embeddings and head)."""
        h, i = self.hidden, self.intermediate
        layer = 2 * h * h + 2 * h * self.kv_dim + 3 * h * i
        root = self.vocab * h * (1 if self.tied else 2)
        return max(layer, root)


def _lm_section(cfg: dict[str, Any]) -> dict[str, Any]:
    for key in ("text_config", "llm_config"):
        if isinstance(cfg.get(key), dict) and cfg[key].get("hidden_size"):
            return cfg[key]
    return cfg


def student_arch(cfg: RunConfig) -> StudentArch:
    """The student's architecture: its local config.json (and safetensors), else the named table."""
    path = Path(cfg.student.model).expanduser()
    name = cfg.student.model.lower()
    if (path / "config.json").is_file():
        conf = json.loads((path / "config.json").read_text(encoding="utf-8"))
        counted = safetensors_params(path)
        if not counted:
            raise ValueError(f"plan: no safetensors in {path} to count the student's parameters")
        lm, vis = counted
        params, vision, source = lm + vis, vis, f"counted from {path}"
    else:
        key = named_student(name)
        if key is None:
            raise ValueError(
                f"plan: no architecture for student {cfg.student.model}; use a local checkpoint or one of "
                f"{', '.join(NAMED_STUDENTS)}"
            )
        conf = NAMED_STUDENTS[key]
        params, vision, source = conf["params"], conf["vision_params"], f"built-in table ({key})"
    if cfg.plan.student_params:
        params, source = cfg.plan.student_params + vision, "plan.student_params + vision tower"
    text, vis_cfg = _lm_section(conf), conf.get("vision_config") or {}
    heads = int(text.get("num_attention_heads", 1))
    hidden = int(text["hidden_size"])
    head_dim = int(text.get("head_dim") or hidden // heads)
    v_hidden = int(vis_cfg.get("embed_dim") or vis_cfg.get("hidden_size") or 0)
    v_inter = int(vis_cfg.get("intermediate_size") or v_hidden * float(vis_cfg.get("mlp_ratio", 4)))
    return StudentArch(
        name=cfg.student.model, config=conf, params=params, vision_params=vision, hidden=hidden,
        layers=int(text["num_hidden_layers"]), kv_dim=int(text.get("num_key_value_heads", heads)) * head_dim,
        intermediate=int(text["intermediate_size"]), vocab=int(text["vocab_size"]),
        tied=bool(text.get("tie_word_embeddings", conf.get("tie_word_embeddings", False))),
        v_hidden=v_hidden, v_layers=int(vis_cfg.get("depth") or vis_cfg.get("num_hidden_layers") or 0),
        v_intermediate=v_inter, source=source,
        patch_pixels=int(vis_cfg.get("in_channels", 3)) * int(vis_cfg.get("temporal_patch_size", 1))
        * int(vis_cfg.get("patch_size", 14)) ** 2,
    )


def student_image_tokens(arch: StudentArch, cfg: RunConfig, width: int, height: int) -> tuple[int, int]:
    """(image tokens the language model sees, patches the vision tower runs) for one image."""
    from mpa.vlm.adapters import internvl2_tile_grid

    conf, mt = arch.config, arch.config.get("model_type", "")
    vis = conf.get("vision_config") or {}
    if mt in ("internvl_chat", "internvl"):
        size, patch = int(vis.get("image_size", 448)), int(vis.get("patch_size", 14))
        max_tiles = int(cfg.student.options.get("max_tiles") or conf.get("max_dynamic_patch", 12))
        cols, rows = internvl2_tile_grid(width, height, max_tiles=max_tiles, image_size=size)
        tiles = cols * rows + (1 if cols * rows > 1 else 0)
        per_tile = (size // patch) ** 2
        return int(tiles * per_tile * float(conf.get("downsample_ratio", 0.5)) ** 2), tiles * per_tile
    if mt in ("idefics3", "smolvlm"):
        size, patch = int(vis.get("image_size", 512)), int(vis.get("patch_size", 16))
        longest = int(conf.get("longest_edge", 4 * size))
        scale = longest / max(width, height)
        tiles = math.ceil(width * scale / size) * math.ceil(height * scale / size) + 1
        per_tile = (size // patch) ** 2
        return tiles * per_tile // int(conf.get("scale_factor", 4)) ** 2, tiles * per_tile
    if mt.startswith("llava"):
        n = (int(vis.get("image_size", 336)) // int(vis.get("patch_size", 14))) ** 2
        return n, n
    mx, mn = checkpoint_pixel_cap(cfg.student)
    tokens = qwen_image_tokens(width, height, mx, mn)
    return tokens, 4 * tokens


@dataclass
class MemoryEstimate:
    strategy: str
    gpus: int
    weights_gib: float
    gradients_gib: float
    optimizer_gib: float
    activations_gib: float
    other_gib: float
    total_gib: float
    fits: bool | None


@dataclass
class LevelPlan:
    student: str
    student_source: str
    params: float
    vision_params: float
    n_samples: int
    n_samples_source: str
    epochs: float
    batch_size: int
    micro_batch_size: int
    accumulation: int
    gpus: int
    seq_tokens: int
    image_tokens: int
    vision_patches: int
    precision: str
    strategy: str
    lora: bool
    gradient_checkpointing: bool
    gpu: str
    gpu_memory_gib: float | None
    memory_gib_per_gpu: float
    fits: bool | None
    strategies: list[MemoryEstimate]
    activations_gib_without_checkpointing: float
    activations_gib_with_checkpointing: float
    flops: float
    gpu_minutes: float
    wall_minutes: float
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def activation_bytes(
    arch: StudentArch, micro: int, seq_tokens: int, patches: int, answer_tokens: int, act_bytes: int,
    checkpointing: bool,
) -> float:
    """Memory held for backward by one micro-batch (bytes).

    Per token and decoder layer, what autograd keeps: the two RMSNorms' inputs and normalised
    outputs (4h, fp32: the residual stream stays fp32 under autocast), the inputs of the q/k/v, output
    and MLP projections (3h), q, k, v and the attention output (2h + 2 kv), the gated MLP (4 x
    intermediate). Per vision patch and block: the LayerNorms' inputs and outputs (4 h_v), q, k, v
    and the rotary copies of q and k (5 h_v), the attention output and the projection's input (2 h_v),
    and the MLP (3 x intermediate: Qwen2-VL's QuickGELU keeps its input, the sigmoid and the product;
    plain-GELU towers keep 2, so this errs high for them). With checkpointing only each layer's
    input stays, plus one layer recomputed at a time. Logits only where an answer token is predicted
    (``logits_to_keep``); the pixels the patch embedding keeps; the 4-D attention mask.
    """
    tokens, vpatches = micro * seq_tokens, micro * patches
    h, vh = arch.hidden, arch.v_hidden
    lm_layer = 4 * h * 4 + (5 * h + 2 * arch.kv_dim + 4 * arch.intermediate) * act_bytes
    vis_layer = (11 * vh + 3 * arch.v_intermediate) * act_bytes
    if checkpointing:
        lm = arch.layers * tokens * h * 4 + tokens * lm_layer
        vis = arch.v_layers * vpatches * vh * act_bytes + vpatches * vis_layer
    else:
        lm = arch.layers * tokens * lm_layer
        vis = arch.v_layers * vpatches * vis_layer
    logits = micro * answer_tokens * arch.vocab * (act_bytes + 4 + 4)
    pixels = vpatches * arch.patch_pixels * act_bytes
    mask = micro * seq_tokens * seq_tokens * 4
    return lm + vis + logits + pixels + mask


def memory_estimate(
    arch: StudentArch, strategy: str, gpus: int, activations: float, gpu_gib: float | None, lora_r: int,
    bf16: bool, checkpointing: bool,
) -> MemoryEstimate:
    """Bytes per GPU of weights, gradients, AdamW state and activations under one strategy."""
    p = arch.params
    other = 0.0
    if strategy == "lora":
        # rank-r adapters on every linear layer: r x (in + out) per weight matrix
        h, i, vh, vi = arch.hidden, arch.intermediate, arch.v_hidden, arch.v_intermediate
        per_layer = lora_r * (2 * h + 2 * (h + arch.kv_dim) + 3 * (h + i))
        per_block = lora_r * (3 * vh + vh + 2 * vh + 2 * (vh + vi))
        trainable = arch.layers * per_layer + arch.v_layers * per_block
        weights = p * (2 if bf16 else 4) + trainable * 4
        grads, optim = trainable * 4, trainable * 8
    elif strategy == "fsdp":
        weights, grads, optim = 4 * p / gpus, 4 * p / gpus, 8 * p / gpus
        other = 2 * arch.block_params() * (2 if bf16 else 4)  # the gathered unit and the prefetched next
    else:
        weights, grads, optim = 4 * p, 4 * p, 8 * p
        if bf16 and not checkpointing:
            other = 2 * p  # bf16 copies of the weights autocast keeps for backward
    total = weights + grads + optim + activations + other
    total_gib = total / GIB
    return MemoryEstimate(
        strategy=strategy, gpus=gpus, weights_gib=weights / GIB, gradients_gib=grads / GIB,
        optimizer_gib=optim / GIB, activations_gib=activations / GIB, other_gib=other / GIB, total_gib=total_gib,
        fits=None if gpu_gib is None else total_gib <= USABLE_MEMORY * gpu_gib,
    )


def level_gpus(cfg: RunConfig) -> int:
    t = cfg.train
    if t.backend == "trainjob":
        return max(1, t.trainjob.num_nodes * max(1, t.trainjob.gpus_per_node))
    return t.processes


def plan_level(cfg: RunConfig, n_images: int, image_size: tuple[int, int], out: str | Path | None = None) -> LevelPlan:
    """PL's memory per GPU (configured strategy and the alternatives), fit on ``plan.gpu``, and time."""
    from mpa.training.batches import batch_layout
    from mpa.vlm.adapters import preset_for_config

    t, p = cfg.train, cfg.plan
    notes: list[str] = []
    arch = student_arch(cfg)
    gpus = level_gpus(cfg)
    preset = preset_for_config(arch.config)
    batch = t.batch_size or preset.batch_size
    layout = batch_layout(batch, gpus, t.micro_batch_size)
    width, height = image_size
    img_tok, patches = student_image_tokens(arch, cfg, width, height)
    answer = p.pi_output_tokens + 1  # the answer and the end-of-turn token carry the loss
    seq = img_tok + p.prompt_tokens + 15 + answer
    parity = Path(out or cfg.out) / "pi" / "parity.jsonl"
    if parity.is_file():
        n_samples = sum(1 for line in parity.read_text(encoding="utf-8").splitlines() if line.strip())
        n_source = str(parity)
    else:
        n_samples = max(1, round(0.1 * n_images * cfg.annotate.qa_per_image))
        n_source = "estimate: 10% of the PA samples (paper: TextVQA 21K -> 2K)"
    bf16 = t.precision != "fp32"  # plans are for GPUs: auto means bf16 there
    checkpointing = t.gradient_checkpointing
    if checkpointing is None:
        from mpa.vlm.hf import TINY_MODEL_PARAMS

        checkpointing = arch.params >= TINY_MODEL_PARAMS
    gpu = p.gpus.get(p.gpu)
    if gpu is None:
        raise ValueError(f"plan.gpu {p.gpu!r} is not in plan.gpus ({', '.join(p.gpus)})")
    act_b = 2 if bf16 else 4
    micro = layout.micro_batch_size

    def acts(ckpt: bool, abytes: int = act_b) -> float:
        return activation_bytes(arch, micro, seq, patches, answer, abytes, ckpt)

    rows = [
        memory_estimate(arch, "fp32", 1, acts(checkpointing, 4), gpu.memory_gib, t.lora_r, False, checkpointing),
        memory_estimate(arch, "bf16", 1, acts(checkpointing, 2), gpu.memory_gib, t.lora_r, True, checkpointing),
    ]
    for n in sorted({n for n in (gpus, 3) if n > 1}):
        rows.append(memory_estimate(arch, "fsdp", n, acts(checkpointing, 2), gpu.memory_gib, t.lora_r, True,
                                    checkpointing))
    rows.append(memory_estimate(arch, "lora", 1, acts(checkpointing, 2), gpu.memory_gib, t.lora_r, True,
                                checkpointing))
    kind = "lora" if t.lora else ("fsdp" if t.strategy == "fsdp" and gpus > 1 else ("bf16" if bf16 else "fp32"))
    configured = memory_estimate(arch, kind, gpus if kind == "fsdp" else 1, acts(checkpointing), gpu.memory_gib,
                                 t.lora_r, bf16, checkpointing)
    tokens = n_samples * t.epochs * seq
    recompute = 4 / 3 if checkpointing else 1.0  # one more forward pass
    flops = recompute * (6 * arch.lm_params * tokens + 6 * arch.vision_params * n_samples * t.epochs * patches)
    gpu_minutes = flops / (gpu.peak_tflops * 1e12 * p.utilization) / 60
    if gpu.memory_gib is None:
        notes.append(f"plan.gpus[{p.gpu}] has no memory_gib: cannot tell whether PL fits")
    notes.append("activations: one micro-batch per GPU, answer-position logits only; memory ignores the CUDA "
                 f"context and fragmentation by allowing {USABLE_MEMORY:.0%} of the device")
    return LevelPlan(
        student=arch.name, student_source=arch.source, params=arch.params, vision_params=arch.vision_params,
        n_samples=n_samples, n_samples_source=n_source, epochs=t.epochs, batch_size=batch, micro_batch_size=micro,
        accumulation=layout.accumulation, gpus=gpus, seq_tokens=seq, image_tokens=img_tok, vision_patches=patches,
        precision="bf16" if bf16 else "fp32", strategy=kind, lora=t.lora, gradient_checkpointing=checkpointing,
        gpu=p.gpu, gpu_memory_gib=gpu.memory_gib, memory_gib_per_gpu=configured.total_gib, fits=configured.fits,
        strategies=rows, activations_gib_without_checkpointing=acts(False) / GIB,
        activations_gib_with_checkpointing=acts(True) / GIB, flops=flops, gpu_minutes=gpu_minutes,
        wall_minutes=gpu_minutes / gpus, notes=notes,
    )


def format_level(lp: LevelPlan) -> list[str]:
    mem = f"{lp.gpu_memory_gib:g} GiB" if lp.gpu_memory_gib else "memory unknown"
    lines = [
        f"PL: {lp.student} ({lp.params:.3g} params, {lp.vision_params:.3g} in the vision tower; {lp.student_source})",
        f"    {lp.n_samples} samples x {lp.epochs:g} epoch(s) ({lp.n_samples_source}); batch {lp.batch_size} = "
        f"micro {lp.micro_batch_size} x accumulation {lp.accumulation} x {lp.gpus} GPU(s); "
        f"{lp.seq_tokens} tokens/sample ({lp.image_tokens} image tokens, {lp.vision_patches} vision patches)",
        f"{'strategy':<10} {'GPUs':>4} {'weights':>8} {'grads':>8} {'AdamW':>8} {'activ.':>8} {'other':>8} "
        f"{'GiB/GPU':>8}  fits {lp.gpu} ({mem})",
    ]
    for r in lp.strategies:
        fit = "?" if r.fits is None else ("yes" if r.fits else "no")
        lines.append(
            f"{r.strategy:<10} {r.gpus:>4} {r.weights_gib:>8.1f} {r.gradients_gib:>8.1f} {r.optimizer_gib:>8.1f} "
            f"{r.activations_gib:>8.1f} {r.other_gib:>8.1f} {r.total_gib:>8.1f}  {fit}"
        )
    fit = "unknown" if lp.fits is None else ("fits" if lp.fits else "does NOT fit")
    lines.append(
        f"configured: {lp.strategy} ({lp.precision}) on {lp.gpus} GPU(s), gradient checkpointing "
        f"{'on' if lp.gradient_checkpointing else 'off'} -> {lp.memory_gib_per_gpu:.1f} GiB per GPU: {fit} "
        f"(activations {lp.activations_gib_with_checkpointing:.1f} GiB with checkpointing, "
        f"{lp.activations_gib_without_checkpointing:.1f} without)"
    )
    lines.append(
        f"PL compute {lp.flops:.3g} FLOP -> {lp.gpu_minutes:.1f} GPU-min on {lp.gpu}, "
        f"{lp.wall_minutes:.1f} min on {lp.gpus} GPU(s)"
    )
    lines.extend(f"note: {n}" for n in lp.notes)
    return lines
