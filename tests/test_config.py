import pytest

from mpa.config import ConfigError, load_config, parse_config

BASE = {"teacher": {"model": "t"}, "student": {"model": "s"}, "data": {"images": "imgs"}}


def test_defaults_follow_the_paper():
    from mpa.config import match_rule_for

    cfg = parse_config(BASE)
    assert cfg.identify.match is None and match_rule_for(cfg) == "vqa"  # unset: TextVQA's own rule
    assert cfg.train.epochs == 1
    assert cfg.train.lora is False
    assert cfg.annotate.temperature > 0  # greedy collapses question diversity


def test_invalid_fields_are_named_in_one_message():
    bad = {**BASE, "identify": {"match": "fuzzy"}, "train": {"epochs": -1}}
    with pytest.raises(ConfigError) as exc:
        parse_config(bad, "run.yaml")
    msg = str(exc.value)
    assert "run.yaml" in msg and "identify.match" in msg and "train.epochs" in msg
    assert "\n" not in msg


def test_unknown_key_is_rejected():
    with pytest.raises(ConfigError, match="teacher.modle"):
        parse_config({**BASE, "teacher": {"modle": "x", "model": "t"}})


def test_unknown_task_lists_the_choices():
    with pytest.raises(ConfigError, match="unknown task 'nope'.*chartqa"):
        parse_config({**BASE, "task": {"name": "nope"}})


def test_custom_task_needs_a_prompt_file(tmp_path):
    with pytest.raises(ConfigError, match="prompt file"):
        parse_config({**BASE, "task": {"name": "custom"}})
    prompt = tmp_path / "p.txt"
    prompt.write_text("Write a question about the logo.\nQuestion: ... Answer: ...")
    cfg = parse_config({**BASE, "task": {"name": "custom", "prompt_file": str(prompt)}})
    assert cfg.task.name == "custom"


def test_load_config_with_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("teacher: {model: t}\nstudent: {model: s}\ndata: {images: imgs}\n")
    cfg = load_config(path, {"train.lora": True, "identify.match": "anls"})
    assert cfg.train.lora and cfg.identify.match == "anls"


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("teacher: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
