"""register: the aligned student becomes a model version in the MLflow registry."""

# No ``from __future__ import annotations``: KFP reads the annotations when it builds the component.
from kfp import dsl
from kfp.dsl import Dataset, Input

from mpa.orchestrate.kubeflow.settings import DEFAULT_CPU_IMAGE


@dsl.component(base_image=DEFAULT_CPU_IMAGE, install_kfp_package=False)
def register(run_spec: Input[Dataset], checkpoint_uri: str, parity: Input[Dataset], before: Input[Dataset],
             after: Input[Dataset], run_id: str) -> dict:
    """Register the checkpoint stored at ``checkpoint_uri`` (nothing is uploaded again), tagged with its
    lineage, promoted by aliases (champion / challenger); returns the new version.

    Args:
        run_spec: The prepare step's output.
        checkpoint_uri: Where the pipeline stored the aligned checkpoint (the level step's return value).
        parity: The merge step's output (K and the PI counts become tags).
        before: The base student's evaluation output.
        after: The aligned student's evaluation output.
        run_id: The KFP run id (a lineage tag).
    """
    from mpa.orchestrate.kubeflow.steps import register_model

    return register_model(run_spec.path, checkpoint_uri, parity.path, before.path, after.path, run_id=run_id)
