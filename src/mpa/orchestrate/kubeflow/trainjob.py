"""PL as a Kubeflow Trainer TrainJob: nodes x GPUs on a cluster, through the ``kubeflow`` SDK's TrainerClient.

``train.backend: trainjob`` (settings under ``train.trainjob``). :func:`submit_level`:

1. copies the samples into a job directory under the *workspace* — a path on a volume the nodes
   mount (ReadWriteMany PVC) or an ``s3://`` prefix; the directory is named after the samples and
   the train settings, so submitting the same PL again finds the finished result;
2. submits a TrainJob against ``train.trainjob.runtime`` (the ``mpa-torch`` ClusterTrainingRuntime in
   ``manifests/components/trainer/``: our image under ``torchrun``) with ``num_nodes`` nodes and
   ``gpus_per_node`` GPUs each; every process runs :func:`mpa_level_trainjob`, i.e.
   :func:`mpa.stages.level.level` as one rank of the job's process group;
3. streams node 0's log, waits for Complete or Failed, and copies checkpoint, ``train_log.jsonl`` and
   ``level_summary.json`` back into ``out_dir`` (the KFP component hands the checkpoint on as its
   Model artifact).

``train.trainjob.sdk_backend: local-process`` runs the same job through the SDK's local backend (a venv
per job, the trainer under torchrun on this machine): the way to try it without a cluster.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mpa import storage
from mpa.config import RunConfig, task_for
from mpa.safeio import open_append
from mpa.stages.level import LevelSummary, level_with_config, make_spec, run_spec, training_samples
from mpa.tasks import Task

log = logging.getLogger(__name__)
#: what the nodes leave in ``<job dir>/level/`` besides the checkpoint
RESULT_FILES = ("level_summary.json", "train_log.jsonl")
COMPLETE, FAILED, RUNNING = "Complete", "Failed", "Running"


class TrainJobFailed(RuntimeError):
    """The TrainJob ended Failed; the message names it and ends with its last log lines."""


def mpa_level_trainjob(args=None, **kwargs):
    """PL on one TrainJob node (the SDK ships this function's source in the TrainJob command).

    The local backend calls it with the arguments as one dict, the Kubernetes backend with keywords.
    """
    from mpa.orchestrate.kubeflow.trainjob import run_node

    run_node(args if args is not None else kwargs)


def encode_spec(spec: dict[str, Any]) -> dict[str, str]:
    """The job's arguments as one base64 string: safe inside the bash here-document the SDK writes."""
    return {"spec_b64": base64.b64encode(json.dumps(spec).encode()).decode()}


def decode_spec(args: dict[str, Any]) -> dict[str, Any]:
    return json.loads(base64.b64decode(args["spec_b64"]))


def run_node(args: dict[str, Any]) -> LevelSummary:
    """One process of the TrainJob: train as a rank; with an ``s3://`` workspace rank 0 uploads the result.

    Errors are recorded for torchrun, so its failure summary (the end of the node's log) names the cause.
    """
    from torch.distributed.elastic.multiprocessing.errors import record

    return record(_run_node)(decode_spec(args))


def _run_node(spec: dict[str, Any]) -> LevelSummary:
    job_dir = spec["job_dir"]
    if storage.is_s3(job_dir):
        local = Path(tempfile.mkdtemp(prefix="mpa-trainjob-"))
        samples = local / "samples.jsonl"
        storage.download_file(storage.join(job_dir, "samples.jsonl"), samples)
        out_dir = local / "level"
    else:
        samples, out_dir = Path(job_dir) / "samples.jsonl", Path(job_dir) / "level"
    rank, world = int(os.environ.get("RANK", "0")), os.environ.get("WORLD_SIZE", "1")
    print(f"mpa PL: rank {rank} of {world} on {os.environ.get('HOSTNAME', 'this node')}, job {job_dir}", flush=True)
    summary = run_spec({**spec["level"], "samples_path": str(samples), "out_dir": str(out_dir)})
    if rank == 0:
        print("mpa PL summary: " + json.dumps(asdict(summary)), flush=True)
    if storage.is_s3(job_dir) and rank == 0:
        storage.copy_dir(out_dir / "checkpoint", storage.join(job_dir, "level", "checkpoint"))
        for name in RESULT_FILES:
            storage.copy(out_dir / name, storage.join(job_dir, "level", name))
    return summary


def job_dir_for(cfg: RunConfig, samples_path: str | Path) -> str:
    """``<workspace>/level-<fingerprint>``: one directory per (samples, train settings, student)."""
    from mpa.training.resume import fingerprint

    workspace = cfg.train.trainjob.workspace or storage.join(cfg.out, "trainjob")
    fp = fingerprint(
        samples_path, cfg.train.model_dump(mode="json"), {"model": cfg.student.model, "revision": cfg.student.revision}
    )
    return storage.join(workspace, f"level-{fp[:16]}")


def make_trainer(cfg: RunConfig, task: Task, job_dir: str) -> Any:
    """The SDK's ``CustomTrainer`` for this PL: nodes, GPUs, image, env, the function and its arguments."""
    from kubeflow.trainer import CustomTrainer

    tj = cfg.train.trainjob
    reserved = sorted(k for k in tj.env if k.startswith("PET_"))
    if reserved and tj.sdk_backend == "kubernetes":
        raise ValueError(
            f"train.trainjob.env sets {', '.join(reserved)}: torchrun's PET_* variables are set by the Trainer "
            "controller (one process per GPU of a node); use num_nodes and gpus_per_node"
        )
    node_train = cfg.train.model_copy(update={"backend": "local", "processes": 1})
    level_spec = make_spec("(on the node)", cfg.student, task, node_train, "(on the node)")
    resources: dict[str, Any] = {}
    if tj.gpus_per_node:
        resources["gpu"] = tj.gpus_per_node
    if tj.cpu_per_node:
        resources["cpu"] = tj.cpu_per_node
    if tj.memory_per_node:
        resources["memory"] = tj.memory_per_node
    return CustomTrainer(
        func=mpa_level_trainjob,
        func_args=encode_spec({"job_dir": job_dir, "level": level_spec}),
        image=tj.image,
        packages_to_install=list(tj.packages_to_install) or None,
        num_nodes=tj.num_nodes,
        resources_per_node=resources or None,
        env=dict(tj.env) or None,
    )


def make_client(cfg: RunConfig) -> Any:
    from kubeflow.trainer import KubernetesBackendConfig, LocalProcessBackendConfig, TrainerClient

    tj = cfg.train.trainjob
    if tj.sdk_backend == "local-process":
        return TrainerClient(backend_config=LocalProcessBackendConfig(cleanup_venv=True))
    return TrainerClient(backend_config=KubernetesBackendConfig(namespace=tj.namespace))


def follow(client: Any, name: str, cfg: RunConfig, echo: Callable[[str], None], log_path: Path) -> Any:
    """Wait until the job runs, stream node 0's log into ``log_path`` (and ``echo``), wait for its end."""
    tj = cfg.train.trainjob
    wait = {"timeout": tj.timeout_s, "polling_interval": tj.poll_s}
    client.wait_for_job_status(name, {RUNNING, COMPLETE, FAILED}, **wait)
    # the local backend prints its job's output itself while following; the Kubernetes one yields it
    echo_lines = tj.sdk_backend == "kubernetes"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open_append(log_path, truncate=True) as fh:  # no-follow, every write checked
        try:
            for chunk in client.get_job_logs(name, follow=True):
                for line in str(chunk).splitlines():
                    fh.write(line + "\n")
                    if echo_lines:
                        echo(line)
        except RuntimeError as exc:  # e.g. the pod is gone before its log was read
            fh.write(f"(log stream ended: {exc})\n")
    return client.wait_for_job_status(name, {COMPLETE, FAILED}, **wait)


def _remove_local_venv(job_name: str) -> None:
    """The local backend deletes its per-job venv (about 1.3 GB with torch) only when the job succeeds."""
    import shutil

    for d in Path(tempfile.gettempdir()).glob(f"{job_name}*"):
        if (d / "pyvenv.cfg").is_file():
            shutil.rmtree(d, ignore_errors=True)


def submit_level(
    cfg: RunConfig,
    samples_path: str | Path,
    out_dir: str | Path,
    *,
    task: Task | None = None,
    client: Any = None,
    echo: Callable[[str], None] | None = None,
) -> LevelSummary:
    """Run PL as a TrainJob and bring checkpoint, log and summary back into ``out_dir`` (local)."""
    out_dir = Path(out_dir)
    task = task or task_for(cfg)
    echo = echo or (lambda line: log.info("%s", line))
    tj = cfg.train.trainjob
    job_dir = job_dir_for(cfg, samples_path)
    result = storage.join(job_dir, "level")
    if not storage.exists(storage.join(result, "level_summary.json")):
        storage.copy(str(samples_path), storage.join(job_dir, "samples.jsonl"))
        client = client or make_client(cfg)
        name = client.train(runtime=client.get_runtime(tj.runtime), trainer=make_trainer(cfg, task, job_dir))
        echo(f"TrainJob {name}: {tj.num_nodes} node(s) x {max(1, tj.gpus_per_node)} process(es), runtime "
             f"{tj.runtime}, workspace {job_dir}")
        try:
            job = follow(client, name, cfg, echo, out_dir / "trainjob.log")
        finally:
            if tj.sdk_backend == "local-process":
                _remove_local_venv(name)
        if job.status != COMPLETE:
            tail = (out_dir / "trainjob.log").read_text(encoding="utf-8").splitlines()[-30:]
            raise TrainJobFailed(f"TrainJob {name} ended {job.status}; last log lines:\n" + "\n".join(tail))
        if not storage.exists(storage.join(result, "level_summary.json")):
            raise TrainJobFailed(f"TrainJob {name} completed but left no level_summary.json in {result}")
    else:
        echo(f"PL already done in {result}: reusing it (same samples and train settings)")
    storage.copy_dir(storage.join(result, "checkpoint"), out_dir / "checkpoint")
    for name in RESULT_FILES:
        storage.copy(storage.join(result, name), out_dir / name)
    summary = json.loads((out_dir / "level_summary.json").read_text(encoding="utf-8"))
    summary["checkpoint"] = str(out_dir / "checkpoint")
    (out_dir / "level_summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return LevelSummary(**summary)


def level_for_backend(
    cfg: RunConfig,
    out_dir: str | Path,
    *,
    pi_dir: str | Path | None = None,
    samples_path: str | Path | None = None,
    show: bool = True,
    echo: Callable[[str], None] | None = None,
) -> LevelSummary:
    """PL where ``train.backend`` says: here (:func:`mpa.stages.level.level_with_config`) or as a TrainJob."""
    if cfg.train.backend != "trainjob":
        return level_with_config(cfg, out_dir, pi_dir=pi_dir, samples_path=samples_path, show=show)
    samples = training_samples(cfg, out_dir, pi_dir=pi_dir, samples_path=samples_path)
    return submit_level(cfg, samples, out_dir, echo=echo)
