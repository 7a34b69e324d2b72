"""The MPA pipeline DAG.

``prepare`` validates the run config and shards the image source → for each shard, in parallel
(``dsl.ParallelFor``): PA ``annotate`` then PI ``identify`` → ``merge`` collects the shards
(``dsl.Collected``) into one parity set → PL ``level`` trains → ``evaluate_aligned`` scores the
checkpoint against ``evaluate_student`` (the base student, run alongside PA) → ``register`` runs
only if the aligned student is better (``dsl.If``).

Resources, images, secrets, node placement and the model cache are compile-time settings
(:class:`mpa.orchestrate.kubeflow.settings.PipelineSettings`); :func:`build_pipeline` applies them to every task.
"""

# No ``from __future__ import annotations``: KFP reads the pipeline signature at decoration time.

from collections.abc import Callable

from kfp import dsl, kubernetes

from mpa.orchestrate.kubeflow import components as c
from mpa.orchestrate.kubeflow.settings import PipelineSettings

# Run parameters and their defaults (the TextVQA setting of the paper, Qwen2-VL-7B → 2B).
DEFAULT_PARAMS: dict[str, object] = {
    "task": "textvqa",
    "teacher": "Qwen/Qwen2-VL-7B-Instruct",
    "teacher_backend": "hf",
    "student": "Qwen/Qwen2-VL-2B-Instruct",
    "images": "s3://mpa-data/textvqa/train_images/",
    "max_images": 0,
    "benchmark": "textvqa",
    "benchmark_annotations": "s3://mpa-data/textvqa/TextVQA_0.5.1_val.json",
    "benchmark_images": "",
    "eval_max_samples": 0,
    "match_rule": "vqa",
    "qa_per_image": 1,
    "epochs": 1.0,
    "train_batch_size": 0,
    "learning_rate": 0.0,
    "lora": False,
    "seed": 0,
    "shards": 4,
    "min_improvement": 0.0,
    "registered_model": "",
}


def configure_task(task: dsl.PipelineTask, stage: str, settings: PipelineSettings) -> dsl.PipelineTask:
    """Apply one stage's compile-time settings (image, resources, placement, secrets, cache)."""
    res = settings.stage(stage)
    task.set_display_name(stage)
    task.set_container_image(settings.gpu_image if res.image == "gpu" else settings.cpu_image)
    if res.cpu_request:
        task.set_cpu_request(res.cpu_request)
    if res.cpu_limit:
        task.set_cpu_limit(res.cpu_limit)
    if res.memory_request:
        task.set_memory_request(res.memory_request)
    if res.memory_limit:
        task.set_memory_limit(res.memory_limit)
    if res.accelerator_type and res.accelerator_count > 0:
        task.set_accelerator_type(res.accelerator_type)
        task.set_accelerator_limit(res.accelerator_count)
    for key, value in res.node_selector.items():
        kubernetes.add_node_selector(task, label_key=key, label_value=value)
    for tol in res.tolerations:
        kubernetes.add_toleration(task, key=tol.key, operator=tol.operator, value=tol.value, effect=tol.effect)
    if res.model_cache and settings.model_cache_pvc:
        kubernetes.mount_pvc(task, pvc_name=settings.model_cache_pvc, mount_path=settings.model_cache_mount)
        task.set_env_variable("MPA_MODEL_CACHE", settings.model_cache_mount)
    for secret in settings.secrets:
        if stage in secret.stages:
            kubernetes.use_secret_as_env(
                task, secret_name=secret.name, secret_key_to_env=dict(secret.env), optional=secret.optional
            )
    if settings.config_map:
        kubernetes.use_config_map_as_env(
            task,
            config_map_name=settings.config_map,
            config_map_key_to_env={k: k for k in settings.config_map_keys},
            optional=True,
        )
    if settings.image_pull_policy:
        kubernetes.set_image_pull_policy(task, settings.image_pull_policy)
    if settings.image_pull_secrets:
        kubernetes.set_image_pull_secrets(task, list(settings.image_pull_secrets))
    if res.retries:
        task.set_retry(num_retries=res.retries, backoff_duration="60s", backoff_factor=2.0)
    if res.timeout_seconds:
        kubernetes.set_timeout(task, res.timeout_seconds)
    if not res.caching:
        task.set_caching_options(enable_caching=False)
    task.set_env_variable("PYTHONUNBUFFERED", "1")
    task.set_env_variable("TOKENIZERS_PARALLELISM", "false")
    kubernetes.add_pod_label(task, "app.kubernetes.io/part-of", "mpa")
    kubernetes.add_pod_label(task, "mpa/stage", stage)
    return task


def build_pipeline(settings: PipelineSettings | None = None) -> Callable:
    """The MPA pipeline function with ``settings`` applied (defaults: :class:`PipelineSettings`)."""
    s = settings or PipelineSettings()
    d = DEFAULT_PARAMS

    @dsl.pipeline(name=s.name, description=s.description)
    def mpa_pipeline(
        task: str = d["task"],
        teacher: str = d["teacher"],
        teacher_backend: str = d["teacher_backend"],
        student: str = d["student"],
        images: str = d["images"],
        max_images: int = d["max_images"],
        benchmark: str = d["benchmark"],
        benchmark_annotations: str = d["benchmark_annotations"],
        benchmark_images: str = d["benchmark_images"],
        eval_max_samples: int = d["eval_max_samples"],
        match_rule: str = d["match_rule"],
        qa_per_image: int = d["qa_per_image"],
        epochs: float = d["epochs"],
        train_batch_size: int = d["train_batch_size"],
        learning_rate: float = d["learning_rate"],
        lora: bool = d["lora"],
        seed: int = d["seed"],
        shards: int = d["shards"],
        min_improvement: float = d["min_improvement"],
        registered_model: str = d["registered_model"],
        config_overrides: dict = {},  # noqa: B006 (a KFP parameter default, never mutated)
    ):
        plan = configure_task(
            c.prepare(
                task=task,
                teacher=teacher,
                teacher_backend=teacher_backend,
                student=student,
                images=images,
                max_images=max_images,
                benchmark=benchmark,
                benchmark_annotations=benchmark_annotations,
                benchmark_images=benchmark_images,
                eval_max_samples=eval_max_samples,
                match_rule=match_rule,
                qa_per_image=qa_per_image,
                epochs=epochs,
                train_batch_size=train_batch_size,
                learning_rate=learning_rate,
                lora=lora,
                seed=seed,
                min_improvement=min_improvement,
                registered_model=registered_model,
                shards=shards,
                config_overrides=config_overrides,
            ),
            "prepare",
            s,
        )
        before = configure_task(c.evaluate_student(plan=plan.outputs["plan"]), "evaluate", s)
        before.set_display_name("evaluate-before")
        with dsl.ParallelFor(items=plan.outputs["Output"], parallelism=s.shard_parallelism, name="shards") as shard:
            pa = configure_task(c.annotate(plan=plan.outputs["plan"], shard=shard), "annotate", s)
            pi = configure_task(
                c.identify(plan=plan.outputs["plan"], shard=shard, annotations=pa.outputs["annotations"]), "identify", s
            )
        merged = configure_task(
            c.merge(plan=plan.outputs["plan"], shards=dsl.Collected(pi.outputs["judgements"])), "merge", s
        )
        pl = configure_task(c.level(plan=plan.outputs["plan"], parity=merged.outputs["parity"]), "level", s)
        after = configure_task(
            c.evaluate_aligned(plan=plan.outputs["plan"], checkpoint=pl.outputs["checkpoint"]), "evaluate", s
        )
        after.set_display_name("evaluate-after")
        better = configure_task(
            c.gate(
                plan=plan.outputs["plan"], score_before=before.outputs["Output"], score_after=after.outputs["Output"]
            ),
            "gate",
            s,
        )
        with dsl.If(better.outputs["Output"] == True, name="aligned-student-is-better"):  # noqa: E712
            configure_task(
                c.register(
                    plan=plan.outputs["plan"],
                    checkpoint=pl.outputs["checkpoint"],
                    parity=merged.outputs["parity"],
                    before=before.outputs["predictions"],
                    after=after.outputs["predictions"],
                    run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                ),
                "register",
                s,
            )

    return mpa_pipeline


mpa_pipeline = build_pipeline()
