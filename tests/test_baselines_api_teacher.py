"""A closed-API teacher (the openai backend) with a tiny local student of another family, end to end.

The "API" is a stdlib HTTP server on 127.0.0.1 speaking the chat-completions protocol; it reads the
image it is sent and answers like a strong teacher (the dominant colour), so PA→PI→PL runs for real.
"""

from __future__ import annotations

import base64
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from mpa.config import parse_config
from mpa.devtools.tinymodels import DEFAULT_CORPUS, TINY_COLORS, TINY_QUESTION, build_tiny, tiny_image
from mpa.orchestrate.local import run_pipeline
from mpa.tasks import get_task


def _color_of(data_url: str) -> str:
    img = Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))).convert("RGB")
    pixel = img.getpixel((1, 1))
    return min(TINY_COLORS, key=lambda c: sum((a - b) ** 2 for a, b in zip(TINY_COLORS[c], pixel, strict=True)))


class Handler(BaseHTTPRequestHandler):
    calls: list[dict] = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Handler.calls.append(body)
        content = body["messages"][0]["content"]
        color = _color_of(next(c for c in content if c["type"] == "image_url")["image_url"]["url"])
        text = next(c for c in content if c["type"] == "text")["text"]
        reply = f"Question: {TINY_QUESTION}\nAnswer: {color}" if "Question:" in text else color
        out = json.dumps(
            {
                "choices": [{"message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 100, "completion_tokens": 5},
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


@pytest.fixture
def api():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_api_teacher_with_tiny_smolvlm_student(api, tmp_path):
    colors = list(TINY_COLORS)
    ws = {"images": tmp_path / "images", "bench_images": tmp_path / "bench", "benchmark": tmp_path / "bench.json"}
    ws["images"].mkdir()
    ws["bench_images"].mkdir()
    for i in range(4):
        tiny_image(colors[i], i).save(ws["images"] / f"{i}.png")
        tiny_image(colors[i], 50 + i).save(ws["bench_images"] / f"b{i}.png")
    ws["benchmark"].write_text(
        json.dumps(
            {
                "data": [
                    {"question_id": i, "question": TINY_QUESTION, "image_id": f"b{i}", "answers": [colors[i]] * 10}
                    for i in range(4)
                ]
            }
        )
    )
    task = get_task("textvqa")
    student = build_tiny(
        "smolvlm",
        tmp_path / "smolvlm",
        hidden_size=32,
        num_layers=1,
        corpus=[*DEFAULT_CORPUS, task.pa_prompt, task.answer_prompt(TINY_QUESTION), *TINY_COLORS],
    )
    cfg = parse_config(
        {
            "task": {"name": "textvqa"},
            "teacher": {"model": "gpt-4o", "backend": "openai", "batch_size": 4, "openai": {"base_url": api}},
            "student": {"model": str(student), "device": "cpu", "batch_size": 4},
            "data": {"images": str(ws["images"])},
            "train": {"batch_size": 4, "learning_rate": 3e-3},
            "evaluate": {
                "benchmark": "textvqa",
                "annotations": str(ws["benchmark"]),
                "images": str(ws["bench_images"]),
                "max_samples": 4,
            },
            "out": str(tmp_path / "run"),
            "tracking": {"enabled": False},
        }
    )
    s = run_pipeline(cfg, show=False)
    assert s["annotate"]["n_parsed"] == 4
    assert s["identify"]["n_teacher_consistent"] == 4
    assert s["identify"]["k_parity"] > 0  # the untrained student misses them
    assert s["level"]["n_samples"] == s["identify"]["k_parity"]
    assert "eval_after" in s and Handler.calls
