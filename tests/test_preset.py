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


def test_a_setting_that_contradicts_the_preset_is_refused_by_name(tmp_path):
    data = {**BASE, "preset": "paper", "annotate": {"temperature": 0.7, "max_new_tokens": 64},
            "task": {"name": "okvqa", "prompts": "ours"}}
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, data), {"identify.match": "vqa"})
    msg = str(err.value)
    for named in ("annotate.temperature=0.7 (paper: 0.0)", "annotate.max_new_tokens=64 (paper: 128)",
                  "task.prompts='ours' (paper: 'paper')", "identify.match='vqa' (paper: 'contains')"):
        assert named in msg  # every contradiction at once, with the preset's value
    assert "preset_except: [task.prompts, annotate.temperature, annotate.max_new_tokens, identify.match]" in msg
    assert "run.yaml" in msg


def test_a_setting_equal_to_the_preset_is_no_contradiction():
    cfg = parse_config({**BASE, "preset": "paper", "annotate": {"temperature": 0, "max_new_tokens": 128},
                        "train": {"adam_betas": [0.9, 0.98]}, "student": {"model": "s", "max_pixels": 401408}})
    assert cfg.annotate.temperature == 0.0 and cfg.train.adam_betas == (0.9, 0.98)


def test_preset_except_keeps_a_deliberate_setting_and_the_rest_of_the_preset():
    data = {**BASE, "preset": "paper", "preset_except": ["identify.match", "annotate.max_answer_words"],
            "task": {"name": "okvqa"}, "annotate": {"max_answer_words": "task"}}
    cfg = parse_config(data)
    assert match_rule_for(cfg) == "vqa"  # unset and excepted: mpa's default, the task's rule
    assert max_answer_words_for(task_for(cfg), cfg.annotate.max_answer_words) == 3  # OK-VQA's limit, asked for
    cfg = parse_config({**data, "identify": {"match": "exact"}})
    assert match_rule_for(cfg) == "exact"  # excepted and set: the config's value
    assert cfg.annotate.temperature == 0.0 and cfg.task.prompts == "paper"  # the rest is the paper's
    with pytest.raises(ConfigError, match="preset_except names train.lora, which preset paper does not set"):
        parse_config({**BASE, "preset": "paper", "preset_except": ["train.lora"]})


def test_paper_preset_sets_resolution_and_the_pl_recipe():
    cfg = parse_config({**BASE, "preset": "paper"})
    for m in (cfg.teacher, cfg.student):
        assert (m.min_pixels, m.max_pixels) == (128 * 28 * 28, 512 * 28 * 28)
    t = cfg.train
    assert (t.lr_schedule, t.warmup_ratio, t.vision_learning_rate, t.adam_betas) == ("cosine", 0.03, 2e-6, (0.9, 0.98))
    assert cfg.annotate.strip_answer_period is False
    task = task_for(cfg)
    # PL trains on the bare question (the authors' "<image>\n{question}"); PI and evaluation keep the instruction
    assert task.train_prompt(" What is written? ") == "What is written?"
    assert task.answer_prompt("What is written?").endswith("single word or phrase.")
    mpa = parse_config(BASE)
    assert (mpa.train.lr_schedule, mpa.train.warmup_ratio, mpa.train.adam_betas) == ("linear", 0.0, (0.9, 0.999))
    assert mpa.annotate.strip_answer_period is True and mpa.student.min_pixels is None
    assert task_for(mpa).train_prompt("q?") == task_for(mpa).answer_prompt("q?")


def test_an_api_teacher_keeps_its_images_as_sent():
    cfg = parse_config({**BASE, "preset": "paper", "teacher": {"model": "gpt-4o", "backend": "openai"}})
    assert cfg.teacher.min_pixels is None and cfg.teacher.max_pixels is None
    assert cfg.student.max_pixels == 401408


def test_the_shipped_example_runs_with_the_preset():
    example = Path(__file__).resolve().parents[1] / "configs" / "example-qwen2vl.yaml"
    cfg = load_config(example, {"preset": "paper"})
    assert cfg.annotate.temperature == 0.0 and match_rule_for(cfg) == "contains"
    assert cfg.student.min_pixels == 100352 and cfg.train.lr_schedule == "cosine"
    assert load_config(example).annotate.temperature == 1.0  # without the preset: mpa's defaults


def test_adam_betas_are_checked():
    with pytest.raises(ConfigError, match="adam_betas must both lie in"):
        parse_config({**BASE, "train": {"adam_betas": [0.9, 1.0]}})


def test_preset_leaves_prompts_of_tasks_the_paper_does_not_cover():
    cfg = parse_config({**BASE, "preset": "paper", "task": {"name": "toyvqa"}})
    assert cfg.task.prompts == "ours" and match_rule_for(cfg) == "contains"
    with pytest.raises(ConfigError, match="no PA prompt for task 'toyvqa'"):
        parse_config({**BASE, "task": {"name": "toyvqa", "prompts": "paper"}})


def test_unknown_preset_is_named():
    with pytest.raises(ConfigError, match="preset"):
        parse_config({**BASE, "preset": "authors"})


def test_resolved_config_round_trips():
    cfg = parse_config({**BASE, "preset": "paper", "preset_except": ["annotate.temperature"],
                        "annotate": {"temperature": 0.3}, "task": {"name": "toyvqa"},
                        "teacher": {"model": "gpt-4o", "backend": "openai"}})
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
    # the toy models see 84x84 images, one token per cell: keep their own resolution, the rest is the paper's
    raw["preset_except"] = ["teacher.min_pixels", "teacher.max_pixels", "student.min_pixels", "student.max_pixels"]
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
    assert written["train"]["lr_schedule"] == "cosine" and written["train"]["adam_betas"] == [0.9, 0.98]
