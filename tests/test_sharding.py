"""Sharding by content hash, the merge's accounting, the result cache, and kill-and-resume of a real shard."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from mpa.cache import ResultCache
from mpa.config import AnnotateConfig, ModelConfig
from mpa.data.sources import list_images
from mpa.records import read_jsonl, write_jsonl_atomic
from mpa.sharding import (
    IncompleteMerge,
    ShardSpecError,
    content_sha256,
    merge_shards,
    parse_shard,
    select_shard,
    shard_dir,
    shard_of,
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from mpa.devtools.tinymodels import make_tiny_workspace

    return make_tiny_workspace(tmp_path_factory.mktemp("tw"), n_images=16, teacher_steps=60)


def test_parse_shard():
    assert parse_shard("0/4") == (0, 4) and parse_shard(None) is None
    for bad in ("4/4", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(ShardSpecError):
            parse_shard(bad)


def test_shards_are_disjoint_cover_and_ignore_listing_order(tmp_path):
    for i in range(40):
        (tmp_path / f"f{i:02d}.png").write_bytes(f"image-{i}".encode())
    (tmp_path / "dup.png").write_bytes(b"image-3")  # same bytes as f03: same shard
    uris = list_images(str(tmp_path))
    shards = [select_shard(uris, (i, 3)) for i in range(3)]
    assert sorted(u for s in shards for u in s) == sorted(uris)
    assert sum(len(s) for s in shards) == len(uris)
    assert all(len(s) > 0 for s in shards)
    assert select_shard(list(reversed(uris)), (1, 3)) == list(reversed(shards[1]))
    dup_shard = shard_of(content_sha256(str(tmp_path / "dup.png")), 3)
    assert str(tmp_path / "f03.png") in shards[dup_shard] and str(tmp_path / "dup.png") in shards[dup_shard]


def _ann(uri: str, k: int = 0, ok: bool = True, error: str | None = None) -> dict:
    return {
        "id": f"{Path(uri).stem}-{k}",
        "image": uri,
        "image_sha256": "x",
        "task": "textvqa",
        "prompt_version": "1",
        "teacher": "t",
        "k": k,
        "question": "q?" if ok else None,
        "answer": "a" if ok else None,
        "raw": "",
        "parse_ok": ok,
        "error": error,
    }


def test_merge_accounts_for_every_image_and_names_missing_shards(tmp_path):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(12):
        (imgs / f"i{i:02d}.png").write_bytes(f"px{i}".encode())
    uris = list_images(str(imgs))
    out = tmp_path / "run"
    n = 3
    shards = [select_shard(uris, (i, n)) for i in range(n)]
    for i in range(n - 1):  # the last shard never ran
        recs = []
        for j, u in enumerate(shards[i]):
            if j == 0:
                recs.append(_ann(u, ok=False, error="unreadable image: not a readable image"))
            elif j == 1:
                recs.append(_ann(u, ok=False, error="no 'Question:' in the output"))
            else:
                recs.append(_ann(u))
        write_jsonl_atomic(shard_dir(out, i, n) / "annotations.jsonl", recs + recs[-1:])  # + a duplicate
    with pytest.raises(IncompleteMerge, match=f"{n - 1}/{n}"):
        merge_shards(out, n, uris)
    assert not (out / "annotations.jsonl").exists()
    write_jsonl_atomic(shard_dir(out, n - 1, n) / "annotations.jsonl", [_ann(u) for u in shards[n - 1]])
    rep = merge_shards(out, n, uris)
    assert rep.complete and rep.missing == 0
    assert rep.done + rep.skipped_corrupt + rep.failed == len(uris)
    assert rep.skipped_corrupt == n - 1 and rep.failed == n - 1
    assert sum(rep.failure_reasons.values()) == n - 1
    assert rep.duplicates_dropped == n - 1
    merged = list(read_jsonl(out / "annotations.jsonl"))
    assert len(merged) == len({r["id"] for r in merged}) == len(uris)
    assert json.loads((out / "merge_report.json").read_text())["done"] == rep.done


def test_cache_skips_finished_work_and_a_changed_prompt_redoes_it(tiny, tmp_path):
    from mpa.stages.annotate import annotate
    from mpa.tasks import Task, get_task
    from mpa.vlm.loader import load_vlm

    teacher = load_vlm(ModelConfig(model=str(tiny["teacher"])))
    cache = ResultCache(tmp_path / "cache")
    task = get_task("textvqa")
    kw = dict(
        images=str(tiny["images"]),
        teacher=teacher,
        cfg=AnnotateConfig(max_new_tokens=24),
        show=False,
        cache=cache,
        max_images=6,
    )
    first = annotate(task=task, out_path=tmp_path / "a1.jsonl", **kw)
    assert (first.cache_hits, first.generated) == (0, 6)
    again = annotate(task=task, out_path=tmp_path / "a2.jsonl", **kw)  # a fresh run dir, same cache
    assert (again.cache_hits, again.generated) == (6, 0)
    raws = [[r["raw"] for r in read_jsonl(tmp_path / f)] for f in ("a1.jsonl", "a2.jsonl")]
    assert raws[0] == raws[1]
    bumped = Task(task.name, task.pa_prompt, task.metric, prompt_version="2")
    changed = annotate(task=bumped, out_path=tmp_path / "a3.jsonl", **kw)
    assert (changed.cache_hits, changed.generated) == (0, 6)
    other_decoding = annotate(
        task=task, out_path=tmp_path / "a4.jsonl", **{**kw, "cfg": AnnotateConfig(max_new_tokens=20)}
    )
    assert other_decoding.cache_hits == 0


def _shard_cmd(cfg_path: Path, shard: str, stages: str = "pa,pi") -> list[str]:
    return [
        sys.executable,
        "-m",
        "mpa.cli",
        "run-shard",
        "--config",
        str(cfg_path),
        "--shard",
        shard,
        "--stages",
        stages,
    ]


def test_killed_shard_resumes_without_loss_or_duplicates(tiny, tmp_path):
    """SIGKILL a real `run-shard` process mid-PA, run it again, merge: every image exactly once."""
    out = tmp_path / "run"
    cfg = {
        "task": {"name": "textvqa"},
        # the untrained student as "teacher": it writes until max_new_tokens, slow enough to kill mid-run
        "teacher": {"model": str(tiny["student"]), "batch_size": 1},
        "student": {"model": str(tiny["student"]), "batch_size": 4},
        "data": {"images": str(tiny["images"])},
        "annotate": {"max_new_tokens": 64},
        "identify": {"max_new_tokens": 4},
        "out": str(out),
    }
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    uris = list_images(str(tiny["images"]))
    shard0 = select_shard(uris, (0, 2))
    ann0 = shard_dir(out, 0, 2) / "annotations.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        _shard_cmd(cfg_path, "0/2", "pa"),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.time() + 240
    while time.time() < deadline:
        if ann0.is_file() and ann0.read_bytes().count(b"\n") >= 2:
            break
        if proc.poll() is not None:
            pytest.fail(f"shard exited early: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    partial = ann0.read_bytes().count(b"\n")
    assert 2 <= partial < len(shard0), "the shard finished before it could be killed"

    for shard in ("0/2", "1/2"):
        done = subprocess.run(_shard_cmd(cfg_path, shard), env=env, capture_output=True, timeout=600)
        assert done.returncode == 0, done.stderr.decode()[-2000:]
    summary0 = json.loads((shard_dir(out, 0, 2) / "shard_summary.json").read_text())
    assert summary0["annotate"]["n_resumed"] >= partial
    assert summary0["annotate"]["n_images"] == len(shard0)

    merge = subprocess.run(
        [sys.executable, "-m", "mpa.cli", "merge-shards", "--config", str(cfg_path), "--shards", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert merge.returncode == 0, merge.stderr[-2000:]
    report = json.loads(merge.stdout.strip().splitlines()[-1])
    assert report["missing"] == 0 and report["n_images"] == len(uris)
    assert report["done"] + report["skipped_corrupt"] + report["failed"] == len(uris)
    merged = list(read_jsonl(out / "annotations.jsonl"))
    assert sorted(r["image"] for r in merged) == sorted(uris)
    assert len({r["id"] for r in merged}) == len(merged)
    shutil.rmtree(out / "shards" / "1-of-2")
    bad = subprocess.run(
        [sys.executable, "-m", "mpa.cli", "merge-shards", "--config", str(cfg_path), "--shards", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode != 0 and "1/2" in (bad.stdout + bad.stderr)
