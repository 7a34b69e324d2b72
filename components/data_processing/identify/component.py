"""identify (PI): keep the samples the teacher answers consistently and the student gets wrong."""

# No ``from __future__ import annotations``: KFP reads the annotations when it builds the component.
from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from mpa.orchestrate.kubeflow.settings import DEFAULT_CPU_IMAGE


@dsl.component(base_image=DEFAULT_CPU_IMAGE, install_kfp_package=False)
def identify(run_spec: Input[Dataset], shard: int, annotations: Input[Dataset], judgements: Output[Dataset],
             teacher_url: str = "", teacher_server: str = "", teacher_model: str = "") -> dict:
    """PI on one shard's annotations: keep E(teacher) and not E(student); returns the PI summary.

    Args:
        run_spec: The prepare step's output.
        shard: Which shard the annotations belong to.
        annotations: The annotate step's output for this shard.
        judgements: Output: the shard's annotations, pi/audit.jsonl, pi/parity.jsonl, pi/counts.json.
        teacher_url: Call the teacher (openai backend) at this API root (the per-run teacher server's URL);
            empty: the run spec's teacher.
        teacher_server: The per-run server's settings (JSON, as the teacher_server task got them); set: the
            server is found or created again first (a retried task after the exit handler deleted it).
        teacher_model: The model that server loads.
    """
    from mpa.orchestrate.kubeflow.steps import identify_shard

    return identify_shard(run_spec.path, shard, annotations.path, judgements.path, teacher_url, teacher_server,
                          teacher_model)
