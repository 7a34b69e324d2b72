"""Loading official benchmark formats and scoring them end to end (hand-computed expectations)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mpa import storage
from mpa.data.benchmarks import (
    BENCHMARKS,
    BenchmarkSample,
    load_benchmark,
    load_predictions,
    score_predictions,
)

FIX = Path(__file__).parent / "fixtures" / "benchmarks"


def test_benchmark_registry():
    assert BENCHMARKS == {"textvqa": "vqa", "stvqa": "anls", "chartqa": "relaxed", "okvqa": "vqa", "pathvqa": "vqa"}


# ------------------------------------------------------------------------------------------------
# TextVQA
# ------------------------------------------------------------------------------------------------


def test_textvqa_load():
    ann = FIX / "textvqa" / "TextVQA_0.5.1_val.json"
    samples = load_benchmark("textvqa", str(ann))
    assert len(samples) == 4
    s = samples[0]
    assert s == BenchmarkSample(
        question_id="34602",
        question="what brand is the phone?",
        image=str(FIX / "textvqa" / "0054c91397f2fe05.jpg"),
        answers=["nokia"] * 10,
    )
    assert all(isinstance(x.question_id, str) for x in samples)
    assert load_benchmark("textvqa", str(ann), images="/imgs", max_samples=2)[1].image == str(
        Path("/imgs") / "005635e119b9f32f.jpg"
    )
    assert len(load_benchmark("TextVQA", str(ann), max_samples=2)) == 2


def test_textvqa_score_end_to_end():
    samples = load_benchmark("textvqa", str(FIX / "textvqa" / "TextVQA_0.5.1_val.json"))
    preds = load_predictions(FIX / "textvqa" / "predictions.jsonl")
    assert preds["34602"] == "Nokia." and "99999" in preds
    result = score_predictions("textvqa", samples, preds)
    # 34602: "Nokia." -> "nokia", 10/10 match -> 1.0
    # 34603: "yes" with 2 of 10 -> (2*(1/3) + 8*(2/3))/10 = 0.6
    # 34604: "3" vs ["three","3","the three"] + 7x"4" -> 3 matches -> (3*(2/3) + 7*1)/10 = 0.9
    # 34605: no prediction -> 0.  Mean = 2.5/4 = 62.5 %; the extra id 99999 is ignored.
    assert result["benchmark"] == "textvqa" and result["metric"] == "vqa"
    assert result["score"] == pytest.approx(62.5)
    assert result["n"] == 4 and result["n_missing"] == 1
    assert "by_split" not in result and "by_type" not in result


def test_textvqa_png_fallback_and_qtype(tmp_path):
    data = {
        "dataset_version": "0.5.1",
        "data": [
            {"question_id": 1, "question": "q1", "image_id": "img_png", "answers": ["a"] * 10,
             "question_type": "brand"},
            {"question_id": 2, "question": "q2", "image_id": "img_jpg", "answers": ["b"] * 10,
             "qtype": "number"},
            {"question_id": 3, "question": "q3", "image_id": "img_none", "answers": ["c"] * 10},
        ],
    }  # fmt: skip
    ann = tmp_path / "val.json"
    ann.write_text(json.dumps(data))
    (tmp_path / "img_png.png").write_bytes(b"")
    (tmp_path / "img_jpg.jpg").write_bytes(b"")
    (tmp_path / "img_jpg.png").write_bytes(b"")
    samples = load_benchmark("textvqa", str(ann))
    assert samples[0].image == str(tmp_path / "img_png.png")
    assert samples[1].image == str(tmp_path / "img_jpg.jpg")  # jpg preferred when both exist
    assert samples[2].image == str(tmp_path / "img_none.jpg")  # neither exists -> jpg path
    assert [s.qtype for s in samples] == ["brand", "number", None]
    result = score_predictions("textvqa", samples, {"1": "a", "2": "x", "3": "c"})
    # scores 1, 0, 1 -> 200/3 %; by_type only over samples with a qtype
    assert result["score"] == pytest.approx(200 / 3)
    assert result["by_type"] == {"brand": 100.0, "number": 0.0}


# ------------------------------------------------------------------------------------------------
# ST-VQA
# ------------------------------------------------------------------------------------------------


def test_stvqa_load_and_score():
    ann = FIX / "stvqa" / "train_task_1.json"
    samples = load_benchmark("stvqa", str(ann), images="/data/stvqa")
    assert samples[0].question_id == "1001"
    assert samples[0].image == str(Path("/data/stvqa") / "coco-text/COCO_train2014_000000000001.jpg")
    assert samples[0].answers == ["Coca Cola", "coca-cola"]
    result = score_predictions("stvqa", samples, load_predictions(FIX / "stvqa" / "predictions.jsonl"))
    # 1001: "  coca  Cola " -> "coca cola" == "coca cola" -> 1.0
    # 1002: "stops" vs "stop" -> 1 - 1/5 = 0.8
    # 1003: "13" vs "12" -> NL = 0.5 >= 0.5 -> 0
    # 1004: "help" vs "hello" -> 1 - 2/5 = 0.6.  Mean = 2.4/4 = 60 %
    assert result["metric"] == "anls"
    assert result["score"] == pytest.approx(60.0)
    assert result["n"] == 4 and result["n_missing"] == 0


# ------------------------------------------------------------------------------------------------
# ChartQA
# ------------------------------------------------------------------------------------------------


def test_chartqa_directory_load_and_score():
    samples = load_benchmark("chartqa", str(FIX / "chartqa"))
    assert [s.question_id for s in samples] == ["human-0", "human-1", "human-2", "augmented-0", "augmented-1"]
    assert [s.split for s in samples] == ["human"] * 3 + ["augmented"] * 2
    assert samples[0].answers == ["45"]
    assert samples[0].question == "What is the value of the tallest bar?"
    assert samples[0].image == str(FIX / "chartqa" / "41699051005347.png")
    result = score_predictions("chartqa", samples, load_predictions(FIX / "chartqa" / "predictions.jsonl"))
    # human: 47 vs 45 (2/45 = 4.4%) ok; "yes" vs "Yes" ok; 21.5 vs 20 (7.5%) wrong -> 2/3
    # augmented: 0.0 vs 0 ok; 1260 vs 1,200 (exactly 5%) ok -> 2/2.  overall 4/5
    assert result["metric"] == "relaxed"
    assert result["by_split"]["human"] == pytest.approx(200 / 3)
    assert result["by_split"]["augmented"] == pytest.approx(100.0)
    assert result["by_split"]["overall"] == pytest.approx(80.0)
    assert result["score"] == pytest.approx(80.0)
    assert result["n"] == 5 and result["n_missing"] == 0


def test_chartqa_single_file_and_png_dir(tmp_path):
    samples = load_benchmark("chartqa", str(FIX / "chartqa" / "test_augmented.json"), images="/charts")
    assert [s.question_id for s in samples] == ["augmented-0", "augmented-1"]
    assert samples[1].image == str(Path("/charts") / "multi_col_400.png")
    result = score_predictions("chartqa", samples, {"augmented-0": "0", "augmented-1": "5"})
    # 1/2 -> 50 %, only the augmented split present
    assert result["by_split"] == {"augmented": 50.0, "overall": 50.0}
    # official layout: test/test_human.json + test/png/ -> images default to test/png
    shutil.copy(FIX / "chartqa" / "test_human.json", tmp_path / "test_human.json")
    (tmp_path / "png").mkdir()
    human = load_benchmark("chartqa", str(tmp_path), max_samples=1)
    assert len(human) == 1 and human[0].image == str(tmp_path / "png" / "41699051005347.png")


def test_chartqa_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="test_human.json"):
        load_benchmark("chartqa", str(tmp_path))  # empty directory
    bad_name = tmp_path / "test.json"
    bad_name.write_text("[]")
    with pytest.raises(ValueError, match="cannot infer the ChartQA split"):
        load_benchmark("chartqa", str(bad_name))
    bad = tmp_path / "test_human.json"
    bad.write_text(json.dumps([{"imgname": "a.png", "query": "q"}]))
    with pytest.raises(ValueError, match=r"test_human\.json.*'label'"):
        load_benchmark("chartqa", str(bad))


# ------------------------------------------------------------------------------------------------
# OK-VQA
# ------------------------------------------------------------------------------------------------


def test_okvqa_load_and_score():
    d = FIX / "okvqa"
    samples = load_benchmark(
        "okvqa",
        str(d / "mscoco_val2014_annotations.json"),
        questions=str(d / "OpenEnded_mscoco_val2014_questions.json"),
    )
    assert samples[0].question_id == "2971475"
    assert samples[0].image == str(d / "COCO_val2014_000000297147.jpg")
    assert samples[1].image == str(d / "COCO_val2014_000000000042.jpg")
    assert len(samples[0].answers) == 10 and samples[0].answers[4] == "motocross"
    assert samples[0].qtype == "eight"
    result = score_predictions("okvqa", samples, load_predictions(d / "predictions.jsonl"))
    # 2971475: "Motocross" with 2 of 10 -> 0.6;  425: "a sheep" -> "sheep", 6 of 10 -> 1.0
    # mean = 1.6/2 = 80 %
    assert result["score"] == pytest.approx(80.0)
    assert result["by_type"] == {"eight": pytest.approx(60.0), "one": 100.0}


def test_okvqa_requires_questions():
    with pytest.raises(ValueError, match="questions"):
        load_benchmark("okvqa", str(FIX / "okvqa" / "mscoco_val2014_annotations.json"))


# ------------------------------------------------------------------------------------------------
# s3 and errors
# ------------------------------------------------------------------------------------------------


def test_s3_annotations_via_storage(monkeypatch):
    files = {
        "s3://bench/textvqa/val.json": (FIX / "textvqa" / "TextVQA_0.5.1_val.json").read_bytes(),
        "s3://bench/chartqa/test_human.json": (FIX / "chartqa" / "test_human.json").read_bytes(),
    }
    seen = []

    def fake_read_bytes(uri):
        seen.append(str(uri))
        if str(uri) not in files:
            raise FileNotFoundError(uri)
        return files[str(uri)]

    monkeypatch.setattr(storage, "read_bytes", fake_read_bytes)
    samples = load_benchmark("textvqa", "s3://bench/textvqa/val.json")
    assert samples[0].image == "s3://bench/textvqa/0054c91397f2fe05.jpg"
    charts = load_benchmark("chartqa", "s3://bench/chartqa", images="s3://bench/chartqa/png/")
    assert [s.split for s in charts] == ["human"] * 3  # augmented file absent on s3
    assert charts[0].image == "s3://bench/chartqa/png/41699051005347.png"
    assert "s3://bench/chartqa/test_augmented.json" in seen


def test_missing_file_and_unknown_benchmark(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_benchmark("textvqa", str(missing))
    with pytest.raises(ValueError, match="textvqa, stvqa, chartqa, okvqa"):
        load_benchmark("vqav2", str(missing))
    with pytest.raises(ValueError, match="textvqa, stvqa, chartqa, okvqa"):
        score_predictions("docvqa", [], {})


def test_wrong_format_names_file_and_key(tmp_path):
    f = tmp_path / "x.json"
    f.write_text(json.dumps({"questions": []}))
    with pytest.raises(ValueError, match=r"x\.json.*'data'"):
        load_benchmark("textvqa", str(f))
    f.write_text(json.dumps({"data": [{"question_id": 1, "question": "q", "answers": []}]}))
    with pytest.raises(ValueError, match=r"x\.json.*'image_id'"):
        load_benchmark("textvqa", str(f))
    with pytest.raises(ValueError, match=r"x\.json.*'file_path'"):
        load_benchmark("stvqa", str(f))
    f.write_text("{not json")
    with pytest.raises(ValueError, match=r"x\.json"):
        load_benchmark("stvqa", str(f))


def test_hidden_gt_loads_but_cannot_be_scored(tmp_path):
    f = tmp_path / "test_task_1.json"
    f.write_text(json.dumps({"data": [{"question_id": 7, "question": "q", "file_path": "a.jpg"}]}))
    samples = load_benchmark("stvqa", str(f))
    assert samples[0].answers == []
    with pytest.raises(ValueError, match="no ground-truth"):
        score_predictions("stvqa", samples, {"7": "x"})
    with pytest.raises(ValueError, match="no samples"):
        score_predictions("stvqa", [], {})


# ------------------------------------------------------------------------------------------------
# predictions
# ------------------------------------------------------------------------------------------------


def test_load_predictions_ok(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"question_id": 1, "answer": "a"}\n\n{"question_id": "x", "answer": 3}\n')
    assert load_predictions(f) == {"1": "a", "x": "3"}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"question_id": 1, "answer": "a"}\n{bad json\n', r"p\.jsonl:2: invalid JSON"),
        ('{"question_id": 1}\n', r"p\.jsonl:1: missing key 'answer'"),
        ("[1, 2]\n", r"p\.jsonl:1: expected a JSON object"),
        ('{"question_id": 1, "answer": null}\n', r"p\.jsonl:1: 'answer' must be a string"),
        (
            '{"question_id": 1, "answer": "a"}\n{"question_id": "1", "answer": "b"}\n',
            r"p\.jsonl:2: duplicate",
        ),
    ],
)
def test_load_predictions_errors(tmp_path, content, message):
    f = tmp_path / "p.jsonl"
    f.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_predictions(f)


def test_load_predictions_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="preds.jsonl"):
        load_predictions(tmp_path / "preds.jsonl")
