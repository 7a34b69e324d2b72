"""The very pipeline that is compiled for the cluster, run end to end on the KFP local runner
(``kfp.local.SubprocessRunner(use_venv=False)``: every component in its own subprocess of this
environment) on tiny locally built models. The runner ignores resources and Kubernetes settings
and keeps artifacts under a local pipeline root; everything else — ParallelFor fan-out over
shards, Collected fan-in, the If gate, artifacts passed between steps — runs for real."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

pytest.importorskip("kfp")


def _one(root: Path, pattern: str) -> Path:
    found = sorted(root.glob(pattern))
    assert len(found) == 1, (pattern, found)
    return found[0]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_whole_pipeline_on_the_local_runner(tiny_ws, tmp_path, monkeypatch):
    from kfp import local

    from mpa.records import read_jsonl
    from mpa_kfp.pipelines.training.mpa.pipeline import mpa_pipeline

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    start = time.perf_counter()
    # the run config, as `mpa run -c` would read it ...
    config = {
        "task": {"name": "textvqa"},
        "teacher": {"model": str(tiny_ws["teacher"])},
        "student": {"model": str(tiny_ws["student"])},
        "data": {"images": str(tiny_ws["images"])},
        "annotate": {"max_new_tokens": 24},
        "identify": {"max_new_tokens": 6},
        "train": {"batch_size": 4, "epochs": 1.0},
        "evaluate": {"benchmark": "textvqa", "annotations": str(tiny_ws["benchmark"]), "max_new_tokens": 6},
    }
    # ... and every run parameter: kfp.local cannot leave an optional pipeline parameter unset (the
    # backend can); each one overrides the config field it is named after
    mpa_pipeline(
        config=config,
        shards=2,
        task_name="textvqa",
        teacher_model=str(tiny_ws["teacher"]),
        teacher_backend="hf",
        student_model=str(tiny_ws["student"]),
        data_images=str(tiny_ws["images"]),
        data_max_images=12,
        evaluate_benchmark="textvqa",
        evaluate_annotations=str(tiny_ws["benchmark"]),
        evaluate_images=str(tiny_ws["bench_images"]),
        evaluate_max_samples=4,
        identify_match="vqa",
        train_epochs=2.0,
        train_learning_rate=0.003,
        seed=0,
        tracking_registered_model="mpa-local-test",
        tracking_promotion_margin=0.0,
    )
    seconds = time.perf_counter() - start
    run = _one(tmp_path / "root", "mpa-*")

    # prepare: the resolved config (run parameters over the config) and every image assigned to a shard
    spec = run / "prepare" / "run_spec"
    images = list(read_jsonl(spec / "images.jsonl"))
    assert len(images) == 12 and {r["shard"] for r in images} <= {0, 1}
    resolved = json.loads((spec / "config.json").read_text())
    assert resolved["identify"]["match"] == "vqa" and resolved["train"]["epochs"] == 2.0
    assert resolved["train"]["batch_size"] == 4 and resolved["annotate"]["max_new_tokens"] == 24

    # PA and PI ran once per shard (ParallelFor) ...
    shard_runs = sorted(run.glob("for-loop-*-iteration-*"))
    assert len(shard_runs) == len({r["shard"] for r in images}) == 2
    n_annotated = 0
    for d in shard_runs:
        ann = list(read_jsonl(d / "annotate" / "annotations" / "annotations.jsonl"))
        assert ann and all(a["teacher"] for a in ann)
        n_annotated += len({a["image"] for a in ann})
        assert (d / "identify" / "judgements" / "pi" / "audit.jsonl").is_file()
    assert n_annotated == 12  # disjoint shards that cover the source

    # ... and the merge collected them (Collected) into one parity set, every image accounted for
    parity_dir = run / "merge" / "parity"
    counts = json.loads((parity_dir / "counts.json").read_text())
    assert counts["n_images"] == 12 and counts["n_shards"] == 2
    assert counts["done"] + counts["skipped_corrupt"] + counts["failed"] == 12
    parity = list(read_jsonl(parity_dir / "pi" / "parity.jsonl"))
    assert len(parity) == counts["k_parity"] > 0
    assert all(p["kept"] and p["teacher_match"] and not p["student_match"] for p in parity)

    # PL produced a loadable HF checkpoint
    ckpt = run / "level" / "checkpoint"
    assert (ckpt / "config.json").is_file() and list(ckpt.glob("*.safetensors"))
    log = list(read_jsonl(run / "level" / "train_log" / "train_log.jsonl"))
    assert len(log) >= 1 and all("loss" in r for r in log)

    # evaluate before/after, and the gate decided register from the two scores
    before = json.loads((run / "evaluate-base" / "predictions" / "score.json").read_text())
    after = json.loads((run / "evaluate-checkpoint" / "predictions" / "score.json").read_text())
    assert before["n"] == after["n"] == 4
    gate = json.loads((run / "gate" / "executor_output.json").read_text())["parameterValues"]["Output"]
    assert gate is (after["score"] - before["score"] > 0.0)
    assert (run / "register").exists() is gate

    # register: the pipeline ran it (the student got better) or, if not, the same step function is
    # called here on the pipeline's own artifacts — either way a real MLflow version comes out
    from mlflow import MlflowClient

    if not gate:
        from mpa.orchestrate.kubeflow.steps import register_model

        register_model(
            str(spec),
            str(ckpt),
            str(parity_dir),
            str(run / "evaluate-base" / "predictions"),
            str(run / "evaluate-checkpoint" / "predictions"),
            run_id="local-test-run",
        )
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    [model] = client.search_registered_models()
    [version] = client.search_model_versions(f"name = '{model.name}'")
    assert model.name == "mpa-local-test" and version.source == str(ckpt)  # the artifact's URI, not a copy
    assert version.tags["mpa.k_parity"] == str(counts["k_parity"])
    assert float(version.tags["mpa.score"]) == after["score"]
    assert version.tags["mpa.promotion"] == ("champion" if gate else "challenger")
    print(
        f"local pipeline run: {seconds:.1f} s; score {before['score']:.1f} -> {after['score']:.1f}; "
        f"K={counts['k_parity']}"
    )
