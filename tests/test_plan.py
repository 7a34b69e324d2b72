"""`mpa plan`: image tokens, FLOPs, GPU-minutes and API dollars against published figures (docs/teachers.md)."""

from __future__ import annotations

import json

import pytest

from mpa.config import parse_config
from mpa.costplan import format_plan, gpt4o_image_tokens, make_plan, measured, qwen_image_tokens


def paper_config(**teacher) -> dict:
    return {
        "task": {"name": "textvqa"},
        "teacher": {"model": "Qwen/Qwen2-VL-7B-Instruct", "max_pixels": 512 * 28 * 28, **teacher},
        "student": {"model": "Qwen/Qwen2-VL-2B-Instruct", "max_pixels": 512 * 28 * 28},
        "data": {"images": "s3://bucket/textvqa/train_images/"},
        "plan": {"image_width": 1024, "image_height": 768, "parse_rate": 1.0, "teacher_consistent_rate": 1.0},
        "out": "/nonexistent/run",
    }


def test_image_tokens_match_the_published_rules():
    assert qwen_image_tokens(1024, 768, 1280 * 28 * 28) == 999
    assert qwen_image_tokens(1024, 768, 512 * 28 * 28) == 494
    assert qwen_image_tokens(4000, 3000, None) == pytest.approx(15_000, rel=0.05)
    assert gpt4o_image_tokens(1024, 768) == 765
    assert gpt4o_image_tokens(1024, 768, "low") == 85


def test_21k_textvqa_on_h100_matches_the_back_of_envelope():
    plan = make_plan(parse_config(paper_config()), n_images=21_000)
    assert plan.image_tokens_per_image == 494
    # published estimate: ≈ 5.7e17 FLOP, ≈ 10 GPU-minutes at H100 peak, 25–35 at 35–50% utilisation
    assert 4e17 < plan.total_flops < 7e17
    assert 7 < plan.gpu_minutes_at_peak < 12
    assert 15 < plan.gpu_minutes < 35  # default utilisation 40%
    assert [s.name for s in plan.stages] == ["PA teacher", "PI teacher", "PI student"]
    text = "\n".join(format_plan(plan))
    assert "H100" in text and "494 image tokens" in text


def test_student_only_on_teacher_consistent_saves_calls():
    cfg = paper_config()
    cfg["plan"]["teacher_consistent_rate"] = 0.3
    plan = make_plan(parse_config(cfg), n_images=1000)
    assert plan.student_calls_saved == pytest.approx(700)
    cfg["identify"] = {"student_only_if_teacher_consistent": False}
    assert make_plan(parse_config(cfg), n_images=1000).student_calls_saved == 0


def test_gpt4o_teacher_costs_about_the_papers_11_dollars():
    cfg = paper_config(backend="openai", openai={"price_input_per_mtok": 2.5, "price_output_per_mtok": 10.0})
    plan = make_plan(parse_config(cfg), n_images=21_000)
    assert plan.api is not None and plan.api["image_tokens_per_image"] == 765
    assert 50 < plan.api["usd"] < 150  # two calls per image at ~0.9K tokens each
    assert plan.api["usd_batch_api"] == pytest.approx(plan.api["usd"] / 2)
    assert [s.name for s in plan.stages] == ["PI student"]


def test_local_checkpoint_params_are_counted(tmp_path):
    from mpa.devtools.tinymodels import build_tiny_qwen2vl

    d = build_tiny_qwen2vl(tmp_path / "m")
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    from PIL import Image

    for i in range(3):
        Image.new("RGB", (56, 84)).save(imgs / f"{i}.png")
    cfg = parse_config(
        {
            "teacher": {"model": str(d)},
            "student": {"model": str(d)},
            "data": {"images": str(imgs)},
            "out": str(tmp_path / "run"),
        }
    )
    plan = make_plan(cfg)
    assert plan.n_images == 3 and plan.image_size == (56, 84)
    assert 1e4 < plan.stages[0].lm_flops < 1e12
    assert measured(tmp_path / "run", plan) is None
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "summary.json").write_text(
        json.dumps(
            {
                "annotate": {"n_images": 3},
                "identify": {
                    "n_parsed": 3,
                    "n_annotations": 3,
                    "student_calls": 1,
                    "n_teacher_consistent": 1,
                    "student_calls_saved": 2,
                },
                "timings_s": {"annotate": 1.5, "identify": 0.5},
            }
        )
    )
    m = measured(tmp_path / "run", plan)
    assert m["pa_images_per_s"] == pytest.approx(2.0) and m["student_calls_saved"] == 2


def test_per_token_flops_leave_out_the_embedding_and_put_the_head_on_generated_tokens(tmp_path):
    """The embedding is a lookup and generation computes logits at the last position only: counting both on
    every prompt token overstated a 2-layer cut Qwen2-VL-7B's prefill ~10x (mpa bench-arch)."""
    from mpa.costplan.models import safetensors_parts
    from mpa.devtools.tinymodels import build_tiny_qwen2vl

    d = build_tiny_qwen2vl(tmp_path / "m")  # tied embeddings
    parts = safetensors_parts(d)
    assert parts["tied"] and parts["head"] == parts["embedding"] > 0
    cfg = parse_config({"teacher": {"model": str(d)}, "student": {"model": str(d)},
                        "data": {"images": str(tmp_path)}, "out": str(tmp_path / "run"),
                        "plan": {"image_width": 56, "image_height": 56}})
    pa = make_plan(cfg, n_images=10).stages[0]
    body = parts["lm"] - parts["embedding"]
    assert pa.lm_flops == pytest.approx(2 * body * (pa.prefill_tokens + pa.decode_tokens)
                                        + 2 * parts["head"] * pa.decode_tokens)
