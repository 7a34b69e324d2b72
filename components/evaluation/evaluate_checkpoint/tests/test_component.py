"""evaluate_checkpoint: the trained checkpoint is what gets scored."""

from __future__ import annotations

import json

from kfp.dsl import Dataset, Metrics

from mpa_kfp.components.evaluation.evaluate_checkpoint import evaluate_checkpoint


def test_scores_the_checkpoint(toy_spec, toy_checkpoint, tmp_path, monkeypatch):
    spec, _ = toy_spec
    loaded = []
    import mpa.vlm.loader as loader

    real = loader.load_vlm
    monkeypatch.setattr(loader, "load_vlm", lambda cfg: loaded.append(cfg.model) or real(cfg))
    score = evaluate_checkpoint.python_func(run_spec=Dataset(uri=str(spec)), checkpoint=toy_checkpoint,
                                            predictions=Dataset(uri=str(tmp_path / "p")),
                                            metrics=Metrics(uri=str(tmp_path / "m")))
    assert loaded == [toy_checkpoint.path]
    assert score == json.loads((tmp_path / "p" / "score.json").read_text())["score"]
