"""prepare: validate the run config, list and hash the images, assign every image to a shard."""

# No ``from __future__ import annotations``: KFP reads the annotations when it builds the component.

from typing import Optional

from kfp import dsl
from kfp.dsl import Dataset, Output

from mpa.orchestrate.kubeflow.settings import DEFAULT_CPU_IMAGE


@dsl.component(base_image=DEFAULT_CPU_IMAGE, install_kfp_package=False)
def prepare(
    run_spec: Output[Dataset],
    resolved_rounds: dsl.OutputPath(int),
    shards: int = 4,
    config: Optional[dict] = None,
    task_name: Optional[str] = None,
    teacher_model: Optional[str] = None,
    teacher_backend: Optional[str] = None,
    teacher_served_name: Optional[str] = None,
    teacher_openai_base_url: Optional[str] = None,
    teacher_openai_allow_plain_http: Optional[bool] = None,
    student_model: Optional[str] = None,
    data_images: Optional[str] = None,
    data_max_images: Optional[int] = None,
    evaluate_benchmark: Optional[str] = None,
    evaluate_annotations: Optional[str] = None,
    evaluate_images: Optional[str] = None,
    evaluate_max_samples: Optional[int] = None,
    identify_match: Optional[str] = None,
    train_epochs: Optional[float] = None,
    train_learning_rate: Optional[float] = None,
    rounds: Optional[int] = None,
    seed: Optional[int] = None,
    tracking_registered_model: Optional[str] = None,
    tracking_promotion_margin: Optional[float] = None,
) -> list[int]:
    """Resolve the run config and shard the image source; returns the shard indices to run.

    These parameters are the pipeline's run parameters (the pipeline's signature is built from
    this one). Every parameter after ``config`` is named after the RunConfig field it sets, ``_``
    for ``.``; unset, the config's value (or its default) stays.

    Args:
        run_spec: Output: the resolved config and every image with its hash and shard.
        resolved_rounds: Output: the run's resolved rounds (config + run parameter, never null): the pipeline
            starts round r only if r <= resolved_rounds.
        shards: How many PA/PI shard pods the images are split across.
        config: A run config, as `mpa run -c` reads it (a mapping).
        task_name: task.name (textvqa, stvqa, chartqa, okvqa, ...).
        teacher_model: teacher.model (HF id, directory or s3:// prefix).
        teacher_backend: teacher.backend (hf, vllm, openai).
        teacher_served_name: teacher.served_name (the model name an openai-backend server knows).
        teacher_openai_base_url: teacher.openai.base_url (an openai-backend server's API root, ending in /v1).
        teacher_openai_allow_plain_http: teacher.openai.allow_plain_http (send the key to an in-cluster http:// server).
        student_model: student.model.
        data_images: data.images (a folder or s3:// prefix of unlabeled images).
        data_max_images: data.max_images (use only the first N images).
        evaluate_benchmark: evaluate.benchmark.
        evaluate_annotations: evaluate.annotations (the benchmark's question/answer file).
        evaluate_images: evaluate.images (the benchmark's image folder).
        evaluate_max_samples: evaluate.max_samples.
        identify_match: identify.match (the PI rule; default: the task's own).
        train_epochs: train.epochs.
        train_learning_rate: train.learning_rate.
        rounds: rounds (iterative MPA: PI → PL rounds over one PA pool; at most the compiled max_rounds).
        seed: seed.
        tracking_registered_model: tracking.registered_model.
        tracking_promotion_margin: tracking.promotion_margin (score points the aligned student must gain).
    """
    params = dict(locals())
    from mpa.orchestrate.kubeflow.steps import prepare_run_spec

    return prepare_run_spec(params.pop("run_spec").path, params.pop("config"), params.pop("shards"), params,
                            rounds_path=params.pop("resolved_rounds"))
