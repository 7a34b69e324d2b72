"""annotate (PA): the teacher writes a question and an answer for every image of one shard."""

# No ``from __future__ import annotations``: KFP reads the annotations when it builds the component.
from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from mpa.orchestrate.kubeflow.settings import DEFAULT_CPU_IMAGE


@dsl.component(base_image=DEFAULT_CPU_IMAGE, install_kfp_package=False)
def annotate(run_spec: Input[Dataset], shard: int, annotations: Output[Dataset], teacher_url: str = "",
             teacher_server: str = "", teacher_model: str = "") -> dict:
    """PA on the images the run spec assigns to one shard; returns the PA summary.

    Args:
        run_spec: The prepare step's output.
        shard: Which shard (one of the indices prepare returned).
        annotations: Output: annotations.jsonl (one record per attempt) and summary.json.
        teacher_url: Call the teacher (openai backend) at this API root (the per-run teacher server's URL);
            empty: the run spec's teacher.
        teacher_server: The per-run server's settings (JSON, as the teacher_server task got them); set: the
            server is found or created again first (a retried task after the exit handler deleted it).
        teacher_model: The model that server loads.
    """
    from mpa.orchestrate.kubeflow.steps import annotate_shard

    return annotate_shard(run_spec.path, shard, annotations.path, teacher_url, teacher_server, teacher_model)
