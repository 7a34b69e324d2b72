"""The CPU image, built for real (`make image-cpu`), and every CPU-image component of the compiled
pipeline run inside it the way the KFP launcher runs it: the executor's command and arguments
verbatim from the compiled spec, the image's non-root user, an executor input JSON for a small
real input (the tiny models' workspace, two shards). prepare, merge and gate run without a network
(nothing is installed at run time); register talks to real MLflow + S3 servers on 127.0.0.1.

annotate and identify are GPU-image components in the shipped spec; they run here on the CPU
image (as `pipelines/settings/cpu-dev.yaml` places them on a dev cluster) to give merge real
shard outputs. See kfp_launch.py for what this does not prove."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from kfp_launch import Launcher, compiled_spec_path, components_on_image, load_pipeline_spec

from mpa.records import read_jsonl

pytestmark = [pytest.mark.images, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
SPEC = load_pipeline_spec()
COVERED = {"prepare", "merge", "gate", "register"}  # the CPU-image components this module runs
WS = "/data/ws"  # where the tiny workspace is mounted (read-only) in the container
OVERRIDES = {"annotate.max_new_tokens": 24, "identify.max_new_tokens": 6, "evaluate.max_new_tokens": 6}


def test_every_cpu_image_component_is_run_here():
    on_cpu = set(components_on_image(SPEC, "mpa-cpu"))
    assert on_cpu, f"no component of {compiled_spec_path().name} runs on mpa-cpu"
    executors = SPEC["deploymentSpec"]["executors"]

    def executor(name: str) -> dict:
        return executors[SPEC["components"][f"comp-{name}"]["executorLabel"]]

    # a component the compiler copied (gate-2, register-3: one per round branch) runs the same executor
    copies = {n for n in on_cpu - COVERED if any(executor(n) == executor(c) for c in COVERED & on_cpu)}
    assert on_cpu - copies <= COVERED, f"CPU-image components without an in-image test: {sorted(on_cpu - COVERED)}"


def _podman_run(image: str, *args: str, user: str | None = None) -> str:
    cmd = ["bash", str(ROOT / "scripts" / "images.sh"), "run", "--rm", "--network=none"]
    if user:
        cmd += ["--user", user]
    proc = subprocess.run([*cmd, image, *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_image_runs_non_root_with_writable_home_and_cache(cpu_image):
    config = json.loads(
        subprocess.run(["podman", "image", "inspect", cpu_image], capture_output=True, text=True, check=True).stdout
    )[0]["Config"]
    assert config["User"] == "10001:0" and not config.get("Entrypoint")
    script = (
        'set -e; id -u; id -g; touch /cache/probe "$HOME/probe"; mkdir -p /cache/huggingface/x;'
        " if command -v gcc || command -v cc; then echo 'a C compiler in the image'; exit 3; fi;"
        " python3 -m mpa --help >/dev/null; mlflow --version;"
        " python3 -c 'import kfp, kfp.kubernetes, psycopg2, boto3, torch; print(torch.__version__)'"
    )
    out = _podman_run(cpu_image, "sh", "-c", script).split()
    assert out[:2] == ["10001", "0"]
    assert out[-1] == "2.13.0+cpu"
    # OpenShift style: an arbitrary UID in group 0 can still write its home and the model cache
    out = _podman_run(cpu_image, "sh", "-c", "touch /cache/p2 $HOME/p2 && id -u", user="1000680000:0").split()
    assert out == ["1000680000"]


# --- the pipeline's CPU components, in the image -----------------------------------------------


@pytest.fixture(scope="module")
def launcher(cpu_image, tmp_path_factory) -> Launcher:
    return Launcher(SPEC, cpu_image, tmp_path_factory.mktemp("kfp"))


@pytest.fixture(scope="module")
def ws_mount(tiny_ws, tmp_path_factory) -> dict[Path, str]:
    """The tiny workspace, readable by the image's user (a copy: safetensors are written 0600)."""
    root = Path(tiny_ws["teacher"]).parent
    for key in ("student", "images", "benchmark"):
        assert root in Path(tiny_ws[key]).parents, (key, tiny_ws[key])
    copy = tmp_path_factory.mktemp("ws-readable") / "ws"
    shutil.copytree(root, copy)
    subprocess.run(["chmod", "-R", "a+rX", str(copy)], check=True)
    return {copy: WS}


def _in_ws(tiny_ws, key: str) -> str:
    root = Path(tiny_ws["teacher"]).parent
    return f"{WS}/{Path(tiny_ws[key]).relative_to(root).as_posix()}"


@pytest.fixture(scope="module")
def prepared(launcher, tiny_ws, ws_mount):
    """prepare with a run config for the tiny workspace and a few run parameters; the other optional
    run parameters stay unset, as the backend may leave them."""
    config = {
        "task": {"name": "textvqa"},
        "teacher": {"model": _in_ws(tiny_ws, "teacher")},
        "student": {"model": _in_ws(tiny_ws, "student")},
        "data": {"images": _in_ws(tiny_ws, "images")},
        "annotate": {"max_new_tokens": 24},
        "identify": {"max_new_tokens": 6},
        "train": {"batch_size": 4, "epochs": 1.0},
        "evaluate": {"benchmark": "textvqa", "annotations": _in_ws(tiny_ws, "benchmark"), "max_new_tokens": 6},
    }
    values = {"config": config, "shards": 2, "identify_match": "vqa", "evaluate_max_samples": 4}
    # every prepare input is the pipeline parameter of the same name (what the driver resolves)
    task_inputs = SPEC["root"]["dag"]["tasks"]["prepare"]["inputs"]["parameters"]
    assert all(src == {"componentInputParameter": name} for name, src in task_inputs.items()), task_inputs
    assert set(values) <= set(task_inputs)
    return launcher.run("prepare", values, mounts=ws_mount)


def test_prepare_in_image(prepared, launcher):
    shards = prepared.parameters["Output"]
    assert shards == [0, 1]  # a LIST of ints: the loop items
    assert prepared.parameters["resolved_rounds"] == 1  # the config's default: what the If on rounds reads
    run_spec = prepared.artifacts["run_spec"][0]["path"]
    assert run_spec.is_relative_to(launcher.s3)
    images = list(read_jsonl(run_spec / "images.jsonl"))
    assert len(images) == 12 and {r["shard"] for r in images} == {0, 1}
    assert all(r["uri"].startswith(f"{WS}/") for r in images)
    config = json.loads((run_spec / "config.json").read_text())
    assert config["identify"]["match"] == "vqa" and config["annotate"]["max_new_tokens"] == 24
    assert config["evaluate"]["max_samples"] == 4  # a run parameter over the config field it is named after


@pytest.fixture(scope="module")
def shard_outputs(prepared, launcher, ws_mount):
    run_spec = launcher.output_artifact(prepared, "run_spec")
    judgements = []
    for shard in prepared.parameters["Output"]:
        ann = launcher.run(
            "annotate", {"run_spec": run_spec, "shard": shard}, task=f"annotate-{shard}", mounts=ws_mount
        )
        ident = launcher.run(
            "identify",
            {"run_spec": run_spec, "shard": shard, "annotations": launcher.output_artifact(ann, "annotations")},
            task=f"identify-{shard}",
            mounts=ws_mount,
        )
        judgements.append((ann, ident))
    return judgements


@pytest.fixture(scope="module")
def merged(prepared, shard_outputs, launcher, ws_mount):
    return launcher.run(
        "merge",
        {
            "run_spec": launcher.output_artifact(prepared, "run_spec"),
            "shards": [launcher.output_artifact(ident, "judgements") for _, ident in shard_outputs],
        },
        mounts=ws_mount,
    )


def test_merge_in_image(merged, shard_outputs):
    for ann, _ in shard_outputs:
        assert list(read_jsonl(ann.artifacts["annotations"][0]["path"] / "annotations.jsonl"))
    parity_dir = merged.artifacts["parity"][0]["path"]
    counts = json.loads((parity_dir / "counts.json").read_text())
    assert counts["n_images"] == 12 and counts["n_shards"] == 2
    assert counts["done"] + counts["skipped_corrupt"] + counts["failed"] == 12
    parity = list(read_jsonl(parity_dir / "pi" / "parity.jsonl"))
    assert merged.parameters["Output"] == len(parity) == counts["k_parity"] > 0
    assert all(p["kept"] and p["teacher_match"] and not p["student_match"] for p in parity)
    metrics = merged.artifacts["counts"][0]["metadata"]  # the Metrics artifact's logged values
    assert metrics["k_parity"] == counts["k_parity"] and metrics["n_images"] == 12


@pytest.mark.parametrize("after_delta, expected", [(5.0, True), (0.0, False)])
def test_gate_in_image(prepared, launcher, after_delta, expected):
    run_spec = launcher.output_artifact(prepared, "run_spec")
    margin = json.loads((prepared.artifacts["run_spec"][0]["path"] / "config.json").read_text())["tracking"][
        "promotion_margin"
    ]
    before = 40.0
    after = before + margin + after_delta
    result = launcher.run(
        "gate", {"run_spec": run_spec, "score_before": before, "score_after": after}, task=f"gate-{expected}"
    )
    assert result.parameters["Output"] is expected
    decision = result.artifacts["decision"][0]["metadata"]
    assert decision["register"] == float(expected) and decision["margin"] == margin
    assert decision["delta"] == pytest.approx(after - before)


def test_register_in_image(prepared, merged, launcher, tracking_server, object_server):
    """register against real MLflow (sqlite) + S3 (SeaweedFS) servers on 127.0.0.1, reached through
    the host network with the variables the mpa-config ConfigMap and the mpa-s3 Secret provide.
    It registers the checkpoint's URI in the pipeline root (level's return value) without
    downloading it; the before/after scores are written here (PL and evaluate are GPU-image
    components and are not run in this module)."""
    import mlflow

    base = f"s3://mpa-pipelines/{launcher.run_id}"
    checkpoint_uri = f"{base}/level/checkpoint"
    scores = {}
    for task, score in (("evaluate-base", 40.0), ("evaluate-checkpoint", 55.0)):
        uri = f"{base}/{task}/predictions"
        launcher.host_path(uri).mkdir(parents=True)
        (launcher.host_path(uri) / "score.json").write_text(
            json.dumps({"score": score, "benchmark": "textvqa", "metric": "vqa_accuracy", "n": 4})
        )
        scores[task] = launcher.artifact("system.Dataset", uri)
    env = {**object_server.env(), "MLFLOW_TRACKING_URI": tracking_server.uri}
    result = launcher.run(
        "register",
        {
            "run_spec": launcher.output_artifact(prepared, "run_spec"),
            "checkpoint_uri": checkpoint_uri,
            "parity": launcher.output_artifact(merged, "parity"),
            "before": scores["evaluate-base"],
            "after": scores["evaluate-checkpoint"],
            "run_id": "kfp-run-in-image",
        },
        env=env,
        network="host",
    )
    version = result.parameters["Output"]
    client = mlflow.MlflowClient(tracking_uri=tracking_server.uri)
    registered = client.get_model_version(version["name"], version["version"])
    assert registered.source == checkpoint_uri  # the stored artifact, not a second upload
    assert version["alias"] == "champion"  # the first version of a new registered model
    assert registered.tags["mpa.score"] == "55.000000" and registered.tags["mpa.base_score"] == "40.000000"
    assert registered.tags["mpa.k_parity"] == str(merged.parameters["Output"])
    assert client.get_run(registered.run_id).data.tags["kfp.run_id"] == "kfp-run-in-image"
