"""evaluate_base: the base student's score, predictions and metrics."""

from __future__ import annotations

import json

from kfp.dsl import Dataset, Metrics

from mpa.records import read_jsonl
from mpa_kfp.components.evaluation.evaluate_base import evaluate_base


def test_scores_the_base_student(toy_spec, tmp_path):
    spec, _ = toy_spec
    metrics = Metrics(uri=str(tmp_path / "m"))
    score = evaluate_base.python_func(run_spec=Dataset(uri=str(spec)), predictions=Dataset(uri=str(tmp_path / "p")),
                                      metrics=metrics)
    result = json.loads((tmp_path / "p" / "score.json").read_text())
    assert score == result["score"] == metrics.metadata["score"] and result["n"] == 6
    assert len(list(read_jsonl(tmp_path / "p" / "predictions.jsonl"))) == 6
