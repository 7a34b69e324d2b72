"""``mpa plan``: the expected work of a run, before anything runs — and beside the measured numbers after.

The cost model (public figures on image tokens, FLOPs per token, GPU peaks and API prices):

- image tokens: Qwen2-VL's ``smart_resize`` to the configured pixel cap, one token per 28×28 px;
- FLOPs ≈ 2 × parameters per token for the language model (prefill and decode), plus the
  vision tower's FLOPs per image token (≈ 6.4 GFLOP for Qwen2-VL's 675 M-parameter ViT);
- PA: one call per image and attempt; PI teacher: one per parsed attempt; PI student: one per
  teacher-consistent attempt (by default the student never sees samples that cannot be kept);
- GPU-minutes = FLOPs / (peak × utilisation) on a named GPU; API dollars for an OpenAI teacher
  from the token prices in the config (GPT-4o-style image tokens: 85 + 170 per 512-px tile).

Parameters come from ``plan.teacher_params`` / ``plan.student_params``, else from the
checkpoint's safetensors (local directories), else from the model name (2B / 7B / 72B).
"""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mpa.config import ModelConfig, RunConfig
from mpa.stages.annotate import smart_resize

QWEN_DEFAULT_MAX_PIXELS = 16384 * 28 * 28
QWEN_DEFAULT_MIN_PIXELS = 56 * 56
GPT4O_DEFAULT_PRICES = (2.50, 10.00)  # USD per 1M input / output tokens (gpt-4o-2024-11-20)

# LM parameters and vision GFLOP per merged image token, by model-name size tag (Qwen2-VL family).
NAMED_SIZES = {"72b": (72.7e9, 6.4), "7b": (6.6e9, 6.4), "2b": (1.35e9, 6.4)}


@dataclass
class ModelFacts:
    lm_params: float
    vision_gflop_per_image_token: float
    source: str


@dataclass
class StageWork:
    name: str
    model: str
    calls: float
    prefill_tokens: float
    decode_tokens: float
    image_tokens: float
    lm_flops: float
    vision_flops: float

    @property
    def flops(self) -> float:
        return self.lm_flops + self.vision_flops


@dataclass
class Plan:
    n_images: int
    image_size: tuple[int, int]
    image_tokens_per_image: int
    pixel_cap: int
    stages: list[StageWork]
    gpu: str
    peak_tflops: float
    utilization: float
    total_flops: float
    gpu_minutes_at_peak: float
    gpu_minutes: float
    gpu_usd: float
    api: dict[str, Any] | None = None
    student_calls_saved: float = 0.0
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for s, sw in zip(d["stages"], self.stages, strict=True):
            s["flops"] = sw.flops
        return d


def qwen_image_tokens(width: int, height: int, max_pixels: int | None, min_pixels: int | None = None) -> int:
    """Visual tokens Qwen2-VL spends on one image (after the 2×2 merge: one per 28×28 px)."""
    h, w = smart_resize(height, width, 28, min_pixels or QWEN_DEFAULT_MIN_PIXELS, max_pixels or QWEN_DEFAULT_MAX_PIXELS)
    return (h // 28) * (w // 28)


def gpt4o_image_tokens(width: int, height: int, detail: str = "high") -> int:
    """OpenAI's published image-token rule for GPT-4o: 85 base + 170 per 512-px tile (high detail)."""
    if detail == "low":
        return 85
    scale = min(1.0, 2048 / max(width, height))
    w, h = width * scale, height * scale
    scale = min(1.0, 768 / min(w, h))
    w, h = w * scale, h * scale
    return 85 + 170 * math.ceil(w / 512) * math.ceil(h / 512)


def _safetensors_params(path: Path) -> tuple[float, float] | None:
    """(LM params, vision params) counted from safetensors headers (no tensors are read)."""
    files = sorted(path.glob("*.safetensors"))
    if not files:
        return None
    lm = vision = 0.0
    for f in files:
        with open(f, "rb") as fh:
            n = struct.unpack("<Q", fh.read(8))[0]
            header = json.loads(fh.read(n))
        for name, meta in header.items():
            if name == "__metadata__":
                continue
            count = math.prod(meta["shape"]) if meta["shape"] else 1
            if "visual" in name or "vision" in name:
                vision += count
            else:
                lm += count
    return lm, vision


def model_facts(cfg: ModelConfig, override: float | None, vision_gflop: float) -> ModelFacts:
    if override:
        return ModelFacts(override, vision_gflop, "plan config")
    path = Path(cfg.model).expanduser()
    if path.is_dir():
        counted = _safetensors_params(path)
        if counted:
            lm, vis = counted
            # a merged token covers 2×2 patches; ~2 FLOP per parameter per patch
            return ModelFacts(lm, 2 * vis * 4 / 1e9, f"counted from {path}/*.safetensors")
    name = cfg.model.lower()
    key = named_student(name)
    if key:  # the paper's students: their own LM size and vision tower
        conf = NAMED_STUDENTS[key]
        per_token = int(conf.get("scale_factor", 2)) ** 2  # vision patches behind one image token
        lm = conf["params"] - conf["vision_params"]
        return ModelFacts(lm, 2 * conf["vision_params"] * per_token / 1e9, f"built-in table ({key})")
    for tag, (p, vg) in NAMED_SIZES.items():
        if re.search(rf"(?<![0-9.]){tag}\b", name):
            return ModelFacts(p, vg, f"model name ({tag.upper()})")
    raise ValueError(f"cannot tell the size of {cfg.model}: set plan.teacher_params / plan.student_params")


def checkpoint_pixel_cap(cfg: ModelConfig) -> tuple[int | None, int | None]:
    """(max_pixels, min_pixels): the config's, else the local checkpoint's image processor settings."""
    if cfg.max_pixels is not None:
        return cfg.max_pixels, cfg.min_pixels
    d = Path(cfg.model).expanduser()
    for name in ("preprocessor_config.json", "processor_config.json"):
        f = d / name
        if f.is_file():
            data = json.loads(f.read_text())
            ip = data.get("image_processor", data)
            size = ip.get("size") or {}
            mx = ip.get("max_pixels") or size.get("longest_edge")
            mn = ip.get("min_pixels") or size.get("shortest_edge")
            if mx:
                return int(mx), (int(mn) if mn else cfg.min_pixels)
    return None, cfg.min_pixels


def _sample_image_size(cfg: RunConfig, uris: list[str]) -> tuple[int, int]:
    p = cfg.plan
    if p.image_width and p.image_height:
        return p.image_width, p.image_height
    from PIL import Image

    from mpa import storage

    sizes = []
    for uri in uris[:32]:
        try:
            if storage.is_s3(uri):
                import io

                sizes.append(Image.open(io.BytesIO(storage.read_bytes(uri))).size)
            else:
                with Image.open(uri) as im:
                    sizes.append(im.size)
        except (OSError, ValueError):
            continue
    if not sizes:
        return 1024, 768
    sizes.sort(key=lambda s: s[0] * s[1])
    return sizes[len(sizes) // 2]


def make_plan(cfg: RunConfig, n_images: int | None = None) -> Plan:
    """The expected work of ``cfg`` (``n_images`` overrides counting the source)."""
    p = cfg.plan
    notes: list[str] = []
    uris: list[str] = []
    if n_images is None:
        from mpa.data.sources import list_images

        uris = list_images(cfg.data.images, cfg.data.max_images)
        n_images = len(uris)
    width, height = _sample_image_size(cfg, uris)
    t_max, t_min = checkpoint_pixel_cap(cfg.teacher)
    s_max, s_min = checkpoint_pixel_cap(cfg.student)
    cap = t_max or QWEN_DEFAULT_MAX_PIXELS
    img_tok = qwen_image_tokens(width, height, t_max, t_min)
    s_img_tok = qwen_image_tokens(width, height, s_max, s_min)
    k = cfg.annotate.qa_per_image
    pa_calls = n_images * k
    pi_t_calls = pa_calls * p.parse_rate
    pi_s_calls = pi_t_calls * (p.teacher_consistent_rate if cfg.identify.student_only_if_teacher_consistent else 1.0)
    saved = pi_t_calls - pi_s_calls
    question_tokens = 15
    stages: list[StageWork] = []
    api = None
    teacher_is_api = cfg.teacher.backend == "openai"

    def work(
        name: str, model: ModelFacts, label: str, calls: float, image_tokens: int, prompt: int, out: int
    ) -> StageWork:
        prefill = calls * (image_tokens + prompt)
        decode = calls * out
        return StageWork(
            name,
            label,
            calls,
            prefill,
            decode,
            calls * image_tokens,
            2 * model.lm_params * (prefill + decode),
            model.vision_gflop_per_image_token * 1e9 * calls * image_tokens,
        )

    student = model_facts(cfg.student, p.student_params, p.vision_gflop_per_image_token)
    if teacher_is_api:
        pin = p.api_price_input_per_mtok
        pout = p.api_price_output_per_mtok
        if pin is None:
            pin = cfg.teacher.openai.price_input_per_mtok or None
        if pout is None:
            pout = cfg.teacher.openai.price_output_per_mtok or None
        if pin is None or pout is None:
            pin, pout = GPT4O_DEFAULT_PRICES
            notes.append("API prices: GPT-4o list prices (set teacher.openai.price_*_per_mtok for yours)")
        detail = "low" if cfg.teacher.openai.image_detail == "low" else "high"
        api_img = gpt4o_image_tokens(width, height, detail) if p.api_image_tokens == "gpt4o-tiles" else img_tok
        in_tok = pa_calls * (api_img + p.prompt_tokens) + pi_t_calls * (api_img + p.prompt_tokens + question_tokens)
        out_tok = pa_calls * p.pa_output_tokens + pi_t_calls * p.pi_output_tokens
        api = {
            "model": cfg.teacher.served_name or cfg.teacher.model,
            "image_tokens_per_image": api_img,
            "input_tokens": in_tok,
            "output_tokens": out_tok,
            "price_input_per_mtok": pin,
            "price_output_per_mtok": pout,
            "usd": (in_tok * pin + out_tok * pout) / 1e6,
            "usd_batch_api": (in_tok * pin + out_tok * pout) / 2e6,
        }
    else:
        teacher = model_facts(cfg.teacher, p.teacher_params, p.vision_gflop_per_image_token)
        stages.append(
            work("PA teacher", teacher, cfg.teacher.model, pa_calls, img_tok, p.prompt_tokens, p.pa_output_tokens)
        )
        stages.append(
            work(
                "PI teacher",
                teacher,
                cfg.teacher.model,
                pi_t_calls,
                img_tok,
                p.prompt_tokens + question_tokens,
                p.pi_output_tokens,
            )
        )
        notes.append(
            "PI teacher counts the image prefill again; with the same vLLM engine and prefix "
            "caching, image-first prompts can reuse PA's prefill (an upper bound here)"
        )
    stages.append(
        work(
            "PI student",
            student,
            cfg.student.model,
            pi_s_calls,
            s_img_tok,
            p.prompt_tokens + question_tokens,
            p.pi_output_tokens,
        )
    )
    gpu = p.gpus.get(p.gpu)
    if gpu is None:
        raise ValueError(f"plan.gpu {p.gpu!r} is not in plan.gpus ({', '.join(p.gpus)}); add its peak_tflops")
    total = sum(s.flops for s in stages)
    at_peak = total / (gpu.peak_tflops * 1e12) / 60
    minutes = at_peak / p.utilization
    return Plan(
        n_images=n_images,
        image_size=(width, height),
        image_tokens_per_image=img_tok,
        pixel_cap=cap,
        stages=stages,
        gpu=p.gpu,
        peak_tflops=gpu.peak_tflops,
        utilization=p.utilization,
        total_flops=total,
        gpu_minutes_at_peak=at_peak,
        gpu_minutes=minutes,
        gpu_usd=minutes / 60 * gpu.usd_per_hour,
        api=api,
        student_calls_saved=saved,
        notes=notes,
    )


def measured(out: str | Path, plan: Plan) -> dict[str, Any] | None:
    """Measured numbers of a finished run in ``out`` beside the plan's (None if nothing ran yet)."""
    out = Path(out)
    summary_path = out / "summary.json"
    res: dict[str, Any] = {}
    if summary_path.is_file():
        s = json.loads(summary_path.read_text())
        pa, pi = s.get("annotate", {}), s.get("identify", {})
        t = s.get("timings_s", {})
        res["images"] = pa.get("n_images")
        if t.get("annotate"):
            res["pa_images_per_s"] = pa.get("n_images", 0) / t["annotate"]
        if t.get("identify"):
            res["pi_answers_per_s"] = (pi.get("n_parsed", 0) + pi.get("student_calls", 0)) / t["identify"]
        res["student_calls_saved"] = pi.get("student_calls_saved")
        res["parse_rate"] = pi.get("n_parsed", 0) / max(1, pi.get("n_annotations", 0))
        res["teacher_consistent_rate"] = pi.get("n_teacher_consistent", 0) / max(1, pi.get("n_parsed", 0))
        secs = sum(t.get(k, 0.0) for k in ("annotate", "identify"))
        if secs:
            scale = (pa.get("n_images") or plan.n_images) / max(1, plan.n_images)
            res["achieved_tflops"] = plan.total_flops * scale / secs / 1e12
            res["utilization_of_plan_gpu"] = res["achieved_tflops"] / plan.peak_tflops
    shard_files = sorted(out.glob("shards/*/shard_summary.json"))
    if shard_files and not res:
        pa_s = pi_s = 0.0
        n_img = parsed = consistent = student = saved = hits = 0
        for f in shard_files:
            s = json.loads(f.read_text())
            pa, pi = s.get("annotate", {}), s.get("identify", {})
            pa_s = max(pa_s, pa.get("seconds", 0.0))  # shards run side by side: the slowest one is the wall time
            pi_s = max(pi_s, pi.get("seconds", 0.0))
            n_img += pa.get("n_images", 0)
            parsed += pi.get("n_parsed", 0)
            consistent += pi.get("n_teacher_consistent", 0)
            student += pi.get("student_calls", 0)
            saved += pi.get("student_calls_saved", 0)
            hits += pa.get("cache_hits", 0) + pi.get("cache_hits", 0)
        res.update(
            shards=len(shard_files),
            images=n_img,
            student_calls_saved=saved,
            cache_hits=hits,
            teacher_consistent_rate=consistent / max(1, parsed),
        )
        if pa_s:
            res["pa_images_per_s"] = n_img / pa_s
        if pa_s + pi_s:
            res["achieved_tflops"] = plan.total_flops * n_img / max(1, plan.n_images) / (pa_s + pi_s) / 1e12
            res["utilization_of_plan_gpu"] = res["achieved_tflops"] / plan.peak_tflops
    usages = [out / "usage.json", *sorted(out.glob("shards/*/usage.json"))]
    api = [json.loads(u.read_text()) for u in usages if u.is_file()]
    if api:
        keys = ("requests", "prompt_tokens", "completion_tokens", "retries", "failures", "cost_usd")
        res["api_usage"] = {k: sum(a.get(k, 0) for a in api) for k in keys}
    return res or None


def format_plan(plan: Plan) -> list[str]:
    lines = [
        f"images: {plan.n_images}  (median size {plan.image_size[0]}x{plan.image_size[1]}, "
        f"{plan.image_tokens_per_image} image tokens each at a {plan.pixel_cap}-px cap = "
        f"{plan.pixel_cap // 784}·28²)",
        f"{'stage':<11} {'calls':>10} {'prefill tok':>13} {'decode tok':>12} {'PFLOP':>9}  model",
    ]
    for s in plan.stages:
        lines.append(
            f"{s.name:<11} {s.calls:>10.0f} {s.prefill_tokens:>13.3g} {s.decode_tokens:>12.3g} "
            f"{s.flops / 1e15:>9.2f}  {s.model}"
        )
    lines.append(
        f"total {plan.total_flops:.3g} FLOP → {plan.gpu}: {plan.gpu_minutes_at_peak:.1f} GPU-min at peak "
        f"({plan.peak_tflops:g} TFLOP/s), {plan.gpu_minutes:.1f} GPU-min at {plan.utilization:.0%} "
        f"utilisation (≈ ${plan.gpu_usd:.2f})"
    )
    lines.append(f"PI student calls saved by asking only on teacher-consistent samples: {plan.student_calls_saved:.0f}")
    if plan.api:
        a = plan.api
        lines.append(
            f"API teacher {a['model']}: {a['input_tokens']:.3g} input + {a['output_tokens']:.3g} output "
            f"tokens ({a['image_tokens_per_image']} per image) → ${a['usd']:.2f} "
            f"(${a['usd_batch_api']:.2f} with a batch API)"
        )
    lines.extend(f"note: {n}" for n in plan.notes)
    return lines


# --- PL: memory per GPU under each strategy, whether it fits, time from FLOPs ------------------------

#: Architectures of the paper's students (from their config.json files), for plans without a local copy.
NAMED_STUDENTS: dict[str, dict[str, Any]] = {
    "qwen2-vl-2b": {
        "model_type": "qwen2_vl", "params": 2.21e9, "vision_params": 0.675e9,
        "text_config": {"hidden_size": 1536, "num_hidden_layers": 28, "num_attention_heads": 12,
                        "num_key_value_heads": 2, "intermediate_size": 8960, "vocab_size": 151936,
                        "tie_word_embeddings": True},
        "vision_config": {"embed_dim": 1280, "depth": 32, "mlp_ratio": 4, "temporal_patch_size": 2},
    },
    "internvl2-2b": {
        "model_type": "internvl_chat", "template": "internlm2-chat", "params": 2.21e9, "vision_params": 0.30e9,
        "llm_config": {"hidden_size": 2048, "num_hidden_layers": 24, "num_attention_heads": 16,
                       "num_key_value_heads": 8, "intermediate_size": 8192, "vocab_size": 92553},
        "vision_config": {"hidden_size": 1024, "num_hidden_layers": 24, "intermediate_size": 4096,
                          "image_size": 448, "patch_size": 14},
        "downsample_ratio": 0.5, "max_dynamic_patch": 12,
    },
    "internvl2-4b": {
        "model_type": "internvl_chat", "template": "phi3-chat", "params": 4.15e9, "vision_params": 0.30e9,
        "llm_config": {"hidden_size": 3072, "num_hidden_layers": 32, "num_attention_heads": 32,
                       "num_key_value_heads": 32, "intermediate_size": 8192, "vocab_size": 32020,
                       "model_type": "phi3"},
        "vision_config": {"hidden_size": 1024, "num_hidden_layers": 24, "intermediate_size": 4096,
                          "image_size": 448, "patch_size": 14},
        "downsample_ratio": 0.5, "max_dynamic_patch": 12,
    },
    "smolvlm-500m": {
        "model_type": "idefics3", "params": 0.507e9, "vision_params": 0.093e9, "scale_factor": 4,
        "text_config": {"hidden_size": 960, "num_hidden_layers": 32, "num_attention_heads": 15,
                        "num_key_value_heads": 5, "intermediate_size": 2560, "vocab_size": 49280},
        "vision_config": {"hidden_size": 768, "num_hidden_layers": 12, "intermediate_size": 3072,
                          "image_size": 512, "patch_size": 16},
        "longest_edge": 2048,
    },
}
def named_student(name: str) -> str | None:
    """The :data:`NAMED_STUDENTS` key a model name refers to (``OpenGVLab/InternVL2-4B`` -> ``internvl2-4b``)."""
    flat = name.lower().replace("_", "-")
    return next((k for k in NAMED_STUDENTS if k in flat), None)


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
        counted = _safetensors_params(path)
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
