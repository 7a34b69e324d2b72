"""Word recognition rate (ICDAR2015 cropped words) and text-aware captioning metrics, hand-computed."""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

from mpa.extra_metrics import (
    CaptionSample,
    _tokenize,
    caption_scores,
    evaluate_captions,
    evaluate_words,
    load_caption_references,
    load_icdar2015_words,
    ptb_like_tokenize,
    read_predictions,
    word_recognition_rate,
)


@pytest.fixture
def icdar(tmp_path):
    # the official file starts with a BOM and escapes quotes inside the word
    gt = (
        '\ufeffword_1.png, "Tiredness"\nword_2.png, "JOINT"\nword_3.png, "###"\nword_4.png, "it\'s"\n'
        'word_5.png, "\\"Quote"\n'
    )
    (tmp_path / "gt.txt").write_text(gt, encoding="utf-8")
    for i in range(1, 6):
        Image.new("RGB", (40, 16), (i * 40, 0, 0)).save(tmp_path / f"word_{i}.png")
    return tmp_path


def test_icdar2015_loader(icdar):
    words = load_icdar2015_words(str(icdar / "gt.txt"))
    assert [(w.id, w.word) for w in words] == [
        ("word_1", "Tiredness"),
        ("word_2", "JOINT"),
        ("word_4", "it's"),
        ("word_5", '"Quote'),
    ]
    assert words[0].image == str(icdar / "word_1.png")
    assert len(load_icdar2015_words(str(icdar / "gt.txt"), skip_dont_care=False)) == 5


def test_word_recognition_rate_hand_computed(icdar):
    words = load_icdar2015_words(str(icdar / "gt.txt"))
    preds = {"word_1": "tiredness", "word_2": "JOINT", "word_4": "its"}  # word_5 missing
    r = word_recognition_rate(words, preds)
    assert r["wrr"] == pytest.approx(75.0)  # 3 of 4 after case/punctuation normalisation
    assert r["wrr_exact"] == pytest.approx(25.0)  # only JOINT exactly
    assert r["n"] == 4 and r["n_missing"] == 1


def test_ptb_like_tokenizer():
    assert ptb_like_tokenize("A man's sign reads \"STOP!\" -- don't go.") == "a man 's sign reads stop do n't go"
    assert ptb_like_tokenize("Coca-Cola costs 3.50 (U.S.A.)") == "coca-cola costs 3.50 -lrb- u.s.a. -rrb-"


@pytest.mark.skipif(shutil.which("java") is None, reason="the Stanford PTB tokenizer needs java")
def test_python_tokenizer_agrees_with_stanford_ptb():
    caps = [
        "A man's sign reads \"STOP!\" -- don't go.",
        "The price is 3.50 dollars, at Joe's café (open 24/7).",
        "Coca-Cola bottles; U.S.A. made...",
        "a red sign that says 'EXIT' on it",
    ]
    data = {str(i): [c] for i, c in enumerate(caps)}
    assert _tokenize(data, "python") == _tokenize(data, "ptb")


def test_caption_scores_hand_computed():
    refs = {"1": ["a cat on the mat"], "2": ["a stop sign"], "3": ["two buses"]}
    preds = {"1": "A cat on a rug.", "2": "a stop sign", "3": "two buses"}
    s = caption_scores(refs, preds, tokenizer="python")
    # BLEU-1 (corpus): clipped unigram matches (3 + 3 + 2) / hypothesis length (5 + 3 + 2), brevity penalty 1
    assert s["bleu1"] == pytest.approx(80.0, abs=1e-3)
    # ROUGE-L (mean over images, beta 1.2): image 1 has LCS 3 of 5 both ways -> 0.6; the others 1.0
    assert s["rouge_l"] == pytest.approx(100 * (0.6 + 1 + 1) / 3, abs=1e-3)
    worse = caption_scores(refs, {"1": "a dog", "2": "a bus", "3": "a cat"}, tokenizer="python")
    assert s["cider"] > worse["cider"] >= 0
    assert caption_scores(refs, {}, tokenizer="python")["n_missing"] == 3


def test_caption_loaders(tmp_path):
    data = {
        "data": [
            {"image_id": "img1", "caption_str": "a cat", "reference_strs": ["a cat", "the cat"]},
            {"image_id": "img1", "caption_str": "the cat", "reference_strs": ["a cat", "the cat"]},
            {"image_id": "img2", "caption_str": "a sign"},
        ]
    }
    (tmp_path / "TextCaps_0.1_val.json").write_text(json.dumps(data))
    Image.new("RGB", (8, 8)).save(tmp_path / "img1.png")
    samples = load_caption_references(str(tmp_path / "TextCaps_0.1_val.json"))
    assert {s.id: s.references for s in samples} == {"img1": ["a cat", "the cat"], "img2": ["a sign"]}
    assert samples[0].image.endswith("img1.png") and samples[1].image.endswith("img2.jpg")
    (tmp_path / "refs.jsonl").write_text(json.dumps({"image_id": 7, "references": ["x y"]}) + "\n")
    assert load_caption_references(str(tmp_path / "refs.jsonl"))[0].references == ["x y"]
    (tmp_path / "p.jsonl").write_text('{"image_id": 7, "caption": "x y"}\n{"question_id": 1, "answer": "z"}\n')
    assert read_predictions(str(tmp_path / "p.jsonl")) == {"7": "x y", "1": "z"}


class Scripted:
    model_id = "scripted"

    def __init__(self, answers):
        self.answers = answers

    def generate(self, requests, params):
        return [self.answers.pop(0) for _ in requests]


def test_evaluations_run_a_model_and_resume(icdar, tmp_path):
    words = load_icdar2015_words(str(icdar / "gt.txt"))
    r = evaluate_words(Scripted(["Tiredness", "joint", "x", "y"]), words, tmp_path / "w.jsonl", batch_size=3)
    assert r["wrr"] == 50.0 and r["wrr_exact"] == 25.0
    again = evaluate_words(Scripted([]), words, tmp_path / "w.jsonl")  # resumes: no model call
    assert again["wrr"] == 50.0
    samples = [
        CaptionSample("a", str(icdar / "word_1.png"), ["a red word"]),
        CaptionSample("b", str(icdar / "word_2.png"), ["another word"]),
    ]
    c = evaluate_captions(Scripted(["a red word", "something"]), samples, tmp_path / "c.jsonl", tokenizer="python")
    assert c["n"] == 2 and c["bleu1"] > 0
