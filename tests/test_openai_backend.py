"""openai backend: request shape, retries with back-off, concurrency bound, usage and cost.

The fast tests use a scripted HTTP server on 127.0.0.1 (to force 429/5xx/timeouts on cue);
the ``vllm`` tests in ``test_openai_vllm_server.py`` use a real vLLM OpenAI server.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from mpa.config import ModelConfig, OpenAISettings
from mpa.vlm.base import GenParams, VLMRequest
from mpa.vlm.openai_backend import OpenAIRequestError, OpenAIVLM, backoff_delay


class Script:
    """What the fake server answers, request by request; records what it saw."""

    def __init__(self, statuses: list[int | str]) -> None:
        self.statuses = list(statuses)
        self.seen: list[dict] = []
        self.headers: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        self.delay = 0.0


def make_server(script: Script) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with script.lock:
                script.seen.append(body)
                script.headers.append(dict(self.headers))
                status = script.statuses.pop(0) if script.statuses else 200
                script.in_flight += 1
                script.max_in_flight = max(script.max_in_flight, script.in_flight)
            try:
                if status == "hang":
                    time.sleep(1.0)
                    status = 200
                time.sleep(script.delay)
                if status != 200:
                    self.send_response(status)
                    if status == 429:
                        self.send_header("Retry-After", "0")
                    self.end_headers()
                    self.wfile.write(b'{"error": {"message": "scripted failure"}}')
                    return
                text = body["messages"][0]["content"][1]["text"]
                out = json.dumps(
                    {
                        "choices": [{"message": {"content": f" echo:{text} "}}],
                        "usage": {"prompt_tokens": 100, "completion_tokens": 5},
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client timed out and hung up (the timeout test)
            finally:
                with script.lock:
                    script.in_flight -= 1

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


@pytest.fixture
def fake():
    script = Script([])
    srv = make_server(script)
    yield script, f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()


def vlm_for(url: str, sleeps: list[float] | None = None, **kw) -> OpenAIVLM:
    settings = OpenAISettings(
        base_url=url,
        backoff_base_s=0.01,
        backoff_max_s=0.05,
        price_input_per_mtok=2.5,
        price_output_per_mtok=10.0,
        **kw,
    )
    cfg = ModelConfig(model="some/teacher", backend="openai", served_name="gpt-x", openai=settings)
    return OpenAIVLM(cfg, sleep=(sleeps.append if sleeps is not None else time.sleep))


def img() -> Image.Image:
    return Image.new("RGB", (32, 24), (200, 10, 10))


def test_request_is_image_first_base64_with_key_from_env(fake, monkeypatch):
    script, url = fake
    monkeypatch.setenv("MPA_TEST_KEY", "sk-test-123")
    vlm = vlm_for(url, api_key_env="MPA_TEST_KEY")
    out = vlm.generate([VLMRequest(img(), "what colour?")], GenParams(max_new_tokens=7))
    assert out == ["echo:what colour?"]
    body = script.seen[0]
    assert body["model"] == "gpt-x" and body["max_tokens"] == 7 and body["temperature"] == 0.0
    image_part, text_part = body["messages"][0]["content"]
    assert image_part["type"] == "image_url" and text_part == {"type": "text", "text": "what colour?"}
    prefix = "data:image/png;base64,"
    assert image_part["image_url"]["url"].startswith(prefix)
    decoded = Image.open(io.BytesIO(base64.b64decode(image_part["image_url"]["url"][len(prefix) :])))
    assert decoded.size == (32, 24)
    assert {k.lower(): v for k, v in script.headers[0].items()}["authorization"] == "Bearer sk-test-123"


def test_no_key_for_openai_com_fails_naming_the_env_var(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(OpenAIRequestError, match="OPENAI_API_KEY"):
        OpenAIVLM(ModelConfig(model="gpt-4o", backend="openai"))


def test_retries_429_and_5xx_then_succeeds_and_counts_usage(fake):
    script, url = fake
    script.statuses = [429, 503, 500]
    sleeps: list[float] = []
    vlm = vlm_for(url, sleeps, max_concurrency=1)
    assert vlm.generate([VLMRequest(img(), "q")], GenParams()) == ["echo:q"]
    assert len(script.seen) == 4 and len(sleeps) == 3
    assert all(0.0 <= s <= 0.05 for s in sleeps)
    u = vlm.usage_summary()
    assert (u["requests"], u["retries"], u["prompt_tokens"], u["completion_tokens"]) == (1, 3, 100, 5)
    assert u["cost_usd"] == pytest.approx((100 * 2.5 + 5 * 10.0) / 1e6)


def test_client_error_is_not_retried(fake):
    script, url = fake
    script.statuses = [400]
    vlm = vlm_for(url, [], max_concurrency=1)
    with pytest.raises(OpenAIRequestError, match="HTTP 400"):
        vlm.generate([VLMRequest(img(), "q")], GenParams())
    assert len(script.seen) == 1


def test_timeout_is_retried_and_retries_are_bounded(fake):
    script, url = fake
    script.statuses = ["hang", 503, 503]
    vlm = vlm_for(url, [], max_concurrency=1, timeout_s=0.3, max_retries=1)
    with pytest.raises(OpenAIRequestError, match="after 2 attempts"):
        vlm.generate([VLMRequest(img(), "q")], GenParams())
    assert vlm.usage.failures == 1


def test_concurrency_is_bounded_and_order_kept(fake):
    script, url = fake
    script.delay = 0.05
    vlm = vlm_for(url, max_concurrency=3)
    prompts = [f"p{i}" for i in range(12)]
    out = vlm.generate([VLMRequest(img(), p) for p in prompts], GenParams(temperature=0.7, seed=1))
    assert out == [f"echo:{p}" for p in prompts]
    assert 1 < script.max_in_flight <= 3
    assert script.seen[0]["top_p"] == 1.0
    assert sorted(b["seed"] for b in script.seen) == list(range(1, 13))  # distinct per request
    script.seen.clear()
    vlm_for(url, send_seed=False).generate([VLMRequest(img(), "p")], GenParams(temperature=0.7, seed=1))
    assert "seed" not in script.seen[0]


def test_backoff_is_exponential_with_full_jitter():
    import random

    rng = random.Random(0)
    for attempt in range(8):
        cap = min(10.0, 0.5 * 2**attempt)
        draws = [backoff_delay(attempt, 0.5, 10.0, rng) for _ in range(200)]
        assert min(draws) >= 0.0 and max(draws) <= cap
        assert max(draws) > 0.7 * cap  # spread over the whole window, not a fixed delay
