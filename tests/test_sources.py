"""Unlabeled image sources: a benchmark's train split with labels stripped, and a `datasets` id."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from mpa.data.images import ImageSourceError
from mpa.data.sources import benchmark_images, hf_dataset_images, list_images, materialize, parse_source

FIX = Path(__file__).parent / "fixtures" / "benchmarks"


def test_parse_source():
    assert parse_source("/data/imgs") == {"kind": "dir", "path": "/data/imgs"}
    assert parse_source("s3://b/p/")["kind"] == "s3"
    assert parse_source("bench:textvqa:/a/TextVQA_0.5.1_train.json:/a/train_images") == {
        "kind": "bench",
        "name": "textvqa",
        "annotations": "/a/TextVQA_0.5.1_train.json",
        "images": "/a/train_images",
    }
    assert parse_source("bench:stvqa:s3://b/train_task_1.json:s3://b/imgs")["annotations"] == "s3://b/train_task_1.json"
    assert parse_source("bench:stvqa:s3://b/train_task_1.json")["images"] is None
    assert parse_source("hf:lmms-lab/textvqa") == {
        "kind": "hf",
        "dataset": "lmms-lab/textvqa",
        "split": "train",
        "column": None,
    }
    with pytest.raises(ImageSourceError):
        parse_source("bench:textvqa")


@pytest.mark.parametrize(
    ("name", "ann", "questions"),
    [
        ("textvqa", "textvqa/TextVQA_0.5.1_val.json", None),
        ("stvqa", "stvqa/train_task_1.json", None),
        ("chartqa", "chartqa", None),
        ("okvqa", "okvqa/mscoco_val2014_annotations.json", "okvqa/OpenEnded_mscoco_val2014_questions.json"),
    ],
)
def test_benchmark_split_gives_images_only(name, ann, questions):
    uris = benchmark_images(name, str(FIX / ann), questions=questions and str(FIX / questions))
    assert uris == sorted(set(uris)) and all(isinstance(u, str) for u in uris)
    raw = (FIX / ann).read_text() if (FIX / ann).is_file() else ""
    for u in uris:  # references only: no question or answer text is returned
        assert "answer" not in u
    if name == "textvqa":
        data = json.loads(raw)["data"]
        assert len(uris) == len({d["image_id"] for d in data})
        assert all(u.endswith(".jpg") for u in uris)


def test_materialize_benchmark_split_for_pa(tmp_path):
    imgs = tmp_path / "train_images"
    imgs.mkdir()
    data = []
    for i in range(3):
        Image.new("RGB", (8, 8), (i * 50, 0, 0)).save(imgs / f"im{i}.jpg")
        for q in range(2):  # several questions per image: one image for PA
            data.append(
                {
                    "question_id": i * 10 + q,
                    "question": f"secret question {q}?",
                    "image_id": f"im{i}",
                    "answers": ["secret answer"] * 10,
                }
            )
    ann = tmp_path / "TextVQA_0.5.1_train.json"
    ann.write_text(json.dumps({"data": data}))
    out = materialize(f"bench:textvqa:{ann}:{imgs}", tmp_path / "pa_images")
    files = sorted(p.name for p in out.iterdir())
    assert len(files) == 3 and all(f.endswith(".jpg") for f in files)
    assert "secret" not in " ".join(files)
    from mpa.data.sources import list_images

    assert len(list_images(str(out))) == 3  # PA reads it like any directory
    assert materialize(f"bench:textvqa:{ann}:{imgs}", tmp_path / "pa_images") == out  # idempotent


def test_hf_datasets_path_strips_labels(tmp_path):
    """A local imagefolder through the real `datasets.load_dataset` code path (no download)."""
    pytest.importorskip("datasets")
    folder = tmp_path / "ds" / "train"
    folder.mkdir(parents=True)
    meta = []
    for i in range(4):
        Image.new("RGB", (8, 8), (0, i * 60, 0)).save(folder / f"{i}.png")
        meta.append({"file_name": f"{i}.png", "question": "what is it?", "answers": ["thing"]})
    Image.new("RGB", (8, 8), (0, 0, 0)).save(folder / "dup.png")  # same pixels as 0.png: one file
    meta.append({"file_name": "dup.png", "question": "again?", "answers": ["x"]})
    (folder / "metadata.jsonl").write_text("\n".join(json.dumps(m) for m in meta))
    seen_columns = []

    def spy_load(name, split):
        from datasets import load_dataset

        ds = load_dataset(name, split=split)
        seen_columns.append(sorted(ds.column_names))
        return ds

    paths = hf_dataset_images(str(tmp_path / "ds"), "train", cache_dir=tmp_path / "cache", load_dataset=spy_load)
    assert seen_columns == [["answers", "image", "question"]]  # labels existed in the dataset...
    assert len(paths) == 4 and all(Path(p).suffix == ".png" and Path(p).is_file() for p in paths)
    # ...and only pixels leave: the cache holds image files and nothing else
    assert {p.suffix for p in (tmp_path / "cache").rglob("*") if p.is_file()} == {".png"}
    again = list_images(f"hf:{tmp_path / 'ds'}:train", cache_dir=tmp_path / "cache")
    assert again == paths


def test_hf_source_errors(tmp_path):
    class FakeDS:
        column_names = ["question"]
        features = {}

    with pytest.raises(ImageSourceError, match="image column"):
        hf_dataset_images("x/y", load_dataset=lambda name, split: FakeDS(), cache_dir=tmp_path)


def test_chartqa_train_folder_as_unlabeled_source(tmp_path):
    """The official ChartQA train/ folder: train_human.json + train_augmented.json + png/."""
    (tmp_path / "png").mkdir()
    for name, rows in (("train_human.json", ["a.png", "b.png"]), ("train_augmented.json", ["b.png", "c.png"])):
        (tmp_path / name).write_text(json.dumps([{"imgname": r, "query": "secret?", "label": "42"} for r in rows]))
    uris = benchmark_images("chartqa", str(tmp_path))
    assert uris == [str(tmp_path / "png" / n) for n in ("a.png", "b.png", "c.png")]
