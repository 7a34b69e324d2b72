"""prepare: the run config resolved from ``config`` + run parameters, every image hashed and sharded."""

from __future__ import annotations

import json

import pytest
from kfp.dsl import Dataset

from mpa.config import ConfigError
from mpa.records import read_jsonl
from mpa_kfp.components.data_processing.prepare import prepare


def test_run_spec_holds_the_resolved_config_and_every_image(toy_spec, toy_config):
    spec, shards = toy_spec
    rows = list(read_jsonl(spec / "images.jsonl"))
    assert len(rows) == 8 and all(len(r["sha256"]) == 64 for r in rows)
    assert shards == sorted({r["shard"] for r in rows}) and set(shards) <= {0, 1}
    assert all(isinstance(i, int) for i in shards)
    cfg = json.loads((spec / "config.json").read_text())
    assert cfg["teacher"]["model"] == toy_config["teacher"]["model"] and cfg["task"]["name"] == "toyvqa"
    assert json.loads((spec / "shards.json").read_text())["n_images"] == 8


def test_run_parameters_override_the_config_by_their_field_names(toy_config, tmp_path):
    out = tmp_path / "spec"
    prepare.python_func(run_spec=Dataset(uri=str(out)), resolved_rounds=f"{out}.rounds",
                        shards=3, config=toy_config, train_epochs=2.5,
                        data_max_images=5, tracking_promotion_margin=1.5, identify_match=None)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["train"]["epochs"] == 2.5 and cfg["data"]["max_images"] == 5
    assert cfg["tracking"]["promotion_margin"] == 1.5
    assert cfg["identify"]["match"] == toy_config["identify"]["match"]  # None: the config's value stays
    assert len(list(read_jsonl(out / "images.jsonl"))) == 5


def test_secrets_in_the_run_config_are_refused(toy_config, tmp_path):
    bad = {**toy_config, "storage": {"secret_access_key": "x"}}
    with pytest.raises(ConfigError, match="storage.secret_access_key: credentials never go in run parameters"):
        prepare.python_func(run_spec=Dataset(uri=str(tmp_path / "s")), resolved_rounds=str(tmp_path / "r"),
                            shards=2, config=bad)


def test_a_teacher_that_does_not_match_the_compiled_placement_is_refused(toy_config, tmp_path, monkeypatch):
    monkeypatch.setenv("MPA_TEACHER_IN_POD", "0")  # compiled with teacher_in_pod: false, teacher backend hf
    with pytest.raises(ConfigError, match="compiled with teacher_in_pod: false"):
        prepare.python_func(run_spec=Dataset(uri=str(tmp_path / "s")), resolved_rounds=str(tmp_path / "r"),
                            shards=2, config=toy_config)
    monkeypatch.setenv("MPA_TEACHER_IN_POD", "1")
    with pytest.raises(ConfigError, match="compiled with teacher_in_pod: true"):
        prepare.python_func(run_spec=Dataset(uri=str(tmp_path / "s")), resolved_rounds=str(tmp_path / "r"),
                            shards=2, config=toy_config,
                            teacher_backend="openai")


def test_on_the_kfp_local_runner(toy_config, tmp_path):
    from kfp import local

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    # kfp.local turns an unset Optional[int] into int(None) and fails (a KFP SDK limitation; the backend
    # leaves it unset): give the integer run parameters
    task = prepare(config=toy_config, shards=2, train_epochs=1.0, data_max_images=8, evaluate_max_samples=6, seed=0,
                   rounds=1)
    shards = task.outputs["Output"]
    assert shards == sorted(shards) and set(shards) <= {0, 1}  # kfp.local hands numbers back as floats
    assert task.outputs["resolved_rounds"] == 1  # what the pipeline's If on rounds reads
    rows = list(read_jsonl(f"{task.outputs['run_spec'].path}/images.jsonl"))
    assert len(rows) == 8


def test_the_served_teacher_parameters_point_pa_and_pi_at_a_server(toy_config, tmp_path, monkeypatch):
    """What the pipeline passes when it starts a teacher per run: an openai-backend teacher at the server's
    URL under its served name, accepted by a pipeline compiled with teacher_in_pod: false."""
    monkeypatch.setenv("MPA_TEACHER_IN_POD", "0")
    monkeypatch.setenv("MPA_TEACHER_SERVER", "1")  # what the compiled pipeline sets: the server starts after prepare
    out = tmp_path / "spec"
    url = "http://mpa-teacher-run-1.mpa.svc.cluster.local:8000/v1"
    prepare.python_func(run_spec=Dataset(uri=str(out)), resolved_rounds=f"{out}.rounds",
                        shards=2, config=toy_config, teacher_backend="openai",
                        teacher_served_name="teacher", teacher_openai_base_url=url,
                        teacher_openai_allow_plain_http=True)
    teacher = json.loads((out / "config.json").read_text())["teacher"]
    assert teacher["backend"] == "openai" and teacher["served_name"] == "teacher"
    assert teacher["openai"]["base_url"] == url and teacher["model"] == toy_config["teacher"]["model"]
    assert teacher["openai"]["allow_plain_http"] is True  # PA/PI may send the mpa-openai key there

    from mpa.config import parse_config
    from mpa.vlm.openai_backend import OpenAIVLM

    monkeypatch.setenv("OPENAI_API_KEY", "k")  # the optional mpa-openai Secret is there: the key is accepted
    assert OpenAIVLM(parse_config(json.loads((out / "config.json").read_text())).teacher).served_model == "teacher"


def test_more_rounds_than_the_pipeline_was_compiled_for_are_refused(toy_config, tmp_path, monkeypatch):
    monkeypatch.setenv("MPA_MAX_ROUNDS", "3")
    with pytest.raises(ConfigError, match="rounds is 4, but this pipeline was compiled with max_rounds: 3"):
        prepare.python_func(run_spec=Dataset(uri=str(tmp_path / "s")), resolved_rounds=str(tmp_path / "r"),
                            shards=2, config=toy_config, rounds=4)
    prepare.python_func(run_spec=Dataset(uri=str(tmp_path / "s")), resolved_rounds=str(tmp_path / "r"), shards=2,
                        config=toy_config, rounds=3)
    assert json.loads((tmp_path / "s" / "config.json").read_text())["rounds"] == 3
    assert (tmp_path / "r").read_text() == "3"


def test_the_resolved_rounds_come_from_the_config_when_the_parameter_is_unset(toy_config, tmp_path):
    """The pipeline's If on rounds reads this output: never null, whatever the run parameter."""
    for name, config, want in (("a", {**toy_config, "rounds": 2}, "2"), ("b", toy_config, "1")):
        assert prepare.python_func(run_spec=Dataset(uri=str(tmp_path / name)),
                                   resolved_rounds=str(tmp_path / f"{name}r"), shards=2, config=config)
        assert (tmp_path / f"{name}r").read_text() == want
