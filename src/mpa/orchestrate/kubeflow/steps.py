"""What each KFP component does, as plain functions on local paths (the components' bodies call
these; tests call them directly too). Every step delegates the real work to :mod:`mpa.stages`.

A *plan* directory (the prepare step's output artifact) carries the resolved run config
(``config.json``) and the image manifest (``images.jsonl``: ``{uri, sha256, shard}``): every later
step reads one validated config, and the fan-in accounts for exactly the images listed at the
start. Sharding and the merge are the engine's own (:mod:`mpa.sharding`, ``--shard i/n``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mpa.config import RunConfig
from mpa.records import read_jsonl, write_json_atomic, write_jsonl_atomic

log = logging.getLogger(__name__)

PLAN_CONFIG = "config.json"
PLAN_IMAGES = "images.jsonl"
PLAN_SUMMARY = "plan.json"


def use_model_cache() -> str | None:
    """Point the HF and mpa caches at the mounted model-cache volume, if one is mounted.

    The pipeline sets ``MPA_MODEL_CACHE`` to the PVC's mount path; where that path is missing
    (the local runner) nothing changes.
    """
    root = os.environ.get("MPA_MODEL_CACHE")
    if not root or not os.path.isdir(root) or not os.access(root, os.W_OK):
        return None
    os.environ.setdefault("HF_HOME", os.path.join(root, "huggingface"))
    os.environ.setdefault("MPA_CACHE", os.path.join(root, "mpa"))
    return root


# --- prepare ---------------------------------------------------------------------------------


def prepare_plan(
    plan_dir: str, params: dict[str, Any], shards: int, overrides: dict[str, Any] | None = None
) -> list[int]:
    """Validate the run config, hash and shard the image source; return the non-empty shards."""
    from mpa.data.sources import list_images
    from mpa.orchestrate.kubeflow.params import config_from_params
    from mpa.sharding import hash_all, shard_of

    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    cfg = config_from_params(params, overrides)
    if not cfg.evaluate.benchmark or not cfg.evaluate.annotations:
        raise ValueError("the pipeline evaluates before/after: set the benchmark and benchmark_annotations parameters")
    uris = list_images(cfg.data.images, cfg.data.max_images)
    hashes = hash_all(uris, workers=8)
    rows = [{"uri": u, "sha256": hashes[u], "shard": shard_of(hashes[u], shards)} for u in uris]
    out = Path(plan_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / PLAN_CONFIG, cfg.model_dump(mode="json"))
    write_jsonl_atomic(out / PLAN_IMAGES, rows)
    counts = {i: sum(r["shard"] == i for r in rows) for i in range(shards)}
    write_json_atomic(out / PLAN_SUMMARY, {"shards": shards, "n_images": len(rows), "per_shard": counts})
    return [i for i in range(shards) if counts[i]]


def load_plan(plan_dir: str) -> tuple[RunConfig, list[dict]]:
    from mpa.config import parse_config

    path = Path(plan_dir)
    cfg = parse_config(json.loads((path / PLAN_CONFIG).read_text(encoding="utf-8")), str(path / PLAN_CONFIG))
    return cfg, list(read_jsonl(path / PLAN_IMAGES))


def plan_shard_count(plan_dir: str) -> int:
    return int(json.loads((Path(plan_dir) / PLAN_SUMMARY).read_text(encoding="utf-8"))["shards"])


def _result_cache(cfg: RunConfig):
    """The shared result cache, only where the config names a directory for it (e.g. on the model-cache
    volume): a pod's own disk is gone when the pod is, so a default per-run cache would only cost time."""
    if not cfg.cache.enabled or not cfg.cache.dir:
        return None
    from mpa.cache import ResultCache

    return ResultCache(cfg.cache.dir)


def _task(cfg: RunConfig):
    from mpa.tasks import get_task

    return get_task(cfg.task.name, cfg.task.prompt_file, cfg.task.metric)


# --- PA ----------------------------------------------------------------------------------------


def annotate_shard(plan_dir: str, shard: int, out_dir: str) -> dict:
    """PA on shard ``shard`` of the plan's ``n`` (the stage's own content-hash split, :mod:`mpa.sharding`):
    ``out_dir/annotations.jsonl`` (+ ``summary.json``)."""
    from mpa.stages.annotate import annotate_with_config
    from mpa.vlm.loader import load_vlm

    use_model_cache()
    cfg, _ = load_plan(plan_dir)
    n = plan_shard_count(plan_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    teacher = load_vlm(cfg.teacher)
    cache = _result_cache(cfg)
    try:
        summary = annotate_with_config(cfg, teacher, out / "annotations.jsonl", shard=(shard, n), cache=cache,
                                       show=False)
    finally:
        teacher.close()
        if cache is not None:
            cache.close()
    result = {"shard": shard, **asdict(summary)}
    write_json_atomic(out / "summary.json", result)
    return result


# --- PI ----------------------------------------------------------------------------------------


def identify_shard(plan_dir: str, shard: int, annotations_dir: str, out_dir: str) -> dict:
    """PI on one shard's annotations. ``out_dir`` gets the engine's shard layout (``annotations.jsonl``,
    ``pi/{audit,parity}.jsonl``, ``pi/counts.json``) plus ``shard.json``, ready for :func:`merge_parity`."""
    from mpa.stages.identify import identify_with_config
    from mpa.vlm.loader import LazyVLM

    use_model_cache()
    cfg, _ = load_plan(plan_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy2(Path(annotations_dir) / "annotations.jsonl", out / "annotations.jsonl")
    teacher, student = LazyVLM(cfg.teacher), LazyVLM(cfg.student)
    cache = _result_cache(cfg)
    try:
        summary = identify_with_config(cfg, teacher, student, out / "annotations.jsonl", out / "pi", cache=cache,
                                       show=False)
    finally:
        teacher.release()
        student.release()
        if cache is not None:
            cache.close()
    write_json_atomic(out / "shard.json", {"shard": shard, "n": plan_shard_count(plan_dir)})
    return asdict(summary)


# --- fan-in -----------------------------------------------------------------------------------


COUNT_KEYS = (
    "n_images",
    "n_annotations",
    "n_parsed",
    "n_teacher_consistent",
    "n_student_wrong",
    "student_calls",
    "student_calls_saved",
)


def merge_parity(plan_dir: str, shard_dirs: list[str], out_dir: str) -> dict:
    """Fan-in with the engine's merge (:func:`mpa.sharding.merge_shards`): one ``annotations.jsonl``,
    ``pi/audit.jsonl`` and ``pi/parity.jsonl`` in ``out_dir``, every image of the plan accounted for
    (done, skipped as corrupt, failed with a reason); a missing image fails the step and names the
    shards to re-run. Returns the summed PI counts and the merge report's numbers."""
    from mpa.sharding import merge_shards, shard_dir

    _, rows = load_plan(plan_dir)
    n = plan_shard_count(plan_dir)
    out = Path(out_dir)
    totals: dict[str, Any] = dict.fromkeys(COUNT_KEYS, 0)
    for d in shard_dirs:
        meta = json.loads((Path(d) / "shard.json").read_text(encoding="utf-8"))
        if int(meta["n"]) != n:
            raise ValueError(f"shard output {d} was made for {meta['n']} shards, the plan has {n}")
        target = shard_dir(out, int(meta["shard"]), n)
        if target.exists():
            raise ValueError(f"shard {meta['shard']}/{n} appears twice among the collected outputs")
        shutil.copytree(d, target)
        counts = json.loads((Path(d) / "pi" / "counts.json").read_text(encoding="utf-8"))
        for k in COUNT_KEYS:
            totals[k] += counts.get(k, 0)
    report = merge_shards(out, n, [r["uri"] for r in rows])
    shutil.rmtree(out / "shards")
    totals["k_parity"] = report.k_parity or 0
    totals["k_over_n"] = totals["k_parity"] / report.n_images if report.n_images else 0.0
    totals.update(
        n_shards=n,
        done=report.done,
        skipped_corrupt=report.skipped_corrupt,
        failed=report.failed,
        duplicates_dropped=report.duplicates_dropped,
    )
    write_json_atomic(out / "counts.json", totals)
    return totals


# --- PL ----------------------------------------------------------------------------------------


def train_student(plan_dir: str, parity_dir: str, checkpoint_dir: str, log_dir: str) -> dict:
    """PL: fine-tune the student on the merged parity set; the HF checkpoint goes to ``checkpoint_dir``."""
    from mpa.stages.level import build_replay_mix, level

    use_model_cache()
    cfg, _ = load_plan(plan_dir)
    samples = Path(parity_dir) / "pi" / "parity.jsonl"
    work = Path(tempfile.mkdtemp(prefix="mpa-level-"))
    try:
        if cfg.train.replay_fraction > 0:
            mix = work / "train_mix.jsonl"
            build_replay_mix(
                Path(parity_dir) / "pi" / "audit.jsonl", samples, cfg.train.replay_fraction, cfg.train.seed, mix
            )
            samples = mix
        summary = level(
            samples_path=samples, student=cfg.student, task=_task(cfg), cfg=cfg.train, out_dir=work, show=False
        )
        logs = Path(log_dir)
        logs.mkdir(parents=True, exist_ok=True)
        for name in ("train_log.jsonl", "level_summary.json"):
            if (work / name).is_file():
                shutil.copy2(work / name, logs / name)
        dest = Path(checkpoint_dir)
        if dest.exists():
            shutil.rmtree(dest)
        shutil.move(str(work / "checkpoint"), str(dest))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = asdict(summary)
    result["checkpoint"] = str(checkpoint_dir)
    return result


# --- evaluate ----------------------------------------------------------------------------------


def evaluate_model(plan_dir: str, out_dir: str, checkpoint_dir: str | None = None) -> dict:
    """Score the base student (``checkpoint_dir=None``) or an aligned checkpoint on the benchmark."""
    from mpa.data.benchmarks import load_benchmark
    from mpa.stages.evaluate import evaluate
    from mpa.vlm.loader import load_vlm

    use_model_cache()
    cfg, _ = load_plan(plan_dir)
    ev = cfg.evaluate
    samples = load_benchmark(
        ev.benchmark, ev.annotations, questions=ev.questions, images=ev.images, max_samples=ev.max_samples
    )
    model_cfg = (
        cfg.student
        if checkpoint_dir is None
        else cfg.student.model_copy(update={"model": str(checkpoint_dir), "revision": None})
    )
    vlm = load_vlm(model_cfg)
    try:
        result = evaluate(
            model=vlm,
            benchmark=ev.benchmark,
            samples=samples,
            predictions_path=Path(out_dir) / "predictions.jsonl",
            batch_size=cfg.student.batch_size,
            max_new_tokens=ev.max_new_tokens,
            label="evaluate",
        )
    finally:
        vlm.close()
    write_json_atomic(Path(out_dir) / "score.json", result)
    return result


def numeric_metrics(result: dict) -> dict[str, float]:
    """The numbers of an evaluation result, for a KFP Metrics artifact."""
    return {k: float(v) for k, v in result.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def is_better(plan_dir: str, score_before: float, score_after: float) -> tuple[bool, float]:
    """The register gate: ``after - before > tracking.promotion_margin`` (score points)."""
    cfg, _ = load_plan(plan_dir)
    margin = float(cfg.tracking.promotion_margin)
    return score_after - score_before > margin, margin


# --- register ----------------------------------------------------------------------------------


def register_model(
    plan_dir: str, checkpoint_dir: str, parity_dir: str, before_dir: str, after_dir: str, run_id: str = ""
) -> dict:
    """Register the aligned student with the engine's register stage (:mod:`mpa.stages.register`):
    a new MLflow model version tagged with its lineage (teacher, base student, task, K, scores, KFP
    run), promoted by aliases (``champion`` / ``challenger``).

    The step lays the pipeline's artifacts out as the run directory that stage reads
    (``config.yaml``, ``summary.json``, ``level/checkpoint``). It needs a tracking server
    (``MLFLOW_TRACKING_URI`` from the ``mpa-config`` ConfigMap, or ``tracking.uri``): an embedded
    store would vanish with the pod.
    """
    import yaml

    from mpa.stages.register import register

    cfg, _ = load_plan(plan_dir)
    if not (cfg.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI")):
        raise ValueError(
            "register needs an MLflow tracking server: set MLFLOW_TRACKING_URI (the mpa-config "
            "ConfigMap) or the tracking.uri config field (config_overrides)"
        )
    work = Path(tempfile.mkdtemp(prefix="mpa-register-"))
    try:
        tracking = cfg.tracking.model_copy(update={"kfp_run_id": run_id or cfg.tracking.kfp_run_id})
        cfg = cfg.model_copy(update={"out": str(work), "tracking": tracking})
        (work / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
        before = json.loads((Path(before_dir) / "score.json").read_text(encoding="utf-8"))
        after = json.loads((Path(after_dir) / "score.json").read_text(encoding="utf-8"))
        counts = json.loads((Path(parity_dir) / "counts.json").read_text(encoding="utf-8"))
        summary = {
            "out": str(work),
            "task": cfg.task.name,
            "teacher": cfg.teacher.model,
            "student": cfg.student.model,
            "match_rule": cfg.identify.match,
            "identify": counts,
            "eval_before": before,
            "eval_after": after,
            "delta": after["score"] - before["score"],
        }
        write_json_atomic(work / "summary.json", summary)
        (work / "level").mkdir()
        (work / "level" / "checkpoint").symlink_to(Path(checkpoint_dir).resolve(), target_is_directory=True)
        version = register(run_dir=work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dict(vars(version))
