"""The whole engine on tiny locally built Qwen2-VL models: PA → PI → PL → evaluate."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from mpa.config import ModelConfig, parse_config
from mpa.orchestrate.local import run_pipeline
from mpa.records import read_jsonl
from mpa.stages.annotate import annotate
from mpa.stages.level import EmptyParitySet, level
from mpa.tasks import get_task
from mpa.vlm.hf import HFVLM, ModelLoadError, encode_for_training


def test_mpa_run_end_to_end(tiny_config):
    cfg = parse_config(tiny_config)
    summary = run_pipeline(cfg, show=False)
    out = cfg.out
    anns = list(read_jsonl(f"{out}/annotations.jsonl"))
    audit = list(read_jsonl(f"{out}/pi/audit.jsonl"))
    parity = list(read_jsonl(f"{out}/pi/parity.jsonl"))
    assert len(anns) == 12 == len(audit)
    assert summary["identify"]["n_images"] == 12
    # the briefly trained teacher writes parseable QA and reproduces its answers; the untrained student does not
    assert summary["identify"]["n_parsed"] >= 10
    assert summary["identify"]["n_teacher_consistent"] >= 8
    assert len(parity) == summary["identify"]["k_parity"] > 0
    assert all(r["kept"] and r["teacher_match"] and not r["student_match"] for r in parity)
    assert all(r["reason"] for r in audit)
    run_dir = Path(out)
    counts = json.loads((run_dir / "pi" / "counts.json").read_text())
    assert counts["k_parity"] == len(parity)
    # records reference images (path + hash), never embed pixels
    assert all(set(r) >= {"image", "image_sha256"} and len(r["image_sha256"]) == 64 for r in anns)
    ckpt = run_dir / "level" / "checkpoint"
    assert (ckpt / "model.safetensors").is_file() and (ckpt / "config.json").is_file()
    reloaded = HFVLM(ModelConfig(model=str(ckpt)))
    assert type(reloaded.model).__name__ == "Qwen2VLForConditionalGeneration"
    for key in ("eval_before", "eval_after"):
        assert summary[key]["benchmark"] == "textvqa" and summary[key]["n"] == 8
        assert 0.0 <= summary[key]["score"] <= 100.0 and summary[key]["n_missing"] == 0
    assert set(summary["timings_s"]) == {"annotate", "identify", "eval_before", "level", "eval_after"}
    log = list(read_jsonl(run_dir / "level" / "train_log.jsonl"))
    assert len(log) == summary["level"]["steps"] and all(r["loss"] > 0 for r in log)


def test_rerun_resumes_without_redoing_work(tiny_config):
    cfg = parse_config(tiny_config)
    run_pipeline(cfg, show=False)
    again = run_pipeline(cfg, show=False)
    assert again["annotate"]["n_resumed"] == 12
    assert len(list(read_jsonl(f"{cfg.out}/annotations.jsonl"))) == 12


def test_stages_are_label_free(tiny_config, tiny_ws):
    """PA, PI and PL never open the benchmark's files (the only place answers live)."""
    bench_dir = str(tiny_ws["benchmark"].parent)
    opened: list[str] = []
    watching = [True]

    def hook(event, args):
        if watching[0] and event == "open" and isinstance(args[0], str):
            opened.append(args[0])

    sys.addaudithook(hook)
    cfg = parse_config({**tiny_config, "evaluate": {}})  # no benchmark: PA, PI, PL only
    try:
        summary = run_pipeline(cfg, show=False)
    finally:
        watching[0] = False
    assert summary["level"]["n_samples"] > 0
    assert opened, "the audit hook saw no file opens"
    assert not [p for p in opened if p.startswith(bench_dir)]


def test_answer_only_labels(tiny_ws):
    vlm = HFVLM(ModelConfig(model=str(tiny_ws["student"])))
    from PIL import Image

    img = Image.new("RGB", (56, 56), (255, 0, 0))
    batch = encode_for_training(vlm.processor, [img, img], ["What color?", "A longer question here?"], ["red", "3"])
    tok = vlm.processor.tokenizer
    for i, answer in enumerate(["red", "3"]):
        learned = batch["input_ids"][i][batch["labels"][i] != -100]
        assert tok.decode(learned) == answer + "<|im_end|>"
        # padding is never learned
        assert (batch["labels"][i][batch["attention_mask"][i] == 0] == -100).all()


def test_lora_training_saves_a_plain_checkpoint(tiny_config, tmp_path):
    cfg = parse_config(tiny_config)
    samples = tmp_path / "samples.jsonl"
    img = sorted(Path(cfg.data.images).glob("*.png"))[0]
    samples.write_text(json.dumps({"image": str(img), "question": "What color is the image?", "answer": "red"}) + "\n")
    train = cfg.train.model_copy(update={"lora": True, "lora_r": 4})
    summary = level(samples_path=samples, student=cfg.student, task=get_task("textvqa"), cfg=train,
                    out_dir=tmp_path / "lvl", show=False)
    assert summary.lora
    ckpt = tmp_path / "lvl" / "checkpoint"
    assert not (ckpt / "adapter_config.json").exists()  # merged: a plain HF checkpoint
    HFVLM(ModelConfig(model=str(ckpt)))


def test_empty_parity_set_stops_with_a_clear_message(tiny_config, tmp_path):
    cfg = parse_config(tiny_config)
    empty = tmp_path / "parity.jsonl"
    empty.write_text("")
    with pytest.raises(EmptyParitySet, match="parity set .* is empty"):
        level(samples_path=empty, student=cfg.student, task=get_task("textvqa"), cfg=cfg.train,
              out_dir=tmp_path / "lvl", show=False)


def test_corrupt_image_is_skipped_and_counted(tiny_ws, tmp_path):
    images = tmp_path / "imgs"
    shutil.copytree(tiny_ws["images"], images)
    (images / "broken.png").write_bytes(b"not a png at all")
    (images / "notes.txt").write_text("ignored: not an image suffix")
    teacher = HFVLM(ModelConfig(model=str(tiny_ws["teacher"])))
    from mpa.config import AnnotateConfig

    s = annotate(images=str(images), teacher=teacher, task=get_task("textvqa"), cfg=AnnotateConfig(),
                 out_path=tmp_path / "a.jsonl", show=False)
    assert s.n_images == 13 and s.n_unreadable == 1
    bad = [r for r in read_jsonl(tmp_path / "a.jsonl") if r["image"].endswith("broken.png")]
    assert len(bad) == 1 and bad[0]["error"].startswith("unreadable image") and not bad[0]["parse_ok"]


def test_missing_model_directory_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="model directory not found: .*nope"):
        HFVLM(ModelConfig(model=str(tmp_path / "nope")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no config.json"):
        HFVLM(ModelConfig(model=str(tmp_path / "empty")))


def test_several_qa_per_image_with_dedupe(tiny_ws, tmp_path):
    from mpa.config import AnnotateConfig

    teacher = HFVLM(ModelConfig(model=str(tiny_ws["teacher"])))
    cfg = AnnotateConfig(qa_per_image=3, temperature=1.0, max_new_tokens=24)
    s = annotate(images=str(tiny_ws["images"]), teacher=teacher, task=get_task("textvqa"), cfg=cfg,
                 out_path=tmp_path / "a.jsonl", max_images=4, show=False)
    rows = list(read_jsonl(tmp_path / "a.jsonl"))
    assert s.n_attempts == 12 == len(rows)
    # the tiny teacher asks one question per image; repeats are recorded as duplicates, not kept twice
    for img in {r["image"] for r in rows}:
        kept = [r for r in rows if r["image"] == img and r["parse_ok"]]
        assert len({r["question"].lower() for r in kept}) == len(kept)
    assert s.n_duplicates >= 4


def test_evaluate_fails_fast_when_benchmark_images_are_missing(tiny_ws, tmp_path):
    from mpa.data.benchmarks import load_benchmark
    from mpa.stages.evaluate import MissingBenchmarkImages, evaluate

    samples = load_benchmark("textvqa", str(tiny_ws["benchmark"]), images=str(tmp_path))
    vlm = HFVLM(ModelConfig(model=str(tiny_ws["student"])))
    with pytest.raises(MissingBenchmarkImages, match=r"8 of 8 benchmark images not found"):
        evaluate(model=vlm, benchmark="textvqa", samples=samples, predictions_path=tmp_path / "p.jsonl")
    assert not (tmp_path / "p.jsonl").exists()
