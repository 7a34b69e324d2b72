"""`mpa bench-arch`: the published shapes, the FLOP model it holds measurements against, its report, and
scripts/gpu_check.sh's argument handling and CPU dry run (these tests time nothing and assert no speed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mpa.archbench import format_arch, pass_flops, summarize
from mpa.archs import ARCHS, get_arch, param_counts, scaled

ROOT = Path(__file__).resolve().parents[1]


def test_published_sizes():
    # totals the model cards state: Qwen2-VL-7B 8.29B, Qwen2-VL-2B 2.21B, InternVL2-8B 8.08B, InternVL2-2B 2.21B
    totals = {k: (c["lm_total"] + c["vision"]) / 1e9 for k, c in ((k, param_counts(a)) for k, a in ARCHS.items())}
    assert totals["qwen2-vl-7b"] == pytest.approx(8.29, abs=0.01)
    assert totals["qwen2-vl-2b"] == pytest.approx(2.21, abs=0.01)
    assert totals["internvl2-8b"] == pytest.approx(8.08, abs=0.05)
    assert totals["internvl2-2b"] == pytest.approx(2.21, abs=0.05)
    assert all(a.source.startswith("https://huggingface.co/") for a in ARCHS.values())


def test_cut_model_is_what_the_count_says():
    from mpa.archbench import build_model

    arch = scaled(get_arch("qwen2-vl-7b"), layers=1, width=0.125, vision_layers=1)
    assert arch.text["hidden_size"] % arch.text["num_attention_heads"] == 0
    assert arch.text["hidden_size"] // arch.text["num_attention_heads"] == 128  # the published head size
    model, processor = build_model(arch)
    c = param_counts(arch)
    # the count leaves out biases and norms (0.003 % here)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(c["lm_total"] + c["vision"], rel=1e-4)
    assert model.config.text_config.num_hidden_layers == 1 and model.config.vision_config.depth == 1


def test_unknown_or_unrunnable_arch_is_one_line():
    with pytest.raises(ValueError, match="choose from qwen2-vl-7b"):
        get_arch("qwen2-vl-3b")
    from mpa.archbench import bench_processor

    with pytest.raises(ValueError, match="counted, not run"):
        bench_processor(get_arch("internvl2-2b"))
    with pytest.raises(ValueError, match="width"):
        scaled(get_arch("qwen2-vl-2b"), width=1.5)


def test_flop_model_counts_the_head_only_on_generated_tokens():
    arch = get_arch("qwen2-vl-7b")
    one = pass_flops(arch, 1, 494, 60, 0)
    more = pass_flops(arch, 1, 494, 60, 30)
    head = arch.text["vocab_size"] * arch.text["hidden_size"]
    per_decoded = (more.flops - one.flops) / 30
    assert per_decoded > 2 * head  # every generated token pays the head (and the decoder)
    # the ANCHORS back-of-envelope: ≈ 13.2 GFLOP per LM token, ≈ 6.4 GFLOP per image token (vision)
    assert 12e9 < per_decoded < 16e9
    assert 2 * pass_flops(arch, 1, 494, 60, 0).flops == pytest.approx(pass_flops(arch, 2, 494, 60, 0).flops)


def _raw(pa_s: float, pi_s: float) -> dict:
    return {"pa": {"seconds": pa_s, "sequence_tokens": 650, "new_tokens": 30},
            "pi": {"seconds": pi_s, "sequence_tokens": 540, "new_tokens": 5}, "image_tokens": 494}


def test_report_has_fractions_plan_and_goals():
    t, s = get_arch("qwen2-vl-7b"), get_arch("qwen2-vl-2b")
    rows = {"hf_per_sample": summarize("hf_per_sample", _raw(20.0, 10.0), t, s, 4, 1e11, 1),
            "hf_batched": summarize("hf_batched", _raw(2.0, 1.0), t, s, 4, 1e11, 1),
            "vllm_offline": {"error": "exit 1; see x.log"}}
    assert rows["hf_batched"]["pa_pi_images_per_s"] == pytest.approx(10 * rows["hf_per_sample"]["pa_pi_images_per_s"])
    pa = rows["hf_batched"]["pa"]
    assert pa["fraction_of_peak"] == pytest.approx(pa["flops"] / 2.0 / 1e11)
    assert pa["measured_over_plan_at_peak"] == pytest.approx(2.0 / (pa["flops"] / 1e11))
    res = {"teacher": {"name": t.name}, "student": {"name": s.name}, "n_images": 4, "image_size": [1024, 768],
           "dtype": "float32", "threads": 1, "peak_flops_per_s": 1e11, "rows": rows, "pl": {"error": "exit 1"},
           "goals": {"hf_batched": {"goal": 10.0, "measured": 10.0, "met": True},
                     "vllm_offline": {"goal": 15.0, "measured": None, "met": False}}}
    text = "\n".join(format_arch(res))
    assert "vllm_offline   failed: exit 1" in text and "PL failed" in text
    assert "goal: PA+PI hf_batched >= 10x per-sample HF: 10.00x met" in text
    assert "goal: PA+PI vllm_offline >= 15x per-sample HF: - NOT met" in text


def _script(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHON": sys.executable}
    return subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), *args], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=ROOT)


def test_gpu_check_arguments():
    assert _script("--help").returncode == 0 and "--dry-run" in _script("--help").stdout
    bad = _script("--frobnicate")
    assert bad.returncode == 2 and "unknown argument --frobnicate" in bad.stderr
    assert _script("--images", "0").returncode == 2
    assert "--layers must be a positive integer" in _script("--layers", "x").stderr


def test_gpu_check_refuses_a_machine_without_gpu(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: the full run would start")
    r = _script("--out", str(tmp_path / "o"))
    assert r.returncode == 3 and "no CUDA device" in r.stderr


def test_gpu_check_cpu_dry_run(tmp_path):
    """The whole script at reduced depth on a CPU: one JSON with the plan beside each measurement."""
    r = _script("--dry-run", "--out", str(tmp_path / "o"), timeout=1500)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((tmp_path / "o" / "gpu_check.json").read_text())
    row = res["rows"]["hf_batched"]
    assert "error" not in row, row
    for st in ("pa", "pi"):
        assert row[st]["seconds"] > 0 and row[st]["plan_seconds_at_peak"] > 0
        assert row[st]["plan_seconds_on_plan_gpu"] > 0
    assert res["pl"]["step_s"] > 0 and res["pl"]["plan_state_gib"] > 0
    assert res["gpu_check"]["dry_run"] is True
    assert "on mpa plan's GPU" in r.stdout


@pytest.mark.parametrize("name", ["internvl2-2b", "smolvlm-500m"])
def test_other_families_instantiate_with_the_counted_size(name):
    """InternVL2 as transformers' InternVL with a Llama of InternLM2's shapes (FLOP-equivalent), SmolVLM as
    Idefics3: built from the same shapes, they hold what the count says (biases and norms aside)."""
    from transformers import AutoModelForImageTextToText

    from mpa.archs import hf_config

    arch = scaled(get_arch(name), layers=1, width=0.25, vision_layers=1)
    model = AutoModelForImageTextToText.from_config(hf_config(arch))
    c = param_counts(arch)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(c["lm_total"] + c["vision"], rel=0.02)
