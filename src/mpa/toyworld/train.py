"""Train the toy teacher and student from scratch: stock Qwen2-VL checkpoints, deterministic seeds.

Recipe (measured on CPU; every variant tried is in NOTES.md beside this file):

* one visual token per 28×28 cell (84×84 images, ``min_pixels = max_pixels = 84*84``);
* an auxiliary per-cell classification loss on the vision tower's merged outputs (linear heads
  for kind / colour / value / glyph of every cell; training only, never saved), so the vision
  tower learns the cell contents;
* a higher learning rate for the vision tower (and the aux heads), linear warm-up, cosine decay.

Batches are built with :func:`mpa.vlm.hf.encode_for_training` and the prompts the engine sends
(``task.answer_prompt(q)`` for answering, ``task.pa_prompt`` for pseudo-annotation with target
``"Question: <q> Answer: <a>"``), so the checkpoints respond to exactly what the engine sends.

The teacher learns every question type and PA (and, in later stages, to answer ``none`` to
questions about absent items and to garbled questions). The student is smaller and learns the
sign-reading types only in other words than the task's (``RoleSpec.templates``), so it has a real,
measurable gap on the task's questions that MPA can close.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from mpa.tasks import TOYVQA
from mpa.toyworld.world import (
    COLOUR_NAMES,
    FAMILIES,
    N_CELLS,
    QTYPES,
    TEMPLATES,
    UNANSWERABLE,
    WORDS,
    Scene,
    all_questions,
    make_garbled_question,
    make_question,
    make_unanswerable_question,
    normalize_answer,
    oracle_answer,
    render,
    sample_scene,
)

log = logging.getLogger(__name__)

IMAGE_PIXELS = 84 * 84
VOCAB_SIZE = 600


@dataclass
class RoleSpec:
    """Architecture and data mix of one role."""

    hidden_size: int
    num_layers: int
    num_heads: int
    vision_embed_dim: int
    vision_depth: int
    qtype_weights: dict[str, float] = field(default_factory=dict)  # default 1.0 per type
    pa_fraction: float = 0.0  # share of samples that train pseudo-annotation
    pa_start: float = 0.0  # PA samples join after this fraction of the steps (curriculum)
    unanswerable_fraction: float = 0.0  # questions about absent items, answered "none"
    garbled_fraction: float = 0.0  # garbled or other-family questions, answered "none"
    steps: int = 1000
    # question types this role learns in other words than the world's templates (qtype -> template
    # with ``{colour}``/``{word}``): the skill is learned, the task's question form is not
    templates: dict[str, str] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)  # colour/word -> how ``templates`` name it


_TEACHER = RoleSpec(
    128,
    3,
    4,
    64,
    2,
    pa_fraction=0.25,
    pa_start=0.3,
    steps=8000,
    qtype_weights={"chart_value": 2.0, "text_word": 1.5, "text_colour": 1.5},
)

ROLES: dict[str, RoleSpec] = {
    "teacher": _TEACHER,
    # The student can read the signs, but learned it from other question forms than the task's (as a
    # small VLM that can read text yet fails a benchmark's questions): a real gap on text_word and
    # text_colour that a few hundred parity samples in the task's own wording can close.
    "student": RoleSpec(
        96,
        3,
        4,
        48,
        2,
        qtype_weights={"text_word": 1.5, "text_colour": 1.5},
        steps=5000,
        templates={"text_word": "Read the {colour} sign.", "text_colour": "Where is {word}? Name its colour."},
    ),
    # stage 2 of the teacher: continue from stage 1 (``--init-from``) and also learn to say "none"
    # about absent items, so PI can drop the teacher's hallucinated pseudo-annotations
    "teacher_refine": replace(_TEACHER, pa_start=0.0, steps=1500, unanswerable_fraction=0.1),
    # stage 3 of the teacher: continue from stage 2 and also answer "none" to garbled questions (its own
    # hot-temperature samples include "< many signs are there?"), so PI drops those pseudo-annotations
    "teacher_garbled": replace(_TEACHER, pa_start=0.0, steps=2500, unanswerable_fraction=0.1, garbled_fraction=0.15),
    # a tiny, fast configuration for tests
    "tiny": RoleSpec(
        32,
        1,
        2,
        16,
        1,
        pa_fraction=0.25,
        steps=20,
        unanswerable_fraction=0.1,
        garbled_fraction=0.1,
        templates={"text_word": "Read the {colour} sign."},
    ),
}


# ----------------------------------------------------------------------------- processor


def tokenizer_corpus() -> list[str]:
    """Every text the models will see: prompts, template questions, answers, PA targets."""
    qs = all_questions()
    answers = COLOUR_NAMES + WORDS + [str(i) for i in range(10)]
    lines: list[str] = []
    for q in qs:
        lines += [q, TOYVQA.answer_prompt(q)] * 4
        lines += [f"Question: {q} Answer: {a}" for a in answers]
    lines += [TOYVQA.pa_prompt] * 20
    lines += answers * 20
    lines += ["user assistant system yes no", TOYVQA.answer_instruction]
    return lines


def build_processor():
    """The shared processor (teacher and student): BPE tokenizer trained on the toy texts."""
    from mpa.devtools.tinymodels import build_qwen2vl_processor

    return build_qwen2vl_processor(
        tokenizer_corpus(), vocab_size=VOCAB_SIZE, min_pixels=IMAGE_PIXELS, max_pixels=IMAGE_PIXELS
    )


# ----------------------------------------------------------------------------- data


@dataclass
class Example:
    scene: Scene
    prompt: str
    target: str
    qtype: str  # question type, or "pa:<qtype>" for a pseudo-annotation sample


def _pick_qtype(rng: random.Random, weights: dict[str, float]) -> str:
    types = QTYPES
    w = [weights.get(t, 1.0) for t in types]
    return rng.choices(types, weights=w, k=1)[0]


def sample_example(rng: random.Random, spec: RoleSpec, with_pa: bool = True) -> Example:
    if with_pa and spec.pa_fraction > 0 and rng.random() < spec.pa_fraction:
        scene = sample_scene(rng)
        qtype = rng.choice([q for q in QTYPES if TEMPLATES[q][0] == scene.family])
        q = make_question(scene, qtype, rng)
        a = oracle_answer(scene, q)
        return Example(scene, TOYVQA.pa_prompt, f"Question: {q} Answer: {a}", f"pa:{qtype}")
    if spec.unanswerable_fraction > 0 and rng.random() < spec.unanswerable_fraction:
        scene = sample_scene(rng, max_items=5)
        q = make_unanswerable_question(scene, rng)
        assert q is not None and oracle_answer(scene, q) is None
        return Example(scene, TOYVQA.answer_prompt(q), UNANSWERABLE, "unanswerable")
    if spec.garbled_fraction > 0 and rng.random() < spec.garbled_fraction:
        scene = sample_scene(rng)
        return Example(scene, TOYVQA.answer_prompt(make_garbled_question(scene, rng)), UNANSWERABLE, "garbled")
    qtype = _pick_qtype(rng, spec.qtype_weights)
    scene = sample_scene(rng, TEMPLATES[qtype][0])
    q = make_question(scene, qtype, rng)
    a = oracle_answer(scene, q)
    assert a is not None
    if qtype in spec.templates:
        q, a = ask_in_other_words(scene, qtype, spec.templates[qtype], spec.names, rng)
    return Example(scene, TOYVQA.answer_prompt(q), a, qtype)


def ask_in_other_words(
    scene: Scene, qtype: str, template: str, names: dict[str, str], rng: random.Random
) -> tuple[str, str]:
    """A ``qtype`` question about a random item of ``scene``, worded by ``template`` (``{colour}`` and
    ``{word}`` filled in, renamed by ``names``), and its oracle answer."""
    it = rng.choice(scene.items)
    answer = oracle_answer(scene, TEMPLATES[qtype][1].format(colour=it.colour, word=it.word))
    if answer is None:
        raise ValueError(f"{qtype} has no answer about {it} in this scene")
    colour, word = names.get(it.colour, it.colour), names.get(str(it.word), str(it.word))
    return template.format(colour=colour, word=word), answer


def cell_labels(scene: Scene) -> dict[str, list[int]]:
    """Per-cell aux targets: kind (0 empty, 1 bar, 2 sign), colour, value, glyph (0 = none)."""
    kind = [0] * N_CELLS
    colour = [0] * N_CELLS
    value = [0] * N_CELLS
    word = [0] * N_CELLS
    for it in scene.items:
        kind[it.cell] = 1 if scene.family == "chart" else 2
        colour[it.cell] = 1 + COLOUR_NAMES.index(it.colour)
        if it.value is not None:
            value[it.cell] = int(it.value)
        if it.word is not None:
            word[it.cell] = 1 + WORDS.index(it.word)
    return {"kind": kind, "colour": colour, "value": value, "word": word}


AUX_CLASSES = {"kind": 3, "colour": 1 + len(COLOUR_NAMES), "value": 6, "word": 1 + len(WORDS)}


class AuxHeads(nn.Module):
    """Linear per-cell classifiers on the merged vision tokens (training only)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.heads = nn.ModuleDict({k: nn.Linear(hidden, n) for k, n in AUX_CLASSES.items()})

    def loss(self, feats: torch.Tensor, labels: dict[str, torch.Tensor]) -> torch.Tensor:
        return sum(nn.functional.cross_entropy(h(feats), labels[k]) for k, h in self.heads.items())


def per_sample_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Causal-LM cross-entropy averaged per sample, then over the batch.

    Every sample weighs the same, so long PA targets do not drown the one-token answers.
    """
    lg = logits[:, :-1].float()
    lab = labels[:, 1:]
    tok = nn.functional.cross_entropy(
        lg.reshape(-1, lg.shape[-1]), lab.reshape(-1), ignore_index=-100, reduction="none"
    ).view(lab.shape)
    mask = (lab != -100).float()
    return ((tok * mask).sum(1) / mask.sum(1).clamp(min=1)).mean()


def make_batch(processor, examples: list[Example]):
    from mpa.vlm.hf import encode_for_training

    images = [render(e.scene) for e in examples]
    batch = encode_for_training(processor, images, [e.prompt for e in examples], [e.target for e in examples])
    labs = [cell_labels(e.scene) for e in examples]
    aux = {k: torch.tensor([v for lab in labs for v in lab[k]]) for k in AUX_CLASSES}
    return batch, aux


# ----------------------------------------------------------------------------- evaluation


def make_eval_items(n_per_type: int, seed: int = 12345, qtypes: list[str] | None = None):
    """Held-out (image, question, answer, qtype) items, balanced over question types."""
    rng = random.Random(f"eval-{seed}")
    items = []
    for qtype in qtypes or QTYPES:
        for _ in range(n_per_type):
            scene = sample_scene(rng, TEMPLATES[qtype][0])
            q = make_question(scene, qtype, rng)
            items.append((render(scene), q, oracle_answer(scene, q), qtype))
    return items


def make_unanswerable_items(n: int, seed: int = 54321):
    """Held-out questions about absent items (expected answer: ``none``)."""
    rng = random.Random(f"unans-{seed}")
    items = []
    while len(items) < n:
        scene = sample_scene(rng, FAMILIES[len(items) % 2], max_items=5)
        q = make_unanswerable_question(scene, rng)
        if q:
            items.append((render(scene), q, UNANSWERABLE, "unanswerable"))
    return items


def make_garbled_items(n: int, seed: int = 65432):
    """Held-out garbled or other-family questions (expected answer: ``none``)."""
    rng = random.Random(f"garbled-{seed}")
    items = []
    for i in range(n):
        scene = sample_scene(rng, FAMILIES[i % 2])
        items.append((render(scene), make_garbled_question(scene, rng), UNANSWERABLE, "garbled"))
    return items


def evaluate(vlm, items, batch_size: int = 64) -> dict[str, float]:
    """Greedy exact-match accuracy (percent) per question type and overall."""
    from mpa.vlm.base import GenParams, VLMRequest

    params = GenParams(max_new_tokens=6, temperature=0.0)
    hits: dict[str, list[int]] = defaultdict(list)
    for i in range(0, len(items), batch_size):
        chunk = items[i : i + batch_size]
        outs = vlm.generate([VLMRequest(im, TOYVQA.answer_prompt(q)) for im, q, _, _ in chunk], params)
        for (_, _, a, t), o in zip(chunk, outs, strict=True):
            hits[t].append(int(normalize_answer(o) == normalize_answer(a)))
    res = {t: 100.0 * sum(v) / len(v) for t, v in hits.items()}
    res["overall"] = 100.0 * sum(sum(v) for v in hits.values()) / sum(len(v) for v in hits.values())
    return res


def pa_sample_stats(vlm, n: int = 64, seed: int = 7) -> dict[str, float]:
    """Sample PA at temperature 1: share parsed, oracle-correct, and the question-type mix."""
    from mpa.toyworld.grading import grade_annotation
    from mpa.toyworld.world import question_type
    from mpa.vlm.base import GenParams, VLMRequest

    rng = random.Random(f"pa-{seed}")
    scenes = [sample_scene(rng, FAMILIES[i % 2]) for i in range(n)]
    outs = vlm.generate(
        [VLMRequest(render(s), TOYVQA.pa_prompt) for s in scenes],
        GenParams(max_new_tokens=24, temperature=1.0, top_p=0.95, seed=seed),
    )
    parsed = correct = 0
    types: dict[str, int] = defaultdict(int)
    for s, o in zip(scenes, outs, strict=True):
        if "Answer:" not in o or not o.startswith("Question:"):
            continue
        q, a = o[len("Question:") :].split("Answer:", 1)
        g = grade_annotation(s, q.strip(), a.strip())
        if g is None:
            continue
        parsed += 1
        correct += int(g)
        types[question_type(q) or "?"] += 1
    return {"parsed": parsed / n, "correct": correct / max(parsed, 1), "types": dict(types)}


# ----------------------------------------------------------------------------- training


def _lr_factor(step: int, warmup: int, total: int, floor: float = 0.1) -> float:
    if step < warmup:
        return (step + 1) / warmup
    prog = (step - warmup) / max(1, total - warmup)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, prog)))


def train(
    role: str,
    out_dir: str | Path,
    steps: int | None = None,
    seed: int = 0,
    *,
    batch_size: int = 32,
    lr: float = 2e-3,
    vision_lr_mult: float = 3.0,
    warmup: int = 100,
    aux_weight: float = 1.0,
    eval_every: int = 500,
    eval_per_type: int = 50,
    log_every: int = 50,
    spec: RoleSpec | None = None,
    init_from: str | Path | None = None,
    snapshots: bool = False,
    stop_after: int | None = None,
) -> dict:
    """Train ``role`` (teacher | student | tiny) from scratch and save a stock checkpoint to ``out_dir``.

    Returns the final metrics (also written to ``out_dir/train_meta.json``). The checkpoint is
    saved at every evaluation, so an interrupted run leaves a usable model behind; with
    ``snapshots`` a copy of each evaluated checkpoint is also kept in ``out_dir/snapshots/step_N``.
    ``stop_after`` ends the run early at that step while keeping the ``steps``-long schedule
    (learning-rate decay, PA curriculum), so a run cut short is reproducible.
    """
    from transformers import AutoModelForImageTextToText

    from mpa.config import ModelConfig
    from mpa.devtools.tinymodels import build_tiny_qwen2vl
    from mpa.vlm.hf import HFVLM

    spec = spec or ROLES[role]
    steps = steps if steps is not None else spec.steps
    out = Path(out_dir)
    torch.manual_seed(seed)
    rng = random.Random(f"train-{role}-{seed}")
    processor = build_processor()
    if init_from is None:
        build_tiny_qwen2vl(
            out,
            hidden_size=spec.hidden_size,
            num_layers=spec.num_layers,
            num_heads=spec.num_heads,
            vision_embed_dim=spec.vision_embed_dim,
            vision_depth=spec.vision_depth,
            seed=seed,
            processor=processor,
        )
        init_from = out
    model = AutoModelForImageTextToText.from_pretrained(str(init_from), dtype=torch.float32)
    model.train()
    hidden = model.config.text_config.hidden_size
    aux = AuxHeads(hidden)
    captured: dict[str, torch.Tensor] = {}
    visual = model.model.visual
    hook = visual.merger.register_forward_hook(lambda _m, _i, o: captured.__setitem__("v", o))

    vis_params = list(visual.parameters())
    vis_ids = {id(p) for p in vis_params}
    other = [p for p in model.parameters() if id(p) not in vis_ids]
    groups = [
        {"params": other, "base": lr},
        {"params": vis_params + list(aux.parameters()), "base": lr * vision_lr_mult},
    ]
    opt = torch.optim.AdamW(groups, lr=lr, weight_decay=0.0, betas=(0.9, 0.98))
    eval_items = make_eval_items(eval_per_type)
    n_params = sum(p.numel() for p in model.parameters())
    log.info(
        "training %s: %d params, %d steps, batch %d, lr %g (vision ×%g)",
        role,
        n_params,
        steps,
        batch_size,
        lr,
        vision_lr_mult,
    )
    history = []
    t0 = time.time()
    run_lm = run_aux = 0.0

    def checkpoint(step: int) -> dict:
        model.eval()
        vlm = HFVLM(ModelConfig(model=str(out), device="cpu"), model=model, processor=processor)
        acc = evaluate(vlm, eval_items)
        if spec.unanswerable_fraction > 0:
            acc["unanswerable"] = evaluate(vlm, make_unanswerable_items(eval_per_type))["unanswerable"]
        if spec.garbled_fraction > 0:
            acc["garbled"] = evaluate(vlm, make_garbled_items(eval_per_type))["garbled"]
        rec = {"step": step, "elapsed_s": round(time.time() - t0, 1), "accuracy": acc}
        if spec.pa_fraction > 0 and step >= spec.pa_start * steps:
            rec["pa"] = pa_sample_stats(vlm)
        model.train()
        history.append(rec)
        log.info("eval %s", json.dumps(rec))
        model.save_pretrained(out)
        processor.save_pretrained(out)
        meta = {
            "role": role,
            "seed": seed,
            "steps": step,
            "schedule_steps": steps,
            "batch_size": batch_size,
            "lr": lr,
            "vision_lr_mult": vision_lr_mult,
            "warmup": warmup,
            "aux_weight": aux_weight,
            "spec": asdict(spec),
            "n_params": n_params,
            "history": history,
        }
        (out / "train_meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        if snapshots:
            snap = out / "snapshots" / f"step_{step}"
            model.save_pretrained(snap)
            processor.save_pretrained(snap)
            (snap / "train_meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        return rec

    try:
        last = min(steps, stop_after or steps)
        for step in range(last):
            f = _lr_factor(step, warmup, steps)
            for g in opt.param_groups:
                g["lr"] = g["base"] * f
            with_pa = step >= spec.pa_start * steps
            examples = [sample_example(rng, spec, with_pa) for _ in range(batch_size)]
            batch, aux_labels = make_batch(processor, examples)
            labels = batch.pop("labels")
            outputs = model(**batch)
            lm_loss = per_sample_loss(outputs.logits, labels)
            aux_loss = aux.loss(captured["v"], aux_labels)
            loss = lm_loss + aux_weight * aux_loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 1.0)
            opt.step()
            run_lm += lm_loss.item()
            run_aux += aux_loss.item()
            if (step + 1) % log_every == 0:
                dt = (time.time() - t0) / (step + 1)
                log.info(
                    "step %d lm %.4f aux %.4f %.0f ms/step",
                    step + 1,
                    run_lm / log_every,
                    run_aux / log_every,
                    1000 * dt,
                )
                run_lm = run_aux = 0.0
            if eval_every and (step + 1) % eval_every == 0 and step + 1 < last:
                checkpoint(step + 1)
        final = checkpoint(last)
    finally:
        hook.remove()
    return final
