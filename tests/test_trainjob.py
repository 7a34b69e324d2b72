"""PL as a Kubeflow Trainer TrainJob through the ``kubeflow`` SDK (0.5.0).

- The Kubernetes backend, for real, against a fake Kubernetes API (no API server here): the SDK reads
  our ClusterTrainingRuntime manifest, builds and POSTs the TrainJob, follows pods and logs; the fake
  "controller" runs the exact command the SDK put into the TrainJob (bash + torchrun + our function)
  with the PET_* variables the Trainer controller sets, on the CPU. What the fake does not prove is
  listed in docs/training.md (scheduling, JobSet, pod networking, the controller's own validation).
- The local-process backend, for real: a venv per job, torch from the CPU wheel, mpa from this
  checkout, two ranks under torchrun.
- The manifests: the trainer component renders and validates; the runtime round-trips through the
  SDK's generated models (no unknown field).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
import torch
import yaml
from kubectl import kubectl
from safetensors.torch import load_file

from mpa.config import parse_config
from mpa.devtools.tinymodels import TINY_COLORS, TINY_QUESTION

pytest.importorskip("kubeflow.trainer", reason="the trainer extra: pip install 'mpa[trainer]'")

REPO = Path(__file__).resolve().parents[1]
TRAINER = REPO / "manifests" / "components" / "trainer"


@pytest.fixture
def samples(tiny_ws, tmp_path) -> Path:
    colors = list(TINY_COLORS)
    rows = [{"image": str(p), "question": TINY_QUESTION, "answer": colors[i % 4]}
            for i, p in enumerate(sorted(Path(tiny_ws["images"]).glob("*.png")))]
    path = tmp_path / "parity.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _config(tiny_ws, tmp_path, **trainjob) -> object:
    return parse_config({
        "teacher": {"model": str(tiny_ws["teacher"])}, "student": {"model": str(tiny_ws["student"])},
        "data": {"images": str(tiny_ws["images"])}, "out": str(tmp_path / "run"),
        "train": {"batch_size": 4, "learning_rate": 3e-3, "epochs": 1, "backend": "trainjob",
                  "trainjob": {"workspace": str(tmp_path / "workspace"), "poll_s": 1, "timeout_s": 1800,
                               **trainjob}},
    })


def _env_path() -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])),
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
            "OMP_NUM_THREADS": "1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- a fake Kubernetes API with a minimal Trainer "controller" --------------------------------------


class FakeCluster:
    """Just the API calls TrainerClient's Kubernetes backend makes; POSTed TrainJobs really run."""

    def __init__(self, runtime: dict, workdir: Path) -> None:
        self.runtime, self.workdir = runtime, workdir
        self.jobs: dict[str, dict] = {}
        self.posted: dict[str, dict] = {}  # TrainJobs exactly as the SDK sent them
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, str] = {}
        self.done: dict[str, threading.Event] = {}
        self.requests: list[str] = []
        cluster = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, code: int, body: object, content_type: str = "application/json") -> None:
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # noqa: N802
                cluster.requests.append("GET " + self.path)
                code, body, ctype = cluster.get(urlparse(self.path))
                self._send(code, body, ctype)

            def do_POST(self):  # noqa: N802
                cluster.requests.append("POST " + self.path)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                self._send(201, cluster.create(urlparse(self.path).path, body))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.host = f"http://127.0.0.1:{self.server.server_port}"

    def close(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
        self.server.shutdown()

    @staticmethod
    def not_found(what: str) -> tuple[int, dict, str]:
        return 404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                     "code": 404, "message": f"{what} not found"}, "application/json"

    def create(self, path: str, body: dict) -> dict:
        name, ns = body["metadata"]["name"], path.split("/")[5]
        self.posted[name] = json.loads(json.dumps(body))
        body["metadata"].update(namespace=ns, creationTimestamp=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
        self.jobs[name] = body
        trainer = body["spec"]["trainer"]
        gpus = int(trainer.get("resourcesPerNode", {}).get("limits", {}).get("nvidia.com/gpu", 1))
        env = {**os.environ, **_env_path(), **{e["name"]: e["value"] for e in trainer.get("env", [])},
               # what the Trainer controller sets for the torch policy (one process per GPU asked for)
               "PET_NNODES": str(trainer.get("numNodes", 1)), "PET_NPROC_PER_NODE": str(gpus),
               "PET_NODE_RANK": "0", "PET_MASTER_ADDR": "127.0.0.1", "PET_MASTER_PORT": str(_free_port())}
        cwd = self.workdir / name
        cwd.mkdir(parents=True)
        proc = subprocess.Popen(trainer["command"], cwd=cwd, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        self.procs[name], done = proc, threading.Event()
        self.done[name] = done

        def collect() -> None:  # the pod's log: everything the command prints
            self.logs[name] = proc.stdout.read()
            proc.wait()
            done.set()

        threading.Thread(target=collect, daemon=True).start()
        return body

    def _finished(self, name: str) -> str:
        self.done[name].wait()
        return self.logs[name]

    def status(self, name: str) -> str:
        if not self.done[name].is_set():
            return "Running"
        return "Succeeded" if self.procs[name].returncode == 0 else "Failed"

    def get(self, url) -> tuple[int, object, str]:
        parts = url.path.strip("/").split("/")
        if url.path.startswith("/api/v1/namespaces/kubeflow-system/configmaps/"):
            return self.not_found("configmap")
        if "trainingruntimes" in parts and "clustertrainingruntimes" not in parts:
            return self.not_found("trainingruntime")
        if "clustertrainingruntimes" in parts:
            if parts[-1] == self.runtime["metadata"]["name"]:
                return 200, self.runtime, "application/json"
            return self.not_found("clustertrainingruntime")
        if "trainjobs" in parts:
            job = self.jobs.get(parts[-1])
            if job is None:
                return self.not_found("trainjob")
            st = self.status(parts[-1])
            if st != "Running":
                kind = "Complete" if st == "Succeeded" else "Failed"
                job = {**job, "status": {"conditions": [{
                    "type": kind, "status": "True", "reason": kind, "message": f"TrainJob {kind}",
                    "lastTransitionTime": job["metadata"]["creationTimestamp"]}]}}
            return 200, job, "application/json"
        if parts[-1] == "pods":
            selector = parse_qs(url.query)["labelSelector"][0]
            name = selector.split(",")[0].split("=")[1]
            pod = {
                "metadata": {"name": f"{name}-node-0-0", "namespace": "mpa",
                             "creationTimestamp": self.jobs[name]["metadata"]["creationTimestamp"],
                             "labels": {"jobset.sigs.k8s.io/jobset-name": name,
                                        "jobset.sigs.k8s.io/replicatedjob-name": "node",
                                        "batch.kubernetes.io/job-completion-index": "0"}},
                "spec": {"containers": [{"name": "node", "image": "mpa-gpu"}]},
                "status": {"phase": self.status(name)},
            }
            return 200, {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [pod]}, "application/json"
        if parts[-1] == "log":
            name = parts[-2].rsplit("-node-", 1)[0]
            return 200, self._finished(name), "text/plain"
        return self.not_found(url.path)


def _runtime() -> dict:
    return yaml.safe_load((TRAINER / "cluster" / "runtime.yaml").read_text())


def test_trainjob_via_the_kubernetes_backend_runs_the_command_the_sdk_builds(tiny_ws, samples, tmp_path):
    from kubeflow.trainer import KubernetesBackendConfig, TrainerClient
    from kubeflow_trainer_api import models
    from kubernetes import client as k8s

    from mpa.orchestrate.kubeflow.trainjob import submit_level

    cluster = FakeCluster(_runtime(), tmp_path / "pods")
    try:
        conf = k8s.Configuration()
        conf.host = cluster.host
        tc = TrainerClient(backend_config=KubernetesBackendConfig(namespace="mpa", client_configuration=conf))
        cfg = _config(tiny_ws, tmp_path, gpus_per_node=2, memory_per_node="8Gi", image="registry.example/mpa-gpu:1",
                      env={"MPA_TRAINJOB_TEST": "1"})
        lines: list[str] = []
        summary = submit_level(cfg, samples, tmp_path / "level", client=tc, echo=lines.append)
    finally:
        cluster.close()
    (name, body), = cluster.posted.items()
    # the TrainJob the SDK created, checked against its own generated API models
    job = models.TrainerV1alpha1TrainJob.from_dict(body)
    assert job.to_dict() == body  # nothing unknown, nothing lost
    assert (job.spec.runtime_ref.name, job.spec.runtime_ref.kind) == ("mpa-torch", "ClusterTrainingRuntime")
    assert job.spec.trainer.num_nodes == 1 and job.spec.trainer.image == "registry.example/mpa-gpu:1"
    limits = body["spec"]["trainer"]["resourcesPerNode"]["limits"]
    assert limits == {"nvidia.com/gpu": 2, "memory": "8Gi"}
    assert {"name": "MPA_TRAINJOB_TEST", "value": "1"} in body["spec"]["trainer"]["env"]
    command = body["spec"]["trainer"]["command"]
    assert command[:2] == ["bash", "-c"] and "torchrun" in command[2]
    # it ran as 2 processes (numProcPerNode auto -> the 2 GPUs asked for), the result came back
    assert summary.world_size == 2 and summary.steps == 3
    assert Path(summary.checkpoint) == tmp_path / "level" / "checkpoint"
    assert (tmp_path / "level" / "checkpoint" / "model.safetensors").is_file()
    assert len((tmp_path / "level" / "train_log.jsonl").read_text().splitlines()) == 3
    assert any(line.startswith(f"TrainJob {name}") for line in lines)
    node_log = (tmp_path / "level" / "trainjob.log").read_text()  # node 0's log, streamed
    assert "mpa PL: rank 0 of 2" in node_log and "mpa PL summary:" in node_log
    assert any("/log?" in r and "follow=True" in r for r in cluster.requests)  # streamed, not fetched at the end
    # same samples and settings again: the finished result is found in the workspace, nothing submitted
    again = submit_level(cfg, samples, tmp_path / "level2", client=object(), echo=lines.append)
    assert again.world_size == 2 and (tmp_path / "level2" / "checkpoint" / "config.json").is_file()


def test_failed_trainjob_reports_its_log(tiny_ws, tmp_path):
    from kubeflow.trainer import KubernetesBackendConfig, TrainerClient
    from kubernetes import client as k8s

    from mpa.orchestrate.kubeflow.trainjob import TrainJobFailed, submit_level

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"image": str(tmp_path / "gone.png"), "question": "q?", "answer": "red"}) + "\n")
    cluster = FakeCluster(_runtime(), tmp_path / "pods")
    try:
        conf = k8s.Configuration()
        conf.host = cluster.host
        tc = TrainerClient(backend_config=KubernetesBackendConfig(namespace="mpa", client_configuration=conf))
        with pytest.raises(TrainJobFailed, match=r"(?s)ended Failed; last log lines:.*gone.png"):
            submit_level(_config(tiny_ws, tmp_path, gpus_per_node=1), bad, tmp_path / "level", client=tc)
    finally:
        cluster.close()


@pytest.mark.slow
def test_trainjob_via_the_local_process_backend(tiny_ws, samples, tmp_path):
    """The SDK's local backend for real: venv per job, CPU torch wheel, mpa from this checkout, 2 ranks."""
    from importlib.metadata import version

    from mpa.orchestrate.kubeflow.trainjob import submit_level
    from mpa.stages.level import level

    # pip takes the CPU torch build the index / find-links offer; torchvision for the Qwen2-VL processor
    torch_req = "torch==" + torch.__version__.split("+")[0]
    vision_req = "torchvision==" + version("torchvision").split("+")[0]
    env = {k: v for k, v in os.environ.items() if k.startswith("PIP_") or k in ("HOME", "TMPDIR", "SSL_CERT_FILE")}
    env.update(_env_path(), PET_NPROC_PER_NODE="2")
    env.pop("PYTHONPATH")  # the job's venv must import mpa from what it installed
    pkg = tmp_path / "mpa-src"  # pip builds in the source tree: give it a copy, not the checkout
    for tree in ("src", "components", "pipelines"):  # the wheel maps all three (pyproject.toml)
        shutil.copytree(REPO / tree, pkg / tree, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, pkg / name)
    cfg = _config(tiny_ws, tmp_path, sdk_backend="local-process", runtime="torch-distributed",
                  packages_to_install=[torch_req, vision_req, f"mpa @ {pkg.as_uri()}"], env=env)
    lines: list[str] = []
    summary = submit_level(cfg, samples, tmp_path / "level", echo=lines.append)
    assert summary.world_size == 2
    local = level(samples_path=samples, student=cfg.student, task=__import__("mpa.tasks").tasks.get_task("textvqa"),
                  cfg=cfg.train.model_copy(update={"backend": "local"}), out_dir=tmp_path / "here", show=False)
    assert summary.first_loss == pytest.approx(local.first_loss, rel=1e-4)
    assert summary.last_loss == pytest.approx(local.last_loss, rel=1e-4)
    w = load_file(str(tmp_path / "level" / "checkpoint" / "model.safetensors"))
    assert w and all(t.isfinite().all() for t in w.values())
    assert "Operating inside" in (tmp_path / "level" / "trainjob.log").read_text()


# --- manifests ---------------------------------------------------------------------------------------



def _validate(path: Path) -> None:
    import kubernetes_validate

    root = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    version = max((p.name.split("-")[0].lstrip("v") for p in root.glob("v*-local-strict")),
                  key=lambda v: tuple(int(x) for x in v.split(".")))
    out = subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", "-k", version,
                          str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_trainer_component_renders_and_grants_what_the_sdk_calls(tmp_path):
    shutil.copytree(REPO / "manifests", tmp_path / "manifests")
    overlay = tmp_path / "manifests" / "overlays" / "with-trainer"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "namespace": "mpa",
        "resources": ["../../base"], "components": ["../../components/trainer"]}))
    rendered = subprocess.run([kubectl(), "kustomize", str(overlay)], capture_output=True, text=True)
    assert rendered.returncode == 0, rendered.stderr
    (tmp_path / "ns.yaml").write_text(rendered.stdout)
    _validate(tmp_path / "ns.yaml")
    docs = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    role = next(d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == "mpa-trainjob")
    grants = {(r["resources"][0], v) for r in role["rules"] for v in r["verbs"]}
    # TrainerClient.train / get_job / wait_for_job_status / get_job_logs / get_runtime / delete_job
    needed = {("trainjobs", "create"), ("trainjobs", "get"), ("trainjobs", "delete"), ("trainingruntimes", "get"),
              ("pods", "list"), ("pods/log", "get")}
    assert needed <= grants
    assert not any("secrets" in r["resources"] for r in role["rules"])
    pvc = next(d for d in docs if d["kind"] == "PersistentVolumeClaim" and d["metadata"]["name"] == "mpa-workspace")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    binding = next(d for d in docs if d["kind"] == "RoleBinding" and d["metadata"]["name"] == "mpa-trainjob")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "mpa-pipeline", "namespace": "mpa"}]

    cluster = subprocess.run([kubectl(), "kustomize", str(TRAINER / "cluster")], capture_output=True, text=True)
    assert cluster.returncode == 0, cluster.stderr
    cdocs = [d for d in yaml.safe_load_all(cluster.stdout) if d]
    core = [d for d in cdocs if d["kind"] != "ClusterTrainingRuntime"]
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump_all(core))
    _validate(tmp_path / "cluster.yaml")
    runtime = next(d for d in cdocs if d["kind"] == "ClusterTrainingRuntime")
    assert "namespace" not in runtime["metadata"]  # cluster-scoped
    crole = next(d for d in cdocs if d["kind"] == "ClusterRole")
    assert crole["rules"] == [{"apiGroups": ["trainer.kubeflow.org"], "resources": ["clustertrainingruntimes"],
                               "verbs": ["get", "list"]}]


def test_runtime_round_trips_through_the_sdk_models():
    from kubeflow_trainer_api import models

    runtime = _runtime()
    parsed = models.TrainerV1alpha1ClusterTrainingRuntime.from_dict(runtime)
    assert parsed.to_dict() == runtime  # every field is one the Trainer API knows
    node = parsed.spec.template.spec.replicated_jobs[0]
    assert node.name == "node" and node.template.metadata.labels["trainer.kubeflow.org/trainjob-ancestor-step"]
    assert parsed.spec.ml_policy.torch is not None and parsed.spec.ml_policy.num_nodes == 1


def test_pet_variables_are_refused_for_kubernetes(tiny_ws, tmp_path):
    """The Trainer controller rejects TrainJobs that set torchrun's PET_* variables; say so before submitting."""
    from mpa.orchestrate.kubeflow.trainjob import make_trainer

    cfg = _config(tiny_ws, tmp_path, env={"PET_NPROC_PER_NODE": "2"})
    with pytest.raises(ValueError, match="PET_NPROC_PER_NODE.*set by the Trainer controller"):
        make_trainer(cfg, __import__("mpa.tasks").tasks.get_task("textvqa"), str(tmp_path))
