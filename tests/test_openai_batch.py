"""openai backend through the Batch API (``openai.batch.enabled``) against a real HTTP server on 127.0.0.1
implementing /v1/files and /v1/batches (``tests/openai_batch_server.py``; vLLM's server has neither).

Pinned: answers in request order by custom_id at half price, bounded polling, splitting above the
size limits, expired requests submitted again, one-line errors, the batch id kept in the stage's
run directory, and a process SIGKILLed after creating its batch resumed by a re-run without a
second upload or batch.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from openai_batch_server import BatchAPI, echo_responder
from PIL import Image

from mpa.config import ModelConfig, OpenAISettings
from mpa.vlm.base import GenParams, VLMRequest
from mpa.vlm.openai_backend import OpenAIRequestError, OpenAIVLM


@pytest.fixture
def api():
    server = BatchAPI(echo_responder, polls_before_done=2)
    yield server
    server.close()


def batch_vlm(url: str, state_dir: Path | None, sleeps: list[float], *, batch: dict | None = None,
              **kw) -> OpenAIVLM:
    settings = OpenAISettings(base_url=url, price_input_per_mtok=2.5, price_output_per_mtok=10.0,
                              batch={"enabled": True, "state_dir": str(state_dir) if state_dir else None,
                                     "poll_interval_s": 2.0, "poll_max_interval_s": 3.0, **(batch or {})}, **kw)
    cfg = ModelConfig(model="t", backend="openai", served_name="gpt-x", batch_size=10000, openai=settings)
    return OpenAIVLM(cfg, sleep=sleeps.append)


def reqs(n: int) -> list[VLMRequest]:
    return [VLMRequest(Image.new("RGB", (16, 12), (10 * i, 0, 0)), f"p{i}") for i in range(n)]


def test_batch_answers_in_order_at_half_price_with_bounded_polls(api, tmp_path, monkeypatch):
    monkeypatch.setenv("MPA_TEST_KEY", "sk-batch-1")
    sleeps: list[float] = []
    vlm = batch_vlm(api.base_url, tmp_path / "state", sleeps, api_key_env="MPA_TEST_KEY")
    out = vlm.generate(reqs(5), GenParams(max_new_tokens=4))
    assert out == [f"echo:p{i}" for i in range(5)]
    assert (api.uploads, api.creates) == (1, 1)
    assert sleeps == [2.0, 3.0]  # 2 polls in progress: the first interval, then grown and capped
    u = vlm.usage_summary()
    assert (u["requests"], u["batch_requests"], u["prompt_tokens"], u["completion_tokens"]) == (5, 5, 500, 25)
    assert u["cost_usd"] == pytest.approx(0.5 * 5 * (100 * 2.5 + 5 * 10.0) / 1e6)
    assert set(api.auth) == {"Bearer sk-batch-1"}
    (state_file,) = (tmp_path / "state").glob("*.json")
    state = json.loads(state_file.read_text())
    assert [j["batch_id"] for j in state["jobs"]] == ["batch-1"]
    # the input file is the chat bodies the synchronous path sends, one per custom_id
    lines = [json.loads(x) for x in api.files[state["jobs"][0]["input_file_id"]].decode().splitlines()]
    assert [x["custom_id"] for x in lines] == [f"req-{i}" for i in range(5)]
    assert {x["url"] for x in lines} == {"/v1/chat/completions"}
    assert lines[0]["body"]["model"] == "gpt-x" and lines[0]["body"]["max_tokens"] == 4


def test_batch_is_split_above_the_request_limit(api, tmp_path):
    vlm = batch_vlm(api.base_url, tmp_path, [], batch={"max_requests_per_batch": 2})
    assert vlm.generate(reqs(5), GenParams()) == [f"echo:p{i}" for i in range(5)]
    assert (api.uploads, api.creates) == (3, 3)


def test_requests_left_by_an_expired_batch_are_submitted_again(api, tmp_path):
    api.expire = {"req-1", "req-3"}
    vlm = batch_vlm(api.base_url, tmp_path, [])
    assert vlm.generate(reqs(4), GenParams()) == [f"echo:p{i}" for i in range(4)]
    assert api.creates == 2 and api.batches["batch-1"]["status"] == "expired"
    second = api.files[api.batches["batch-2"]["input_file_id"]].decode().splitlines()
    assert [json.loads(x)["custom_id"] for x in second] == ["req-1", "req-3"]
    assert vlm.usage.requests == 4 and vlm.usage.retries == 2


def test_a_refused_request_is_one_line(tmp_path):
    def refuse_p1(body: dict) -> tuple[int, dict]:
        text = body["messages"][0]["content"][1]["text"]
        return (400, {"error": {"message": "image too small"}}) if text == "p1" else echo_responder(body)

    server = BatchAPI(refuse_p1, polls_before_done=0)
    try:
        with pytest.raises(OpenAIRequestError) as err:
            batch_vlm(server.base_url, tmp_path, []).generate(reqs(3), GenParams())
    finally:
        server.close()
    msg = str(err.value)
    assert "\n" not in msg and "HTTP 400" in msg and "req-1" in msg and "image too small" in msg, msg
    assert server.creates == 1


def test_an_endpoint_without_the_batch_api_and_a_missing_state_dir_are_one_line(api, tmp_path):
    with pytest.raises(OpenAIRequestError, match=r"listing batches failed \(HTTP 404.*/v1/batches.*enabled: false"):
        batch_vlm(api.base_url.replace("/v1", "/vllm/v1"), tmp_path, []).generate(reqs(1), GenParams())
    with pytest.raises(OpenAIRequestError, match="teacher.openai.batch.state_dir"):
        batch_vlm(api.base_url, None, []).generate(reqs(1), GenParams())


def test_annotate_keeps_the_batch_id_in_its_run_directory(api, tmp_path):
    from mpa.config import AnnotateConfig
    from mpa.stages.annotate import annotate
    from mpa.tasks import get_task

    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        Image.new("RGB", (16, 12), (40 * i, 9, 9)).save(images / f"{i}.png")
    vlm = batch_vlm(api.base_url, None, [])
    s = annotate(images=str(images), teacher=vlm, task=get_task("textvqa"), cfg=AnnotateConfig(max_new_tokens=8),
                 out_path=tmp_path / "run" / "annotations.jsonl", batch_size=100, show=False)
    assert s.n_attempts == 3 and api.creates == 1
    (state_file,) = (tmp_path / "run" / "openai-batches").glob("*.json")
    assert json.loads(state_file.read_text())["jobs"][0]["batch_id"] == "batch-1"


CHILD = textwrap.dedent("""
    import sys
    from PIL import Image
    from mpa.config import ModelConfig, OpenAISettings
    from mpa.vlm.base import GenParams, VLMRequest
    from mpa.vlm.openai_backend import OpenAIVLM

    url, state = sys.argv[1], sys.argv[2]
    settings = OpenAISettings(base_url=url, batch={"enabled": True, "state_dir": state, "poll_interval_s": 0.05,
                                                   "poll_max_interval_s": 0.05})
    vlm = OpenAIVLM(ModelConfig(model="t", backend="openai", served_name="gpt-x", batch_size=10000, openai=settings))
    reqs = [VLMRequest(Image.new("RGB", (16, 12), (10 * i, 0, 0)), f"p{i}") for i in range(3)]
    print(vlm.generate(reqs, GenParams(max_new_tokens=4)))
""")


@pytest.mark.parametrize("lost", [None, "batch_id", "state"],
                         ids=["id-kept", "killed-before-the-id-was-written", "state-lost-with-the-disk"])
def test_a_killed_run_resumes_its_batch_instead_of_paying_twice(api, tmp_path, lost):
    api.release.clear()  # the batch stays in progress: the child is waiting on it when it is killed
    state = tmp_path / "state"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", CHILD, api.base_url, str(state)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (api.creates == 1 and any(api.polls.values())):
            assert child.poll() is None, child.communicate()
            time.sleep(0.05)
        assert api.creates == 1, "the child never created its batch"
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    (state_file,) = state.glob("*.json")
    saved = json.loads(state_file.read_text())
    assert saved["jobs"][0]["batch_id"] == "batch-1"
    if lost == "batch_id":  # as if killed between creating the batch and writing its id
        saved["jobs"][0].pop("batch_id")
        state_file.write_text(json.dumps(saved))
    elif lost == "state":  # a new pod: the batch is found by the digest of its requests (batch metadata)
        state_file.unlink()
    api.release.set()
    vlm = batch_vlm(api.base_url, state, [])
    vlm.cfg.openai.batch.poll_interval_s = 0.01
    out = vlm.generate(reqs(3), GenParams(max_new_tokens=4))
    assert out == [f"echo:p{i}" for i in range(3)]
    assert (api.uploads, api.creates) == (1, 1)  # the same input file and batch: nothing paid twice
    assert json.loads(state_file.read_text())["jobs"][0]["batch_id"] == "batch-1"
    assert api.batches["batch-1"]["metadata"] == {"mpa_key": saved["key"], "mpa_part": "0/0"}
