"""`mpa split`: an ST-VQA holdout by image, reproducible by seed, loadable and scorable like the original."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mpa.data.benchmarks import load_benchmark, score_predictions
from mpa.data.split import split_benchmark

FIXTURE = Path(__file__).parent / "fixtures" / "split" / "train_task_1.json"


def _images(doc: dict) -> set[str]:
    return {e["file_path"] for e in doc["data"]}


def test_split_by_image_keeps_format_and_every_question(tmp_path):
    summary = split_benchmark("stvqa", FIXTURE, 0.15, 0, tmp_path / "out")
    src = json.loads(FIXTURE.read_text())
    train = json.loads((tmp_path / "out" / "train.json").read_text())
    hold = json.loads((tmp_path / "out" / "holdout.json").read_text())
    # same top-level structure, data split
    assert set(train) == set(hold) == set(src)
    assert train["dataset_name"] == hold["dataset_name"] == "ST-VQA" and hold["task_name"] == "task_1"
    # no image in both; every question in exactly one file, in its original order
    assert not _images(train) & _images(hold)
    assert _images(train) | _images(hold) == _images(src)
    ids = [e["question_id"] for e in src["data"]]
    train_ids, hold_ids = [e["question_id"] for e in train["data"]], [e["question_id"] for e in hold["data"]]
    assert sorted(train_ids + hold_ids) == sorted(ids)
    assert train_ids == [i for i in ids if i in set(train_ids)]
    # 20 images * 0.15 = 3 held out; images with two questions take both along
    assert summary["images"] == {"train": 17, "holdout": 3}
    assert len(_images(hold)) == 3
    assert summary["questions"]["holdout"] == len(hold_ids)
    assert json.loads((tmp_path / "out" / "split.json").read_text())["seed"] == 0


def test_split_is_reproducible_by_seed(tmp_path):
    split_benchmark("stvqa", FIXTURE, 0.3, 7, tmp_path / "a")
    split_benchmark("stvqa", FIXTURE, 0.3, 7, tmp_path / "b")
    split_benchmark("stvqa", FIXTURE, 0.3, 8, tmp_path / "c")
    a = (tmp_path / "a" / "holdout.json").read_bytes()
    assert a == (tmp_path / "b" / "holdout.json").read_bytes()
    assert a != (tmp_path / "c" / "holdout.json").read_bytes()


def test_holdout_loads_and_scores_like_the_original(tmp_path):
    split_benchmark("stvqa", FIXTURE, 0.15, 0, tmp_path)
    samples = load_benchmark("stvqa", str(tmp_path / "holdout.json"), images="/data/stvqa")
    hold = json.loads((tmp_path / "holdout.json").read_text())["data"]
    assert [s.question_id for s in samples] == [str(e["question_id"]) for e in hold]
    assert samples[0].image == str(Path("/data/stvqa") / hold[0]["file_path"])
    preds = {s.question_id: s.answers[0] for s in samples}
    preds[samples[0].question_id] = "something else entirely"
    result = score_predictions("stvqa", samples, preds)
    assert result["n"] == len(hold) and result["n_missing"] == 0
    assert result["score"] == pytest.approx(100.0 * (len(hold) - 1) / len(hold))


def test_textvqa_splits_by_image_id(tmp_path):
    src = Path(__file__).parent / "fixtures" / "benchmarks" / "textvqa" / "TextVQA_0.5.1_val.json"
    doc = json.loads(src.read_text())
    n_images = len({e["image_id"] for e in doc["data"]})
    assert n_images == 4
    summary = split_benchmark("textvqa", src, 0.5, 0, tmp_path)
    train = json.loads((tmp_path / "train.json").read_text())["data"]
    hold = json.loads((tmp_path / "holdout.json").read_text())["data"]
    assert not {e["image_id"] for e in train} & {e["image_id"] for e in hold}
    assert summary["images"]["train"] + summary["images"]["holdout"] == n_images


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"holdout": 0.0}, ValueError, "strictly between 0 and 1"),
        ({"holdout": 1.0}, ValueError, "strictly between 0 and 1"),
        ({"holdout": -0.2}, ValueError, "strictly between 0 and 1"),
        ({"holdout": 0.01}, ValueError, "leaves the holdout empty"),
        ({"holdout": 0.99}, ValueError, "leaves the train split empty"),
        ({"benchmark": "chartqa"}, ValueError, "cannot split benchmark 'chartqa'; splittable: stvqa, textvqa"),
        ({"annotations": "nowhere/train_task_1.json"}, FileNotFoundError, "annotation file not found"),
    ],
)
def test_split_errors(tmp_path, kwargs, error, message):
    args = {"benchmark": "stvqa", "annotations": FIXTURE, "holdout": 0.15, "seed": 0, "out": tmp_path / "o", **kwargs}
    with pytest.raises(error, match=message):
        split_benchmark(**args)


def test_split_refuses_a_file_as_out_and_a_wrong_format(tmp_path):
    target = tmp_path / "file.json"
    target.write_text("{}")
    with pytest.raises(ValueError, match="must be a directory"):
        split_benchmark("stvqa", FIXTURE, 0.15, 0, target)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"data": [{"question_id": 1, "question": "q"}]}))
    with pytest.raises(ValueError, match="entry 0 has no 'file_path'"):
        split_benchmark("stvqa", bad, 0.15, 0, tmp_path / "o")


def test_cli_split_prints_json_and_one_line_errors(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    base = [sys.executable, "-m", "mpa", "split", "--benchmark", "stvqa", "--annotations", str(FIXTURE)]
    ok = subprocess.run([*base, "--holdout", "0.15", "--seed", "0", "--out", str(tmp_path / "d")],
                        capture_output=True, text=True, env=env, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["images"] == {"train": 17, "holdout": 3}
    bad = subprocess.run([*base, "--holdout", "1.5", "--out", str(tmp_path / "e")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "error:" in bad.stderr and "Traceback" not in bad.stderr
    assert "strictly between 0 and 1" in bad.stderr


FIXED = Path(__file__).parent / "fixtures" / "split" / "train_task_1_onePerImage_val.json"


def test_a_fixed_holdout_file_is_the_holdout_as_it_is(tmp_path):
    """The MPA authors score ST-VQA on a fixed file (one question per image); `--holdout-file` takes it."""
    from mpa.data.split import split_by_file

    summary = split_by_file("stvqa", FIXTURE, FIXED, tmp_path / "out")
    assert (tmp_path / "out" / "holdout.json").read_bytes() == FIXED.read_bytes()  # byte for byte
    train = json.loads((tmp_path / "out" / "train.json").read_text())
    held = _images(json.loads(FIXED.read_text()))
    assert held == {"coco-text/img_000.jpg", "icdar/img_003.jpg", "imageNet/img_005.jpg"}
    assert not _images(train) & held  # every question about a held-out image leaves train, not only the held one
    assert _images(train) == _images(json.loads(FIXTURE.read_text())) - held
    # 27 questions; the 3 held-out images carry 2 + 2 + 1 of them
    assert summary["questions"] == {"train": 22, "holdout": 3, "source_dropped_with_holdout_images": 5}
    assert summary["images"] == {"train": 17, "holdout": 3, "holdout_not_in_source": 0}
    assert summary["holdout_sha256"] and json.loads((tmp_path / "out" / "split.json").read_text()) == summary
    samples = load_benchmark("stvqa", str(tmp_path / "out" / "holdout.json"), images="/data/stvqa")
    assert [s.question_id for s in samples] == ["5001", "5005", "5008"]


def test_a_fixed_holdout_from_another_benchmark_is_refused(tmp_path):
    from mpa.data.split import split_by_file

    other = tmp_path / "other.json"
    other.write_text(json.dumps({"data": [{"question_id": 1, "question": "q", "file_path": "x/none.jpg",
                                           "answers": ["a"]}]}))
    with pytest.raises(ValueError, match="asks about none of the images"):
        split_by_file("stvqa", FIXTURE, other, tmp_path / "out")
    with pytest.raises(ValueError, match="entry 0 has no 'file_path'"):
        other.write_text(json.dumps({"data": [{"question": "q"}]}))
        split_by_file("stvqa", FIXTURE, other, tmp_path / "out")


def test_cli_split_takes_a_holdout_file(tmp_path):
    res = subprocess.run([sys.executable, "-m", "mpa.cli", "split", "--benchmark", "stvqa", "--annotations",
                          str(FIXTURE), "--holdout-file", str(FIXED), "--out", str(tmp_path / "o")],
                         capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["questions"]["holdout"] == 3
    assert (tmp_path / "o" / "holdout.json").read_bytes() == FIXED.read_bytes()
