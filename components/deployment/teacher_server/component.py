"""Start this run's vLLM teacher server on the cluster and hand PA/PI its URL."""

# No ``from __future__ import annotations``: KFP reads the annotations at decoration time.

from kfp import dsl

from mpa.orchestrate.kubeflow.settings import DEFAULT_CPU_IMAGE


@dsl.component(base_image=DEFAULT_CPU_IMAGE, install_kfp_package=False)
def teacher_server(model: str, run_id: str, server: str, namespace: str = "") -> str:
    """Create (or find) the vLLM Deployment + Service serving ``model``, mark the run's use, wait for ``/health``.

    Args:
        model: The teacher model the server loads (HF id or a path the pod can read).
        run_id: The pipeline run's id (``dsl.PIPELINE_JOB_ID_PLACEHOLDER``); marks the run's use of the server.
        server: Compile-time server settings as JSON (``TeacherServerSettings``: image, GPUs, args, placement).
        namespace: Where to create them; empty: this pod's own namespace.

    Returns:
        The server's OpenAI-compatible base URL, ``http://<service>.<namespace>.svc.cluster.local:8000/v1``
        (the same in every run for the same model and settings).
    """
    from mpa.orchestrate.kubeflow.teacher_server import start_teacher_server

    return start_teacher_server(server, run_id=run_id, model=model, namespace=namespace).openai_base_url
