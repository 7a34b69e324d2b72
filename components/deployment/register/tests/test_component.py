"""register: an MLflow version whose source is the checkpoint's artifact URI (nothing uploaded)."""

from __future__ import annotations

from kfp.dsl import Dataset, Metrics

from mpa_kfp.components.deployment.register import register
from mpa_kfp.components.evaluation.evaluate_base import evaluate_base


def test_registers_the_artifact_uri(toy_spec, toy_parity, toy_checkpoint, toy_config, tmp_path):
    from mlflow import MlflowClient

    spec, _ = toy_spec
    preds = tmp_path / "preds"
    evaluate_base.python_func(run_spec=Dataset(uri=str(spec)), predictions=Dataset(uri=str(preds)),
                              metrics=Metrics(uri=str(tmp_path / "m")))
    uri = "s3://mpa-pipelines/runs/abc/level/checkpoint"  # where the launcher stored the Model artifact
    version = register.python_func(run_spec=Dataset(uri=str(spec)), checkpoint_uri=uri,
                                   parity=Dataset(uri=str(toy_parity)), before=Dataset(uri=str(preds)),
                                   after=Dataset(uri=str(preds)), run_id="run-123")
    assert version["source"] == uri
    client = MlflowClient(tracking_uri=toy_config["tracking"]["uri"])
    mv = client.get_model_version(version["name"], version["version"])
    assert mv.source == uri
    run = client.get_run(mv.run_id)
    assert run.data.tags["kfp.run_id"] == "run-123"
    assert not client.list_artifacts(run.info.run_id, "checkpoint")  # nothing uploaded again
