"""Tasks: prompt sets (ours / the paper's), answer prompts, each task's PI match rule, the answer filter."""

from __future__ import annotations

import json

import pytest
import yaml

from mpa.config import match_rule_for, parse_config, task_for
from mpa.tasks import PROMPTS_DIR, describe_prompts, get_task, load_prompt_set, max_answer_words_for

BASE = {"teacher": {"model": "t"}, "student": {"model": "s"}, "data": {"images": "imgs"}}
PAPER_TASKS = ["chartqa", "okvqa", "stvqa", "textvqa"]


@pytest.mark.parametrize(
    ("task", "rule"), [("textvqa", "vqa"), ("okvqa", "vqa"), ("stvqa", "anls"), ("chartqa", "relaxed"),
                       ("toyvqa", "vqa")]
)
def test_each_task_owns_its_pi_rule_and_identify_match_overrides_it(task, rule):
    cfg = parse_config({**BASE, "task": {"name": task}})
    assert cfg.identify.match is None and match_rule_for(cfg) == rule
    explicit = parse_config({**BASE, "task": {"name": task}, "identify": {"match": "contains"}})
    assert match_rule_for(explicit) == "contains"


def test_custom_task_matches_with_its_metric(tmp_path):
    prompt = tmp_path / "p.txt"
    prompt.write_text("Ask about the dials.", encoding="utf-8")
    cfg = parse_config({**BASE, "task": {"name": "custom", "prompt_file": str(prompt), "metric": "anls"}})
    assert match_rule_for(cfg) == "anls" and task_for(cfg).pa_prompt == "Ask about the dials."


def test_paper_prompt_set_has_the_citation_and_the_authors_answer_prompt():
    ps = load_prompt_set("paper")
    assert "2509.16633" in ps.citation and "vl2g/MPA" in ps.citation
    assert ps.answer_instruction == "Answer the following question in a single word or phrase."
    assert sorted(ps.pa_prompts) == PAPER_TASKS
    assert ps.pa_prompts["textvqa"] == ps.pa_prompts["stvqa"]  # the authors use one prompt for both
    assert ps.pa_prompts["okvqa"] != ps.pa_prompts["chartqa"]
    for text in ps.pa_prompts.values():
        assert text == text.strip() and "\n                " not in text  # the code's indentation removed
    # the data file says where the text comes from and what was changed on copying
    header = (PROMPTS_DIR / "paper.yaml").read_text(encoding="utf-8")
    assert "MIT" in header and "NOT compared" in header and "separator" in header


def test_paper_task_uses_the_paper_texts_and_keeps_scoring():
    ours, paper = get_task("chartqa"), get_task("chartqa", prompts="paper")
    assert paper.pa_prompt == load_prompt_set("paper").pa_prompts["chartqa"] != ours.pa_prompt
    assert paper.answer_prompt(" What is the highest value? ") == (
        "What is the highest value? Answer the following question in a single word or phrase.")
    assert ours.answer_prompt("What is the highest value?") == (
        "What is the highest value?\nAnswer the question using a single word or phrase.")
    assert (paper.metric, paper.default_match_rule, paper.max_answer_words) == ("relaxed", "relaxed", 5)
    assert paper.prompt_version != ours.prompt_version  # caches never mix the two prompt sets


def test_answer_prompt_keeps_braces_in_questions():
    assert get_task("textvqa", prompts="paper").answer_prompt("What does {x} mean?").startswith("What does {x} mean?")


def test_paper_prompts_for_a_task_the_paper_lacks_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no PA prompt for task 'toyvqa'"):
        get_task("toyvqa", prompts="paper")
    with pytest.raises(ValueError, match="unknown prompt set"):
        get_task("textvqa", prompts="theirs")
    # a custom task keeps its own PA prompt and takes the paper's answer prompt
    prompt = tmp_path / "p.txt"
    prompt.write_text("Ask about the dials.", encoding="utf-8")
    custom = get_task("custom", prompt, "vqa", prompts="paper")
    assert custom.pa_prompt == "Ask about the dials." and custom.answer_instruction.startswith("Answer the following")


def test_describe_prompts_json_shape():
    paper = describe_prompts("paper")
    assert sorted(paper) == PAPER_TASKS
    assert paper["okvqa"]["answer_prompt"] == "{question} Answer the following question in a single word or phrase."
    assert set(paper["okvqa"]) == {"pa_prompt", "answer_prompt"}
    ours = describe_prompts("ours")
    assert {"textvqa", "toyvqa"} <= set(ours)
    assert ours["textvqa"]["answer_prompt"] == "{question}\nAnswer the question using a single word or phrase."


def test_cli_tasks_json_prints_one_object():
    from typer.testing import CliRunner

    from mpa.cli import app

    out = CliRunner().invoke(app, ["tasks", "--prompts", "paper", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert sorted(data) == PAPER_TASKS and data["chartqa"]["pa_prompt"].startswith("The objective is to generate")
    listing = CliRunner().invoke(app, ["tasks"])
    assert "chartqa [metric relaxed, PI match relaxed]" in listing.output


@pytest.mark.parametrize(("task", "configured", "limit"),
                         [("textvqa", None, None), ("textvqa", "task", 5), ("okvqa", "task", 3), ("okvqa", 7, 7)])
def test_answer_length_filter_is_off_by_default_and_can_use_the_tasks_limit(task, configured, limit):
    assert max_answer_words_for(get_task(task), configured) == limit


@pytest.mark.parametrize("bad", [0, -2, "all"])
def test_answer_length_filter_rejects_bad_values(bad):
    from mpa.config import ConfigError

    with pytest.raises(ConfigError, match="max_answer_words"):
        parse_config({**BASE, "annotate": {"max_answer_words": bad}})


def test_prompt_file_is_valid_yaml_with_a_version():
    data = yaml.safe_load((PROMPTS_DIR / "paper.yaml").read_text(encoding="utf-8"))
    assert data["version"] and set(data["tasks"]) == set(PAPER_TASKS)
