"""``mpa run-shard``: PA (and PI) on one content-hash shard of the images, under ``<out>/shards/<i>-of-<n>/``.

Shards are resumable like a whole run; ``mpa merge-shards`` (:func:`mpa.sharding.merge_shards`) joins them
and checks every image is accounted for. Beside its outputs a shard writes ``plan_vs_measured.json``: the
cost model (:mod:`mpa.costplan`) for its images next to what it measured.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mpa.cache import open_run_cache
from mpa.config import RunConfig
from mpa.records import write_json_atomic
from mpa.sharding import parse_shard, shard_dir
from mpa.stages.annotate import annotate_with_config
from mpa.stages.identify import identify_with_config
from mpa.vlm.loader import LazyVLM

log = logging.getLogger(__name__)
STAGES = ("pa", "pi")


def run_shard(cfg: RunConfig, shard: str, stages: str = "pa,pi", show: bool = True) -> dict[str, Any]:
    """PA and/or PI (``stages``: ``pa``, ``pi`` or ``pa,pi``) on shard ``i/n`` of the image source."""
    wanted = {s.strip() for s in stages.split(",") if s.strip()}
    unknown = wanted - set(STAGES)
    if unknown or not wanted:
        raise ValueError(f"--stages takes pa, pi or pa,pi; got {stages!r}")
    i, n = parse_shard(shard) or (0, 1)
    d = shard_dir(cfg.out, i, n)
    d.mkdir(parents=True, exist_ok=True)
    teacher, student = LazyVLM(cfg.teacher), LazyVLM(cfg.student)
    result: dict[str, Any] = {"shard": f"{i}/{n}"}
    try:
        with open_run_cache(cfg, cfg.out) as cache:
            if "pa" in wanted:
                pa = annotate_with_config(cfg, teacher(), d / "annotations.jsonl", shard=(i, n), cache=cache,
                                          show=show)
                result["annotate"] = asdict(pa)
            if "pi" in wanted:
                pi = identify_with_config(cfg, teacher, student, d / "annotations.jsonl", d / "pi", cache=cache,
                                          show=show)
                result["identify"] = asdict(pi)
            if cache is not None:
                result["cache"] = cache.summary()
        usage = getattr(teacher.loaded, "usage_summary", None)
        if callable(usage):
            write_json_atomic(d / "usage.json", usage())
    finally:
        teacher.release()
        student.release()
    write_json_atomic(d / "shard_summary.json", result)
    write_plan_vs_measured(cfg, d, result)
    return result


def write_plan_vs_measured(cfg: RunConfig, d: Path, result: dict[str, Any]) -> None:
    """Write ``d/plan_vs_measured.json``: the cost model for this shard's images beside what it measured."""
    from mpa.costplan import make_plan

    pa, pi = result.get("annotate"), result.get("identify")
    if not pa:
        return
    try:
        p = make_plan(cfg, n_images=pa["n_images"])
    except (ValueError, OSError) as exc:
        log.info("no plan for %s: %s", d, exc)
        return
    secs = pa["seconds"] + (pi["seconds"] if pi else 0.0)
    meas = {
        "images": pa["n_images"],
        "pa_images_per_s": pa["n_images"] / pa["seconds"] if pa["seconds"] else None,
        "pa_pi_seconds": secs,
        "cache_hits": pa.get("cache_hits", 0) + (pi or {}).get("cache_hits", 0),
        "student_calls_saved": (pi or {}).get("student_calls_saved"),
        "achieved_tflops": p.total_flops / secs / 1e12 if secs else None,
    }
    if meas["achieved_tflops"] is not None:
        meas["utilization_of_plan_gpu"] = meas["achieved_tflops"] / p.peak_tflops
    write_json_atomic(d / "plan_vs_measured.json", {"plan": p.as_dict(), "measured": meas})
