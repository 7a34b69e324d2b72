"""docs/custom-task.md, walked through on tiny models: a prompt file, a metric, an evaluation file, `mpa run`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

PROMPT = """You are creating question answering data about this image.
Write ONE question about its colour. The answer must be a single word.
Reply in exactly this format and nothing else:
Question: <your question>
Answer: <the answer>
"""


def test_a_custom_task_end_to_end(tiny_ws, tmp_path):
    prompt = tmp_path / "prompts" / "colours.txt"
    prompt.parent.mkdir()
    prompt.write_text(PROMPT)
    bench = json.loads(Path(tiny_ws["benchmark"]).read_text())["data"][:4]
    eval_file = tmp_path / "eval" / "colours.json"
    eval_file.parent.mkdir()
    eval_file.write_text(json.dumps({"data": [
        {"question_id": f"q{i}", "image_id": e["image_id"], "question": "What colour is it?",
         "answers": [e["answers"][0]]} for i, e in enumerate(bench)]}))
    cfg = {
        "task": {"name": "custom", "prompt_file": str(prompt), "metric": "exact"},
        "teacher": {"model": str(tiny_ws["teacher"]), "batch_size": 8},
        "student": {"model": str(tiny_ws["student"]), "batch_size": 8},
        "data": {"images": str(tiny_ws["images"])},
        "annotate": {"temperature": 1.0, "max_new_tokens": 24},
        "identify": {"max_new_tokens": 6},
        "train": {"batch_size": 4, "epochs": 1},
        "evaluate": {"benchmark": "textvqa", "annotations": str(eval_file), "images": str(tiny_ws["bench_images"]),
                     "max_new_tokens": 6},
        "tracking": {"enabled": False},
        "out": str(tmp_path / "runs" / "colours"),
    }
    path = tmp_path / "colours.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "mpa.cli", "run", "-c", str(path)], capture_output=True, text=True,
                         env=env, timeout=600)
    out = Path(cfg["out"])
    assert res.returncode == 0, res.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "custom" and summary["match_rule"] == "exact"
    assert summary["eval_before"]["n"] == 4 and (out / "report.html").is_file() and (out / "chart.png").is_file()
    # editing the prompt is a new prompt version: the run directory made with the old text is refused up front
    prompt.write_text(PROMPT.replace("colour", "shade"))
    res = subprocess.run([sys.executable, "-m", "mpa.cli", "run", "-c", str(path)], capture_output=True, text=True,
                         env=env, timeout=300)
    assert res.returncode == 2 and "preflight: out:" in res.stderr and "prompt" in res.stderr, res.stderr
