"""The toy world: rendering, oracle, dataset writers, grading, task registration, CLI."""

from __future__ import annotations

import json
import random

import pytest

from mpa.toyworld import world as W
from mpa.toyworld.data import make_testset, make_unlabeled
from mpa.toyworld.grading import grade_annotation, scene_for_image
from mpa.toyworld.world import Item, Scene, oracle_answer, parse_question, render, sample_scene


def test_render_is_deterministic_and_grid_sized():
    s1 = sample_scene(random.Random(5))
    s2 = sample_scene(random.Random(5))
    assert s1 == s2
    a, b = render(s1), render(Scene.from_dict(json.loads(json.dumps(s1.to_dict()))))
    assert a.size == (84, 84) and a.mode == "RGB"
    assert a.tobytes() == b.tobytes()
    assert render(sample_scene(random.Random(6))).tobytes() != a.tobytes()


def test_every_cell_content_is_visible_in_its_cell():
    for fam in W.FAMILIES:
        scene = sample_scene(random.Random(1), fam, min_items=6, max_items=6)
        img = render(scene)
        occupied = {it.cell for it in scene.items}
        for cell in range(9):
            x0, y0 = (cell % 3) * 28, (cell // 3) * 28
            px = {img.getpixel((x, y)) for x in range(x0 + 3, x0 + 25) for y in range(y0 + 3, y0 + 26)}
            assert (px != {(255, 255, 255)}) == (cell in occupied)


def _truth(scene: Scene, qtype: str, arg: str | None) -> str:
    """An independent statement of each template's meaning."""
    if qtype == "chart_value":
        return str(next(i.value for i in scene.items if i.colour == arg))
    if qtype == "chart_max":
        return max(scene.items, key=lambda i: i.value).colour
    if qtype == "chart_min":
        return min(scene.items, key=lambda i: i.value).colour
    if qtype in ("chart_count", "text_count"):
        return str(len(scene.items))
    if qtype == "text_word":
        return next(i.word for i in scene.items if i.colour == arg)
    if qtype == "text_colour":
        return next(i.colour for i in scene.items if i.word == arg)
    raise AssertionError(qtype)


def test_oracle_answers_every_template_correctly():
    rng = random.Random(0)
    seen = set()
    for _ in range(300):
        scene = sample_scene(rng)
        for qtype in W.QTYPES_BY_FAMILY[scene.family]:
            q = W.make_question(scene, qtype, rng)
            parsed = parse_question(q)
            assert parsed is not None and parsed[0] == qtype
            assert oracle_answer(scene, q) == _truth(scene, qtype, parsed[1])
            seen.add(qtype)
    assert seen == set(W.QTYPES)
    # every concrete template question parses to its type
    assert all(parse_question(q) is not None for q in W.all_questions())


def test_oracle_tolerates_surface_variation_and_rejects_bad_questions():
    chart = Scene("chart", [Item(0, "red", value=3), Item(4, "blue", value=5), Item(8, "green", value=1)])
    text = Scene("text", [Item(1, "red", word="taxi"), Item(2, "yellow", word="stop")])
    assert oracle_answer(chart, "what is the value of the RED bar") == "3"
    assert oracle_answer(chart, "  Which bar is the tallest ?") == "blue"
    assert oracle_answer(chart, "Which bar is the highest?") == "blue"
    assert oracle_answer(chart, "Which bar is the shortest?") == "green"
    assert oracle_answer(chart, "How many bars are there?") == "3"
    assert oracle_answer(text, "What word is on the yellow sign?") == "stop"
    assert oracle_answer(text, "What color is the sign that says taxi?") == "red"
    assert oracle_answer(text, "How many signs are there?") == "2"
    assert oracle_answer(chart, "What is the value of the purple bar?") is None  # absent colour
    assert oracle_answer(chart, "How many signs are there?") is None  # wrong family
    assert oracle_answer(text, "What colour is the sign that says cafe?") is None  # absent word
    assert oracle_answer(chart, "What is the value of the") is None  # malformed
    assert oracle_answer(chart, "Why is the sky blue?") is None
    tie = Scene("chart", [Item(0, "red", value=3), Item(1, "blue", value=3)])
    assert oracle_answer(tie, "Which bar is the tallest?") is None


def test_sampled_charts_have_unique_extremes():
    rng = random.Random(2)
    for _ in range(200):
        s = sample_scene(rng, "chart")
        vals = [i.value for i in s.items]
        assert vals.count(max(vals)) == 1 and vals.count(min(vals)) == 1
        assert len({i.colour for i in s.items}) == len(s.items)


def test_grade_annotation():
    text = Scene("text", [Item(1, "red", word="taxi"), Item(2, "yellow", word="stop")])
    assert grade_annotation(text, "What word is on the red sign?", "Taxi.") is True
    assert grade_annotation(text, "What word is on the red sign?", "stop") is False
    assert grade_annotation(text.to_dict(), "How many signs are there?", "two") is True
    assert grade_annotation(text, "What word is on the blue sign?", "taxi") is None
    assert grade_annotation(text, "Is it raining?", "no") is None


def test_make_unlabeled_keeps_labels_out_of_images(tmp_path):
    out = make_unlabeled(tmp_path / "u", 12, seed=3)
    files = sorted((out / "images").iterdir())
    assert len(files) == 12 and all(f.suffix == ".png" for f in files)
    assert (out / "truth.jsonl").is_file()
    recs = [json.loads(line) for line in (out / "truth.jsonl").read_text().splitlines()]
    assert {r["file"] for r in recs} == {f.name for f in files}
    assert {r["scene"]["family"] for r in recs} == {"chart", "text"}
    from PIL import Image

    f0 = files[0]
    scene = scene_for_image(f0)
    assert scene is not None
    assert Image.open(f0).convert("RGB").tobytes() == render(scene).tobytes()
    # deterministic
    out2 = make_unlabeled(tmp_path / "u2", 12, seed=3)
    assert (out2 / "truth.jsonl").read_text() == (out / "truth.jsonl").read_text()


def test_make_testset_is_textvqa_format(tmp_path):
    out = make_testset(tmp_path / "t", 14, seed=9)
    ann = json.loads((out / "annotations.json").read_text())
    assert ann["dataset_name"] == "toyvqa"
    data = ann["data"]
    assert len(data) == 14
    assert {d["question_type"] for d in data} == set(W.QTYPES)
    for d in data:
        assert set(d) >= {"question_id", "question", "image_id", "answers", "question_type"}
        assert len(d["answers"]) == 10 and len(set(d["answers"])) == 1
        img = out / "images" / f"{d['image_id']}.png"
        assert img.is_file()
        assert oracle_answer(scene_for_image(img), d["question"]) == d["answers"][0]


def test_toyvqa_task_is_registered():
    from mpa.tasks import get_task, task_names

    assert "toyvqa" in task_names()
    task = get_task("toyvqa")
    assert task.metric == "vqa" and task.max_answer_words == 3
    assert "Question:" in task.pa_prompt and "Answer:" in task.pa_prompt


def test_cli_make_data(tmp_path):
    from typer.testing import CliRunner

    from mpa.cli.toyworld import app

    r = CliRunner().invoke(app, ["make-data", "--out", str(tmp_path / "d"), "--n", "4", "--kind", "test"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "d" / "annotations.json").is_file()
    r = CliRunner().invoke(app, ["train", "--role", "nope", "--out", str(tmp_path / "x")])
    assert r.exit_code != 0


@pytest.mark.parametrize("qtype", W.QTYPES)
def test_make_question_matches_family(qtype):
    fam = W.TEMPLATES[qtype][0]
    other = "text" if fam == "chart" else "chart"
    with pytest.raises(ValueError):
        W.make_question(sample_scene(random.Random(0), other), qtype, random.Random(0))


def test_unanswerable_questions_are_well_formed_but_unanswerable():
    rng = random.Random(4)
    for _ in range(100):
        scene = sample_scene(rng, max_items=5)
        q = W.make_unanswerable_question(scene, rng)
        assert q is not None and parse_question(q) is not None
        assert oracle_answer(scene, q) is None
    full = sample_scene(random.Random(0), "chart", min_items=6, max_items=6)
    assert W.make_unanswerable_question(full, rng) is None


def test_garbled_questions_are_unanswerable_and_cover_the_teachers_failure_modes():
    rng = random.Random(5)
    kinds = set()
    for _ in range(300):
        scene = sample_scene(rng)
        q = W.make_garbled_question(scene, rng)
        assert q.endswith("?") and oracle_answer(scene, q) is None
        kinds.add("other family" if parse_question(q) is not None else "malformed")
    assert kinds == {"other family", "malformed"}


def test_ask_in_other_words_answers_with_the_oracle_and_renames():
    from mpa.toyworld.train import ask_in_other_words

    scene = Scene("text", [Item(0, "red", word="taxi"), Item(4, "blue", word="stop")])
    rng = random.Random(0)
    for _ in range(20):
        q, a = ask_in_other_words(scene, "text_word", "Lis le panneau {colour}.", {"red": "rouge"}, rng)
        assert (q, a) in {("Lis le panneau rouge.", "taxi"), ("Lis le panneau blue.", "stop")}
        q, a = ask_in_other_words(scene, "text_colour", "Where is {word}?", {}, rng)
        assert (q, a) in {("Where is taxi?", "red"), ("Where is stop?", "blue")}


def test_testset_loads_with_the_engine_textvqa_loader(tmp_path):
    from pathlib import Path

    from mpa.data.benchmarks import load_benchmark

    out = make_testset(tmp_path / "t", 7, seed=2)
    samples = load_benchmark("textvqa", str(out / "annotations.json"), images=str(out / "images"))
    assert len(samples) == 7
    assert all(Path(str(s.image)).is_file() for s in samples)
    assert {s.qtype for s in samples} == set(W.QTYPES)
