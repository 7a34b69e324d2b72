"""``preset: paper``: one switch for the authors' prompts, decoding, PI rule and reported metric.

Config level end to end: the switch as `--set preset=paper` (load_config's overrides), what it
resolves to, that explicit settings win, and that the stages receive what it resolved to (PA and
PI run on the shipped tiny toy teacher/student, wrapped only to record the requests they got).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mpa.config import PAPER_PRESET, PRESETS, ConfigError, load_config, match_rule_for, parse_config, task_for
from mpa.tasks import load_prompt_set, max_answer_words_for
from mpa.vlm.base import VLM, GenParams, VLMRequest

BASE = {"teacher": {"model": "t"}, "student": {"model": "s"}, "data": {"images": "imgs"}}
DOCS = Path(__file__).resolve().parents[1] / "docs" / "experiments.md"


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_default_preset_is_mpa_and_changes_nothing():
    cfg = parse_config(BASE)
    assert cfg.preset == "mpa" and PRESETS["mpa"] == {}
    assert cfg.task.prompts == "ours" and cfg.annotate.temperature == 1.0 and cfg.annotate.max_new_tokens == 64
    assert match_rule_for(cfg) == "vqa" and cfg.evaluate.metric == "official"
    assert max_answer_words_for(task_for(cfg), cfg.annotate.max_answer_words) is None  # no filter by default


def test_set_preset_paper_gives_prompts_decoding_rule_and_metric_together(tmp_path):
    cfg = load_config(_write(tmp_path, BASE), {"preset": "paper"})  # what `--set preset=paper` passes
    assert cfg.preset == "paper"
    task = task_for(cfg)
    assert task.prompts == "paper" and task.pa_prompt == load_prompt_set("paper").pa_prompts["textvqa"]
    assert task.answer_prompt("what is written?").endswith("Answer the following question in a single word or phrase.")
    a = cfg.annotate
    assert (a.temperature, a.top_p, a.top_k, a.max_new_tokens) == (0.0, 1.0, 0, 128)
    assert max_answer_words_for(task, a.max_answer_words) is None  # no answer-length filter
    assert match_rule_for(cfg) == "contains" and cfg.identify.max_new_tokens == 128
    assert cfg.evaluate.metric == "contains" and cfg.evaluate.max_new_tokens == 128


def test_explicit_settings_win_over_the_preset(tmp_path):
    data = {**BASE, "preset": "paper",
            "annotate": {"temperature": 0.7, "max_new_tokens": 64, "max_answer_words": "task"},
            "task": {"name": "okvqa", "prompts": "ours"}}
    cfg = load_config(_write(tmp_path, data), {"identify.match": "vqa", "evaluate.metric": "official"})
    assert cfg.annotate.temperature == 0.7  # YAML wins
    assert cfg.annotate.max_new_tokens == 64  # even when it equals mpa's own default
    assert max_answer_words_for(task_for(cfg), cfg.annotate.max_answer_words) == 3  # OK-VQA's limit, asked for
    assert cfg.task.prompts == "ours"
    assert match_rule_for(cfg) == "vqa" and cfg.evaluate.metric == "official"  # --set wins
    assert cfg.annotate.top_p == 1.0 and cfg.identify.max_new_tokens == 128  # the rest still from the preset


def test_preset_leaves_prompts_of_tasks_the_paper_does_not_cover():
    cfg = parse_config({**BASE, "preset": "paper", "task": {"name": "toyvqa"}})
    assert cfg.task.prompts == "ours" and match_rule_for(cfg) == "contains"
    with pytest.raises(ConfigError, match="no PA prompt for task 'toyvqa'"):
        parse_config({**BASE, "task": {"name": "toyvqa", "prompts": "paper"}})


def test_unknown_preset_is_named():
    with pytest.raises(ConfigError, match="preset"):
        parse_config({**BASE, "preset": "authors"})


def test_resolved_config_round_trips():
    cfg = parse_config({**BASE, "preset": "paper", "annotate": {"temperature": 0.3}})
    again = parse_config(json.loads(cfg.model_dump_json()))
    assert again == cfg


def test_every_preset_setting_is_documented():
    text = DOCS.read_text(encoding="utf-8")
    assert "preset=paper" in text
    for dotted in PAPER_PRESET:
        assert f"`{dotted}`" in text, f"docs/experiments.md does not explain {dotted}"


class Recording(VLM):
    """A real model, with the requests and decoding settings it was given kept for inspection."""

    def __init__(self, inner: VLM) -> None:
        self.inner, self.model_id, self.calls = inner, inner.model_id, []

    def generate(self, requests: list[VLMRequest], params: GenParams) -> list[str]:
        self.calls.append(([r.prompt for r in requests], params))
        return self.inner.generate(requests, params)


@pytest.fixture(scope="module")
def toy_models():
    from mpa.config import ModelConfig
    from mpa.toyworld import STUDENT_CHECKPOINT, TEACHER_CHECKPOINT
    from mpa.vlm.hf import HFVLM

    return (HFVLM(ModelConfig(model=str(TEACHER_CHECKPOINT), device="cpu")),
            HFVLM(ModelConfig(model=str(STUDENT_CHECKPOINT), device="cpu")))


def test_stages_receive_what_the_preset_resolved(tmp_path, toy_models):
    from mpa.records import write_jsonl_atomic
    from mpa.stages.annotate import annotate_with_config
    from mpa.stages.identify import identify_with_config
    from mpa.toyworld.data import make_unlabeled

    images = make_unlabeled(tmp_path / "u", 3, seed=5) / "images"
    cfg = load_config(_write(tmp_path, {**BASE, "data": {"images": str(images)}, "out": str(tmp_path / "run")}),
                      {"preset": "paper", "cache.enabled": False})
    teacher, student = Recording(toy_models[0]), Recording(toy_models[1])

    annotate_with_config(cfg, teacher, tmp_path / "run" / "annotations.jsonl", show=False)
    prompts, params = teacher.calls[0]
    assert prompts == [load_prompt_set("paper").pa_prompts["textvqa"]] * 3
    assert (params.temperature, params.top_p, params.top_k, params.max_new_tokens) == (0.0, 1.0, 0, 128)

    # PI on pseudo-labels written as the paper's teacher writes them (one long answer, kept: no filter)
    img = sorted(images.glob("*.png"))[0]
    anns = [{"id": f"a{i}", "image": str(img), "image_sha256": "x", "task": "textvqa", "prompt_version": "p",
             "teacher": "t", "question": q, "answer": a, "parse_ok": True}
            for i, (q, a) in enumerate([("What colour is the sign?", "red"),
                                        ("What is written on the sign?", "a long answer of many words")])]
    write_jsonl_atomic(tmp_path / "anns.jsonl", anns)
    teacher.calls.clear()
    summary = identify_with_config(cfg, teacher, student, tmp_path / "anns.jsonl", tmp_path / "pi", show=False)
    assert summary.match_rule == "contains"
    prompts, params = teacher.calls[0]
    assert prompts[0] == "What colour is the sign? Answer the following question in a single word or phrase."
    assert params.greedy and params.max_new_tokens == 128


def test_evaluate_reports_the_preset_headline(tmp_path, toy_models):
    from mpa.data.benchmarks import load_benchmark
    from mpa.stages.evaluate import evaluate
    from mpa.toyworld.data import make_testset

    test = make_testset(tmp_path / "t", 7, seed=3)
    cfg = parse_config({**BASE, "preset": "paper", "task": {"name": "toyvqa"}})
    bench = load_benchmark("textvqa", test / "annotations.json", images=test / "images")
    result = evaluate(model=toy_models[1], benchmark="textvqa", samples=bench, predictions_path=tmp_path / "p.jsonl",
                      max_new_tokens=8, answer_prompt=task_for(cfg).answer_prompt, metric=cfg.evaluate.metric)
    assert result["metric"] == "contains" and result["score"] == result["contains"]
    assert result["official_metric"] == "vqa" and 0.0 <= result["official"] <= 100.0


def test_mpa_run_with_the_paper_preset_in_the_toy_world(tmp_path):
    """`mpa run --set preset=paper` end to end on the shipped toy models (toyvqa keeps its own prompts)."""
    from mpa.orchestrate.local import run_pipeline
    from mpa.toyworld import DEMO_TRAIN
    from mpa.toyworld.data import make_testset, make_unlabeled
    from mpa.toyworld.demo import demo_config

    make_unlabeled(tmp_path / "unlabeled", 24, seed=7)
    make_testset(tmp_path / "test", 14, seed=8)
    raw = demo_config(tmp_path, 24, 14, 7, 1.0)
    del raw["annotate"], raw["identify"]  # the demo's own decoding and rule would win over the preset
    raw["evaluate"].pop("max_new_tokens")
    raw["train"] = {**DEMO_TRAIN, "seed": 7}
    raw["tracking"] = {"enabled": False}
    cfg = load_config(_write(tmp_path, raw), {"preset": "paper"})
    summary = run_pipeline(cfg, show=False)
    assert summary["match_rule"] == "contains" and summary["identify"]["match_rule"] == "contains"
    for key in ("eval_before", "eval_after"):
        result = summary[key]
        assert result["metric"] == "contains" and result["score"] == result["contains"]
        assert result["official_metric"] == "vqa" and "official" in result
    written = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text(encoding="utf-8"))
    assert written["preset"] == "paper" and written["annotate"]["temperature"] == 0.0
    assert written["annotate"]["max_new_tokens"] == 128 and written["identify"]["match"] == "contains"
