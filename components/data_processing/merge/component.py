"""merge: fan-in of every shard's PI output into one parity set, every image accounted for."""

# No ``from __future__ import annotations``: KFP reads the annotations when it builds the component.
from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from mpa.orchestrate.kubeflow.settings import DEFAULT_CPU_IMAGE


@dsl.component(base_image=DEFAULT_CPU_IMAGE, install_kfp_package=False)
def merge(run_spec: Input[Dataset], shards: Input[list[Dataset]], parity: Output[Dataset],
          counts: Output[Metrics]) -> int:
    """Merge the shards' PI outputs; returns K, the parity-set size.

    Args:
        run_spec: The prepare step's output.
        shards: Every shard's identify output (collected from the loop).
        parity: Output: annotations.jsonl, pi/audit.jsonl, pi/parity.jsonl, counts.json.
        counts: Output: the summed PI counts and the merge report (done, corrupt, failed, K).
    """
    from mpa.orchestrate.kubeflow.steps import merge_parity

    return merge_parity(run_spec.path, [s.path for s in shards], parity.path, counts)
