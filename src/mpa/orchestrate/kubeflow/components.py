"""One lightweight KFP component per step. Thin: each body imports :mod:`mpa.orchestrate.kubeflow.steps` (which
calls the engine's stages) — the image already has ``mpa`` installed, so ``install_kfp_package``
is off and nothing is pip-installed at run time. The image here is the CPU default; the pipeline
sets each task's image, resources and Kubernetes settings at compile time.
"""

# No ``from __future__ import annotations`` here: KFP reads the annotations at decoration time.

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from mpa.orchestrate.kubeflow.settings import DEFAULT_CPU_IMAGE

_component = dsl.component(base_image=DEFAULT_CPU_IMAGE, install_kfp_package=False)


@_component
def prepare(
    task: str,
    teacher: str,
    teacher_backend: str,
    student: str,
    images: str,
    max_images: int,
    benchmark: str,
    benchmark_annotations: str,
    benchmark_images: str,
    eval_max_samples: int,
    match_rule: str,
    qa_per_image: int,
    epochs: float,
    train_batch_size: int,
    learning_rate: float,
    lora: bool,
    seed: int,
    min_improvement: float,
    registered_model: str,
    shards: int,
    config_overrides: dict,
    plan: Output[Dataset],
) -> list:
    """Validate the run config, hash and shard the images; returns the shard indices to run."""
    params = {k: v for k, v in locals().items() if k not in ("shards", "config_overrides", "plan")}
    from mpa.orchestrate.kubeflow.steps import prepare_plan

    return prepare_plan(plan.path, params, shards, config_overrides)


@_component
def annotate(plan: Input[Dataset], shard: int, annotations: Output[Dataset]) -> dict:
    """PA on one image shard (the teacher writes question + answer per image)."""
    from mpa.orchestrate.kubeflow.steps import annotate_shard

    return annotate_shard(plan.path, shard, annotations.path)


@_component
def identify(plan: Input[Dataset], shard: int, annotations: Input[Dataset], judgements: Output[Dataset]) -> dict:
    """PI on one shard: keep E(teacher) ∧ ¬E(student)."""
    from mpa.orchestrate.kubeflow.steps import identify_shard

    return identify_shard(plan.path, shard, annotations.path, judgements.path)


@_component
def merge(
    plan: Input[Dataset],
    shards: Input[list[Dataset]],
    parity: Output[Dataset],
    counts: Output[Metrics],
) -> int:
    """Fan-in: one parity set and audit from all shards; returns K (the parity-set size)."""
    from mpa.orchestrate.kubeflow.steps import merge_parity

    totals = merge_parity(plan.path, [s.path for s in shards], parity.path)
    for key, value in totals.items():
        counts.log_metric(key, float(value))
    return int(totals["k_parity"])


@_component
def level(
    plan: Input[Dataset],
    parity: Input[Dataset],
    checkpoint: Output[Model],
    train_log: Output[Dataset],
    train_metrics: Output[Metrics],
) -> dict:
    """PL: fine-tune the student on the parity set; the aligned HF checkpoint is the Model artifact."""
    from mpa.orchestrate.kubeflow.steps import numeric_metrics, train_student

    result = train_student(plan.path, parity.path, checkpoint.path, train_log.path)
    checkpoint.metadata["framework"] = "transformers"
    for key, value in numeric_metrics(result).items():
        train_metrics.log_metric(key, value)
    return result


@_component
def evaluate_student(plan: Input[Dataset], predictions: Output[Dataset], metrics: Output[Metrics]) -> float:
    """Benchmark score of the base student (before alignment)."""
    from mpa.orchestrate.kubeflow.steps import evaluate_model, numeric_metrics

    result = evaluate_model(plan.path, predictions.path)
    for key, value in numeric_metrics(result).items():
        metrics.log_metric(key, value)
    return float(result["score"])


@_component
def evaluate_aligned(
    plan: Input[Dataset], checkpoint: Input[Model], predictions: Output[Dataset], metrics: Output[Metrics]
) -> float:
    """Benchmark score of the aligned student (after PL)."""
    from mpa.orchestrate.kubeflow.steps import evaluate_model, numeric_metrics

    result = evaluate_model(plan.path, predictions.path, checkpoint_dir=checkpoint.path)
    for key, value in numeric_metrics(result).items():
        metrics.log_metric(key, value)
    return float(result["score"])


@_component
def gate(plan: Input[Dataset], score_before: float, score_after: float, decision: Output[Metrics]) -> bool:
    """Is the aligned student better than the base by more than ``tracking.promotion_margin``?"""
    from mpa.orchestrate.kubeflow.steps import is_better

    better, margin = is_better(plan.path, score_before, score_after)
    decision.log_metric("score_before", score_before)
    decision.log_metric("score_after", score_after)
    decision.log_metric("delta", score_after - score_before)
    decision.log_metric("margin", margin)
    decision.log_metric("register", float(better))
    return better


@_component
def register(
    plan: Input[Dataset],
    checkpoint: Input[Model],
    parity: Input[Dataset],
    before: Input[Dataset],
    after: Input[Dataset],
    run_id: str,
) -> dict:
    """Register the aligned student in the MLflow registry, promoted by aliases (runs only when it is better)."""
    from mpa.orchestrate.kubeflow.steps import register_model

    return register_model(plan.path, checkpoint.path, parity.path, before.path, after.path, run_id=run_id)
