"""``mpa run``: every stage in-process, outputs under one run directory.

Layout of ``<out>/``: ``config.yaml`` (resolved), ``annotations.jsonl`` (PA), ``pi/`` (audit,
parity set, counts), ``level/checkpoint`` (the aligned student), ``eval/`` (predictions and
scores before/after), ``summary.json``, ``mlflow_run.json`` (the MLflow run it is tracked in) and,
with the embedded tracking store, ``mlflow/``. Re-running with the same ``out`` resumes (also the
MLflow run). ``out`` may be an ``s3://`` prefix (see :func:`run_pipeline`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from mpa import storage
from mpa.cache import open_run_cache
from mpa.config import ModelConfig, RunConfig, match_rule_for, task_for
from mpa.orchestrate.rounds import final_checkpoint, round_record, run_later_rounds
from mpa.records import write_json_atomic
from mpa.redact import redact
from mpa.safeio import write_atomic
from mpa.stages.annotate import annotate_with_config
from mpa.stages.evaluate import benchmark_samples, evaluate_with_config
from mpa.stages.identify import identify_with_config
from mpa.stages.level import level_with_config
from mpa.ui import console
from mpa.vlm.loader import LazyVLM

log = logging.getLogger(__name__)


def storage_settings(cfg: RunConfig) -> storage.S3Settings:
    sc = cfg.storage
    return storage.S3Settings(
        endpoint_url=sc.endpoint_url, region=sc.region, profile=sc.profile,
        access_key_id=sc.access_key_id.get_secret_value() if sc.access_key_id else None,
        secret_access_key=sc.secret_access_key.get_secret_value() if sc.secret_access_key else None,
        max_attempts=sc.max_attempts, connect_timeout_s=sc.connect_timeout_s, read_timeout_s=sc.read_timeout_s,
        multipart_threshold_mb=sc.multipart_threshold_mb, multipart_chunk_mb=sc.multipart_chunk_mb,
        verify=sc.verify)


def local_work_dir(cfg: RunConfig) -> Path:
    """Where a run whose ``out`` is an ``s3://`` prefix works locally (kept for resume)."""
    if cfg.storage.work_dir:
        return Path(cfg.storage.work_dir)
    digest = hashlib.sha256(f"{storage.endpoint_url()}|{cfg.out.rstrip('/')}".encode()).hexdigest()[:16]
    return storage.cache_dir() / "runs" / digest


class _Outputs:
    """The run directory: local, or a local working copy synced to an ``s3://`` prefix after each stage."""

    def __init__(self, cfg: RunConfig) -> None:
        self.uri = cfg.out
        self.remote = storage.is_s3(cfg.out)
        self.local = local_work_dir(cfg) if self.remote else Path(cfg.out)

    def prepare(self) -> None:
        from mpa.safeio import check_dir

        check_dir(self.local)  # a read-only or dangling-symlink --out: one line, before anything runs
        if self.remote:
            storage.check_bucket(self.uri, write=True)  # missing bucket / wrong credentials: fail before any work
            storage.download_dir(self.uri, self.local)  # resume from what the object store already holds

    def sync(self, final: bool = False) -> None:
        if self.remote:
            # live sqlite files: the result cache (a local accelerator) never, the embedded MLflow store
            # only once the run is closed
            storage.upload_dir(self.local, self.uri, state_file=self.local / storage.SYNC_STATE,
                               skip=lambda rel: rel.startswith("cache/") or (not final and rel.startswith("mlflow/")))


def run_pipeline(cfg: RunConfig, *, show: bool = True) -> dict[str, Any]:
    """PA → PI → PL → evaluate before/after → register + promote; returns (and writes) the run summary.

    ``cfg.out`` may be an ``s3://`` prefix: the run works in a local copy (``storage.work_dir`` or the
    cache), pulls what the prefix already holds (resume), and uploads its outputs after every stage.
    Tracking (``cfg.tracking``) opens one MLflow run, logs every stage, and ends with register + promote.
    """
    previous = storage.settings()
    storage.configure(storage_settings(cfg))
    try:
        return _run_tracked(cfg, show)
    finally:
        storage.configure(previous)  # a run's storage settings (maybe credentials) do not outlive it


def _run_tracked(cfg: RunConfig, show: bool) -> dict[str, Any]:
    outputs = _Outputs(cfg)
    tracker = None
    if cfg.tracking.enabled:
        from mpa.tracking import Tracker, check_reachable

        uri = cfg.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI")
        if uri:
            check_reachable(uri)  # fail fast, before any object-store or model work
    outputs.prepare()
    cfg = _resolve_registry_models(cfg)
    if cfg.tracking.enabled:
        tracker = Tracker(cfg, outputs.local, outputs.uri)
        tracker.start()
    try:
        summary = _run_stages(cfg, outputs, tracker, show)
        if tracker is not None:
            ckpt = Path(summary["final_checkpoint"])
            if cfg.tracking.register_model and ckpt.is_dir():
                # the final round's checkpoint and scores go through the same promotion gate
                final = summary | ({"eval_after": summary["eval_final"]} if "eval_final" in summary else {})
                reg = tracker.register(final, ckpt)
                summary["registered"] = {"name": reg.name, "version": reg.version, "alias": reg.alias,
                                         "reason": reg.reason, "source": reg.source}
                if show:
                    console.print(f"registered [bold]{reg.name}[/] v{reg.version}"
                                  + (f" → @{reg.alias} ({reg.reason})" if reg.alias else ""))
            summary["mlflow"] = {"tracking_uri": tracker.uri, "run_id": tracker.run_id,
                                 "experiment": cfg.tracking.experiment}
            write_json_atomic(outputs.local / "summary.json", redact(summary))
            tracker.log_files(outputs.local, ["summary.json", "config.yaml"])
            tracker.finish("FINISHED")
        outputs.sync(final=True)
    except BaseException:
        if tracker is not None and tracker.run_id:
            try:
                tracker.finish("FAILED")
            except Exception as exc:  # noqa: BLE001 - the original error is the one to report
                log.warning("could not mark MLflow run %s failed: %s", tracker.run_id, exc)
        raise
    return summary


def _resolve_registry_models(cfg: RunConfig) -> RunConfig:
    """``models:/<name>@<alias>`` teacher/student references become local checkpoints."""
    from mpa.tracking import download_model, is_model_uri

    updates = {}
    for role in ("teacher", "student"):
        mc: ModelConfig = getattr(cfg, role)
        if is_model_uri(mc.model):
            path = download_model(mc.model, cfg.tracking.uri)
            updates[role] = mc.at(path)
    return cfg.model_copy(update=updates) if updates else cfg


def _run_stages(cfg: RunConfig, outputs: _Outputs, tracker: Any, show: bool) -> dict[str, Any]:
    out = outputs.local
    write_atomic(out / "config.yaml", yaml.safe_dump(redact(cfg.model_dump(mode="json") | {"out": outputs.uri}),
                                                     sort_keys=False))
    task = task_for(cfg)
    teacher, student = LazyVLM(cfg.teacher), LazyVLM(cfg.student)
    timings: dict[str, float] = {}
    summary: dict[str, Any] = {"out": outputs.uri, "task": task.name, "teacher": cfg.teacher.model,
                               "student": cfg.student.model, "match_rule": match_rule_for(cfg)}
    if outputs.remote:
        summary["local_dir"] = str(out)

    with open_run_cache(cfg, out) as cache:
        t = time.perf_counter()
        pa = annotate_with_config(cfg, teacher(), out / "annotations.jsonl", cache=cache, show=show)
        timings["annotate"] = time.perf_counter() - t
        summary["annotate"] = asdict(pa)
        outputs.sync()
        if tracker is not None:
            tracker.log_annotate(summary["annotate"], timings["annotate"])

        t = time.perf_counter()
        pi = identify_with_config(cfg, teacher, student, out / "annotations.jsonl", out / "pi", cache=cache,
                                  show=show)
        if cache is not None:
            summary["cache"] = cache.summary()
    timings["identify"] = time.perf_counter() - t
    summary["identify"] = asdict(pi)
    teacher.release()
    outputs.sync()
    if tracker is not None:
        tracker.log_identify(summary["identify"], timings["identify"], out)

    bench = benchmark_samples(cfg)
    if bench is not None:
        t = time.perf_counter()
        summary["eval_before"] = evaluate_with_config(cfg, out / "eval" / "before.jsonl", vlm=student(),
                                                      samples=bench, label="eval before")
        timings["eval_before"] = time.perf_counter() - t
        outputs.sync()
        if tracker is not None:
            tracker.log_eval("before", summary["eval_before"], timings["eval_before"])
    student.release()

    t = time.perf_counter()
    from mpa.tracking.live import live_env

    with live_env(tracker.uri if tracker else None, tracker.run_id if tracker else None,
                  cfg.tracking.live_every_steps):  # PL's loss reaches the run while it trains
        pl = level_with_config(cfg, out / "level", pi_dir=out / "pi", show=show)
    timings["level"] = time.perf_counter() - t
    summary["level"] = asdict(pl)
    outputs.sync()
    if tracker is not None:
        tracker.log_level(summary["level"], timings["level"], out)

    if bench is not None:
        t = time.perf_counter()
        summary["eval_after"] = evaluate_with_config(cfg, out / "eval" / "after.jsonl",
                                                     model=cfg.student.at(pl.checkpoint), samples=bench,
                                                     label="eval after")
        timings["eval_after"] = time.perf_counter() - t
        before, after = summary["eval_before"]["score"], summary["eval_after"]["score"]
        summary["delta"] = after - before
        outputs.sync()
        if tracker is not None:
            tracker.log_eval("after", summary["eval_after"], timings["eval_after"])
            tracker.log_delta(summary["eval_before"], summary["eval_after"])
        if show:
            console.print(f"[bold]{cfg.evaluate.benchmark}[/]: student {before:.2f} → aligned {after:.2f} "
                          f"({after - before:+.2f})")
    summary["final_checkpoint"] = pl.checkpoint
    if cfg.rounds > 1:
        first = round_record(1, summary["identify"], summary["level"], summary.get("eval_after"))
        records = run_later_rounds(cfg, out, first, bench=bench, show=show, after_step=outputs.sync,
                                   on_round=tracker.log_round if tracker is not None else None)
        summary["rounds"] = records
        summary["final_checkpoint"] = final_checkpoint(records)
        trained = [r for r in records if r.get("eval")]
        if trained:
            summary["eval_final"] = trained[-1]["eval"]
        if show:
            console.print("rounds: " + " → ".join(
                f"{r['round']}: K={r['k_parity']}" + (f", {r['eval']['score']:.2f}" if r.get("eval") else "")
                + (f" (stopped: {r['stopped']})" if r.get("stopped") else "") for r in records))
    summary["timings_s"] = timings
    write_json_atomic(out / "summary.json", redact(summary))
    _write_report(out, summary, tracker, show)
    return summary


def _write_report(out: Path, summary: dict[str, Any], tracker: Any, show: bool) -> None:
    """report.html + chart.png beside summary.json (the demo's renderer); logged to the MLflow run too."""
    from mpa.report import write_run_report

    try:
        html = write_run_report(out, summary)
    except (OSError, ValueError, KeyError) as exc:  # the run is done; a report it cannot draw does not undo it
        log.warning("could not write the run report in %s: %s", out, exc)
        return
    if html is None:
        return
    if tracker is not None:
        tracker.log_files(out, ["report.html", "chart.png", "report.json"])
    if show:
        console.print(f"report: {html}  chart: {out / 'chart.png'}")
