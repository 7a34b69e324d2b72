"""What each KFP component does, as plain functions on local paths (the components' bodies call
these, one call each; tests call them directly too). Every step delegates the real work to
:mod:`mpa.stages`.

The *run spec* directory (the prepare step's output artifact, ``run_spec``; not to be confused
with the cost plan of ``mpa plan``) carries the resolved run config (``config.json``) and the
image manifest (``images.jsonl``: ``{uri, sha256, shard}``): every later step reads one validated
config, shard pods annotate exactly the images prepare listed for them (nothing is listed or
hashed again), and the fan-in accounts for exactly those images. Sharding and the merge are the
engine's own (:mod:`mpa.sharding`, ``--shard i/n``).

Steps that produce KFP Metrics take any object with ``log_metric(key, value)`` (the KFP artifact
in a pod, a recorder in tests); ``train_student`` takes the Model artifact (``.path``,
``.metadata``, ``.uri``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from mpa.config import ConfigError, RunConfig, match_rule_for
from mpa.records import read_jsonl, write_json_atomic, write_jsonl_atomic
from mpa.safeio import write_atomic

log = logging.getLogger(__name__)

SPEC_CONFIG = "config.json"
SPEC_IMAGES = "images.jsonl"
SPEC_SUMMARY = "shards.json"
TEACHER_IN_POD_ENV = "MPA_TEACHER_IN_POD"  # set by the compiled pipeline (settings.teacher_in_pod)
MAX_ROUNDS_ENV = "MPA_MAX_ROUNDS"  # set by the compiled pipeline (settings.max_rounds)
TEACHER_SERVER_ENV = "MPA_TEACHER_SERVER"  # "1": compiled with a per-run teacher server (settings.teacher_server)
SCRATCH_ENV = "MPA_SCRATCH"  # a size-limited emptyDir for large temporary files (PL's work directory)
IN_POD_BACKENDS = ("hf", "vllm")  # backends that load the model inside the step's own pod


class MetricsSink(Protocol):
    def log_metric(self, metric: str, value: float) -> None: ...


def use_model_cache() -> str | None:
    """Point the HF and mpa caches at the mounted model-cache volume, if one is mounted.

    The pipeline sets ``MPA_MODEL_CACHE`` to the PVC's mount path; where that path is missing
    (the local runner) nothing changes; where the pod's user cannot write it (a fresh volume is
    root-owned) the step goes on without it, with one warning.
    """
    root = os.environ.get("MPA_MODEL_CACHE")
    if not root or not os.path.isdir(root):
        return None
    if not os.access(root, os.W_OK):  # a fresh PVC is root:root 0755 and KFP cannot set fsGroup
        log.warning("model cache %s is not writable by uid %d: models are downloaded into the pod instead "
                    "(prepare the volume once: docs/kubeflow.md, model cache)", root, os.getuid())
        return None
    os.environ.setdefault("HF_HOME", os.path.join(root, "huggingface"))
    os.environ.setdefault("MPA_CACHE", os.path.join(root, "mpa"))
    return root


# --- prepare ---------------------------------------------------------------------------------


def teacher_runs_in_pod(cfg: RunConfig) -> bool:
    """Whether PA loads the teacher in its own pod (``hf``/``vllm``) rather than calling a server."""
    return cfg.teacher.backend in IN_POD_BACKENDS


def check_teacher_placement(cfg: RunConfig, env: dict[str, str] | None = None) -> None:
    """Refuse a run whose teacher does not match how the pipeline was compiled: annotate pods request
    a GPU only when ``teacher_in_pod`` was set at compile time (unset outside a compiled pipeline)."""
    flag = (os.environ if env is None else env).get(TEACHER_IN_POD_ENV)
    if flag is None:
        return
    compiled_in_pod = flag == "1"
    if compiled_in_pod == teacher_runs_in_pod(cfg):
        return
    if compiled_in_pod:
        raise ConfigError(
            f"teacher.backend is {cfg.teacher.backend!r} (a server), but this pipeline was compiled with "
            "teacher_in_pod: true, so every annotate pod would hold a GPU it does not use; compile with "
            "settings teacher_in_pod: false (pipelines/training/mpa/settings/shared-teacher.yaml)"
        )
    raise ConfigError(
        f"teacher.backend is {cfg.teacher.backend!r} (the teacher runs in the annotate pod), but this pipeline "
        "was compiled with teacher_in_pod: false (annotate pods get no GPU); compile with the default settings"
    )


def check_rounds(cfg: RunConfig, env: dict[str, str] | None = None) -> None:
    """Refuse a run asking for more rounds than the compiled DAG holds round tasks for (unset outside
    a compiled pipeline): fewer rounds than asked would be run silently otherwise."""
    flag = (os.environ if env is None else env).get(MAX_ROUNDS_ENV)
    if flag is not None and cfg.rounds > int(flag):
        raise ConfigError(f"rounds is {cfg.rounds}, but this pipeline was compiled with max_rounds: {flag}; "
                          f"compile with settings max_rounds: {cfg.rounds} or ask for fewer rounds")


def preflight_run(cfg: RunConfig, env: dict[str, str] | None = None) -> None:
    """The run's preflight (:mod:`mpa.preflight`) before any pod loads a model: models, image source, benchmark,
    tracking. Outputs are artifacts here (no ``out``, no marks); a per-run teacher server (compiled with
    ``teacher_server.enabled``: ``MPA_TEACHER_SERVER=1`` on this pod) does not exist yet and is checked by its
    own readiness wait, so only the student is checked then."""
    from mpa.preflight import preflight

    per_run_server = (os.environ if env is None else env).get(TEACHER_SERVER_ENV) == "1"
    preflight(cfg, models=("student",) if per_run_server else ("teacher", "student"), output=False)


def prepare_run_spec(spec_dir: str, config: dict | None, shards: int, params: dict[str, Any],
                     rounds_path: str | None = None) -> list[int]:
    """Resolve and validate the run config (``config`` + the run parameters that are set), list and
    hash the image source, assign every image to a shard; return the non-empty shards. The resolved
    ``rounds`` goes to ``rounds_path`` (a KFP output parameter: the pipeline starts round r only if
    r <= rounds, and this value, unlike the run parameter, is never null)."""
    from mpa.data.sources import list_images
    from mpa.orchestrate.kubeflow.params import run_config
    from mpa.sharding import hash_all, shard_of

    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    cfg = run_config(config, params)
    if not cfg.evaluate.benchmark or not cfg.evaluate.annotations:
        raise ConfigError(
            "the pipeline evaluates before/after: set evaluate.benchmark and evaluate.annotations "
            "(run parameters evaluate_benchmark, evaluate_annotations)"
        )
    check_teacher_placement(cfg)
    check_rounds(cfg)
    preflight_run(cfg)
    uris = list_images(cfg.data.images, cfg.data.max_images)
    hashes = hash_all(uris, workers=8)
    rows = [{"uri": u, "sha256": hashes[u], "shard": shard_of(hashes[u], shards)} for u in uris]
    out = Path(spec_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / SPEC_CONFIG, cfg.model_dump(mode="json"))
    write_jsonl_atomic(out / SPEC_IMAGES, rows)
    counts = {i: sum(r["shard"] == i for r in rows) for i in range(shards)}
    write_json_atomic(out / SPEC_SUMMARY, {"shards": shards, "n_images": len(rows), "per_shard": counts})
    if rounds_path:
        Path(rounds_path).parent.mkdir(parents=True, exist_ok=True)
        Path(rounds_path).write_text(str(int(cfg.rounds)), encoding="utf-8")
    return [i for i in range(shards) if counts[i]]


def with_teacher_url(cfg: RunConfig, teacher_url: str) -> RunConfig:
    """``cfg`` with the teacher called at ``teacher_url`` (the pipeline's per-run teacher server, handed to
    PA/PI only, so the URL is in neither the run spec nor any later step's cache key); empty: unchanged."""
    if not teacher_url:
        return cfg
    if cfg.teacher.backend != "openai":
        raise ConfigError(f"a teacher server URL was given ({teacher_url}) but teacher.backend is "
                          f"{cfg.teacher.backend!r}, not openai")
    teacher = cfg.teacher.model_copy(update={"openai": cfg.teacher.openai.model_copy(update={"base_url": teacher_url})})
    return cfg.model_copy(update={"teacher": teacher})


def teacher_for_shard(cfg: RunConfig, teacher_url: str, teacher_server: str = "", teacher_model: str = "") -> RunConfig:
    """``cfg`` with the teacher PA/PI call: at ``teacher_url`` (:func:`with_teacher_url`); with
    ``teacher_server`` (the per-run server's settings as JSON) the server is made sure of first, found or
    created again (:func:`mpa.orchestrate.kubeflow.teacher_server.ensure_teacher_server`: a retried PA/PI
    after the exit handler deleted it)."""
    if teacher_server:
        from mpa.orchestrate.kubeflow.teacher_server import ensure_teacher_server

        teacher_url = ensure_teacher_server(teacher_server, teacher_model, teacher_url)
    return with_teacher_url(cfg, teacher_url)


def load_run_spec(spec_dir: str) -> tuple[RunConfig, list[dict]]:
    from mpa.config import parse_config

    path = Path(spec_dir)
    cfg = parse_config(json.loads((path / SPEC_CONFIG).read_text(encoding="utf-8")), str(path / SPEC_CONFIG))
    return cfg, list(read_jsonl(path / SPEC_IMAGES))


def shard_count(spec_dir: str) -> int:
    return int(json.loads((Path(spec_dir) / SPEC_SUMMARY).read_text(encoding="utf-8"))["shards"])


def shard_images(rows: list[dict], shard: int) -> list[str]:
    """The URIs prepare assigned to ``shard`` (in the run spec's order)."""
    return [r["uri"] for r in rows if int(r["shard"]) == shard]


# --- PA ----------------------------------------------------------------------------------------


def annotate_shard(spec_dir: str, shard: int, out_dir: str, teacher_url: str = "", teacher_server: str = "",
                   teacher_model: str = "") -> dict:
    """PA on the images the run spec assigns to ``shard``: ``out_dir/annotations.jsonl`` (+ ``summary.json``).
    An image whose bytes changed since prepare hashed them fails the step (its shard would be wrong).
    ``teacher_url``, ``teacher_server``, ``teacher_model``: the per-run teacher (:func:`teacher_for_shard`)."""
    from mpa.cache import open_run_cache
    from mpa.stages.annotate import annotate_with_config
    from mpa.vlm.loader import load_vlm

    use_model_cache()
    cfg, rows = load_run_spec(spec_dir)
    cfg = teacher_for_shard(cfg, teacher_url, teacher_server, teacher_model)
    uris = shard_images(rows, shard)
    if not uris:
        raise ValueError(f"shard {shard} of the run spec has no images (prepare returns only non-empty shards)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    teacher = load_vlm(cfg.teacher)
    try:
        with open_run_cache(cfg, None) as cache:  # a pod's disk goes with it: only cache.dir
            summary = annotate_with_config(cfg, teacher, out / "annotations.jsonl", images=uris, cache=cache,
                                           show=False)
    finally:
        teacher.close()
    expected = {r["uri"]: r["sha256"] for r in rows if int(r["shard"]) == shard}
    changed = sorted({a["image"] for a in read_jsonl(out / "annotations.jsonl")
                      if a.get("image_sha256") and a["image_sha256"] != expected.get(a["image"])})
    if changed:
        raise ValueError(f"{len(changed)} image(s) changed since prepare hashed them (first: {changed[0]}); "
                         "re-run the pipeline without cache")
    result = {**asdict(summary), "shard": shard, "n_shards": shard_count(spec_dir)}
    write_json_atomic(out / "summary.json", result)
    return result


# --- PI ----------------------------------------------------------------------------------------


def identify_shard(spec_dir: str, shard: int, annotations_dir: str, out_dir: str, teacher_url: str = "",
                   teacher_server: str = "", teacher_model: str = "") -> dict:
    """PI on one shard's annotations. ``out_dir`` gets the engine's shard layout (``annotations.jsonl``,
    ``pi/{audit,parity}.jsonl``, ``pi/counts.json``) plus ``shard.json``, ready for :func:`merge_parity`.
    ``teacher_url``, ``teacher_server``, ``teacher_model``: the per-run teacher (:func:`teacher_for_shard`)."""
    from mpa.cache import open_run_cache
    from mpa.stages.identify import identify_with_config
    from mpa.vlm.loader import LazyVLM

    use_model_cache()
    cfg, _ = load_run_spec(spec_dir)
    cfg = teacher_for_shard(cfg, teacher_url, teacher_server, teacher_model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy2(Path(annotations_dir) / "annotations.jsonl", out / "annotations.jsonl")
    teacher, student = LazyVLM(cfg.teacher), LazyVLM(cfg.student)
    try:
        with open_run_cache(cfg, None) as cache:  # a pod's disk goes with it: only cache.dir
            summary = identify_with_config(cfg, teacher, student, out / "annotations.jsonl", out / "pi",
                                           cache=cache, show=False)
    finally:
        teacher.release()
        student.release()
    write_json_atomic(out / "shard.json", {"shard": shard, "n": shard_count(spec_dir)})
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


def merge_parity(spec_dir: str, shard_dirs: list[str], out_dir: str, metrics: MetricsSink | None = None) -> int:
    """Fan-in with the engine's merge (:func:`mpa.sharding.merge_shards`): one ``annotations.jsonl``,
    ``pi/audit.jsonl`` and ``pi/parity.jsonl`` in ``out_dir``, every image of the run spec accounted for
    (done, skipped as corrupt, failed with a reason); a missing image fails the step and names the
    shards to re-run. Logs the summed PI counts and the merge report's numbers to ``metrics`` (and
    ``out_dir/counts.json``); returns K, the parity-set size."""
    from mpa.sharding import merge_shards, shard_dir

    _, rows = load_run_spec(spec_dir)
    n = shard_count(spec_dir)
    out = Path(out_dir)
    totals: dict[str, Any] = dict.fromkeys(COUNT_KEYS, 0)
    for d in shard_dirs:
        meta = json.loads((Path(d) / "shard.json").read_text(encoding="utf-8"))
        if int(meta["n"]) != n:
            raise ValueError(f"shard output {d} was made for {meta['n']} shards, the run spec has {n}")
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
    if metrics is not None:
        for key, value in totals.items():
            metrics.log_metric(key, float(value))
    return int(totals["k_parity"])


# --- PL ----------------------------------------------------------------------------------------


def scratch_dir(prefix: str) -> Path:
    """A fresh temporary directory on the scratch volume (``MPA_SCRATCH``, an emptyDir), else in the
    system's temp dir. Where the path is not there at all (the KFP local runner sets the variable
    but mounts no volumes) the temp dir is used, with a warning; a mounted volume the pod's user
    cannot write fails here, with its name."""
    root = os.environ.get(SCRATCH_ENV)
    if root and not os.path.isdir(root):
        log.warning("%s=%s is not mounted here: using the system's temp dir", SCRATCH_ENV, root)
        root = None
    if root and not os.access(root, os.W_OK):
        raise PermissionError(
            f"{SCRATCH_ENV}={root} is not writable by uid {os.getuid()}: mount an emptyDir there (what the compiled "
            "pipeline does; a fresh claimed volume is root-owned and KFP cannot set fsGroup), or set scratch_size: null"
        )
    return Path(tempfile.mkdtemp(prefix=prefix, dir=root))


def keep_training_outputs(work: Path, log_dir: Path, checkpoint: Any) -> None:
    """Training's log and summary from ``work`` into ``log_dir``, its checkpoint into the Model artifact."""
    log_dir.mkdir(parents=True, exist_ok=True)
    for name in ("train_log.jsonl", "level_summary.json"):
        if (work / name).is_file():
            shutil.copy2(work / name, log_dir / name)
    dest = Path(checkpoint.path)
    if dest.exists():
        shutil.rmtree(dest)
    shutil.move(str(work / "checkpoint"), str(dest))
    checkpoint.metadata["framework"] = "transformers"


def train_student(spec_dir: str, parity_dir: str, checkpoint: Any, log_dir: str, metrics: MetricsSink | None = None
                  ) -> str:
    """PL: fine-tune the student on the merged parity set. The HF checkpoint goes to ``checkpoint.path``
    (the Model artifact); training's own files (intermediate checkpoints, optimizer state) stay on the
    scratch volume. Logs the numbers to ``metrics``; returns the checkpoint's URI (where the pipeline
    stores the artifact, what register registers)."""
    from mpa.orchestrate.kubeflow.trainjob import level_for_backend

    use_model_cache()
    cfg, _ = load_run_spec(spec_dir)
    work = scratch_dir("mpa-level-")
    try:  # train.backend: trainjob runs PL as a Kubeflow Trainer TrainJob and brings the checkpoint back here
        summary = level_for_backend(cfg, work, pi_dir=Path(parity_dir) / "pi", show=False, echo=print)
        keep_training_outputs(work, Path(log_dir), checkpoint)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if metrics is not None:
        for key, value in numeric_metrics(asdict(summary)).items():
            metrics.log_metric(key, value)
    return str(checkpoint.uri)


# --- evaluate ----------------------------------------------------------------------------------


def evaluate_model(spec_dir: str, out_dir: str, metrics: MetricsSink | None = None,
                   checkpoint_dir: str | None = None) -> float:
    """Score the base student (``checkpoint_dir=None``) or an aligned checkpoint on the benchmark;
    predictions and ``score.json`` go to ``out_dir``, the numbers to ``metrics``; returns the score."""
    from mpa.stages.evaluate import evaluate_with_config

    use_model_cache()
    cfg, _ = load_run_spec(spec_dir)
    model = None if checkpoint_dir is None else cfg.student.at(checkpoint_dir)
    result = evaluate_with_config(cfg, Path(out_dir) / "predictions.jsonl", model=model)
    write_json_atomic(Path(out_dir) / "score.json", result)
    if metrics is not None:
        for key, value in numeric_metrics(result).items():
            metrics.log_metric(key, value)
    return float(result["score"])


def write_evaluation_report(report_path: str, before_dir: str, after_dir: str, parity_dir: str, title: str,
                            before_label: str = "base student", after_label: str = "aligned student") -> None:
    """The evaluation's KFP visualization (an HTML output artifact, :mod:`mpa.orchestrate.kubeflow.visualize`):
    the scores of ``before_dir`` and ``after_dir`` (their ``score.json``), K and a few samples of the parity
    set in ``parity_dir`` (``pi/parity.jsonl``)."""
    from itertools import islice

    from mpa.orchestrate.kubeflow.visualize import MAX_SAMPLES, evaluation_html

    before = json.loads((Path(before_dir) / "score.json").read_text(encoding="utf-8"))
    after = json.loads((Path(after_dir) / "score.json").read_text(encoding="utf-8"))
    parity = Path(parity_dir) / "pi" / "parity.jsonl"
    k = sum(1 for _ in read_jsonl(parity)) if parity.is_file() else None
    samples = list(islice(read_jsonl(parity), MAX_SAMPLES)) if parity.is_file() else []
    page = evaluation_html(title, before, after, k, samples, before_label=before_label, after_label=after_label)
    Path(report_path).parent.mkdir(parents=True, exist_ok=True)
    Path(report_path).write_text(page, encoding="utf-8")


def evaluate_and_report(spec_dir: str, out_dir: str, metrics: MetricsSink | None, checkpoint_dir: str,
                        report_path: str, before_dir: str, parity_dir: str) -> float:
    """:func:`evaluate_model` on a trained checkpoint, then its visualization against the base student
    (``before_dir``) with the parity set it was trained on (``parity_dir``)."""
    score = evaluate_model(spec_dir, out_dir, metrics, checkpoint_dir=checkpoint_dir)
    write_evaluation_report(report_path, before_dir, out_dir, parity_dir, "MPA round 1: base vs aligned student")
    return score


def numeric_metrics(result: dict) -> dict[str, float]:
    """The numbers of a result, for a KFP Metrics artifact."""
    return {k: float(v) for k, v in result.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def is_better(spec_dir: str, score_before: float, score_after: float, decision: MetricsSink | None = None) -> bool:
    """The register gate: ``after - before > tracking.promotion_margin`` (score points); the
    decision's numbers go to ``decision``."""
    cfg, _ = load_run_spec(spec_dir)
    margin = float(cfg.tracking.promotion_margin)
    better = score_after - score_before > margin
    if decision is not None:
        for key, value in {"score_before": score_before, "score_after": score_after,
                           "delta": score_after - score_before, "margin": margin, "register": float(better)}.items():
            decision.log_metric(key, value)
    return better


# --- later rounds (iterative MPA) --------------------------------------------------------------

ROUND_RECORD = "round.json"


class RoundResult(NamedTuple):
    k: int  # K of the last round that ran PI
    score: float  # the benchmark score of ``checkpoint_uri``
    stopped: str  # why the chain stopped (empty: it goes on)
    checkpoint_uri: str  # this round's checkpoint artifact (the final one so far)


def link_tree(src: str | Path, dst: str | Path) -> None:
    """``dst`` becomes a copy of directory ``src``, hard-linked where the filesystem allows (a round that
    passes the previous round's checkpoint through copies no bytes on one disk)."""
    dst = Path(dst)
    if dst.exists():
        shutil.rmtree(dst)

    def link(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    shutil.copytree(src, dst, copy_function=link)


def run_round(
    spec_dir: str,
    r: int,
    parity_dir: str,
    prev_checkpoint: str,
    prev_union: str,
    prev_predictions: str,
    prev_k: int,
    prev_score: float,
    prev_stopped: str,
    checkpoint: Any,
    union_dir: str,
    predictions_dir: str,
    details_dir: str,
    metrics: MetricsSink | None = None,
    report_path: str | None = None,
) -> RoundResult:
    """Round ``r`` >= 2 of iterative MPA (:mod:`mpa.orchestrate.rounds`) as one pipeline step: PI with the
    previous round's student over round 1's merged PA pool (``parity_dir``: annotations.jsonl and
    pi/audit.jsonl; the teacher's answers are rebuilt from the audit, the teacher is never loaded), then
    — unless :func:`mpa.orchestrate.rounds.stop_reason` says stop — PL and evaluate on the benchmark.

    ``prev_*``: the previous round's outputs: its checkpoint (a directory), union (a directory with
    ``pi/parity.jsonl``, every parity set trained on so far), predictions (a directory with score.json),
    K, score and why it stopped (empty: it did not). When this round does not train (``r`` > ``rounds``,
    the chain stopped earlier, or this round's K says stop), the previous checkpoint, union, predictions
    and score pass through unchanged, so the last round's outputs are always the final ones.
    ``details_dir`` gets ``round.json`` (the round's record, with why it stopped), its PI files and
    training log. ``report_path``: the round's KFP visualization (the previous round's student vs this
    round's, this round's parity set)."""
    from mpa.orchestrate.rounds import (
        TEACHER_LOG,
        identify_round,
        parity_union,
        round_record,
        stop_reason,
        teacher_log_from_audit,
        train_later_round,
    )

    use_model_cache()
    cfg, _ = load_run_spec(spec_dir)
    details, union = Path(details_dir), Path(union_dir)
    details.mkdir(parents=True, exist_ok=True)
    stopped = prev_stopped or (f"round {r} > rounds={cfg.rounds}" if r > cfg.rounds else "")
    pi: dict[str, Any] | None = None
    if not stopped:
        work = scratch_dir("mpa-round-")
        try:
            log_path = teacher_log_from_audit(Path(parity_dir) / "pi" / "audit.jsonl", work / TEACHER_LOG)
            pi = asdict(identify_round(cfg, Path(parity_dir) / "annotations.jsonl", log_path, prev_checkpoint,
                                       details / "pi", show=False))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        stopped = stop_reason(cfg, pi["k_parity"], int(prev_k)) or ""
    k = int(pi["k_parity"]) if pi is not None else int(prev_k)
    if stopped:
        link_tree(prev_checkpoint, checkpoint.path)
        link_tree(prev_union, union)
        link_tree(prev_predictions, predictions_dir)
        score = float(prev_score)
        record = round_record(r, pi, None, None, stopped) if pi is not None else {"round": r, "stopped": stopped}
        log.info("round %d does not train: %s", r, stopped)
    else:
        (union / "pi").mkdir(parents=True, exist_ok=True)
        write_jsonl_atomic(union / "pi" / "parity.jsonl",
                           parity_union([Path(prev_union) / "pi" / "parity.jsonl", details / "pi" / "parity.jsonl"]))
        work = scratch_dir("mpa-round-level-")
        try:
            pl = train_later_round(cfg, work, prev_checkpoint, details / "pi", union / "pi" / "parity.jsonl",
                                   show=False)
            keep_training_outputs(work, details, checkpoint)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        score = evaluate_model(spec_dir, predictions_dir, checkpoint_dir=checkpoint.path)
        ev = json.loads((Path(predictions_dir) / "score.json").read_text(encoding="utf-8"))
        record = round_record(r, pi, {**asdict(pl), "checkpoint": str(checkpoint.uri)}, ev)
    checkpoint.metadata.update(framework="transformers", round=r)
    write_json_atomic(details / ROUND_RECORD, record)
    if metrics is not None:
        for key, value in {"round": r, "k_parity": k, "score": score, "trained": float(not stopped)}.items():
            metrics.log_metric(key, float(value))
    if report_path:
        title = f"MPA round {r}" + (f": did not train ({stopped})" if stopped else "")
        write_evaluation_report(report_path, prev_predictions, predictions_dir, details_dir, title,
                                before_label=f"round {r - 1} student", after_label=f"round {r} student")
    return RoundResult(k=k, score=score, stopped=stopped, checkpoint_uri=str(checkpoint.uri))


# --- register ----------------------------------------------------------------------------------


def register_model(
    spec_dir: str, checkpoint_uri: str, parity_dir: str, before_dir: str, after_dir: str, run_id: str = ""
) -> dict:
    """Register the aligned student with the engine's register stage (:mod:`mpa.stages.register`):
    a new MLflow model version whose source is ``checkpoint_uri`` (the Model artifact level stored
    in the pipeline root: nothing is uploaded again), tagged with its lineage (teacher, base
    student, task, K, scores, KFP run), promoted by aliases (``champion`` / ``challenger``).

    The step lays the pipeline's outputs out as the run directory that stage reads
    (``config.yaml``, ``summary.json``). It needs a tracking server (``MLFLOW_TRACKING_URI`` from the
    ``mpa-config`` ConfigMap, or ``tracking.uri``): an embedded store would vanish with the pod.
    """
    import yaml

    from mpa.stages.register import register

    cfg, _ = load_run_spec(spec_dir)
    if not (cfg.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI")):
        raise ConfigError(
            "register needs an MLflow tracking server: set MLFLOW_TRACKING_URI (the mpa-config "
            "ConfigMap) or the tracking.uri config field"
        )
    work = Path(tempfile.mkdtemp(prefix="mpa-register-"))
    try:
        tracking = cfg.tracking.model_copy(update={"kfp_run_id": run_id or cfg.tracking.kfp_run_id})
        cfg = cfg.model_copy(update={"out": str(work), "tracking": tracking})
        write_atomic(work / "config.yaml", yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
        before = json.loads((Path(before_dir) / "score.json").read_text(encoding="utf-8"))
        after = json.loads((Path(after_dir) / "score.json").read_text(encoding="utf-8"))
        counts = json.loads((Path(parity_dir) / "counts.json").read_text(encoding="utf-8"))
        summary = {
            "out": str(work),
            "task": cfg.task.name,
            "teacher": cfg.teacher.model,
            "student": cfg.student.model,
            "match_rule": match_rule_for(cfg),
            "identify": counts,
            "eval_before": before,
            "eval_after": after,
            "delta": after["score"] - before["score"],
        }
        write_json_atomic(work / "summary.json", summary)
        # the run spec is the pipeline's own config (not a run directory from elsewhere): its URI is trusted
        version = register(run_dir=work, checkpoint_uri=checkpoint_uri, tracking_uri=cfg.tracking.uri)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dict(vars(version))
