"""Teachers at scale: ``mpa run-shard``, ``mpa merge-shards``, ``mpa plan``, ``mpa bench``.

Settings come from the run config (``data.shard``, ``cache.*``, ``plan.*``, ``teacher.vllm`` /
``teacher.openai``); flags map onto it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mpa.cli.common import ConfigOpt, SetOpt, UserError, run_config

ALL_BACKENDS = ("hf_per_sample", "hf_batched", "vllm_offline", "vllm_server")

app = typer.Typer()


@app.command("run-shard")
def run_shard_cmd(
    config: ConfigOpt,
    shard: Annotated[str | None, typer.Option(help="i/n: this worker's shard (0-based)")] = None,
    stages: Annotated[str, typer.Option(help="pa, pi or pa,pi")] = "pa,pi",
    out: Annotated[str | None, typer.Option(help="run directory (shards go under <out>/shards/)")] = None,
    set_: SetOpt = None,
) -> None:
    """PA + PI on one shard of the images (by content hash); resumable; then `mpa merge-shards`."""
    from mpa.orchestrate.shards import run_shard

    cfg = run_config(config, set_, **{"out": out, "data.shard": shard})
    if not cfg.data.shard:
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

    from mpa.data.sources import list_images
    from mpa.sharding import merge_shards

    cfg = run_config(config, set_, out=out)
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

    cfg = run_config(config, set_, out=out)
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
