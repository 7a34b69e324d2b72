"""evaluate_checkpoint: a trained checkpoint's benchmark score (after alignment)."""

# No ``from __future__ import annotations``: KFP reads the annotations when it builds the component.
from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from mpa.orchestrate.kubeflow.settings import DEFAULT_CPU_IMAGE


@dsl.component(base_image=DEFAULT_CPU_IMAGE, install_kfp_package=False)
def evaluate_checkpoint(run_spec: Input[Dataset], checkpoint: Input[Model], predictions: Output[Dataset],
                        metrics: Output[Metrics]) -> float:
    """Score a checkpoint of the run config's student on its benchmark; returns the score.

    Args:
        run_spec: The prepare step's output.
        checkpoint: A Hugging Face checkpoint of the student (the level step's output).
        predictions: Output: predictions.jsonl and score.json.
        metrics: Output: the score and the benchmark's other numbers.
    """
    from mpa.orchestrate.kubeflow.steps import evaluate_model

    return evaluate_model(run_spec.path, predictions.path, metrics, checkpoint_dir=checkpoint.path)
