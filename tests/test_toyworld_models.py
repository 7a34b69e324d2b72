"""Toy models: a reduced training run the engine loads, and the shipped teacher ≫ student."""

from __future__ import annotations

import json

import pytest

from mpa.config import ModelConfig
from mpa.tasks import TOYVQA
from mpa.toyworld import STUDENT_CHECKPOINT, TEACHER_CHECKPOINT
from mpa.toyworld.train import ROLES, evaluate, make_eval_items, train
from mpa.vlm.base import GenParams, VLMRequest
from mpa.vlm.hf import HFVLM


def test_reduced_training_run_gives_a_checkpoint_the_engine_loads(tmp_path):
    out = tmp_path / "tiny"
    final = train("tiny", out, steps=24, seed=0, batch_size=8, eval_every=0, eval_per_type=1, warmup=4)
    assert final["step"] == 24
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    meta = json.loads((out / "train_meta.json").read_text())
    assert meta["role"] == "tiny" and meta["steps"] == 24
    vlm = HFVLM(ModelConfig(model=str(out), device="cpu"))
    # stock Qwen2-VL, one visual token per cell, and no training-only heads in the checkpoint
    assert type(vlm.model).__name__ == "Qwen2VLForConditionalGeneration"
    assert not any("aux" in k for k in vlm.model.state_dict())
    item = make_eval_items(1, qtypes=["chart_count"])[0]
    batch = vlm.processor(text=["x"], images=[item[0]], return_tensors="pt")
    assert batch["image_grid_thw"].tolist() == [[1, 6, 6]]
    outs = vlm.generate([VLMRequest(item[0], TOYVQA.answer_prompt(item[1]))], GenParams(max_new_tokens=4))
    assert len(outs) == 1 and isinstance(outs[0], str)


def test_training_is_deterministic(tmp_path):
    import torch
    from safetensors.torch import load_file

    for name in ("a", "b"):
        train("tiny", tmp_path / name, steps=3, seed=1, batch_size=4, eval_every=0, eval_per_type=1, warmup=2)
    a = load_file(tmp_path / "a" / "model.safetensors")
    b = load_file(tmp_path / "b" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_cli_train_tiny(tmp_path):
    from typer.testing import CliRunner

    from mpa.cli.toyworld import app

    out = tmp_path / "cli"
    args = ["train", "--role", "tiny", "--out", str(out), "--steps", "4", "--stop-after", "2", "--batch-size", "4"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    meta = json.loads((out / "train_meta.json").read_text())
    assert meta["steps"] == 2 and meta["schedule_steps"] == 4


@pytest.fixture(scope="module")
def shipped():
    for p in (TEACHER_CHECKPOINT, STUDENT_CHECKPOINT):
        assert (p / "model.safetensors").is_file(), f"shipped checkpoint missing: {p}"
    t = HFVLM(ModelConfig(model=str(TEACHER_CHECKPOINT), device="cpu"))
    s = HFVLM(ModelConfig(model=str(STUDENT_CHECKPOINT), device="cpu"))
    return t, s


def test_shipped_checkpoints_share_a_tokenizer_and_are_small(shipped):
    t, s = shipped
    assert t.processor.tokenizer.get_vocab() == s.processor.tokenizer.get_vocab()
    size = sum(f.stat().st_size for p in (TEACHER_CHECKPOINT, STUDENT_CHECKPOINT) for f in p.iterdir())
    assert size < 12 * 2**20
    assert sum(p.numel() for p in s.model.parameters()) < sum(p.numel() for p in t.model.parameters())


def test_shipped_teacher_far_ahead_of_student(shipped):
    t, s = shipped
    items = make_eval_items(10, seed=4242)
    ta, sa = evaluate(t, items), evaluate(s, items)
    assert all(ta[q] >= 90 for q in ta)
    assert ta["overall"] - sa["overall"] >= 15
    gap = list(ROLES["student"].templates)  # the types the student learned in other words
    assert gap and all(ta[q] - sa[q] >= 20 for q in gap)


def test_shipped_teacher_pseudo_annotates_in_the_expected_format(shipped):
    from mpa.toyworld.train import pa_sample_stats

    stats = pa_sample_stats(shipped[0], n=32, seed=3)
    assert stats["parsed"] >= 0.8
    assert len(stats["types"]) >= 4  # temperature 1 gives diverse question types


def test_shipped_student_has_the_skill_in_its_own_words(shipped):
    """The student's gap is the task's question form, not the skill: asked in the wording it was
    trained with, it reads the signs; asked in the task's wording, it fails (the gap MPA closes)."""
    import random

    from mpa.toyworld.train import ask_in_other_words
    from mpa.toyworld.world import TEMPLATES, render, sample_scene

    spec = ROLES["student"]
    rng = random.Random(11)
    items = []
    for qtype, template in spec.templates.items():
        for _ in range(20):
            scene = sample_scene(rng, TEMPLATES[qtype][0])
            q, a = ask_in_other_words(scene, qtype, template, spec.names, rng)
            items.append((render(scene), q, a, qtype))
    own = evaluate(shipped[1], items)
    task = evaluate(shipped[1], make_eval_items(20, seed=11, qtypes=list(spec.templates)))
    assert all(own[q] >= 85 for q in spec.templates)
    assert all(task[q] <= 60 for q in spec.templates)


def test_shipped_teacher_refuses_garbled_questions(shipped):
    from mpa.toyworld.train import make_garbled_items, make_unanswerable_items

    teacher = shipped[0]
    assert evaluate(teacher, make_garbled_items(30, seed=5))["garbled"] >= 80
    assert evaluate(teacher, make_unanswerable_items(30, seed=5))["unanswerable"] >= 90
