"""The CLI commands of mpa.cli.benchmarks (baselines, sources, extra evaluations, families)."""

from __future__ import annotations

import json

import yaml
from PIL import Image
from typer.testing import CliRunner

from mpa.cli import app

runner = CliRunner()


def _json(result):
    assert result.exit_code == 0, result.output
    line = next(line for line in reversed(result.output.splitlines()) if "{" in line)  # after any progress bars
    return json.loads(line[line.index("{") :])


def test_families_lists_every_adapter():
    out = runner.invoke(app, ["families"]).output
    lines = {line.split(":")[0]: line for line in out.splitlines()}
    assert set(lines) == {"qwen2_vl", "qwen2_5_vl", "idefics3", "smolvlm", "llava", "internvl", "internvl_chat"}
    assert lines["internvl_chat"].endswith("(trust_remote_code)") and "lr 0.0001" in lines["idefics3"]


def test_zero_shot_baseline_and_sources_from_the_cli(tmp_path):
    model = _json(runner.invoke(app, ["make-tiny-family", "--family", "llava", "--out", str(tmp_path / "m")]))["model"]
    imgs = tmp_path / "bench"
    imgs.mkdir()
    data = []
    for i in range(3):
        Image.new("RGB", (30, 30), (200, 0, 0)).save(imgs / f"i{i}.png")
        data.append({"question_id": i, "question": "what color?", "image_id": f"i{i}", "answers": ["red"] * 10})
    ann = imgs / "TextVQA_0.5.1_train.json"
    ann.write_text(json.dumps({"data": data}))
    cfg = {
        "teacher": {"model": model, "device": "cpu"},
        "student": {"model": model, "device": "cpu"},
        "data": {"images": str(imgs)},
        "out": str(tmp_path / "run"),
        "evaluate": {"benchmark": "textvqa", "annotations": str(ann)},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    s = _json(runner.invoke(app, ["baseline", "zero-shot", "--config", str(tmp_path / "c.yaml")]))
    assert s["mode"] == "zero-shot" and 0 <= s["score"] <= 100
    bad = runner.invoke(app, ["baseline", "few-shot", "--config", str(tmp_path / "c.yaml")])
    assert bad.exit_code != 0
    got = _json(runner.invoke(app, ["images", "--source", f"bench:textvqa:{ann}", "--out", str(tmp_path / "pa")]))
    assert got["n"] == 3


def test_score_words_and_captions_from_the_cli(tmp_path):
    (tmp_path / "gt.txt").write_text('word_1.png, "Stop"\nword_2.png, "EXIT"\n')
    (tmp_path / "p.jsonl").write_text('{"id": "word_1", "answer": "stop"}\n{"id": "word_2", "answer": "exit"}\n')
    r = _json(
        runner.invoke(
            app, ["score-words", "--gt", str(tmp_path / "gt.txt"), "--predictions", str(tmp_path / "p.jsonl")]
        )
    )
    assert r["wrr"] == 100.0 and r["wrr_exact"] == 0.0
    (tmp_path / "refs.jsonl").write_text(
        '{"image_id": "a", "references": ["a red stop sign"]}\n{"image_id": "b", "references": ["an exit door"]}\n'
    )
    (tmp_path / "c.jsonl").write_text(
        '{"image_id": "a", "caption": "a red stop sign"}\n{"image_id": "b", "caption": "an exit door"}\n'
    )
    c = _json(
        runner.invoke(
            app,
            [
                "score-captions",
                "--annotations",
                str(tmp_path / "refs.jsonl"),
                "--predictions",
                str(tmp_path / "c.jsonl"),
                "--tokenizer",
                "python",
            ],
        )
    )
    assert round(c["bleu1"]) == 100 and round(c["rouge_l"]) == 100
