"""Oracle grading of pseudo-labels: is a generated (question, answer) pair about a toy image right?"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from mpa.toyworld.world import Scene, normalize_answer, oracle_answer


def grade_annotation(scene: Scene | dict, question: str, answer: str) -> bool | None:
    """True/False if the question is a well-formed, answerable template question; None otherwise."""
    if isinstance(scene, dict):
        scene = Scene.from_dict(scene)
    truth = oracle_answer(scene, question)
    if truth is None:
        return None
    return normalize_answer(answer) == normalize_answer(truth)


@lru_cache(maxsize=16)
def _load_truth(truth_path: str, _mtime: float) -> dict[str, dict]:
    out: dict[str, dict] = {}
    with open(truth_path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rec = json.loads(line)
                out[rec["file"]] = rec["scene"]
    return out


def find_truth_file(image_path: str | Path) -> Path:
    """``truth.jsonl`` of a dataset written by :func:`mpa.toyworld.data.make_unlabeled`."""
    p = Path(image_path).resolve()
    for parent in p.parents:
        cand = parent / "truth.jsonl"
        if cand.is_file():
            return cand
    raise FileNotFoundError(f"no truth.jsonl above {image_path}; was it written by mpa.toyworld.data?")


def scene_for_image(image_path: str | Path, truth_path: str | Path | None = None) -> Scene | None:
    """The ground-truth scene of an image file (looked up by file name in truth.jsonl)."""
    tp = Path(truth_path) if truth_path else find_truth_file(image_path)
    table = _load_truth(str(tp.resolve()), tp.stat().st_mtime)
    rec = table.get(Path(image_path).name)
    return Scene.from_dict(rec) if rec is not None else None
