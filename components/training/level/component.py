"""level (PL): fine-tune the student on the parity set (answer-token loss)."""

# No ``from __future__ import annotations``: KFP reads the annotations when it builds the component.
from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from mpa.orchestrate.kubeflow.settings import DEFAULT_CPU_IMAGE


@dsl.component(base_image=DEFAULT_CPU_IMAGE, install_kfp_package=False)
def level(run_spec: Input[Dataset], parity: Input[Dataset], checkpoint: Output[Model], train_log: Output[Dataset],
          train_metrics: Output[Metrics]) -> str:
    """PL on the merged parity set; returns the checkpoint's URI (what register registers).

    Args:
        run_spec: The prepare step's output.
        parity: The merge step's output.
        checkpoint: Output: the aligned student, a Hugging Face checkpoint (safetensors + processor).
        train_log: Output: train_log.jsonl and level_summary.json.
        train_metrics: Output: loss, steps, samples, seconds.
    """
    from mpa.orchestrate.kubeflow.steps import train_student

    return train_student(run_spec.path, parity.path, checkpoint, train_log.path, train_metrics)
