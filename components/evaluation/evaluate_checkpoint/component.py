"""evaluate_checkpoint: a trained checkpoint's benchmark score (after alignment)."""

# No ``from __future__ import annotations``: KFP reads the annotations when it builds the component.
from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output

from mpa.orchestrate.kubeflow.settings import DEFAULT_CPU_IMAGE


@dsl.component(base_image=DEFAULT_CPU_IMAGE, install_kfp_package=False)
def evaluate_checkpoint(run_spec: Input[Dataset], checkpoint: Input[Model], before: Input[Dataset],
                        parity: Input[Dataset], predictions: Output[Dataset], metrics: Output[Metrics],
                        report: Output[HTML]) -> float:
    """Score a checkpoint of the run config's student on its benchmark; returns the score. The report
    (the KFP UI's Visualization tab) shows it against the base student, with K and a few parity samples.

    Args:
        run_spec: The prepare step's output.
        checkpoint: A Hugging Face checkpoint of the student (the level step's output).
        before: The base student's evaluation output (evaluate_base's predictions: score.json).
        parity: The merge step's output (the parity set the checkpoint was trained on).
        predictions: Output: predictions.jsonl and score.json.
        metrics: Output: the score and the benchmark's other numbers.
        report: Output: an HTML page: scores before/after, K, parity samples, the before/after chart.
    """
    from mpa.orchestrate.kubeflow.steps import evaluate_and_report

    return evaluate_and_report(run_spec.path, predictions.path, metrics, checkpoint.path, report.path, before.path,
                               parity.path)
