"""level: a loadable HF checkpoint in the Model artifact, training's files on the scratch volume."""

from __future__ import annotations

import os

from kfp.dsl import Dataset, Metrics, Model

from mpa.records import read_jsonl
from mpa_kfp.components.training.level import level


def test_checkpoint_is_the_model_artifact(toy_checkpoint):
    ckpt = toy_checkpoint
    assert os.path.isfile(f"{ckpt.path}/config.json")
    assert any(p.endswith(".safetensors") for p in os.listdir(ckpt.path))
    assert ckpt.metadata["framework"] == "transformers"


def test_training_work_goes_to_the_scratch_volume(toy_spec, toy_parity, tmp_path, monkeypatch):
    spec, _ = toy_spec
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    seen = []
    import mpa.orchestrate.kubeflow.steps as steps

    real = steps.scratch_dir
    monkeypatch.setattr(steps, "scratch_dir", lambda prefix: seen.append(real(prefix)) or seen[-1])
    monkeypatch.setenv("MPA_SCRATCH", str(scratch))
    ckpt = Model(uri=str(tmp_path / "ckpt"))
    metrics = Metrics(uri=str(tmp_path / "metrics"))
    uri = level.python_func(run_spec=Dataset(uri=str(spec)), parity=Dataset(uri=str(toy_parity)), checkpoint=ckpt,
                            train_log=Dataset(uri=str(tmp_path / "log")), train_metrics=metrics)
    assert uri == ckpt.uri and seen and seen[0].parent == scratch and not seen[0].exists()
    assert list(read_jsonl(tmp_path / "log" / "train_log.jsonl")) and metrics.metadata
    monkeypatch.setenv("MPA_SCRATCH", str(tmp_path / "not-mounted"))  # the local runner mounts no volumes
    assert steps.scratch_dir("x").parent != tmp_path / "not-mounted"
