"""Benchmarks from Hugging Face `datasets` ids: the real load_dataset code path on local imagefolders."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from mpa.data.benchmarks import load_benchmark, load_benchmark_hf, score_predictions

pytest.importorskip("datasets")


def _folder(root, rows):
    split = root / "validation"
    split.mkdir(parents=True)
    meta = []
    for i, row in enumerate(rows):
        Image.new("RGB", (8, 8), (i * 30, 0, 0)).save(split / f"{i}.png")
        meta.append({"file_name": f"{i}.png", **row})
    (split / "metadata.jsonl").write_text("\n".join(json.dumps(m) for m in meta))
    return root


def test_textvqa_from_a_dataset_id(tmp_path, monkeypatch):
    monkeypatch.setenv("MPA_CACHE", str(tmp_path / "cache"))
    ds = _folder(
        tmp_path / "tv",
        [
            {"question_id": 34602, "question": "what brand is the phone?", "answers": ["nokia"] * 10},
            {"question_id": 34603, "question": "is the sign lit?", "answers": ["yes"] * 3 + ["no"] * 7},
        ],
    )
    samples = load_benchmark("textvqa", f"hf:{ds}:validation")
    assert [(s.question_id, s.question, s.answers[0]) for s in samples] == [
        ("34602", "what brand is the phone?", "nokia"),
        ("34603", "is the sign lit?", "yes"),
    ]
    assert all(s.image.endswith(".png") for s in samples)
    r = score_predictions("textvqa", samples, {"34602": "Nokia", "34603": "yes"})
    assert r["score"] == pytest.approx(100 * (1 + 0.9) / 2)  # yes: 3 of 10 -> 0.9 after leave-one-out


def test_chartqa_and_okvqa_columns(tmp_path):
    ds = _folder(
        tmp_path / "cq",
        [
            {"query": "What is the max value?", "label": ["42"], "human_or_machine": 0},
            {"query": "Which year?", "label": ["2019"], "human_or_machine": 1},
        ],
    )
    cq = load_benchmark_hf("chartqa", str(ds), "validation", cache_dir=tmp_path / "c")
    assert [(s.question_id, s.split, s.answers) for s in cq] == [
        ("human-0", "human", ["42"]),
        ("augmented-1", "augmented", ["2019"]),
    ]
    r = score_predictions("chartqa", cq, {"human-0": "43", "augmented-1": "2019"})
    assert r["by_split"] == {"human": 100.0, "augmented": 100.0, "overall": 100.0}  # 43 within 5% of 42
    ok = _folder(
        tmp_path / "ok",
        [
            {
                "question_id": 5,
                "question": "what sport?",
                "answers": [{"answer": "tennis", "answer_id": j} for j in range(10)],
            }
        ],
    )
    [s] = load_benchmark_hf("okvqa", str(ok), "validation", cache_dir=tmp_path / "c", max_samples=1)
    assert s.answers == ["tennis"] * 10


def test_missing_column_is_named(tmp_path):
    ds = _folder(tmp_path / "bad", [{"prompt": "x", "answers": ["y"]}])
    with pytest.raises(ValueError, match="no question column"):
        load_benchmark_hf("textvqa", str(ds), "validation", cache_dir=tmp_path / "c")
