"""Hold out part of a benchmark's train split, by image, in the benchmark's own format.

ST-VQA's test answers are not public, so the paper's authors evaluate on a part of the train
split they held out. :func:`split_benchmark` does that reproducibly: the images of the
annotation file are listed in sorted order, shuffled with ``random.Random(seed)``, and the first
``round(holdout × #images)`` go to the holdout; every question follows its image, so no image is
in both files. Both files keep the input's top-level structure (``dataset_name``,
``task_name``, …) with its ``data`` list split, entries in their original order, so the holdout
loads with :func:`mpa.data.benchmarks.load_benchmark` and scores with ``mpa score`` like the
original file. ``split.json`` beside them records the source file's SHA-256, the seed, the
fraction and the counts.

The authors' ST-VQA holdout is a fixed file instead (``train_task_1_onePerImage_val.json``, one question
per image, in the task-1 format): :func:`split_by_file` takes such a file as the holdout, as it is, and
writes the train split without any of its images, so the numbers are scored on the authors' questions.

Formats: ``stvqa`` (task-1 json, image = ``file_path``) and ``textvqa`` (v0.5.1 json, image =
``image_id``).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path
from typing import Any

from mpa import safeio
from mpa.records import write_json_atomic

__all__ = ["SPLIT_KEYS", "split_benchmark", "split_by_file"]

#: benchmark -> the entry key that names an entry's image
SPLIT_KEYS: dict[str, str] = {"stvqa": "file_path", "textvqa": "image_id"}


def _write_json(path: Path, obj: Any) -> None:
    safeio.write_atomic(path, json.dumps(obj, ensure_ascii=False, indent=1) + "\n")  # no-follow, checked, atomic


def split_benchmark(benchmark: str, annotations: str | os.PathLike, holdout: float, seed: int,
                    out: str | os.PathLike) -> dict[str, Any]:
    """Write ``out/train.json`` and ``out/holdout.json`` (split by image); return the summary.

    Raises ValueError for an unknown benchmark, a fraction outside (0, 1), a file that is not
    the benchmark's format, a split that would leave one side empty, or ``out`` being a file;
    FileNotFoundError when ``annotations`` does not exist.
    """
    key = str(benchmark).lower()
    if key not in SPLIT_KEYS:
        raise ValueError(f"cannot split benchmark {benchmark!r}; splittable: {', '.join(SPLIT_KEYS)}")
    if not 0.0 < float(holdout) < 1.0:
        raise ValueError(f"--holdout must be a fraction strictly between 0 and 1, got {holdout}")
    src = Path(annotations)
    if not src.is_file():
        raise FileNotFoundError(f"annotation file not found: {src}")
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out must be a directory, but {out_dir} is a file")
    raw, doc, images = _read_doc(src, key)
    unique = sorted(set(images))
    n_hold = round(float(holdout) * len(unique))
    if n_hold == 0 or n_hold == len(unique):
        raise ValueError(
            f"--holdout {holdout} of {len(unique)} image(s) leaves "
            f"{'the holdout' if n_hold == 0 else 'the train split'} empty"
        )
    order = list(unique)
    random.Random(seed).shuffle(order)
    held = set(order[:n_hold])
    train_data = [e for e, img in zip(doc["data"], images, strict=True) if img not in held]
    hold_data = [e for e, img in zip(doc["data"], images, strict=True) if img in held]
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_json(out_dir / "train.json", {**doc, "data": train_data})
    _write_json(out_dir / "holdout.json", {**doc, "data": hold_data})
    summary = {
        "benchmark": key,
        "source": str(src),
        "source_sha256": hashlib.sha256(raw).hexdigest(),
        "holdout": float(holdout),
        "seed": int(seed),
        "images": {"train": len(unique) - n_hold, "holdout": n_hold},
        "questions": {"train": len(train_data), "holdout": len(hold_data)},
        "train": str(out_dir / "train.json"),
        "holdout_file": str(out_dir / "holdout.json"),
    }
    write_json_atomic(out_dir / "split.json", summary)
    return summary


def _read_doc(path: Path, key: str) -> tuple[bytes, dict[str, Any], list[str]]:
    """(raw bytes, the JSON object, each entry's image) of an annotation file in ``key``'s format."""
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    raw = path.read_bytes()
    try:
        doc = json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise ValueError(f"{path}: expected a JSON object with a 'data' list ({key} format)")
    image_key = SPLIT_KEYS[key]
    images = []
    for i, entry in enumerate(doc["data"]):
        if not isinstance(entry, dict) or image_key not in entry:
            raise ValueError(f"{path}: entry {i} has no {image_key!r} (the image it asks about)")
        images.append(str(entry[image_key]))
    return raw, doc, images


def split_by_file(benchmark: str, annotations: str | os.PathLike, holdout_file: str | os.PathLike,
                  out: str | os.PathLike) -> dict[str, Any]:
    """A fixed holdout: ``out/holdout.json`` is ``holdout_file`` as it is (its questions, its order),
    ``out/train.json`` the train file without any question about one of its images; returns the summary
    (also in ``out/split.json``, with both files' SHA-256).

    Raises ValueError for an unknown benchmark, a file not in the benchmark's format, a holdout that
    shares no image with the train file (the wrong pair of files) or ``out`` being a file."""
    key = str(benchmark).lower()
    if key not in SPLIT_KEYS:
        raise ValueError(f"cannot split benchmark {benchmark!r}; splittable: {', '.join(SPLIT_KEYS)}")
    src, fixed = Path(annotations), Path(holdout_file)
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out must be a directory, but {out_dir} is a file")
    raw, doc, images = _read_doc(src, key)
    fixed_raw, fixed_doc, fixed_images = _read_doc(fixed, key)
    held = set(fixed_images)
    unique = set(images)
    shared = held & unique
    if not shared:
        raise ValueError(f"the holdout {fixed} asks about none of the images of {src}: give the train file it "
                         "was drawn from (ST-VQA: train_task_1.json)")
    train_data = [e for e, img in zip(doc["data"], images, strict=True) if img not in held]
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_json(out_dir / "train.json", {**doc, "data": train_data})
    (out_dir / "holdout.json").write_bytes(fixed_raw)  # byte for byte: the authors' file
    summary = {
        "benchmark": key,
        "source": str(src),
        "source_sha256": hashlib.sha256(raw).hexdigest(),
        "holdout_source": str(fixed),
        "holdout_sha256": hashlib.sha256(fixed_raw).hexdigest(),
        "images": {"train": len(unique - held), "holdout": len(held),
                   "holdout_not_in_source": len(held - unique)},
        "questions": {"train": len(train_data), "holdout": len(fixed_doc["data"]),
                      "source_dropped_with_holdout_images": len(doc["data"]) - len(train_data)},
        "train": str(out_dir / "train.json"),
        "holdout_file": str(out_dir / "holdout.json"),
    }
    write_json_atomic(out_dir / "split.json", summary)
    return summary

