"""Unlabeled image sources for PA, including a benchmark's train split with every label stripped.

The paper's protocol: "exclude all question-answer annotations from the training splits" — PA
sees images only. Sources:

- a directory or an ``s3://`` prefix (:func:`mpa.data.images.list_image_files`);
- ``bench:<name>:<annotations>[:<images>]`` — the images a benchmark file refers to (TextVQA,
  ST-VQA, ChartQA, OK-VQA official formats, local or ``s3://``). Questions and answers are dropped
  at load time: only de-duplicated image references leave :func:`benchmark_images`;
- ``hf:<dataset id>[:<split>[:<image column>]]`` — a Hugging Face ``datasets`` id (e.g.
  ``hf:lmms-lab/textvqa:train``). Only the image column is read (every other column is removed
  before any row is touched); images are written once as PNG files under a cache directory so
  that records keep a stable file reference and a content hash, like every other source.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from mpa.data.hf_datasets import image_column, png_bytes
from mpa.data.images import ImageSourceError, list_image_files
from mpa.safeio import write_atomic

BENCH_PREFIX = "bench:"
HF_PREFIX = "hf:"


def parse_source(source: str) -> dict[str, Any]:
    """Split a source string into its kind and parts (``dir``, ``s3``, ``bench`` or ``hf``)."""
    if source.startswith(BENCH_PREFIX):
        parts = source[len(BENCH_PREFIX) :]
        name, _, rest = parts.partition(":")
        if not name or not rest:
            raise ImageSourceError(f"bad benchmark source {source!r}: use bench:<name>:<annotations>[:<images>]")
        ann, images = _split_images(rest)
        return {"kind": "bench", "name": name, "annotations": ann, "images": images}
    if source.startswith(HF_PREFIX):
        dataset, split, column = ([*source[len(HF_PREFIX) :].split(":"), None, None])[:3]
        if not dataset:
            raise ImageSourceError(f"bad dataset source {source!r}: use hf:<dataset id>[:<split>[:<image column>]]")
        return {"kind": "hf", "dataset": dataset, "split": split or "train", "column": column}
    return {"kind": "s3" if source.startswith("s3://") else "dir", "path": source}


def _split_images(rest: str) -> tuple[str, str | None]:
    """``<annotations>[:<images>]``, where either may be an ``s3://`` URI (whose ``:`` is not a separator)."""
    marker = rest.find(":", rest.find("s3://") + 5 if rest.startswith("s3://") else 0)
    if marker == -1:
        return rest, None
    return rest[:marker], rest[marker + 1 :] or None


def benchmark_images(
    name: str,
    annotations: str,
    *,
    images: str | None = None,
    questions: str | None = None,
    max_images: int | None = None,
) -> list[str]:
    """Sorted, de-duplicated image references of a benchmark split; no question or answer leaves here."""
    from mpa.data.benchmarks import load_benchmark

    samples = load_benchmark(name, annotations, questions=questions, images=images)
    uris = sorted({s.image for s in samples})
    del samples  # labels are dropped here: only image references are returned
    if not uris:
        raise ImageSourceError(f"the {name} file {annotations} refers to no images")
    return uris[:max_images] if max_images else uris


def hf_dataset_images(
    dataset: str,
    split: str = "train",
    column: str | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    max_images: int | None = None,
    load_dataset: Any = None,
) -> list[str]:
    """Write the images of a ``datasets`` split to PNG files (once) and return their paths.

    ``column`` defaults to the first column of ``Image`` type (else one named ``image``). All other
    columns — questions, answers, OCR tokens — are removed before rows are read.
    """
    if load_dataset is None:
        try:
            from datasets import load_dataset
        except ImportError as exc:
            raise ImageSourceError(f"reading hf:{dataset} needs the `datasets` package: pip install datasets") from exc
    ds = load_dataset(dataset, split=split)
    column = column or image_column(ds)
    if column not in ds.column_names:
        raise ImageSourceError(f"hf:{dataset}:{split} has no column {column!r} (columns: {ds.column_names})")
    ds = ds.remove_columns([c for c in ds.column_names if c != column])
    root = Path(cache_dir or Path(os.environ.get("MPA_CACHE", "~/.cache/mpa")).expanduser() / "hf_images")
    key = hashlib.sha256(f"{dataset}\n{split}\n{column}".encode()).hexdigest()[:16]
    out = root / key
    out.mkdir(parents=True, exist_ok=True)
    n = len(ds) if max_images is None else min(len(ds), max_images)
    paths = []
    seen: set[str] = set()
    for i in range(n):
        img = ds[i][column]
        if img is None:
            continue
        data = png_bytes(img)
        digest = hashlib.sha256(data).hexdigest()
        if digest in seen:  # several questions per image: one image file
            continue
        seen.add(digest)
        path = out / f"{digest[:20]}.png"
        if not path.exists():
            write_atomic(path, data)
        paths.append(str(path))
    if not paths:
        raise ImageSourceError(f"hf:{dataset}:{split} has no images in column {column!r}")
    return sorted(paths)


def list_images(
    source: str,
    max_images: int | None = None,
    *,
    questions: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> list[str]:
    """Sorted image references for any source string: a directory, an ``s3://`` prefix, or a labeled dataset
    whose labels are dropped at load time (``bench:…``, ``hf:…``; see the module docstring)."""
    spec = parse_source(source)
    if spec["kind"] == "bench":
        return benchmark_images(
            spec["name"], spec["annotations"], images=spec["images"], questions=questions, max_images=max_images
        )
    if spec["kind"] == "hf":
        return hf_dataset_images(
            spec["dataset"], spec["split"], spec["column"], cache_dir=cache_dir, max_images=max_images
        )
    return list_image_files(source, max_images)


def materialize(
    source: str, out_dir: str | os.PathLike, max_images: int | None = None, *, questions: str | None = None
) -> Path:
    """Make any source a plain image directory PA can read (``data.images``): symlinks to local files,
    copies of ``s3://`` objects; labels never reach it. Returns ``out_dir``."""
    from mpa import storage

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for i, uri in enumerate(list_images(source, max_images, questions=questions)):
        name = f"{i:06d}_{Path(uri.rstrip('/').rsplit('/', 1)[-1]).name}"
        dest = out / name
        if dest.exists() or dest.is_symlink():
            continue
        if storage.is_s3(uri):
            write_atomic(dest, storage.read_bytes(uri))
        elif Path(uri).exists():
            dest.symlink_to(Path(uri).resolve())
        else:
            raise ImageSourceError(f"image listed by {source} not found: {uri}")
    return out
