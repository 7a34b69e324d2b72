"""`mpa bench` reporting (the benchmark itself measures; these tests time nothing)."""

from __future__ import annotations

import pytest

from mpa.throughput import compute_ratios, format_tables


def row(pa_s: float, pi_s: float, n: int = 10) -> dict:
    return {
        "n_images": n,
        "pa_engine_s": pa_s,
        "pi_engine_s": pi_s,
        "pa_images_per_s": n / pa_s,
        "pi_images_per_s": n / pi_s,
        "pa_wall_s": pa_s,
        "pi_wall_s": pi_s,
        "teacher_load_s": 1.0,
        "pi_student_calls": 4,
        "pi_student_calls_saved": 6,
    }


def test_ratios_are_relative_to_per_sample_hf():
    rows = {"hf_per_sample": row(6.0, 4.0), "hf_batched": row(1.0, 1.0), "vllm_server": {"error": "exit 1"}}
    r = compute_ratios(rows)
    assert r["hf_batched"] == pytest.approx(5.0)  # 10 s of engine time → 2 s
    assert r["hf_batched_pa"] == pytest.approx(6.0) and r["hf_batched_pi"] == pytest.approx(4.0)
    assert r["vllm_server"] is None and "hf_per_sample" not in r


def test_tables_show_failures_prefix_cache_and_scaling():
    rows = {"hf_per_sample": row(6.0, 4.0), "vllm_offline": {"error": "exit 1; see x.log"}}
    prefix = [
        {
            "prefix_caching": True,
            "image_tokens": 144,
            "pa_pass_s": 1.0,
            "pi_pass_s": 0.5,
            "prefix_cache_hits": 100.0,
            "prefix_cache_queries": 300.0,
        }
    ]
    scaling = [{"shards": 2, "ok": True, "wall_s": 10.0, "images_per_s": 3.2, "max_shard_stage_s": 4.0}]
    text = "\n".join(format_tables(rows, prefix, scaling))
    assert "vllm_offline    failed: exit 1" in text
    assert "hits 100/300" in text and "saved 6" in text
    assert "     2     10.0    3.20" in text


def test_goals_are_printed_with_the_measured_ratio():
    from mpa.throughput import GOALS, LEVER_NOTES, goal_lines

    lines = goal_lines({"hf_batched": 10.5, "vllm_offline": 13.0, "vllm_server": 6.0})
    assert lines == ["goal: PA+PI vllm_offline >= 15x per-sample HF: 13.00x NOT met",
                     "goal: PA+PI hf_batched >= 10x per-sample HF: 10.50x met"]
    assert goal_lines({"hf_batched": None}) == ["goal: PA+PI hf_batched >= 10x per-sample HF: - NOT met"]
    assert set(GOALS) == {"vllm_offline", "hf_batched"}
    assert any("prefix caching" in n for n in LEVER_NOTES) and any("off the engine thread" in n for n in LEVER_NOTES)
