"""Delete this run's teacher server (the pipeline's exit handler runs it, whatever happened before)."""

# No ``from __future__ import annotations``: KFP reads the annotations at decoration time.

from kfp import dsl

from mpa.orchestrate.kubeflow.settings import DEFAULT_CPU_IMAGE


@dsl.component(base_image=DEFAULT_CPU_IMAGE, install_kfp_package=False)
def teacher_cleanup(run_id: str, namespace: str = "") -> list:
    """End the run's use of its teacher server; delete it when no other run uses it; nothing there is fine.

    Args:
        run_id: The pipeline run's id (``dsl.PIPELINE_JOB_ID_PLACEHOLDER``), as given to ``teacher_server``.
        namespace: Where the server was created; empty: this pod's own namespace.

    Returns:
        ``Kind/name`` of each object deleted (empty when there was none).
    """
    from mpa.orchestrate.kubeflow.teacher_server import stop_teacher_server

    return stop_teacher_server(run_id, namespace=namespace)
