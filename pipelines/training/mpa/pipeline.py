"""The MPA pipeline DAG.

``prepare`` resolves the run config and shards the image source → for each shard, in parallel
(``dsl.ParallelFor``): PA ``annotate`` then PI ``identify`` → ``merge`` collects the shards
(``dsl.Collected``) into one parity set → PL ``level`` trains → ``evaluate-checkpoint`` scores the
checkpoint against ``evaluate-base`` (the base student, run alongside PA) → rounds 2..``max_rounds``
of iterative MPA, an unrolled chain of ``mpa-round`` tasks (each passes the previous round's outputs
through when the run asks for fewer rounds or the parity set runs dry, so the last task's outputs are
always the final student's) → ``gate`` → ``register`` runs only if the final student is better
(``dsl.If``).

With an ephemeral teacher (settings ``teacher_server.enabled``) all of it runs inside a
``dsl.ExitHandler`` whose exit task, ``teacher-cleanup``, deletes the run's vLLM teacher whatever
happened; ``teacher-server`` starts it first and prepare gets its URL (``teacher_openai_base_url``),
``teacher_backend=openai``, the served name and ``teacher_openai_allow_plain_http`` (the URL is an
in-cluster ``http://`` one), so the run spec says which teacher PA and PI call.

The run parameters are the ``prepare`` component's parameters: the pipeline's signature is built
from that one declaration (``RUN_PARAMETERS``), and the pipeline hands every one of them to
prepare unchanged — except, with an ephemeral teacher, the four it sets from the server
(``SERVED_TEACHER``), which are then no run parameters, and ``teacher_model``, then required (the
server loads it before prepare runs). Resources, images, secrets, time limits, volumes and where the teacher runs are
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
from mpa_kfp.components.deployment.teacher_cleanup import teacher_cleanup
from mpa_kfp.components.deployment.teacher_server import teacher_server
from mpa_kfp.components.evaluation.evaluate_base import evaluate_base
from mpa_kfp.components.evaluation.evaluate_checkpoint import evaluate_checkpoint
from mpa_kfp.components.evaluation.gate import gate
from mpa_kfp.components.training.level import level
from mpa_kfp.components.training.mpa_round import mpa_round

HERE = Path(__file__).resolve().parent
COMPILED = HERE / "pipeline.yaml"  # the committed compile with the default settings
SETTINGS_DIR = HERE / "settings"
PARAMS_DIR = HERE / "params"

# The run parameters: prepare's inputs (all but its output), in its order.
RUN_PARAMETERS = [p for p in inspect.signature(prepare.python_func).parameters.values() if p.name != "run_spec"]
# prepare's inputs the pipeline sets itself when it starts a teacher server per run
SERVED_TEACHER = ("teacher_backend", "teacher_served_name", "teacher_openai_base_url",
                  "teacher_openai_allow_plain_http")


def pipeline_parameters(settings: PipelineSettings) -> list[inspect.Parameter]:
    """The pipeline's run parameters under ``settings``: prepare's, or, with an ephemeral teacher server,
    prepare's without :data:`SERVED_TEACHER` and with ``teacher_model`` required (first)."""
    if not settings.teacher_server.enabled:
        return list(RUN_PARAMETERS)
    rest = [p for p in RUN_PARAMETERS if p.name not in (*SERVED_TEACHER, "teacher_model")]
    model = inspect.Parameter("teacher_model", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=str)
    return [model, *rest]


def _parameter_docs(names: list[str]) -> str:
    """The ``Args:`` lines of prepare's docstring for these run parameters (KFP shows them in its UI)."""
    doc = inspect.getdoc(prepare.python_func) or ""
    args = doc.split("Args:", 1)[1].splitlines() if "Args:" in doc else []
    return "\n".join(line for line in args if line.strip() and line.strip().split(":", 1)[0] in names)


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


def mpa_dag(run: dict[str, Any], s: PipelineSettings) -> None:
    """prepare → PA/PI per shard → merge → PL → evaluate → rounds 2..max_rounds → gate → register."""
    spec = configure_task(prepare(**run), "prepare", s)
    spec.set_env_variable("MPA_TEACHER_IN_POD", "1" if s.teacher_in_pod else "0")
    spec.set_env_variable("MPA_MAX_ROUNDS", str(s.max_rounds))
    run_spec = spec.outputs["run_spec"]
    before = configure_task(evaluate_base(run_spec=run_spec), "evaluate", s)
    with dsl.ParallelFor(items=spec.outputs["Output"], parallelism=s.shard_parallelism) as shard:
        pa = configure_task(annotate(run_spec=run_spec, shard=shard), "annotate", s)
        pi = configure_task(
            identify(run_spec=run_spec, shard=shard, annotations=pa.outputs["annotations"]), "identify", s
        )
    merged = configure_task(merge(run_spec=run_spec, shards=dsl.Collected(pi.outputs["judgements"])), "merge", s)
    pl = configure_task(level(run_spec=run_spec, parity=merged.outputs["parity"]), "level", s)
    after = configure_task(evaluate_checkpoint(run_spec=run_spec, checkpoint=pl.outputs["checkpoint"]), "evaluate", s)
    # the final student so far: round 1's, then each later round's (which passes it through when it does not train)
    final = {"checkpoint": pl.outputs["checkpoint"], "checkpoint_uri": pl.outputs["Output"],
             "union": merged.outputs["parity"], "predictions": after.outputs["predictions"],
             "k": merged.outputs["Output"], "score": after.outputs["Output"], "stopped": ""}
    for r in range(2, s.max_rounds + 1):
        task = configure_task(
            mpa_round(run_spec=run_spec, parity=merged.outputs["parity"], round_number=r,
                      prev_checkpoint=final["checkpoint"], prev_union=final["union"],
                      prev_predictions=final["predictions"], prev_k=final["k"], prev_score=final["score"],
                      prev_stopped=final["stopped"]),
            "round",
            s,
        ).set_display_name(f"round-{r}")
        final = {key: task.outputs[key] for key in final}
    better = configure_task(
        gate(run_spec=run_spec, score_before=before.outputs["Output"], score_after=final["score"]), "gate", s
    )
    with dsl.If(better.outputs["Output"] == True, name="aligned-student-is-better"):  # noqa: E712
        configure_task(
            register(
                run_spec=run_spec,
                checkpoint_uri=final["checkpoint_uri"],
                parity=merged.outputs["parity"],
                before=before.outputs["predictions"],
                after=final["predictions"],
                run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            ),
            "register",
            s,
        )


def build_pipeline(settings: PipelineSettings | None = None) -> Callable:
    """The MPA pipeline with ``settings`` applied (defaults: :class:`PipelineSettings`)."""
    s = settings or PipelineSettings()
    parameters = pipeline_parameters(s)

    def mpa_pipeline(*inputs: Any) -> None:  # one pipeline channel per run parameter, in order
        run = {p.name: value for p, value in zip(parameters, inputs, strict=True)}
        if not s.teacher_server.enabled:
            mpa_dag(run, s)
            return
        # never from the cache (settings: caching off): a cached URL would name a server that an earlier
        # run's exit handler has deleted
        cleanup = configure_task(teacher_cleanup(run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER), "teacher_cleanup", s)
        with dsl.ExitHandler(cleanup, name="with-teacher-server"):
            server = configure_task(
                teacher_server(model=run["teacher_model"], run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                               server=s.teacher_server.model_dump_json(exclude={"enabled"})),
                "teacher_server",
                s,
            )
            # the server's in-cluster http:// URL: the API key (mpa-openai) may go there (only pipeline pods
            # reach the run's teacher: manifests/base/networkpolicies.yaml)
            served = {"teacher_backend": "openai", "teacher_served_name": s.teacher_server.served_name,
                      "teacher_openai_base_url": server.output, "teacher_openai_allow_plain_http": True}
            mpa_dag({p.name: run.get(p.name) for p in RUN_PARAMETERS} | served, s)

    mpa_pipeline.__signature__ = inspect.Signature(parameters)
    docs = _parameter_docs([p.name for p in parameters])
    if s.teacher_server.enabled:
        docs = docs.replace("teacher_model: teacher.model (", "teacher_model: teacher.model, required: the per-run "
                            "teacher server loads it (")
    mpa_pipeline.__doc__ = f"{s.description}\n\nArgs:\n{docs}\n"
    return dsl.pipeline(name=s.name, description=s.description)(mpa_pipeline)


def compile_pipeline(out: str | Path, settings: PipelineSettings | None = None) -> Path:
    """Compile the MPA pipeline (with ``settings`` applied) to a KFP IR YAML file."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(settings), str(out))
    return out


mpa_pipeline = build_pipeline()
