"""Preflight: a run that cannot finish fails in seconds, naming the setting, before any model work; and the
result cache is shared across run directories."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mpa.config import parse_config
from mpa.preflight import PreflightError, preflight

MPA = [sys.executable, "-m", "mpa.cli"]


def _run(args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([*MPA, *args], capture_output=True, text=True, env=env, timeout=300)


def test_a_missing_student_fails_the_run_before_pa(tiny_config, tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config))
    res = _run(["run", "-c", str(cfg), "--set", "student.model=/nope"])
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "preflight: student.model" in lines[0] and "/nope" in lines[0], res.stderr
    assert not (Path(tiny_config["out"]) / "annotations.jsonl").exists()  # no PA work was done


def test_a_checkpoint_without_processor_files_is_named(tiny_config, tiny_ws, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(tiny_ws["teacher"] / "config.json", bare / "config.json")
    cfg = parse_config({**tiny_config, "teacher": {"model": str(bare)}})
    with pytest.raises(PreflightError, match=r"^preflight: teacher.model: .* no processor or tokenizer files"):
        preflight(cfg)


def test_an_hf_id_not_in_the_local_cache_offline_is_named(tiny_config, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    cfg = parse_config({**tiny_config, "student": {"model": "Qwen/Qwen2-VL-2B-Instruct"}})
    with pytest.raises(PreflightError, match="student.model: Qwen/Qwen2-VL-2B-Instruct is not in the local"):
        preflight(cfg)


def test_an_unreachable_openai_teacher_is_named(tiny_config):
    cfg = parse_config({**tiny_config, "teacher": {"model": "t", "backend": "openai",
                                                   "openai": {"base_url": "http://127.0.0.1:9/v1"}}})
    with pytest.raises(PreflightError, match=r"teacher.openai.base_url: http://127.0.0.1:9/v1 cannot be reached"):
        preflight(cfg)


def test_missing_images_benchmark_and_prompt_file_are_named(tiny_config, tmp_path):
    with pytest.raises(PreflightError, match="data.images: image directory not found"):
        preflight(parse_config({**tiny_config, "data": {"images": str(tmp_path / "none")}}))
    ev = {**tiny_config["evaluate"], "annotations": str(tmp_path / "gone.json")}
    with pytest.raises(PreflightError, match="evaluate.annotations: file not found"):
        preflight(parse_config({**tiny_config, "evaluate": ev}))
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(PreflightError, match="out: .* cannot be created"):
        preflight(parse_config({**tiny_config, "out": str(tmp_path / "a-file" / "run")}))


def test_a_finished_stage_with_other_settings_is_refused_before_any_work(tiny_config):
    """The re-run with another learning rate: refused by the preflight, naming the setting, not after PA/PI."""
    from mpa.config import task_for
    from mpa.records import StageRun
    from mpa.stages.level import level_mark_settings

    cfg = parse_config(tiny_config)
    level_dir = Path(cfg.out) / "level"
    (level_dir / "checkpoint").mkdir(parents=True)
    StageRun(level_dir, "level", settings=level_mark_settings(cfg.student, task_for(cfg), cfg.train)).begin().close()
    preflight(cfg)  # the same settings: fine
    other = parse_config({**tiny_config, "train": {**tiny_config["train"], "learning_rate": 0.001}})
    with pytest.raises(PreflightError, match=r"preflight: out: .*level was made by level .*train.learning_rate"):
        preflight(other)
    preflight(parse_config({**tiny_config, "train": {**tiny_config["train"], "learning_rate": 0.001},
                            "force": True}))  # --force redoes it: nothing to refuse up front


def test_prepare_runs_the_preflight(tiny_config, tmp_path):
    from mpa.orchestrate.kubeflow.steps import prepare_run_spec

    with pytest.raises(PreflightError, match="student.model"):
        prepare_run_spec(str(tmp_path / "spec"), {**tiny_config, "student": {"model": "/nope"}}, 2, {})
    assert not (tmp_path / "spec").exists()


def test_the_result_cache_is_shared_by_run_directories(tiny_config, tmp_path):
    """A new --out does not pay the teacher again: the default cache lives outside the run directory."""
    from mpa.cache import default_cache_dir, open_run_cache
    from mpa.stages.annotate import annotate_with_config
    from mpa.vlm.loader import LazyVLM

    cfg = parse_config(tiny_config)
    teacher = LazyVLM(cfg.teacher)
    runs = []
    try:
        for name in ("a", "b"):
            out = tmp_path / name
            with open_run_cache(cfg, out) as cache:
                runs.append(annotate_with_config(cfg, teacher(), out / "annotations.jsonl", cache=cache, show=False))
                assert cache.path.parent == default_cache_dir()
                assert not (out / "cache").exists()
    finally:
        teacher.release()
    assert runs[0].generated == runs[0].n_attempts > 0 and runs[0].cache_hits == 0
    assert runs[1].cache_hits == runs[0].n_attempts and runs[1].generated == 0
    off = parse_config({**tiny_config, "cache": {"enabled": False}})
    with open_run_cache(off, tmp_path / "c") as cache:
        assert cache is None


@pytest.fixture
def models_endpoint():
    """An OpenAI-compatible /v1/models on 127.0.0.1 that lists one model and wants the key ``sk-right-key``."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            ok = self.headers.get("Authorization") == "Bearer sk-right-key"
            body = json.dumps({"object": "list", "data": [{"id": "tiny-teacher", "object": "model"}]} if ok
                              else {"error": {"message": "bad key"}}).encode()
            self.send_response(200 if ok else 401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()


def test_an_openai_teacher_is_checked_for_its_key_and_served_model(tiny_config, models_endpoint, monkeypatch):
    def cfg(served: str):
        return parse_config({**tiny_config, "teacher": {"model": "t", "backend": "openai", "served_name": served,
                                                        "openai": {"base_url": models_endpoint,
                                                                   "api_key_env": "MPA_TEST_KEY"}}})

    monkeypatch.setenv("MPA_TEST_KEY", "sk-wrong-key")
    with pytest.raises(PreflightError, match=r"teacher.openai.api_key_env: .* refused the key in \$MPA_TEST_KEY"):
        preflight(cfg("tiny-teacher"))
    monkeypatch.setenv("MPA_TEST_KEY", "sk-right-key")
    preflight(cfg("tiny-teacher"))
    with pytest.raises(PreflightError, match=r"teacher.served_name: .* not serve 'other' \(it serves: tiny-teacher"):
        preflight(cfg("other"))
