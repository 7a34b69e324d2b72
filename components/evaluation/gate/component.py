"""gate: is the aligned student better than the base by more than the promotion margin?"""

# No ``from __future__ import annotations``: KFP reads the annotations when it builds the component.
from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from mpa.orchestrate.kubeflow.settings import DEFAULT_CPU_IMAGE


@dsl.component(base_image=DEFAULT_CPU_IMAGE, install_kfp_package=False)
def gate(run_spec: Input[Dataset], score_before: float, score_after: float, decision: Output[Metrics]) -> bool:
    """True when ``score_after - score_before > tracking.promotion_margin``.

    Args:
        run_spec: The prepare step's output (holds tracking.promotion_margin).
        score_before: The base student's score.
        score_after: The aligned student's score.
        decision: Output: both scores, the delta, the margin and the decision (1 = register).
    """
    from mpa.orchestrate.kubeflow.steps import is_better

    return is_better(run_spec.path, score_before, score_after, decision)
