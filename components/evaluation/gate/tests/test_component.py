"""gate: after - before > tracking.promotion_margin, with the numbers as metrics."""

# No ``from __future__ import annotations``: KFP reads the test pipeline's annotations.
import pytest
from kfp.dsl import Dataset, Metrics

from mpa_kfp.components.data_processing.prepare import prepare
from mpa_kfp.components.evaluation.gate import gate


@pytest.mark.parametrize(("before", "after", "margin", "expected"),
                         [(40.0, 41.0, 0.0, True), (40.0, 40.0, 0.0, False), (40.0, 41.0, 1.0, False),
                          (40.0, 41.5, 1.0, True)])
def test_decision(toy_config, tmp_path, before, after, margin, expected):
    spec = tmp_path / "spec"
    prepare.python_func(run_spec=Dataset(uri=str(spec)), resolved_rounds=f"{spec}.rounds", shards=1, config=toy_config,
                        tracking_promotion_margin=margin)
    decision = Metrics(uri=str(tmp_path / "d"))
    assert gate.python_func(run_spec=Dataset(uri=str(spec)), score_before=before, score_after=after,
                            decision=decision) is expected
    assert decision.metadata == {"score_before": before, "score_after": after, "delta": after - before,
                                 "margin": margin, "register": float(expected)}


def test_on_the_kfp_local_runner(toy_config, tmp_path):
    from kfp import dsl, local

    @dsl.pipeline
    def decide(config: dict, before: float, after: float) -> bool:
        # kfp.local hands a component input artifacts only from an upstream task
        spec = prepare(config=config, shards=1, data_max_images=2, evaluate_max_samples=1, seed=0, rounds=1)
        return gate(run_spec=spec.outputs["run_spec"], score_before=before, score_after=after).outputs["Output"]

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    assert decide(config=toy_config, before=10.0, after=12.0).output is True
