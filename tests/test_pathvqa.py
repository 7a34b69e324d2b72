"""PathVQA (paper Table 7): the JSON export loads as benchmark samples; yes/no and open accuracy, by hand."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from mpa.data.benchmarks import BENCHMARKS, load_benchmark, load_predictions, pathvqa_qtype, score_predictions

FIXTURES = Path(__file__).parent / "fixtures" / "pathvqa"


def test_registered_for_evaluate_and_score():
    assert BENCHMARKS["pathvqa"] == "vqa"  # one answer each: EvalAI-normalised exact match


def test_load_resolves_images_ids_and_question_types(tmp_path):
    for name in ("test_0000.jpg", "test_0001.png"):
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    samples = load_benchmark("pathvqa", str(FIXTURES / "test.json"), images=str(tmp_path))
    assert [s.question_id for s in samples] == [str(i) for i in range(8)]
    assert samples[0].image == str(tmp_path / "test_0000.jpg")
    assert samples[2].image == str(tmp_path / "test_0001.png")  # no .jpg there: the .png
    assert samples[4].image == str(tmp_path / "test_0002.jpg")  # name with its extension kept
    assert samples[6].image == str(tmp_path / "test_0003.jpg")  # missing file: the .jpg name (loaders don't check)
    assert [s.qtype for s in samples] == ["yes/no", "open"] * 4
    assert samples[3].answers == ["back-to-back"]
    # images default to the annotation file's directory
    assert load_benchmark("pathvqa", str(FIXTURES / "test.json"))[1].image.startswith(str(FIXTURES))


def test_yes_no_and_open_accuracy_by_hand():
    samples = load_benchmark("pathvqa", str(FIXTURES / "test.json"))
    result = score_predictions("pathvqa", samples, load_predictions(FIXTURES / "predictions.jsonl"))
    # yes/no: "Yes."=yes ✓, yes≠no ✗, "YES"=Yes ✓, no=no ✓ -> 3/4
    # open: granuloma ✓, "back to front"≠"back to back" ✗, "liver"="the liver" (article) ✓,
    #       "the kidney is shown"≠"kidney" ✗ -> 2/4
    assert result["by_type"] == {"open": pytest.approx(50.0), "yes/no": pytest.approx(75.0)}
    assert result["score"] == pytest.approx(62.5)
    assert result["n"] == 8 and result["n_missing"] == 0


def test_jsonl_and_data_wrapped_exports_with_ids_and_answer_lists(tmp_path):
    rows = [{"qid": "a1", "image": "p/x.png", "question": "Is it red?", "answers": ["no"], "question_type": "yes/no"},
            {"qid": "a2", "image": "p/x.png", "question": "What?", "answers": ["no"], "question_type": "open"}]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "t.json").write_text(json.dumps({"data": rows}))
    for name in ("t.jsonl", "t.json"):
        samples = load_benchmark("pathvqa", str(tmp_path / name), images="/img")
        assert [s.question_id for s in samples] == ["a1", "a2"]
        assert samples[0].image == "/img/p/x.png"
        # the declared type wins over the answer ("no" to an open question stays open)
        assert [s.qtype for s in samples] == ["yes/no", "open"]


def test_qtype_rule():
    assert pathvqa_qtype(["Yes"]) == "yes/no" and pathvqa_qtype(["no."]) == "yes/no"
    assert pathvqa_qtype(["nodule"]) == "open" and pathvqa_qtype([]) == "open"
    assert pathvqa_qtype(["liver"], "CLOSED") == "yes/no" and pathvqa_qtype(["yes"], "weird") == "yes/no"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('[{"image": "a", "answer": "yes"}]', "entry 0 is missing key 'question'"),
        ('[{"question": "q?", "answer": "yes"}]', "entry 0 is missing key 'image'"),
        ('[{"image": "a", "question": "q?"}]', "entry 0 is missing key 'answer'"),
        ('{"rows": []}', "missing top-level key 'data'"),
        ('{"image": "a"}\nnot json\n', ":2: neither a JSON file nor JSON lines"),
        ('"text"', "expected a JSON list"),
    ],
)
def test_bad_files_name_file_and_entry(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_benchmark("pathvqa", str(path))


def test_cli_score_pathvqa():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(
        [sys.executable, "-m", "mpa", "score", "--benchmark", "pathvqa", "--annotations", str(FIXTURES / "test.json"),
         "--predictions", str(FIXTURES / "predictions.jsonl")],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["benchmark"] == "pathvqa" and out["by_type"]["yes/no"] == pytest.approx(75.0)
