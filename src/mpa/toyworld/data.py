"""Dataset writers: unlabeled toy images (truth kept apart) and a labeled TextVQA-format test set."""

from __future__ import annotations

import json
import random
from pathlib import Path

from mpa.toyworld.world import FAMILIES, QTYPES, TEMPLATES, make_question, oracle_answer, render, sample_scene


def make_unlabeled(out_dir: str | Path, n: int, seed: int = 0) -> Path:
    """Write ``n`` images to ``out_dir/images/*.png`` and their scenes to ``out_dir/truth.jsonl``.

    ``images/`` holds pixels only: no labels beside them, so a pipeline reading it is label-free.
    """
    out = Path(out_dir)
    img_dir = out / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"unlabeled-{seed}")
    with open(out / "truth.jsonl", "w", encoding="utf-8") as f:
        for i in range(n):
            scene = sample_scene(rng, FAMILIES[i % len(FAMILIES)])
            name = f"toy_{seed}_{i:05d}.png"
            render(scene).save(img_dir / name)
            f.write(json.dumps({"file": name, "scene": scene.to_dict()}) + "\n")
    return out


def make_testset(out_dir: str | Path, n: int, seed: int = 1000, qtypes: list[str] | None = None) -> Path:
    """Write a held-out labeled test set in TextVQA v0.5.1 format, balanced over question types.

    ``out_dir/annotations.json`` = ``{"dataset_name": "toyvqa", "data": [{question_id, question,
    image_id, answers: [a]*10, question_type}]}``; images at ``out_dir/images/{image_id}.png``;
    ``out_dir/truth.jsonl`` maps each image to its scene.
    """
    out = Path(out_dir)
    img_dir = out / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"test-{seed}")
    qtypes = qtypes or QTYPES
    data = []
    with open(out / "truth.jsonl", "w", encoding="utf-8") as f:
        for i in range(n):
            qtype = qtypes[i % len(qtypes)]
            scene = sample_scene(rng, TEMPLATES[qtype][0])
            q = make_question(scene, qtype, rng)
            a = oracle_answer(scene, q)
            assert a is not None
            image_id = f"toytest_{seed}_{i:05d}"
            render(scene).save(img_dir / f"{image_id}.png")
            f.write(json.dumps({"file": f"{image_id}.png", "scene": scene.to_dict()}) + "\n")
            data.append(
                {
                    "question_id": i,
                    "question": q,
                    "image_id": image_id,
                    "answers": [a] * 10,
                    "question_type": qtype,
                }
            )
    (out / "annotations.json").write_text(
        json.dumps({"dataset_name": "toyvqa", "dataset_version": "0.5.1", "dataset_split": "test", "data": data}),
        encoding="utf-8",
    )
    return out
