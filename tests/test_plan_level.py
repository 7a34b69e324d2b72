"""`mpa plan` for PL: memory per GPU under each strategy, the fit on the configured GPU, PL time;
the activation estimate checked against what autograd really keeps on a tiny model."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from typer.testing import CliRunner

from mpa.config import parse_config
from mpa.costplan import GIB, activation_bytes, format_level, plan_level, student_arch, student_image_tokens


def paper(student: str, **train) -> dict:
    return {
        "teacher": {"model": "Qwen/Qwen2-VL-7B-Instruct", "max_pixels": 512 * 28 * 28},
        "student": {"model": student, "max_pixels": 512 * 28 * 28},
        "data": {"images": "s3://bucket/textvqa/train_images/"},
        "plan": {"gpu": "A6000", "image_width": 1024, "image_height": 768},
        "train": train,
        "out": "/nonexistent/run",
    }


def test_qwen2_vl_2b_full_fp32_does_not_fit_an_a6000_bf16_does():
    lp = plan_level(parse_config(paper("Qwen/Qwen2-VL-2B-Instruct")), 21_000, (1024, 768))
    rows = {(r.strategy, r.gpus): r for r in lp.strategies}
    assert lp.batch_size == 16 and lp.image_tokens == 494 and lp.gpu_memory_gib == 48
    assert rows["fp32", 1].weights_gib == pytest.approx(2.21e9 * 4 / GIB)
    assert rows["fp32", 1].optimizer_gib == pytest.approx(2 * rows["fp32", 1].weights_gib)
    assert not rows["fp32", 1].fits and rows["bf16", 1].fits  # "tight on the 48 GB A6000s"
    assert rows["fsdp", 3].total_gib < rows["bf16", 1].total_gib / 2
    assert lp.gradient_checkpointing
    assert lp.activations_gib_without_checkpointing > 5 * lp.activations_gib_with_checkpointing
    assert lp.precision == "bf16" and lp.fits is True and lp.memory_gib_per_gpu == rows["bf16", 1].total_gib
    # 6 x params x tokens (+1/3 for the recomputed forward)
    tokens = lp.n_samples * lp.seq_tokens
    assert lp.flops == pytest.approx(4 / 3 * 6 * (lp.params - lp.vision_params) * tokens
                                     + 4 / 3 * 6 * lp.vision_params * lp.n_samples * lp.vision_patches)


def test_internvl2_4b_needs_sharding_on_a6000s_batch_6():
    one = plan_level(parse_config(paper("OpenGVLab/InternVL2-4B", micro_batch_size=2)), 21_000, (1024, 768))
    assert one.batch_size == 6 and one.accumulation == 3 and one.fits is False  # ~67 GB of state alone
    three = plan_level(parse_config(paper("OpenGVLab/InternVL2-4B", processes=3, strategy="fsdp", micro_batch_size=2)),
                       21_000, (1024, 768))
    assert (three.strategy, three.gpus, three.accumulation) == ("fsdp", 3, 1)
    assert three.fits is True and three.memory_gib_per_gpu < 0.6 * one.memory_gib_per_gpu
    assert three.wall_minutes == pytest.approx(three.gpu_minutes / 3)
    text = "\n".join(format_level(three))
    assert "fsdp" in text and "A6000 (48 GiB)" in text


def test_plan_json_carries_level_memory_and_fit(tiny_config, tmp_path):
    from mpa.cli import app

    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(tiny_config))
    res = CliRunner().invoke(app, ["plan", "-c", str(path), "--json", "--images", "10"])
    assert res.exit_code == 0, res.output
    level = json.loads(res.output)["level"]
    assert isinstance(level["memory_gib_per_gpu"], float) and isinstance(level["fits"], bool)
    assert level["fits"] and level["precision"] == "bf16" and level["student_source"].startswith("counted from")
    res = CliRunner().invoke(app, ["plan", "-c", str(path), "--images", "10", "--set", "train.processes=3"])
    assert res.exit_code == 0 and "PL: not planned: train.batch_size 4 cannot be split evenly" in res.output


def test_activation_estimate_against_autograd_on_the_tiny_student(tiny_ws, tiny_config):
    """What autograd keeps for backward (saved tensors, parameters excluded) vs the plan's formula."""
    from PIL import Image

    from mpa.config import ModelConfig
    from mpa.devtools.memprobe import saved_activation_bytes
    from mpa.stages.level import answer_loss_sum
    from mpa.tasks import get_task
    from mpa.vlm.hf import encode_for_training, load_model, load_processor

    cfg = parse_config(tiny_config)
    mc = ModelConfig(model=str(tiny_ws["student"]))
    proc, model = load_processor(mc), load_model(mc, device=torch.device("cpu"))
    micro, task = 4, get_task("textvqa")
    img = Image.new("RGB", (56, 56), (20, 160, 40))
    batch = encode_for_training(proc, [img] * micro, [task.answer_prompt("What color is the image?")] * micro,
                                ["green"] * micro)
    _, measured = saved_activation_bytes(lambda: answer_loss_sum(model, batch, True), list(model.parameters()))
    arch = student_arch(cfg)
    _, patches = student_image_tokens(arch, cfg, 56, 56)
    answer = int((batch["labels"] != -100).sum()) // micro
    est = activation_bytes(arch, micro, batch["input_ids"].shape[1], patches, answer, 4, False)
    assert 0.5 < est / measured < 2.0, (est, measured)
