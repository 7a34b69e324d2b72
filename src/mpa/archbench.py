"""``mpa bench-arch``: PA, PI and PL at the paper's architecture sizes, random weights, nothing downloaded.

A teacher and a student are built from the published shapes (:mod:`mpa.archs`), cut to ``layers`` /
``width`` where the machine is small, and fed fixed synthetic images of the plan's size with a fixed
number of generated tokens (end-of-sequence ignored), so a run costs what the released models cost.
For each backend it reports images/s, generated tokens/s, achieved FLOP/s and the ratio of measured
time to the time the plan's FLOP model predicts at the measured machine peak (a matmul timed in the
same run); for PL the step time and peak memory beside ``mpa plan``'s level section.

The FLOP model is :mod:`mpa.costplan`'s: 2 FLOP per LM weight per prefilled or decoded token (the LM
head only where a token is generated: generation computes logits at the last position) plus the
vision tower's 2 FLOP per weight per patch and its attention; PL 6 FLOP per weight per token.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mpa.archs import Arch, get_arch, hf_config, param_counts, scaled
from mpa.config import PlanConfig

# the plan's assumptions (PlanConfig defaults and the authors' pixel cap): one fixed image size, output lengths
IMAGE_SIZE = (1024, 768)
MIN_PIXELS, MAX_PIXELS = 128 * 28 * 28, 512 * 28 * 28
PA_TOKENS, PI_TOKENS, PROMPT_WORDS = 30, 5, 40
BACKENDS = ("hf_per_sample", "hf_batched", "vllm_offline")
_PLAN = PlanConfig()
PLAN_GPU, PLAN_UTILIZATION = _PLAN.gpus[_PLAN.gpu], _PLAN.utilization
#: the goals held against the measured ratios (PA+PI images/s over per-sample HF)
GOALS = {"vllm_offline": 15.0, "hf_batched": 10.0}


def clock() -> float:
    """Seconds for throughput: this process's CPU time on a CPU-only machine (with one thread it is the time an
    idle core would take; wall time on a shared machine measures the neighbours), wall time on a GPU."""
    import torch

    return time.perf_counter() if torch.cuda.is_available() else time.process_time()


def matmul_peak(n: int = 1024, seconds: float = 1.5, dtype: str = "float32", device: str = "cpu") -> float:
    """FLOP/s of a square matmul on this device, with the threads torch uses now (best of a few runs)."""
    import torch

    dt = getattr(torch, dtype)
    a = torch.randn(n, n, dtype=dt, device=device)
    b = torch.randn(n, n, dtype=dt, device=device)
    torch.mm(a, b)
    best, end = 0.0, clock() + seconds
    while clock() < end:
        if device != "cpu":
            torch.cuda.synchronize()
        t = clock()
        for _ in range(4):
            torch.mm(a, b)
        if device != "cpu":
            torch.cuda.synchronize()
        best = max(best, 4 * 2 * n**3 / max(clock() - t, 1e-9))
    return best


# --- the model and its inputs ------------------------------------------------------------------------


def bench_processor(arch: Arch):
    """A Qwen2-VL processor with the paper's pixel cap and a small local tokenizer (no download)."""
    if arch.family != "qwen2_vl":
        raise ValueError(f"bench-arch measures Qwen2-VL shapes; {arch.name} ({arch.family}) is counted, not run")
    from mpa.devtools.tinymodels import DEFAULT_CORPUS, build_qwen2vl_processor
    from mpa.tasks import get_task

    task = get_task("textvqa")
    return build_qwen2vl_processor([*DEFAULT_CORPUS, task.pa_prompt, task.answer_prompt("what is written here?")],
                                   vocab_size=500, min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)


def build_model(arch: Arch, out_dir: str | Path | None = None, dtype: str = "float32", seed: int = 0):
    """A random-weight model of ``arch`` (saved to ``out_dir`` with its processor when given, for vLLM)."""
    import torch
    from transformers import AutoModelForImageTextToText

    processor = bench_processor(arch)
    tok = processor.tokenizer
    ids = {"image_token_id": tok.convert_tokens_to_ids("<|image_pad|>"),
           "video_token_id": tok.convert_tokens_to_ids("<|video_pad|>"),
           "vision_start_token_id": tok.convert_tokens_to_ids("<|vision_start|>"),
           "vision_end_token_id": tok.convert_tokens_to_ids("<|vision_end|>"),
           "eos_token_id": tok.convert_tokens_to_ids("<|im_end|>"),
           "bos_token_id": tok.convert_tokens_to_ids("<|endoftext|>"),
           "pad_token_id": tok.convert_tokens_to_ids("<|endoftext|>")}
    torch.manual_seed(seed)
    config = hf_config(arch, ids)
    with torch.device(_device()):  # random init on the GPU when there is one (a 7B on a CPU takes minutes)
        model = AutoModelForImageTextToText.from_config(config, dtype=getattr(torch, dtype))
    model.generation_config.eos_token_id = ids["eos_token_id"]
    model.generation_config.pad_token_id = ids["pad_token_id"]
    model.eval()
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out)
        processor.save_pretrained(out)
    return model, processor


def bench_images(n: int, size: tuple[int, int] = IMAGE_SIZE, seed: int = 0) -> list:
    """``n`` noise images of one fixed size (content does not change the cost)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for _ in range(n)]


def prompts(kind: str) -> str:
    from mpa.tasks import get_task

    task = get_task("textvqa")
    return task.pa_prompt if kind == "pa" else task.answer_prompt("what is written on the sign in the picture?")


# --- the FLOP model --------------------------------------------------------------------------------------


@dataclass
class Work:
    """What one pass costs, in the plan's FLOP model (for the tokens the bench really sent)."""

    images: int
    image_tokens: int  # per image, after the merge
    patches: int  # per image, what the vision tower runs on
    prompt_tokens: int  # per request, text besides the image tokens
    new_tokens: int  # per request
    flops: float
    flops_plan_as_is: float  # what mpa plan's formula gave before this bench (embedding and head on every token)


def pass_flops(arch: Arch, images: int, image_tokens: int, prompt_tokens: int, new_tokens: int) -> Work:
    counts = param_counts(arch)
    t, v = arch.text, arch.vision
    head = t["vocab_size"] * t["hidden_size"]
    body = counts["lm_matmul"] - head
    h, layers = t["hidden_size"], t["num_hidden_layers"]
    seq = image_tokens + prompt_tokens
    # decoder: weights on every token; attention scores and values (4 h per key position); head on generated
    prefill = 2 * body * seq + 4 * layers * h * seq * seq / 2
    decode = sum(2 * body + 4 * layers * h * (seq + j) for j in range(new_tokens)) + 2 * head * new_tokens
    patches = image_tokens * v.get("spatial_merge_size", 2) ** 2
    vh = v.get("embed_dim") or v["hidden_size"]
    depth = v.get("depth") or v["num_hidden_layers"]
    vision = 2 * counts["vision"] * patches + 4 * depth * vh * patches * patches
    per_image = prefill + decode + vision
    # the plan before this bench, for a local checkpoint: every non-vision weight (embedding and head included)
    # on every token, 2 FLOP per vision weight per patch
    as_is = 2 * counts["lm_total"] * (seq + new_tokens) + 2 * counts["vision"] * patches
    return Work(images, image_tokens, patches, prompt_tokens, new_tokens, images * per_image, images * as_is)


# --- measurements (each in a fresh process: peak memory and thread settings are its own) -----------------


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _empty_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _gpu_peak() -> dict[str, float]:
    import torch

    return {"gpu_peak_gib": torch.cuda.max_memory_allocated() / 2**30} if torch.cuda.is_available() else {}


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure_hf(arch: Arch, n_images: int, batch_size: int, dtype: str = "float32",
               stages: tuple[str, ...] = ("pa", "pi")) -> dict[str, Any]:
    """PA and/or PI passes through transformers' ``generate``, ``batch_size`` requests at a time."""
    import torch

    from mpa.vlm.adapters import adapter_for

    model, processor = build_model(arch, dtype=dtype)
    dev = _device()
    model.to(dev)
    adapter = adapter_for(processor)
    images = bench_images(n_images)
    res: dict[str, Any] = {"batch_size": batch_size}
    for stage, new in (("pa", PA_TOKENS), ("pi", PI_TOKENS)):
        if stage not in stages:
            continue
        prompt = prompts(stage)
        warm = adapter.encode_for_generation(processor, images[:1], [prompt]).to(dev)
        with torch.inference_mode():
            model.generate(**warm, max_new_tokens=2, min_new_tokens=2, do_sample=False)
        t, w = clock(), time.perf_counter()
        n_prompt = 0
        for b in range(0, n_images, batch_size):
            chunk = images[b: b + batch_size]
            batch = adapter.encode_for_generation(processor, chunk, [prompt] * len(chunk)).to(dev)
            with torch.inference_mode():
                out = model.generate(**batch, max_new_tokens=new, min_new_tokens=new, do_sample=False)
            assert out.shape[1] - batch["input_ids"].shape[1] == new
            n_prompt = int(batch["attention_mask"][0].sum())
        _sync()
        secs = clock() - t
        res[stage] = {"seconds": secs, "wall_s": time.perf_counter() - w, "sequence_tokens": n_prompt,
                      "new_tokens": new}
    res["image_tokens"] = int((warm["input_ids"] == processor.tokenizer.convert_tokens_to_ids("<|image_pad|>"))
                              .sum())
    res["peak_rss_gib"] = _peak_rss_bytes() / 2**30
    res.update(_gpu_peak())
    del model  # the next model in this process (the student) needs the device memory back
    import gc

    gc.collect()
    _empty_cache()
    return res


def measure_vllm(arch: Arch, n_images: int, work: Path, dtype: str = "float32", stages: tuple[str, ...] = ("pa", "pi")
                 ) -> dict[str, Any]:
    """The same passes through vLLM's offline engine (every request at once; ``ignore_eos``)."""
    from vllm import LLM, SamplingParams

    model_dir = work / "model"
    _, processor = build_model(arch, model_dir, dtype=dtype)
    from mpa.vlm.vllm_backend import CPU_ENV

    for k, v in CPU_ENV.items():
        os.environ.setdefault(k, v)
    gpu = _device() == "cuda"
    # CPU: the measured small-machine settings (docs/teachers.md); GPU: CUDA graphs and room for every request's KV
    llm = LLM(model=str(model_dir), dtype=dtype, enforce_eager=not gpu, distributed_executor_backend="uni",
              kv_cache_memory_bytes=(16 << 30) if gpu else (512 << 20), limit_mm_per_prompt={"image": 1},
              mm_processor_kwargs={"min_pixels": MIN_PIXELS, "max_pixels": MAX_PIXELS}, seed=0)
    images = bench_images(n_images)
    res: dict[str, Any] = {}
    for stage, new in (("pa", PA_TOKENS), ("pi", PI_TOKENS)):
        if stage not in stages:
            continue
        text = processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompts(stage)}]}],
            add_generation_prompt=True, tokenize=False)
        reqs = [{"prompt": text, "multi_modal_data": {"image": im}} for im in images]
        sp = SamplingParams(max_tokens=new, min_tokens=new, ignore_eos=True, temperature=0.0)
        llm.generate(reqs[:1], SamplingParams(max_tokens=2, ignore_eos=True), use_tqdm=False)
        t, w = clock(), time.perf_counter()
        outs = llm.generate(reqs, sp, use_tqdm=False)
        secs = clock() - t
        assert all(len(o.outputs[0].token_ids) == new for o in outs)
        res[stage] = {"seconds": secs, "wall_s": time.perf_counter() - w,
                      "sequence_tokens": len(outs[0].prompt_token_ids), "new_tokens": new}
        pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
        res["image_tokens"] = sum(1 for t in outs[0].prompt_token_ids if t == pad)
    res["peak_rss_gib"] = _peak_rss_bytes() / 2**30
    res.update(_gpu_peak())
    del llm  # the next engine in this process (the student's) needs the device memory back
    import gc

    gc.collect()
    _empty_cache()
    return res


def measure_pl(arch: Arch, micro_batch: int, steps: int, dtype: str = "float32") -> dict[str, Any]:
    """PL steps of the student (answer-token loss, AdamW) on fixed images: step time and peak memory."""
    import torch

    from mpa.vlm.hf import encode_for_training

    base = _peak_rss_bytes()
    model, processor = build_model(arch, dtype=dtype)
    dev = _device()
    model.to(dev)
    model.train()
    if getattr(model.config, "use_cache", None):
        model.config.use_cache = False
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=False)
    images = bench_images(micro_batch)
    batch = encode_for_training(processor, images, [prompts("pi")] * micro_batch,
                                ["the sign says stop"] * micro_batch)
    batch = {k: v.to(dev) for k, v in batch.items()}
    times = []
    for _ in range(steps + 1):
        t = clock()
        targets = batch["labels"][:, 1:]
        # logits only where an answer token is predicted, as PL computes them (the plan assumes the same)
        positions = (targets != -100).any(dim=0).nonzero().squeeze(1)
        out = model(**{k: v for k, v in batch.items() if k != "labels"}, logits_to_keep=positions)
        loss = torch.nn.functional.cross_entropy(out.logits.float().reshape(-1, out.logits.shape[-1]),
                                                 targets[:, positions].reshape(-1), ignore_index=-100)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync()
        times.append(clock() - t)
    seq = int(batch["attention_mask"][0].sum())
    return {"step_s": min(times[1:]), "first_step_s": times[0], "micro_batch": micro_batch, "seq_tokens": seq,
            "params": float(sum(p.numel() for p in model.parameters())),
            "peak_rss_gib": _peak_rss_bytes() / 2**30, "peak_above_start_gib": (_peak_rss_bytes() - base) / 2**30,
            **_gpu_peak()}


# --- orchestration --------------------------------------------------------------------------------------


def _child(args: list[str], log: Path, timeout: float = 3600) -> dict[str, Any]:
    import subprocess

    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    with open(log, "w") as fh:
        proc = subprocess.run([sys.executable, "-m", "mpa.archbench", *args], env=env, stdout=subprocess.PIPE,
                              stderr=fh, text=True, timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    if proc.returncode != 0 or not lines:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.is_file() else []
        return {"error": f"exit {proc.returncode}; see {log}" + (f": {tail[0][:200]}" if tail else "")}
    return json.loads(lines[-1])


def summarize(kind: str, row: dict[str, Any], teacher: Arch, student: Arch, n_images: int, peak: float,
              threads: int) -> dict[str, Any]:
    """Images/s, tokens/s, FLOP/s and the plan's predicted time at the measured peak, per stage."""
    if "error" in row:
        return row
    out: dict[str, Any] = {"kind": kind}
    total_s = total_flops = 0.0
    for stage, arch, new in (("pa", teacher, PA_TOKENS), ("pi", student, PI_TOKENS)):
        r = row[stage]
        img_tok = row.get("image_tokens") or max(0, r["sequence_tokens"] - 60)
        w = pass_flops(arch, n_images, img_tok, r["sequence_tokens"] - img_tok, new)
        s = r["seconds"]
        out[stage] = {
            "model": arch.name, "seconds": s, "wall_s": r.get("wall_s"), "images_per_s": n_images / s,
            "generated_tokens_per_s": n_images * new / s,
            "flops": w.flops, "achieved_flops_per_s": w.flops / s, "fraction_of_peak": w.flops / s / peak,
            "plan_seconds_at_peak": w.flops / peak, "measured_over_plan_at_peak": s / (w.flops / peak),
            "flops_plan_as_is": w.flops_plan_as_is,
            # what `mpa plan` predicts for this pass on its configured GPU at its utilisation (a GPU run compares)
            "plan_seconds_on_plan_gpu": w.flops / (PLAN_GPU.peak_tflops * 1e12 * PLAN_UTILIZATION),
        }
        total_s += s
        total_flops += w.flops
    out["pa_pi_images_per_s"] = n_images / total_s
    out["pa_pi_fraction_of_peak"] = total_flops / total_s / peak
    out["peak_rss_gib"] = row.get("peak_rss_gib")
    out["threads"] = threads
    return out


def run_arch_bench(
    workdir: str | Path, *, teacher: str = "qwen2-vl-7b", student: str = "qwen2-vl-2b", layers: int | None = 2,
    vision_layers: int | None = 2, width: float = 0.25, n_images: int = 8, batch_size: int = 8,
    backends: list[str] | None = None, pl_steps: int = 2, pl_micro_batch: int = 2, dtype: str = "float32",
    echo: Any = print,
) -> dict[str, Any]:
    import torch

    work = Path(workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    backends = list(backends or BACKENDS)
    for b in backends:
        if b not in BACKENDS:
            raise ValueError(f"unknown backend {b!r}; choose from {', '.join(BACKENDS)}")
    t_arch = scaled(get_arch(teacher), layers, width, vision_layers)
    s_arch = scaled(get_arch(student), layers, width, vision_layers)
    for a in (t_arch, s_arch):
        bench_processor(a)  # refuses a family it cannot run, before anything is built
    threads = torch.get_num_threads()
    peak = matmul_peak(n=8192 if _device() == "cuda" else 1024, dtype=dtype, device=_device())
    echo(f"machine peak (matmul {dtype}, {threads} thread(s)): {peak / 1e9:.1f} GFLOP/s")
    common = ["--teacher", teacher, "--student", student, "--width", str(width), "--n-images", str(n_images),
              "--dtype", dtype] + (["--layers", str(layers)] if layers else []) + (
        ["--vision-layers", str(vision_layers)] if vision_layers else [])
    rows: dict[str, Any] = {}
    for kind in backends:
        echo(f"measuring {kind} …")
        bs = 1 if kind == "hf_per_sample" else batch_size
        raw = _child(["--measure", kind, "--batch-size", str(bs), "--work", str(work / kind), *common],
                     work / f"{kind}.log")
        rows[kind] = summarize(kind, raw, t_arch, s_arch, n_images, peak, threads)
    pl: dict[str, Any] = {}
    if pl_steps:
        echo("measuring PL steps …")
        pl = _child(["--measure", "pl", "--steps", str(pl_steps), "--batch-size", str(pl_micro_batch),
                     "--work", str(work / "pl"), *common], work / "pl.log")
        if "error" not in pl:
            pl.update(pl_plan(s_arch, pl, peak))
    ratios = {k: round(r["pa_pi_images_per_s"] / rows["hf_per_sample"]["pa_pi_images_per_s"], 2)
              for k, r in rows.items() if k != "hf_per_sample" and "error" not in r
              and "error" not in rows.get("hf_per_sample", {"error": 1})}
    result = {"teacher": asdict(t_arch), "student": asdict(s_arch), "peak_flops_per_s": peak, "dtype": dtype,
              "threads": threads, "n_images": n_images, "image_size": list(IMAGE_SIZE),
              "pixel_cap": [MIN_PIXELS, MAX_PIXELS], "rows": rows, "pl": pl, "ratios": ratios,
              "goals": {k: {"goal": g, "measured": ratios.get(k), "met": (ratios.get(k) or 0) >= g}
                        for k, g in GOALS.items() if k in rows}}
    for line in format_arch(result):
        echo(line)
    (work / "bench_arch.json").write_text(json.dumps(result, indent=2, default=str))
    return result


def pl_plan(arch: Arch, pl: dict[str, Any], peak: float) -> dict[str, Any]:
    """The plan's PL FLOPs (6 per weight per token, vision per patch) and memory (fp32 AdamW) for the bench step."""
    counts = param_counts(arch)
    seq, micro = pl["seq_tokens"], pl["micro_batch"]
    image_tokens = max(1, seq - 60)
    patches = 4 * image_tokens
    flops = micro * (6 * counts["lm_matmul"] * seq + 6 * counts["vision"] * patches)
    params = pl["params"]
    state_gib = 16 * params / 2**30  # weights, gradients, two AdamW moments (fp32)
    return {"plan_step_flops": flops, "plan_step_s_at_peak": flops / peak,
            "step_over_plan_at_peak": pl["step_s"] / (flops / peak), "fraction_of_peak": flops / pl["step_s"] / peak,
            "plan_state_gib": state_gib}


def format_arch(res: dict[str, Any]) -> list[str]:
    lines = ["", f"teacher {res['teacher']['name']}, student {res['student']['name']}; {res['n_images']} images "
             f"{res['image_size'][0]}x{res['image_size'][1]}, {PA_TOKENS}/{PI_TOKENS} generated tokens (PA/PI), "
             f"{res['dtype']}, {res['threads']} thread(s), peak {res['peak_flops_per_s'] / 1e9:.1f} GFLOP/s",
             f"{'backend':<14} {'stage':<3} {'img/s':>7} {'tok/s':>8} {'GFLOP/s':>8} {'of peak':>8} "
             f"{'plan s':>8} {'meas s':>8} {'meas/plan':>9}"]
    for kind, r in res["rows"].items():
        if "error" in r:
            lines.append(f"{kind:<14} failed: {r['error']}")
            continue
        for st in ("pa", "pi"):
            s = r[st]
            lines.append(f"{kind:<14} {st.upper():<3} {s['images_per_s']:>7.2f} "
                         f"{s['generated_tokens_per_s']:>8.1f} {s['achieved_flops_per_s'] / 1e9:>8.1f} "
                         f"{s['fraction_of_peak']:>8.1%} {s['plan_seconds_at_peak']:>8.2f} {s['seconds']:>8.2f} "
                         f"{s['measured_over_plan_at_peak']:>9.2f}")
    pl = res.get("pl") or {}
    if "error" in pl:
        lines.append(f"PL failed: {pl['error']}")
    elif pl:
        lines.append(f"PL (student, micro-batch {pl['micro_batch']}, {pl['seq_tokens']} tokens): step "
                     f"{pl['step_s']:.2f}s, plan at peak {pl['plan_step_s_at_peak']:.2f}s "
                     f"(measured/plan {pl['step_over_plan_at_peak']:.2f}, {pl['fraction_of_peak']:.1%} of peak); "
                     + (f"peak GPU memory {pl['gpu_peak_gib']:.2f} GiB" if "gpu_peak_gib" in pl
                        else f"peak memory {pl['peak_above_start_gib']:.2f} GiB above start")
                     + ", plan's weights+grads+AdamW "
                     f"{pl['plan_state_gib']:.2f} GiB + activations")
    for k, g in res.get("goals", {}).items():
        m = g["measured"]
        lines.append(f"goal: PA+PI {k} >= {g['goal']:g}x per-sample HF: "
                     f"{'-' if m is None else f'{m:.2f}x'} {'met' if g['met'] else 'NOT met'}")
    return lines


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description="mpa bench-arch worker (use `mpa bench-arch`)")
    ap.add_argument("--measure", choices=[*BACKENDS, "pl"], required=True)
    ap.add_argument("--teacher", default="qwen2-vl-7b")
    ap.add_argument("--student", default="qwen2-vl-2b")
    ap.add_argument("--layers", type=int)
    ap.add_argument("--vision-layers", type=int)
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--n-images", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--work", type=Path, required=True)
    a = ap.parse_args(argv)
    a.work.mkdir(parents=True, exist_ok=True)
    teacher = scaled(get_arch(a.teacher), a.layers, a.width, a.vision_layers)
    student = scaled(get_arch(a.student), a.layers, a.width, a.vision_layers)
    if a.measure == "pl":
        res = measure_pl(student, a.batch_size, a.steps, a.dtype)
    elif a.measure == "vllm_offline":
        pa = measure_vllm(teacher, a.n_images, a.work / "teacher", a.dtype, ("pa",))
        pi = measure_vllm(student, a.n_images, a.work / "student", a.dtype, ("pi",))
        res = {"pa": pa["pa"], "pi": pi["pi"], "image_tokens": pa["image_tokens"],
               "peak_rss_gib": max(pa["peak_rss_gib"], pi["peak_rss_gib"])}
    else:
        pa = measure_hf(teacher, a.n_images, a.batch_size, a.dtype, ("pa",))
        pi = measure_hf(student, a.n_images, a.batch_size, a.dtype, ("pi",))
        res = {"pa": pa["pa"], "pi": pi["pi"], "image_tokens": pa["image_tokens"],
               "peak_rss_gib": max(pa["peak_rss_gib"], pi["peak_rss_gib"])}
    sys.stdout.write("\n" + json.dumps(res, default=str) + "\n")


if __name__ == "__main__":
    main()
