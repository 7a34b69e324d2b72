"""The PA/PI plan: images, image tokens, FLOPs per stage, GPU-minutes and API dollars (the module
docstring of :mod:`mpa.costplan` lists the model's assumptions)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mpa.config import RunConfig
from mpa.costplan.models import (
    GPT4O_DEFAULT_PRICES,
    QWEN_DEFAULT_MAX_PIXELS,
    ModelFacts,
    checkpoint_pixel_cap,
    gpt4o_image_tokens,
    model_facts,
    qwen_image_tokens,
)


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
            2 * model.lm_params * (prefill + decode) + 2 * model.head_params * decode,
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
