"""evaluate_base: the base student's benchmark score (before alignment)."""

# No ``from __future__ import annotations``: KFP reads the annotations when it builds the component.
from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from mpa.orchestrate.kubeflow.settings import DEFAULT_CPU_IMAGE


@dsl.component(base_image=DEFAULT_CPU_IMAGE, install_kfp_package=False)
def evaluate_base(run_spec: Input[Dataset], predictions: Output[Dataset], metrics: Output[Metrics]) -> float:
    """Score the run config's student on its benchmark with the official metric; returns the score.

    Args:
        run_spec: The prepare step's output.
        predictions: Output: predictions.jsonl and score.json.
        metrics: Output: the score and the benchmark's other numbers.
    """
    from mpa.orchestrate.kubeflow.steps import evaluate_model

    return evaluate_model(run_spec.path, predictions.path, metrics)
