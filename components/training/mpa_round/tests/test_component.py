"""mpa_round: the unrolled chain of later rounds run for real on the shipped tiny toy-world models — PI
with the previous student over round 1's merged pool (the teacher's answers rebuilt from the audit, the
teacher never loaded), PL, evaluate; pass-through when the run asks for fewer rounds or K says stop."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from kfp.dsl import HTML, Dataset, Metrics, Model

from mpa.records import read_jsonl
from mpa_kfp.components.data_processing.prepare import prepare
from mpa_kfp.components.evaluation.evaluate_base import evaluate_base
from mpa_kfp.components.evaluation.evaluate_checkpoint import evaluate_checkpoint
from mpa_kfp.components.training.mpa_round import mpa_round


def _spec(toy_config: dict, out: Path, **fields) -> Path:
    """A run spec of the toy config with iterative-MPA fields (the same images as round 1's)."""
    prepare.python_func(run_spec=Dataset(uri=str(out)), resolved_rounds=f"{out}.rounds", shards=2,
                        config={**toy_config, **fields})
    return out


@pytest.fixture(scope="module")
def round1(toy_spec, toy_parity, toy_checkpoint, tmp_path_factory) -> dict:
    """Round 1's outputs as the pipeline hands them to round 2."""
    spec, _ = toy_spec
    out = tmp_path_factory.mktemp("round1")
    predictions = Dataset(uri=str(out / "predictions"))
    evaluate_base.python_func(run_spec=Dataset(uri=str(spec)), predictions=Dataset(uri=str(out / "base")),
                              metrics=Metrics(uri=str(out / "bm")))
    score = evaluate_checkpoint.python_func(run_spec=Dataset(uri=str(spec)), checkpoint=toy_checkpoint,
                                            before=Dataset(uri=str(out / "base")), parity=Dataset(uri=str(toy_parity)),
                                            predictions=predictions, metrics=Metrics(uri=str(out / "m")),
                                            report=HTML(uri=str(out / "report.html")))
    k = json.loads((toy_parity / "counts.json").read_text())["k_parity"]
    return {"checkpoint": toy_checkpoint, "union": Dataset(uri=str(toy_parity)), "predictions": predictions,
            "k": k, "score": score, "stopped": ""}


def _round(spec: Path, parity: Path, r: int, prev: dict, out: Path) -> dict:
    """Run round ``r`` after ``prev``; returns its outputs in the same shape (plus details and metrics)."""
    arts = {"checkpoint": Model(uri=str(out / "checkpoint")), "union": Dataset(uri=str(out / "union")),
            "predictions": Dataset(uri=str(out / "predictions")), "details": Dataset(uri=str(out / "details")),
            "metrics": Metrics(uri=str(out / "metrics")), "report": HTML(uri=str(out / "report.html"))}
    result = mpa_round.python_func(
        run_spec=Dataset(uri=str(spec)), parity=Dataset(uri=str(parity)), round_number=r,
        prev_checkpoint=prev["checkpoint"], prev_union=prev["union"], prev_predictions=prev["predictions"],
        prev_k=prev["k"], prev_score=prev["score"], prev_stopped=prev["stopped"], **arts)
    assert result.checkpoint_uri == arts["checkpoint"].uri
    record = json.loads((out / "details" / "round.json").read_text())
    return {**arts, "k": result.k, "score": result.score, "stopped": result.stopped, "record": record}


def _files(d: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(Path(d).iterdir()) if p.is_file()}


@pytest.fixture
def loads(monkeypatch) -> list[str]:
    """Every model loaded for inference in this test."""
    import mpa.vlm.loader as loader

    seen: list[str] = []
    real = loader.load_vlm
    monkeypatch.setattr(loader, "load_vlm", lambda cfg: seen.append(cfg.model) or real(cfg))
    return seen


@pytest.fixture
def trained(monkeypatch) -> list[tuple[str, str]]:
    """``(student it starts from, samples file)`` of every training in this test."""
    import mpa.orchestrate.rounds as rounds

    seen: list[tuple[str, str]] = []
    real = rounds.level_with_config

    def spy(cfg, out_dir, *, pi_dir=None, samples_path=None, show=True):
        seen.append((cfg.student.model, str(samples_path or Path(pi_dir) / "parity.jsonl")))
        return real(cfg, out_dir, pi_dir=pi_dir, samples_path=samples_path, show=show)

    monkeypatch.setattr(rounds, "level_with_config", spy)
    return seen


def test_a_round_trains_on_the_previous_student_and_the_next_passes_it_through(
        toy_config, toy_parity, round1, loads, trained, tmp_path):
    spec = _spec(toy_config, tmp_path / "spec", rounds=2,
                 iterate={"min_k": 1, "stop_when_not_shrinking": False, "train_from": "previous"})
    r2 = _round(spec, toy_parity, 2, round1, tmp_path / "r2")

    # PI asked round 1's student, never the teacher; the teacher's answers are round 1's, rebuilt from the audit
    assert loads[0] == round1["checkpoint"].path
    assert toy_config["teacher"]["model"] not in loads
    original = {}
    for log in toy_parity.parent.glob("judge-*/pi/pi_teacher.jsonl"):  # the shards' own logs (merge drops them)
        original |= {row["id"]: row["teacher_answer"] for row in read_jsonl(log)}
    rebuilt = {row["id"]: row["teacher_answer"] for row in read_jsonl(tmp_path / "r2/details/pi/pi_teacher.jsonl")}
    assert rebuilt == original and original
    audit = list(read_jsonl(tmp_path / "r2/details/pi/audit.jsonl"))
    assert r2["k"] == sum(j["kept"] for j in audit) == r2["record"]["k_parity"] >= 1

    # it trained from round 1's student on its own parity set, then scored the new checkpoint on the benchmark
    assert trained == [(round1["checkpoint"].path, str(tmp_path / "r2/details/pi/parity.jsonl"))]
    assert not r2["stopped"] and "stopped" not in r2["record"] and r2["record"]["steps"] >= 1
    assert os.path.isfile(f"{r2['checkpoint'].path}/config.json") and loads[-1] == r2["checkpoint"].path
    assert r2["score"] == json.loads((tmp_path / "r2/predictions/score.json").read_text())["score"]
    assert r2["record"]["eval"]["score"] == r2["score"] and r2["checkpoint"].metadata["round"] == 2
    # the union: round 1's parity set, then round 2's new samples
    union = [row["id"] for row in read_jsonl(tmp_path / "r2/union/pi/parity.jsonl")]
    first = [row["id"] for row in read_jsonl(toy_parity / "pi" / "parity.jsonl")]
    assert union[: len(first)] == first and len(union) == len(set(union)) >= len(first)
    assert r2["metrics"].metadata == {"round": 2.0, "k_parity": float(r2["k"]), "score": r2["score"], "trained": 1.0}
    page = (tmp_path / "r2" / "report.html").read_text()  # the KFP visualization: round 1 vs round 2, round 2's K
    assert f"<td>{round1['score']:.2f}</td>" in page and f"<td>{r2['score']:.2f}</td>" in page
    assert f"<th>K (parity-set size)</th><td>{r2['k']}</td>" in page

    # round 3 > rounds=2: nothing runs, round 2's outputs pass through (hard links: no bytes copied)
    n_loads = len(loads)
    r3 = _round(spec, toy_parity, 3, r2, tmp_path / "r3")
    assert len(loads) == n_loads and r3["stopped"] == r3["record"]["stopped"] == "round 3 > rounds=2"
    assert (r3["k"], r3["score"]) == (r2["k"], r2["score"])
    assert _files(r3["checkpoint"].path) == _files(r2["checkpoint"].path)
    weights = next(Path(r3["checkpoint"].path).glob("*.safetensors"))
    assert weights.stat().st_ino == (Path(r2["checkpoint"].path) / weights.name).stat().st_ino
    assert _files(r3["predictions"].path) == _files(r2["predictions"].path)
    assert _files(f"{r3['union'].path}/pi") == _files(f"{r2['union'].path}/pi")
    assert r3["metrics"].metadata["trained"] == 0.0 and not (tmp_path / "r3/details/pi").exists()


def test_a_round_below_min_k_stops_before_training_and_the_chain_stays_stopped(
        toy_config, toy_parity, round1, loads, tmp_path):
    spec = _spec(toy_config, tmp_path / "spec", rounds=3, iterate={"min_k": 10_000})
    r2 = _round(spec, toy_parity, 2, round1, tmp_path / "r2")
    assert r2["stopped"].startswith(f"K={r2['k']} < iterate.min_k=10000") and r2["record"]["stopped"] == r2["stopped"]
    assert loads == [round1["checkpoint"].path]  # PI ran with round 1's student; nothing was trained or scored
    assert (tmp_path / "r2/details/pi/audit.jsonl").is_file() and "checkpoint" not in r2["record"]
    assert _files(r2["checkpoint"].path) == _files(round1["checkpoint"].path) and r2["score"] == round1["score"]
    r3 = _round(spec, toy_parity, 3, r2, tmp_path / "r3")  # rounds=3, but the chain has stopped
    assert r3["stopped"] == r2["stopped"] and len(loads) == 1 and r3["k"] == r2["k"]
    assert _files(r3["checkpoint"].path) == _files(round1["checkpoint"].path) and r3["score"] == round1["score"]


def test_training_from_the_base_student_uses_the_union_of_parity_sets(toy_config, toy_parity, round1, trained,
                                                                     tmp_path):
    spec = _spec(toy_config, tmp_path / "spec", rounds=2,
                 iterate={"min_k": 1, "stop_when_not_shrinking": False, "train_from": "base"})
    r2 = _round(spec, toy_parity, 2, round1, tmp_path / "r2")
    assert not r2["stopped"]
    union_path = tmp_path / "r2/union/pi/parity.jsonl"
    assert trained == [(toy_config["student"]["model"], str(union_path))]  # the base student, on the union
    union = {row["id"] for row in read_jsonl(union_path)}
    round1_ids = {row["id"] for row in read_jsonl(toy_parity / "pi" / "parity.jsonl")}
    round2_ids = {row["id"] for row in read_jsonl(tmp_path / "r2/details/pi/parity.jsonl")}
    assert union == round1_ids | round2_ids and round2_ids
    assert json.loads((tmp_path / "r2/details/level_summary.json").read_text())["n_samples"] == len(union)
