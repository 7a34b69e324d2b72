"""The very pipeline that is compiled for the cluster, run end to end on the KFP local runner
(``kfp.local.SubprocessRunner(use_venv=False)``: every component in its own subprocess of this
environment) on tiny locally built models. The runner ignores resources and Kubernetes settings
and keeps artifacts under a local pipeline root; everything else — ParallelFor fan-out over
shards, Collected fan-in, the later rounds started only when asked (rounds=2: round 2 trains, round 3 never
starts), the If gate, artifacts passed between steps, the evaluation's HTML report — runs for real."""

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
        "iterate": {"min_k": 1, "stop_when_not_shrinking": False},  # round 2 trains on whatever K it finds
    }
    # ... and every run parameter: kfp.local cannot leave an optional pipeline parameter unset (the
    # backend can); each one overrides the config field it is named after
    mpa_pipeline(
        config=config,
        shards=2,
        task_name="textvqa",
        teacher_model=str(tiny_ws["teacher"]),
        teacher_backend="hf",
        teacher_served_name="teacher",  # unused by the hf backend
        teacher_openai_base_url="https://api.openai.com/v1",  # unused by the hf backend
        teacher_openai_allow_plain_http=False,  # unused by the hf backend
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
        rounds=2,  # the compiled chain holds rounds 2 and 3: round 3 is not started
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
    ckpt1 = run / "level" / "checkpoint"
    assert (ckpt1 / "config.json").is_file() and list(ckpt1.glob("*.safetensors"))
    log = list(read_jsonl(run / "level" / "train_log" / "train_log.jsonl"))
    assert len(log) >= 1 and all("loss" in r for r in log)

    # evaluate before/after round 1
    before = json.loads((run / "evaluate-base" / "predictions" / "score.json").read_text())
    after1 = json.loads((run / "evaluate-checkpoint" / "predictions" / "score.json").read_text())
    assert before["n"] == after1["n"] == 4

    # the evaluation's KFP visualization: base vs aligned student, K
    page = (run / "evaluate-checkpoint" / "report").read_text()
    assert f"<th>K (parity-set size)</th><td>{counts['k_parity']}</td>" in page and "data:image/png" in page

    # round 2 asked round 1's student over the same pool, trained and scored; round 3 (> rounds) never started
    r2 = run / "mpa-round"
    rec2 = json.loads((r2 / "details" / "round.json").read_text())
    assert rec2["round"] == 2 and "stopped" not in rec2 and rec2["steps"] >= 1
    assert rec2["k_parity"] == sum(j["kept"] for j in read_jsonl(r2 / "details" / "pi" / "audit.jsonl"))
    assert not (run / "mpa-round-2").exists() and (r2 / "report").is_file()
    final = json.loads((r2 / "predictions" / "score.json").read_text())
    assert final == rec2["eval"]
    ckpt = r2 / "checkpoint"  # the final student: round 2's

    # the gate of the rounds=2 branch (and only it) decided register from the base and the final scores
    assert not (run / "gate").exists() and not (run / "gate-3").exists()
    gate = json.loads((run / "gate-2" / "executor_output.json").read_text())["parameterValues"]["Output"]
    assert gate is (final["score"] - before["score"] > 0.0)
    assert (run / "register-2").exists() is gate

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
            str(r2 / "predictions"),
            run_id="local-test-run",
        )
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    [model] = client.search_registered_models()
    [version] = client.search_model_versions(f"name = '{model.name}'")
    assert model.name == "mpa-local-test" and version.source == str(ckpt)  # the artifact's URI, not a copy
    assert version.tags["mpa.k_parity"] == str(counts["k_parity"])
    assert float(version.tags["mpa.score"]) == final["score"]  # the final round's, through the same gate
    assert version.tags["mpa.promotion"] == ("champion" if gate else "challenger")
    print(
        f"local pipeline run: {seconds:.1f} s; score {before['score']:.1f} -> {after1['score']:.1f} (round 1) -> "
        f"{final['score']:.1f} (round 2); K={counts['k_parity']} -> {rec2['k_parity']}"
    )
