#!/usr/bin/env python
"""PL at scale on the CPU, measured: prints the numbers docs/training.md quotes.

1. 1 vs 2 processes (DDP through torchrun; FSDP needs GPUs), same global batch: the largest relative
   difference of the per-step losses;
2. samples/s with 1 and 2 processes (the Trainer's training loop only, model loading excluded, and
   wall time), and 1 process with images decoded in the training process (no DataLoader worker);
3. peak memory of training with and without gradient checkpointing (RSS high-water mark above the
   loaded model, each in a fresh process), beside ``mpa plan``'s estimate of the same (gradients,
   AdamW state, activations) for the same model, micro-batch and sequence; and the activation bytes
   autograd keeps (no checkpointing) beside the plan's activation estimate.

    OMP_NUM_THREADS=1 python scripts/bench_pl.py --workdir runs/bench_pl

A small real-architecture Qwen2-VL (built locally, nothing downloaded) stands in for a student.
Numbers on a shared 2-core machine are noisy; the loss differences are not.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGE_PX = 224  # 8x8 merged tokens per image: 64 image tokens, 256 vision patches


def build(workdir: Path, n_samples: int) -> tuple[Path, Path]:
    """A small Qwen2-VL student (hidden 256, 4 layers, vision 128 x 4 blocks) and a samples file."""
    from PIL import Image

    from mpa.devtools.tinymodels import TINY_COLORS, build_tiny_qwen2vl

    model = workdir / "student"
    if not (model / "config.json").is_file():
        build_tiny_qwen2vl(model, hidden_size=256, num_layers=4, num_heads=4, vision_embed_dim=128, vision_depth=4,
                           min_pixels=IMAGE_PX * IMAGE_PX, max_pixels=IMAGE_PX * IMAGE_PX)
    images = workdir / "images"
    images.mkdir(parents=True, exist_ok=True)
    colors = list(TINY_COLORS.items())
    rows = []
    for i in range(n_samples):
        name, rgb = colors[i % len(colors)]
        path = images / f"img_{i:03d}.png"
        if not path.is_file():
            img = Image.new("RGB", (IMAGE_PX, IMAGE_PX), rgb)
            x, y = i % 7 * 20, i % 5 * 30
            img.paste((255 - rgb[0], 255 - rgb[1], 255 - rgb[2]), (x, y, x + 40, y + 40))
            img.save(path)
        rows.append({"image": str(path), "question": "What color is the image?", "answer": name})
    samples = workdir / "samples.jsonl"
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return model, samples


def train(model: Path, samples: Path, out: Path, **train) -> tuple[dict, list[dict], float]:
    from mpa.config import ModelConfig, TrainConfig
    from mpa.stages.level import level
    from mpa.tasks import get_task

    t0 = time.perf_counter()
    s = level(samples_path=samples, student=ModelConfig(model=str(model)), task=get_task("textvqa"),
              cfg=TrainConfig(**train), out_dir=out, show=False)
    wall = time.perf_counter() - t0
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    from dataclasses import asdict

    return asdict(s), log, wall


def mem_child(model: Path, samples: Path, micro: int, steps: int, checkpointing: bool) -> dict:
    """In a fresh process: peak RSS above the loaded model while training ``steps`` steps of ``micro`` samples."""
    import torch

    from mpa.config import ModelConfig
    from mpa.data.images import load_image
    from mpa.devtools.memprobe import peak_rss_bytes, reset_peak_rss, rss_bytes, saved_activation_bytes
    from mpa.stages.level import answer_loss_sum
    from mpa.tasks import get_task
    from mpa.vlm.hf import encode_for_training, load_model, load_processor

    rows = [json.loads(x) for x in samples.read_text().splitlines()][:micro]
    task = get_task("textvqa")
    cfg = ModelConfig(model=str(model))
    processor = load_processor(cfg)
    batch = encode_for_training(processor, [load_image(r["image"]).image for r in rows],
                                [task.answer_prompt(r["question"]) for r in rows], [r["answer"] for r in rows])
    import gc

    m = load_model(cfg, device=torch.device("cpu"))
    if checkpointing:
        m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    m.train()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4, fused=True)  # as PL does
    gc.collect()
    base = rss_bytes()  # the loaded model: training adds gradients, AdamW state, activations, temporaries
    reset_peak_rss()
    activ = None
    for step in range(steps):
        if step == 0 and not checkpointing:
            loss, activ = saved_activation_bytes(lambda: answer_loss_sum(m, batch, True), list(m.parameters()))
        else:
            loss = answer_loss_sum(m, batch, True)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return {"peak_above_base": peak_rss_bytes() - base, "saved_activation_bytes": activ,
            "params": sum(p.numel() for p in m.parameters()), "seq": int(batch["input_ids"].shape[1])}


def plan_for(model: Path, workdir: Path, micro: int, checkpointing: bool, seq: int) -> dict:
    from mpa.config import parse_config
    from mpa.costplan import GIB, plan_level

    cfg = parse_config({
        "teacher": {"model": str(model)}, "student": {"model": str(model)}, "data": {"images": str(workdir / "images")},
        "train": {"batch_size": micro, "precision": "fp32", "gradient_checkpointing": checkpointing},
        # the measured sequence: image tokens + prompt + 15 question tokens + answer (2) = seq
        "plan": {"gpu": "L4", "image_width": IMAGE_PX, "image_height": IMAGE_PX, "pi_output_tokens": 1,
                 "prompt_tokens": seq - (IMAGE_PX // 28) ** 2 - 15 - 2},
        "out": str(workdir / "plan-run"),
    })
    lp = plan_level(cfg, n_images=10, image_size=(IMAGE_PX, IMAGE_PX))
    fp32 = next(r for r in lp.strategies if r.strategy == "fp32")
    above_weights = (fp32.total_gib - fp32.weights_gib) * GIB
    return {"total_bytes": above_weights, "activation_bytes": fp32.activations_gib * GIB, "seq_tokens": lp.seq_tokens}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=Path("runs/bench_pl"))
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--micro", type=int, default=8, help="micro-batch of the memory measurement")
    ap.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.child:
        model, samples, micro, steps, ckpt = args.child
        print(json.dumps(mem_child(Path(model), Path(samples), int(micro), int(steps), ckpt == "1")))
        return
    wd = args.workdir.resolve()
    wd.mkdir(parents=True, exist_ok=True)
    model, samples = build(wd, args.samples)
    common = {"batch_size": args.batch_size, "learning_rate": 1e-3, "epochs": args.epochs, "seed": 0}
    results: dict = {}
    runs = {
        "1 process": {},
        "1 process, no workers": {"dataloader_workers": 0},
        "2 processes ddp": {"processes": 2},
        "2 processes ddp, micro 1": {"processes": 2, "micro_batch_size": 1},
    }
    logs = {}
    for name, extra in runs.items():
        out = wd / ("run-" + name.replace(" ", "_").replace(",", ""))
        import shutil

        shutil.rmtree(out, ignore_errors=True)
        summary, log, wall = train(model, samples, out, **common, **extra)
        logs[name] = log
        steady = (len(log) - 1) * summary["batch_size"] / sum(r["seconds"] for r in log[1:])
        results[name] = {"steps": summary["steps"], "world_size": summary["world_size"],
                         "loop_samples_per_s": round(summary["loop_samples_per_s"], 2),
                         "steady_samples_per_s": round(steady, 2),
                         "loop_seconds": round(summary["loop_seconds"], 2), "wall_seconds": round(wall, 1)}
        print(f"{name:<26} steps {summary['steps']:>3}  training loop {summary['loop_samples_per_s']:6.2f} samples/s "
              f"({summary['loop_seconds']:.1f} s), after step 1 {steady:6.2f} samples/s; wall {wall:.1f} s with "
              "process start and model load")
    for key in ("loop_samples_per_s", "steady_samples_per_s"):
        speedup = results["2 processes ddp"][key] / results["1 process"][key]
        results[f"speedup_2_processes_{key}"] = round(speedup, 2)
        print(f"2 processes / 1 process, {key}: {speedup:.2f}x")
    ref = logs["1 process"]
    for name, log in logs.items():
        if name.startswith("1 process"):
            continue
        worst = max(abs(a["loss"] - b["loss"]) / abs(a["loss"]) for a, b in zip(ref, log, strict=True))
        results[name]["max_rel_loss_diff_vs_1_process"] = worst
        print(f"{name:<26} largest relative per-step loss difference vs 1 process: {worst:.2e}")
    mem = {}
    for ckpt in (False, True):
        out = subprocess.run([sys.executable, __file__, "--child", str(model), str(samples), str(args.micro), "3",
                              "1" if ckpt else "0"], capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"),
                                                                               os.environ.get("PYTHONPATH", "")])})
        if out.returncode:
            sys.exit(out.stderr[-3000:])
        measured = json.loads(out.stdout.strip().splitlines()[-1])
        est = plan_for(model, wd, args.micro, ckpt, measured["seq"])
        key = "with checkpointing" if ckpt else "without checkpointing"
        peak, acts = measured["peak_above_base"], measured["saved_activation_bytes"]
        m = mem[key] = {
            "measured_peak_mib": peak / 2**20, "plan_estimate_mib": est["total_bytes"] / 2**20,
            "estimate_over_measured": est["total_bytes"] / peak, "params": measured["params"],
            "seq_tokens": measured["seq"], "plan_seq_tokens": est["seq_tokens"],
        }
        line = (f"training memory {key:<22}: peak {m['measured_peak_mib']:7.1f} MiB above the loaded model, "
                f"plan {m['plan_estimate_mib']:7.1f} MiB (ratio {m['estimate_over_measured']:.2f})")
        if acts:
            m.update(activations_measured_mib=acts / 2**20, activations_plan_mib=est["activation_bytes"] / 2**20,
                     activations_estimate_over_measured=est["activation_bytes"] / acts)
            line += (f"; activations measured {m['activations_measured_mib']:.1f} MiB, plan "
                     f"{m['activations_plan_mib']:.1f} MiB (ratio {m['activations_estimate_over_measured']:.2f})")
        print(line)
    results["memory"] = mem
    results["memory"]["checkpointing_saves_mib"] = (mem["without checkpointing"]["measured_peak_mib"]
                                                    - mem["with checkpointing"]["measured_peak_mib"])
    print(json.dumps(results))


if __name__ == "__main__":
    main()
