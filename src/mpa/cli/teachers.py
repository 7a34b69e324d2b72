"""Teachers at scale: ``mpa run-shard``, ``mpa merge-shards``, ``mpa plan``, ``mpa bench``.

Registered by :mod:`mpa.cli` (``PLUGIN_MODULES``). Settings come from the run config
(``data.shard``, ``cache.*``, ``plan.*``, ``teacher.vllm`` / ``teacher.openai``); flags map onto it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="run config YAML")]
ALL_BACKENDS = ("hf_per_sample", "hf_batched", "vllm_offline", "vllm_server")
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="override a config value, dotted (repeatable)")]


def _config(path: Path, sets: list[str] | None, **flags: object):
    from mpa.cli import _config as cli_config

    return cli_config(path, sets, **flags)


def _write_usage(vlm, path: Path) -> None:
    from mpa.records import write_json_atomic

    usage = getattr(vlm, "usage_summary", None)
    if callable(usage):
        write_json_atomic(path, usage())


def run_shard(cfg, shard: str, stages: str = "pa,pi", show: bool = True) -> dict:
    """PA (and PI) on shard ``i/n`` of the image source, under ``<out>/shards/<i>-of-<n>/`` (resumable)."""
    from dataclasses import asdict

    from mpa.cache import open_run_cache
    from mpa.orchestrate.local import LazyVLM
    from mpa.records import write_json_atomic
    from mpa.sharding import parse_shard, shard_dir
    from mpa.stages.annotate import annotate_with_config
    from mpa.stages.identify import identify_with_config

    i, n = parse_shard(shard) or (0, 1)
    d = shard_dir(cfg.out, i, n)
    d.mkdir(parents=True, exist_ok=True)
    cache = open_run_cache(cfg, cfg.out)
    teacher, student = LazyVLM(cfg.teacher), LazyVLM(cfg.student)
    result: dict = {"shard": f"{i}/{n}"}
    wanted = {s.strip() for s in stages.split(",")}
    if "pa" in wanted:
        pa = annotate_with_config(cfg, teacher(), d / "annotations.jsonl", shard=(i, n), cache=cache, show=show)
        result["annotate"] = asdict(pa)
    if "pi" in wanted:
        pi = identify_with_config(cfg, teacher, student, d / "annotations.jsonl", d / "pi", cache=cache, show=show)
        result["identify"] = asdict(pi)
    if teacher.loaded is not None:
        _write_usage(teacher.loaded, d / "usage.json")
    if cache is not None:
        result["cache"] = cache.summary()
        cache.close()
    teacher.release()
    student.release()
    write_json_atomic(d / "shard_summary.json", result)
    _log_plan_beside_measured(cfg, d, result)
    return result


def _log_plan_beside_measured(cfg, d: Path, result: dict) -> None:
    """Write ``plan_vs_measured.json``: the cost model for this shard's images beside what it measured."""
    import logging

    from mpa.costplan import make_plan
    from mpa.records import write_json_atomic

    pa, pi = result.get("annotate"), result.get("identify")
    if not pa:
        return
    try:
        p = make_plan(cfg, n_images=pa["n_images"])
    except (ValueError, OSError) as exc:
        logging.getLogger(__name__).info("no plan for %s: %s", d, exc)
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


def register(app: typer.Typer) -> None:
    @app.command("run-shard")
    def run_shard_cmd(
        config: ConfigOpt,
        shard: Annotated[str | None, typer.Option(help="i/n: this worker's shard (0-based)")] = None,
        stages: Annotated[str, typer.Option(help="pa, pi or pa,pi")] = "pa,pi",
        out: Annotated[str | None, typer.Option(help="run directory (shards go under <out>/shards/)")] = None,
        set_: SetOpt = None,
    ) -> None:
        """PA + PI on one shard of the images (by content hash); resumable; then `mpa merge-shards`."""
        cfg = _config(config, set_, **{"out": out, "data.shard": shard})
        if not cfg.data.shard:
            from mpa.cli import UserError

            raise UserError("give --shard i/n (or data.shard in the config)")
        res = run_shard(cfg, cfg.data.shard, stages)
        typer.echo(json.dumps({"shard": res["shard"], "cache": res.get("cache", {}).get("by_stage")}))

    @app.command("merge-shards")
    def merge_shards_cmd(
        config: ConfigOpt,
        shards: Annotated[int, typer.Option(min=1, help="n: how many shards the run was split into")],
        out: Annotated[str | None, typer.Option(help="run directory")] = None,
        allow_missing: Annotated[bool, typer.Option(help="write the merge even if images are missing")] = False,
        set_: SetOpt = None,
    ) -> None:
        """De-duplicate and merge the shards; check every image is done, corrupt or failed-with-reason."""
        from dataclasses import asdict

        from mpa.data.images import list_images
        from mpa.sharding import merge_shards

        cfg = _config(config, set_, out=out)
        report = merge_shards(
            cfg.out, shards, list_images(cfg.data.images, cfg.data.max_images), strict=not allow_missing
        )
        typer.echo(json.dumps({k: v for k, v in asdict(report).items() if k != "missing_images"}))

    @app.command()
    def plan(
        config: ConfigOpt,
        images: Annotated[int | None, typer.Option(help="plan for this many images instead of counting")] = None,
        out: Annotated[str | None, typer.Option(help="run directory to compare with (default: config out)")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
        set_: SetOpt = None,
    ) -> None:
        """Expected work before a run: images, image tokens, FLOPs per stage, GPU-minutes, API dollars;
        for PL the memory per GPU under each strategy, whether it fits plan.gpu, and its time."""
        from mpa.costplan import format_level, format_plan, make_plan, measured, plan_level
        from mpa.records import write_json_atomic

        cfg = _config(config, set_, out=out)
        p = make_plan(cfg, n_images=images)
        meas = measured(cfg.out, p)
        level_error = None
        try:
            lp = plan_level(cfg, p.n_images, p.image_size, cfg.out)
        except ValueError as exc:  # e.g. a student whose architecture the plan does not know
            lp, level_error = None, str(exc)
        result = {"plan": p.as_dict(), "level": lp.as_dict() if lp else None, "measured": meas}
        if level_error:
            result["level_error"] = level_error
        if as_json:
            typer.echo(json.dumps(result, default=str))
        else:
            for line in format_plan(p):
                typer.echo(line)
            for line in format_level(lp) if lp else [f"PL: not planned: {level_error}"]:
                typer.echo(line)
            if meas:
                typer.echo("measured: " + json.dumps(meas, default=str))
        if Path(cfg.out).is_dir():
            write_json_atomic(Path(cfg.out) / "plan.json", result)

    @app.command()
    def bench(
        workdir: Annotated[Path, typer.Option(help="scratch directory (tiny models and images are built here)")] = Path(
            "runs/bench"
        ),
        n_images: Annotated[int, typer.Option(min=4, help="images per measurement")] = 64,
        backends: Annotated[str, typer.Option(help="comma list of the backends to measure")] = ",".join(ALL_BACKENDS),
        shards: Annotated[str, typer.Option(help="shard counts for the scaling table ('' to skip)")] = "1,2,4",
        batch_size: Annotated[int, typer.Option(min=1)] = 16,
    ) -> None:
        """PA and PI images/s: per-sample HF, batched HF, vLLM offline, vLLM server; last line JSON ratios."""
        from mpa.throughput import run_bench

        res = run_bench(
            workdir,
            n_images=n_images,
            backends=[b for b in backends.split(",") if b],
            shard_counts=[int(s) for s in shards.split(",") if s],
            batch_size=batch_size,
            echo=typer.echo,
        )
        typer.echo(json.dumps(res["ratios"]))


def main() -> None:
    """``python -m mpa.cli.teachers …``: these commands alone (what shard pods run)."""
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app = typer.Typer(name="mpa-teachers", no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
    register(app)
    from mpa.config import ConfigError
    from mpa.sharding import IncompleteMerge, ShardSpecError

    try:
        app()
    except (IncompleteMerge, ShardSpecError, ConfigError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
