"""The MPA pipeline DAG.

``prepare`` resolves the run config and shards the image source → for each shard, in parallel
(``dsl.ParallelFor``): PA ``annotate`` then PI ``identify`` → ``merge`` collects the shards
(``dsl.Collected``) into one parity set → PL ``level`` trains → ``evaluate-checkpoint`` scores the
checkpoint against ``evaluate-base`` (the base student, run alongside PA) → ``gate`` → ``register``
runs only if the aligned student is better (``dsl.If``).

The run parameters are the ``prepare`` component's parameters: the pipeline's signature is built
from that one declaration (``RUN_PARAMETERS``), and the pipeline hands every one of them to
prepare unchanged. Resources, images, secrets, time limits, volumes and where the teacher runs are
compile-time settings (:class:`mpa.orchestrate.kubeflow.settings.PipelineSettings`);
:func:`configure_task` applies them to every task.
"""

# No ``from __future__ import annotations``: KFP reads the pipeline signature at decoration time.

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kfp import compiler, dsl, kubernetes

from mpa.orchestrate.kubeflow.settings import PipelineSettings
from mpa_kfp.components.data_processing.annotate import annotate
from mpa_kfp.components.data_processing.identify import identify
from mpa_kfp.components.data_processing.merge import merge
from mpa_kfp.components.data_processing.prepare import prepare
from mpa_kfp.components.deployment.register import register
from mpa_kfp.components.evaluation.evaluate_base import evaluate_base
from mpa_kfp.components.evaluation.evaluate_checkpoint import evaluate_checkpoint
from mpa_kfp.components.evaluation.gate import gate
from mpa_kfp.components.training.level import level

HERE = Path(__file__).resolve().parent
COMPILED = HERE / "pipeline.yaml"  # the committed compile with the default settings
SETTINGS_DIR = HERE / "settings"
PARAMS_DIR = HERE / "params"

# The run parameters: prepare's inputs (all but its output), in its order.
RUN_PARAMETERS = [p for p in inspect.signature(prepare.python_func).parameters.values() if p.name != "run_spec"]


def _parameter_docs() -> str:
    """The ``Args:`` lines of prepare's docstring for the run parameters (KFP shows them in its UI)."""
    doc = inspect.getdoc(prepare.python_func) or ""
    args = doc.split("Args:", 1)[1].splitlines() if "Args:" in doc else []
    return "\n".join(line for line in args if line.strip() and not line.strip().startswith("run_spec:"))


def configure_task(task: dsl.PipelineTask, stage: str, settings: PipelineSettings) -> dsl.PipelineTask:
    """Apply one stage's compile-time settings: image, resources, placement, volumes, secrets, time."""
    res = settings.stage(stage)
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
    if res.shm_size:  # the container runtime's 64 MiB /dev/shm is too small for NCCL and data workers
        kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory",
                                   size_limit=res.shm_size)
    if res.scratch_size:  # a volume requested for this pod, not the node's unaccounted disk
        kubernetes.add_ephemeral_volume(
            task,
            volume_name="scratch",
            mount_path=settings.scratch_mount,
            access_modes=["ReadWriteOnce"],
            size=res.scratch_size,
            storage_class_name=settings.scratch_storage_class,
        )
        task.set_env_variable("MPA_SCRATCH", settings.scratch_mount)
    for secret in settings.secrets_for(stage):
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
        # backoffMaxDuration is the pod's deadline from the first attempt on (Argo): it covers every attempt
        task.set_retry(
            num_retries=res.retries,
            backoff_duration=f"{res.retry_backoff_seconds}s",
            backoff_factor=2.0,
            backoff_max_duration=f"{res.retry_window_seconds()}s",
        )
    kubernetes.set_timeout(task, res.timeout_seconds)
    if not res.caching:
        task.set_caching_options(enable_caching=False)
    task.set_env_variable("PYTHONUNBUFFERED", "1")
    task.set_env_variable("TOKENIZERS_PARALLELISM", "false")
    kubernetes.add_pod_label(task, "app.kubernetes.io/part-of", "mpa")
    kubernetes.add_pod_label(task, "mpa/stage", stage)
    return task


def build_pipeline(settings: PipelineSettings | None = None) -> Callable:
    """The MPA pipeline with ``settings`` applied (defaults: :class:`PipelineSettings`)."""
    s = settings or PipelineSettings()

    def mpa_pipeline(*inputs: Any) -> None:  # one pipeline channel per run parameter, in order
        run = {p.name: value for p, value in zip(RUN_PARAMETERS, inputs, strict=True)}
        spec = configure_task(prepare(**run), "prepare", s)
        spec.set_env_variable("MPA_TEACHER_IN_POD", "1" if s.teacher_in_pod else "0")
        run_spec = spec.outputs["run_spec"]
        before = configure_task(evaluate_base(run_spec=run_spec), "evaluate", s)
        with dsl.ParallelFor(items=spec.outputs["Output"], parallelism=s.shard_parallelism) as shard:
            pa = configure_task(annotate(run_spec=run_spec, shard=shard), "annotate", s)
            pi = configure_task(
                identify(run_spec=run_spec, shard=shard, annotations=pa.outputs["annotations"]), "identify", s
            )
        merged = configure_task(merge(run_spec=run_spec, shards=dsl.Collected(pi.outputs["judgements"])), "merge", s)
        pl = configure_task(level(run_spec=run_spec, parity=merged.outputs["parity"]), "level", s)
        after = configure_task(
            evaluate_checkpoint(run_spec=run_spec, checkpoint=pl.outputs["checkpoint"]), "evaluate", s
        )
        better = configure_task(
            gate(run_spec=run_spec, score_before=before.outputs["Output"], score_after=after.outputs["Output"]),
            "gate",
            s,
        )
        with dsl.If(better.outputs["Output"] == True, name="aligned-student-is-better"):  # noqa: E712
            configure_task(
                register(
                    run_spec=run_spec,
                    checkpoint_uri=pl.outputs["Output"],
                    parity=merged.outputs["parity"],
                    before=before.outputs["predictions"],
                    after=after.outputs["predictions"],
                    run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                ),
                "register",
                s,
            )

    mpa_pipeline.__signature__ = inspect.Signature(RUN_PARAMETERS)
    mpa_pipeline.__doc__ = f"{s.description}\n\nArgs:\n{_parameter_docs()}\n"
    return dsl.pipeline(name=s.name, description=s.description)(mpa_pipeline)


def compile_pipeline(out: str | Path, settings: PipelineSettings | None = None) -> Path:
    """Compile the MPA pipeline (with ``settings`` applied) to a KFP IR YAML file."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(settings), str(out))
    return out


mpa_pipeline = build_pipeline()
