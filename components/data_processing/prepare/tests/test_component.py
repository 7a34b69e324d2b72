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
    prepare.python_func(run_spec=Dataset(uri=str(out)), shards=3, config=toy_config, train_epochs=2.5,
                        data_max_images=5, tracking_promotion_margin=1.5, identify_match=None)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["train"]["epochs"] == 2.5 and cfg["data"]["max_images"] == 5
    assert cfg["tracking"]["promotion_margin"] == 1.5
    assert cfg["identify"]["match"] == toy_config["identify"]["match"]  # None: the config's value stays
    assert len(list(read_jsonl(out / "images.jsonl"))) == 5


def test_secrets_in_the_run_config_are_refused(toy_config, tmp_path):
    bad = {**toy_config, "storage": {"secret_access_key": "x"}}
    with pytest.raises(ConfigError, match="storage.secret_access_key: credentials never go in run parameters"):
        prepare.python_func(run_spec=Dataset(uri=str(tmp_path / "s")), shards=2, config=bad)


def test_a_teacher_that_does_not_match_the_compiled_placement_is_refused(toy_config, tmp_path, monkeypatch):
    monkeypatch.setenv("MPA_TEACHER_IN_POD", "0")  # compiled with teacher_in_pod: false, teacher backend hf
    with pytest.raises(ConfigError, match="compiled with teacher_in_pod: false"):
        prepare.python_func(run_spec=Dataset(uri=str(tmp_path / "s")), shards=2, config=toy_config)
    monkeypatch.setenv("MPA_TEACHER_IN_POD", "1")
    with pytest.raises(ConfigError, match="compiled with teacher_in_pod: true"):
        prepare.python_func(run_spec=Dataset(uri=str(tmp_path / "s")), shards=2, config=toy_config,
                            teacher_backend="openai")


def test_on_the_kfp_local_runner(toy_config, tmp_path):
    from kfp import local

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    # kfp.local turns an unset Optional[int] into int(None) and fails (a KFP SDK limitation; the backend
    # leaves it unset): give the integer run parameters
    task = prepare(config=toy_config, shards=2, train_epochs=1.0, data_max_images=8, evaluate_max_samples=6, seed=0)
    shards = task.outputs["Output"]
    assert shards == sorted(shards) and set(shards) <= {0, 1}  # kfp.local hands numbers back as floats
    rows = list(read_jsonl(f"{task.outputs['run_spec'].path}/images.jsonl"))
    assert len(rows) == 8
