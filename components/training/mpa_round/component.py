"""mpa_round: one later round of iterative MPA (PI with the previous student → PL → evaluate)."""

# No ``from __future__ import annotations``: KFP reads the annotations when it builds the component.
from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output

from mpa.orchestrate.kubeflow.settings import DEFAULT_CPU_IMAGE


@dsl.component(base_image=DEFAULT_CPU_IMAGE, install_kfp_package=False)
def mpa_round(
    run_spec: Input[Dataset],
    parity: Input[Dataset],
    round_number: int,
    prev_checkpoint: Input[Model],
    prev_union: Input[Dataset],
    prev_predictions: Input[Dataset],
    prev_k: int,
    prev_score: float,
    prev_stopped: str,
    checkpoint: Output[Model],
    union: Output[Dataset],
    predictions: Output[Dataset],
    details: Output[Dataset],
    metrics: Output[Metrics],
    report: Output[HTML],
) -> NamedTuple("Outputs", [("k", int), ("score", float), ("stopped", str), ("checkpoint_uri", str)]):
    """Round ``round_number`` (>= 2): PI with the previous round's student over round 1's PA pool (the teacher's
    answers come from round 1's audit; the teacher is never loaded), then PL and evaluate unless the round
    stops. A round that does not train (past the run's ``rounds``, the chain stopped, or its K says stop)
    passes the previous checkpoint, union, predictions and score through, so the last round's outputs are
    always the final ones.

    Args:
        run_spec: The prepare step's output.
        parity: Round 1's merged PA/PI output (annotations.jsonl, pi/audit.jsonl with the teacher's answers).
        round_number: This round's number (2, 3, ...), fixed when the pipeline is compiled.
        prev_checkpoint: The previous round's student (round 2: the level step's checkpoint).
        prev_union: The previous round's union of parity sets (pi/parity.jsonl; round 2: the merge output).
        prev_predictions: The previous round's benchmark predictions and score.json.
        prev_k: The previous round's parity-set size K.
        prev_score: The previous round's benchmark score (of prev_checkpoint).
        prev_stopped: Why the chain stopped before this round; empty: it did not.
        checkpoint: Output: this round's student (the previous one when the round does not train).
        union: Output: pi/parity.jsonl, every parity set trained on so far (what train_from=base trains on).
        predictions: Output: predictions.jsonl and score.json of the checkpoint.
        details: Output: round.json (K, loss, score, or why the round stopped), pi/, train_log.jsonl.
        metrics: Output: round, k_parity, score, trained (1 or 0).
        report: Output: an HTML page: the previous round's score and this round's, K, parity samples, the chart.

    Returns:
        k: K of this round's PI (the previous K when PI did not run); score: the checkpoint's score; stopped:
        why the chain stopped (empty: it goes on); checkpoint_uri: the checkpoint's URI (what register registers).
    """
    from mpa.orchestrate.kubeflow.steps import run_round

    return run_round(run_spec.path, round_number, parity.path, prev_checkpoint.path, prev_union.path,
                     prev_predictions.path, prev_k, prev_score, prev_stopped, checkpoint, union.path,
                     predictions.path, details.path, metrics, report.path)
