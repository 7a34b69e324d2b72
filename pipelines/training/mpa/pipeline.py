"""The MPA pipeline DAG.

``prepare`` resolves the run config and shards the image source → for each shard, in parallel
(``dsl.ParallelFor``): PA ``annotate`` then PI ``identify`` → ``merge`` collects the shards
(``dsl.Collected``) into one parity set → PL ``level`` trains → ``evaluate-checkpoint`` scores the
checkpoint against ``evaluate-base`` (the base student, run alongside PA) and writes the run's KFP
visualization → rounds 2..``max_rounds`` of iterative MPA: round r starts only if the run asks for
it (nested ``dsl.If``/``dsl.Else`` on prepare's resolved ``rounds``; a round that runs but whose K
says stop passes the previous round's outputs through) → ``gate`` on the final student →
``register`` runs only if it is better (``dsl.If``). Each branch of the rounds' If/Else ends in its
own gate and register, so no pod starts for a round nobody asked for.

With an ephemeral teacher (settings ``teacher_server.enabled``) prepare runs first, in the root DAG
(``teacher_backend=openai``, the served name, ``teacher_openai_allow_plain_http``: the URL is an
in-cluster ``http://`` one); everything after it runs inside a ``dsl.ExitHandler`` whose exit task,
``teacher-cleanup``, deletes the run's vLLM teacher whatever happened. ``teacher-server`` starts it,
annotate and identify get its URL (``teacher_url``: in no later step's cache key), and
``teacher-cleanup-after-merge`` deletes it as soon as merge is done — nothing after merge calls the
teacher (later rounds rebuild its answers from round 1's audit).

The run parameters are the ``prepare`` component's parameters: the pipeline's signature is built
from that one declaration (``RUN_PARAMETERS``), and the pipeline hands every one of them to
prepare unchanged — except, with an ephemeral teacher, the four ``SERVED_TEACHER`` ones (the pipeline
sets three and hands the URL to PA/PI), which are then no run parameters, and ``teacher_model``,
then required (the server loads it). Resources, images, secrets, time limits, volumes and where the teacher runs are
compile-time settings (:class:`mpa.orchestrate.kubeflow.settings.PipelineSettings`);
:func:`configure_task` applies them to every task.
"""

# No ``from __future__ import annotations``: KFP reads the pipeline signature at decoration time.

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kfp import compiler, dsl, kubernetes

from mpa.orchestrate.kubeflow.settings import PipelineSettings, SettingsError
from mpa.orchestrate.kubeflow.teacher_server import RUN_ID_ENV, RUN_ID_POD_LABEL
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

# The run parameters: prepare's inputs (all but its outputs), in its order.
PREPARE_OUTPUTS = ("run_spec", "resolved_rounds")
RUN_PARAMETERS = [p for p in inspect.signature(prepare.python_func).parameters.values()
                  if p.name not in PREPARE_OUTPUTS]
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
    if res.scratch_size:
        # an emptyDir: world-writable on any node, so the non-root user (uid 10001) can write it (a fresh generic
        # ephemeral volume is root:root 0755 and KFP cannot set fsGroup); the size limit evicts a pod that
        # outgrows it. It lives on the node's disk (kubelet root or local SSD), not on a claimed volume.
        if settings.scratch_storage_class:
            raise SettingsError("scratch_storage_class is not used: scratch volumes are emptyDirs on the node's "
                                "disk (a claimed volume is root-owned and KFP cannot set fsGroup); remove it")
        kubernetes.empty_dir_mount(task, volume_name="scratch", mount_path=settings.scratch_mount,
                                   size_limit=res.scratch_size)
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


def run_prepare(run: dict[str, Any], s: PipelineSettings) -> dsl.PipelineTask:
    """The prepare task: every run parameter, the compiled checks (teacher placement, max rounds)."""
    spec = configure_task(prepare(**run), "prepare", s)
    spec.set_env_variable("MPA_TEACHER_IN_POD", "1" if s.teacher_in_pod else "0")
    spec.set_env_variable("MPA_MAX_ROUNDS", str(s.max_rounds))
    if s.teacher_server.enabled:  # the per-run server does not exist yet: prepare's preflight does not call it
        spec.set_env_variable("MPA_TEACHER_SERVER", "1")
    return spec


def decide(run_spec: Any, before: dsl.PipelineTask, final: dict[str, Any], parity: Any, s: PipelineSettings) -> None:
    """gate → register (``dsl.If``) on the final student's outputs."""
    better = configure_task(
        gate(run_spec=run_spec, score_before=before.outputs["Output"], score_after=final["score"]), "gate", s
    )
    with dsl.If(better.outputs["Output"] == True, name="aligned-student-is-better"):  # noqa: E712
        configure_task(
            register(
                run_spec=run_spec,
                checkpoint_uri=final["checkpoint_uri"],
                parity=parity,
                before=before.outputs["predictions"],
                after=final["predictions"],
                run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            ),
            "register",
            s,
        )


def later_rounds(run_spec: Any, rounds: Any, before: dsl.PipelineTask, final: dict[str, Any], parity: Any,
                 r: int, s: PipelineSettings) -> None:
    """Round ``r`` and the ones after it, then gate → register on the final student. Round r starts only
    if the run asks for it (``dsl.If`` on prepare's resolved ``rounds``, never null): otherwise the
    student so far is the final one. Nested If/Else rather than ``dsl.OneOf``: round 1's outputs come
    from no branch, and OneOf only selects among branch outputs."""
    if r > s.max_rounds:  # prepare refuses more rounds than compiled
        decide(run_spec, before, final, parity, s)
        return
    with dsl.If(rounds < r, name=f"rounds-done-after-{r - 1}"):
        decide(run_spec, before, final, parity, s)
    with dsl.Else(name=f"round-{r}-asked"):
        task = configure_task(
            mpa_round(run_spec=run_spec, parity=parity, round_number=r,
                      prev_checkpoint=final["checkpoint"], prev_union=final["union"],
                      prev_predictions=final["predictions"], prev_k=final["k"], prev_score=final["score"],
                      prev_stopped=final["stopped"]),
            "round",
            s,
        ).set_display_name(f"round-{r}")
        later_rounds(run_spec, rounds, before, {key: task.outputs[key] for key in final}, parity, r + 1, s)


def mpa_dag(spec: dsl.PipelineTask, s: PipelineSettings, teacher: dict[str, Any] | None = None,
            after_merge: Callable[[dsl.PipelineTask], Any] | None = None) -> None:
    """PA/PI per shard → merge → PL → evaluate → the rounds asked for → gate → register, after ``spec``
    (the prepare task). ``teacher``: PA/PI's per-run teacher server (``teacher_url``, ``teacher_server``,
    ``teacher_model`` inputs; None: the run spec's teacher); ``after_merge(merge_task)``: what runs once merge
    is done (the server's cleanup)."""
    run_spec = spec.outputs["run_spec"]
    before = configure_task(evaluate_base(run_spec=run_spec), "evaluate", s)
    url = teacher or {}
    with dsl.ParallelFor(items=spec.outputs["Output"], parallelism=s.shard_parallelism) as shard:
        pa = configure_task(annotate(run_spec=run_spec, shard=shard, **url), "annotate", s)
        pi = configure_task(
            identify(run_spec=run_spec, shard=shard, annotations=pa.outputs["annotations"], **url), "identify", s
        )
        if teacher:  # the run's id for re-creating the server, as an env var: in no cache key
            for task in (pa, pi):
                kubernetes.use_field_path_as_env(task, env_name=RUN_ID_ENV,
                                                 field_path=f"metadata.labels['{RUN_ID_POD_LABEL}']")
    merged = configure_task(merge(run_spec=run_spec, shards=dsl.Collected(pi.outputs["judgements"])), "merge", s)
    if after_merge is not None:
        after_merge(merged)
    parity = merged.outputs["parity"]
    pl = configure_task(level(run_spec=run_spec, parity=parity), "level", s)
    after = configure_task(
        evaluate_checkpoint(run_spec=run_spec, checkpoint=pl.outputs["checkpoint"],
                            before=before.outputs["predictions"], parity=parity),
        "evaluate",
        s,
    )
    # the final student so far: round 1's, then each later round's (which passes it through when it does not train)
    final = {"checkpoint": pl.outputs["checkpoint"], "checkpoint_uri": pl.outputs["Output"],
             "union": parity, "predictions": after.outputs["predictions"],
             "k": merged.outputs["Output"], "score": after.outputs["Output"], "stopped": ""}
    later_rounds(run_spec, spec.outputs["resolved_rounds"], before, final, parity, 2, s)


def build_pipeline(settings: PipelineSettings | None = None) -> Callable:
    """The MPA pipeline with ``settings`` applied (defaults: :class:`PipelineSettings`)."""
    s = settings or PipelineSettings()
    parameters = pipeline_parameters(s)

    def mpa_pipeline(*inputs: Any) -> None:  # one pipeline channel per run parameter, in order
        run = {p.name: value for p, value in zip(parameters, inputs, strict=True)}
        if not s.teacher_server.enabled:
            mpa_dag(run_prepare(run, s), s)
            return
        # prepare runs first, in the root DAG: a bad config holds no GPU, and the optional run parameters
        # (null when unset) never become inputs of the exit-handler group, which the driver refuses null
        # (kubeflow/pipelines#11957). The server's URL goes to PA/PI only: it is in no later cache key.
        served = {"teacher_backend": "openai", "teacher_served_name": s.teacher_server.served_name,
                  "teacher_openai_allow_plain_http": True}
        spec = run_prepare({p.name: run.get(p.name) for p in RUN_PARAMETERS if p.name != "teacher_openai_base_url"}
                           | served, s)
        # never from the cache (settings: caching off): the safety net, whatever happened in the group
        cleanup = configure_task(teacher_cleanup(run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER), "teacher_cleanup", s)
        server_json = s.teacher_server.model_dump_json(exclude={"enabled"})
        with dsl.ExitHandler(cleanup, name="with-teacher-server"):
            server = configure_task(
                teacher_server(model=run["teacher_model"], run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                               server=server_json),
                "teacher_server",
                s,
            ).after(spec)

            def stop_server(merged: dsl.PipelineTask) -> None:  # nothing after merge calls the teacher
                configure_task(teacher_cleanup(run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER), "teacher_cleanup", s) \
                    .after(merged).set_display_name("teacher-cleanup-after-merge")

            # the server's in-cluster http:// URL: the API key (mpa-openai) may go there (only pipeline pods
            # reach the run's teacher: manifests/base/networkpolicies.yaml)
            # a retried PA/PI finds the server or creates it again (the exit handler of the failed attempt
            # deleted it and a KFP Retry keeps that succeeded node): settings and model come along
            teacher = {"teacher_url": server.output, "teacher_server": server_json,
                       "teacher_model": run["teacher_model"]}
            mpa_dag(spec, s, teacher=teacher, after_merge=stop_server)

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
