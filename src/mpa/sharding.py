"""Sharding the image source across workers, and merging the shards' results.

``--shard i/n`` (0-based ``i``) keeps the images whose content hash falls in shard ``i``:
``int(sha256[:16], 16) % n == i``. The split depends only on the bytes of each image, so n
workers (KFP ParallelFor pods) that list the same source get disjoint shards that together
cover it — whatever order they list files in, and whichever copies of an image they see.
A file that cannot be read at all is placed by the hash of its URI, so it still lands in
exactly one shard (where PA records it as unreadable).

Each shard writes under ``<out>/shards/<i>-of-<n>/`` (``annotations.jsonl``, and ``pi/`` when
PI ran on the shard). :func:`merge_shards` de-duplicates by record id, writes the merged
``annotations.jsonl`` (and ``pi/audit.jsonl`` + ``pi/parity.jsonl``), and accounts for every
image of the source: done, skipped as corrupt, failed with a reason — or missing, which
makes the merge fail and names the shards to re-run.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mpa import storage
from mpa.records import StageMark, path_digest, read_jsonl, write_json_atomic, write_jsonl_atomic, write_mark


class ShardSpecError(ValueError):
    """A --shard value that is not ``i/n`` with 0 <= i < n."""


class IncompleteMerge(RuntimeError):
    """Some images of the source are in no shard's output; the message names the shards to re-run."""


def parse_shard(spec: str | None) -> tuple[int, int] | None:
    """``"2/8"`` → ``(2, 8)``; ``None`` → ``None`` (no sharding)."""
    if spec is None or spec == "":
        return None
    try:
        i_s, n_s = spec.split("/")
        i, n = int(i_s), int(n_s)
    except ValueError:
        raise ShardSpecError(f"--shard expects i/n (e.g. 0/4), got {spec!r}") from None
    if n < 1 or not 0 <= i < n:
        raise ShardSpecError(f"--shard {spec}: need 0 <= i < n (shards are numbered from 0)")
    return i, n


def shard_of(digest_hex: str, n: int) -> int:
    return int(digest_hex[:16], 16) % n


def content_sha256(uri: str) -> str:
    """sha256 of the file's bytes, or of ``uri:<uri>`` when the file cannot be read."""
    try:
        return hashlib.sha256(storage.read_bytes(uri)).hexdigest()
    except (FileNotFoundError, OSError):
        return hashlib.sha256(f"uri:{uri}".encode()).hexdigest()


def hash_all(uris: list[str], workers: int = 4) -> dict[str, str]:
    """Content hashes of many files (threads: hashing is I/O plus hashlib, which releases the GIL)."""
    if workers <= 1 or len(uris) < 16:
        return {u: content_sha256(u) for u in uris}
    with ThreadPoolExecutor(workers) as pool:
        return dict(zip(uris, pool.map(content_sha256, uris), strict=True))


def select_shard(uris: list[str], shard: tuple[int, int] | str | None, workers: int = 4) -> list[str]:
    """The URIs of shard ``i`` of ``n`` (order preserved)."""
    if isinstance(shard, str):
        shard = parse_shard(shard)
    if shard is None or shard[1] == 1:
        return list(uris)
    i, n = shard
    hashes = hash_all(uris, workers)
    return [u for u in uris if shard_of(hashes[u], n) == i]


def shard_dir(out: str | Path, i: int, n: int) -> Path:
    return Path(out) / "shards" / f"{i}-of-{n}"


@dataclass
class MergeReport:
    n_shards: int
    n_images: int
    done: int = 0
    skipped_corrupt: int = 0
    failed: int = 0
    missing: int = 0
    duplicates_dropped: int = 0
    n_records: int = 0
    failure_reasons: dict[str, int] = field(default_factory=dict)
    missing_images: list[str] = field(default_factory=list)
    shards_to_rerun: list[str] = field(default_factory=list)
    unexpected_images: int = 0
    pi_merged: bool = False
    k_parity: int | None = None

    @property
    def complete(self) -> bool:
        return self.missing == 0


def _reason(error: str | None) -> str:
    return (error or "unknown").split(":")[0].split(" (")[0]


def merge_shards(out: str | Path, n: int, expected: list[str], *, strict: bool = True) -> MergeReport:
    """Merge ``<out>/shards/*-of-<n>`` into ``<out>``; account for every URI in ``expected``."""
    out = Path(out)
    report = MergeReport(n_shards=n, n_images=len(expected))
    seen_ids: set[str] = set()
    records: list[dict] = []
    by_image: dict[str, list[dict]] = {}
    audits: list[dict] = []
    audit_ids: set[str] = set()
    have_pi = True
    for i in range(n):
        d = shard_dir(out, i, n)
        ann = d / "annotations.jsonl"
        if ann.is_file():
            for r in read_jsonl(ann):
                if r["id"] in seen_ids:
                    report.duplicates_dropped += 1
                    continue
                seen_ids.add(r["id"])
                records.append(r)
                by_image.setdefault(r["image"], []).append(r)
        audit = d / "pi" / "audit.jsonl"
        if audit.is_file():
            for r in read_jsonl(audit):
                if r["id"] not in audit_ids:
                    audit_ids.add(r["id"])
                    audits.append(r)
        else:
            have_pi = False
    expected_set = set(expected)
    report.unexpected_images = len(set(by_image) - expected_set)
    reasons: Counter[str] = Counter()
    missing = []
    for uri in expected:
        recs = by_image.get(uri)
        if not recs:
            missing.append(uri)
        elif any(r.get("parse_ok") for r in recs):
            report.done += 1
        elif any((r.get("error") or "").startswith(("unreadable image", "not a readable image")) for r in recs):
            report.skipped_corrupt += 1
        else:
            report.failed += 1
            reasons[_reason(recs[0].get("error"))] += 1
    report.missing = len(missing)
    report.missing_images = missing[:50]
    report.failure_reasons = dict(reasons)
    if missing:
        shards = sorted({shard_of(content_sha256(u), n) for u in missing})
        report.shards_to_rerun = [f"{i}/{n}" for i in shards]
    order = {u: j for j, u in enumerate(expected)}
    records.sort(key=lambda r: (order.get(r["image"], len(order)), r.get("k", 0)))
    report.n_records = len(records)
    if report.complete or not strict:
        write_jsonl_atomic(out / "annotations.jsonl", records)
        # an incomplete merge (--allow-missing) is marked so: identify refuses it unless allowed
        write_mark(out / "annotations.jsonl", StageMark(
            stage="merge-shards", settings={}, inputs={}, complete=report.complete,
            outputs={"annotations.jsonl": path_digest(out / "annotations.jsonl")}))
        if have_pi and audits:
            audits.sort(key=lambda r: (order.get(r["image"], len(order)), r.get("k", 0)))
            write_jsonl_atomic(out / "pi" / "audit.jsonl", audits)
            report.k_parity = write_jsonl_atomic(out / "pi" / "parity.jsonl", [r for r in audits if r.get("kept")])
            report.pi_merged = True
    write_json_atomic(out / "merge_report.json", asdict(report))
    if strict and not report.complete:
        raise IncompleteMerge(
            f"{report.missing} of {report.n_images} images are in no shard's output "
            f"(e.g. {missing[0]}); re-run shard(s) {', '.join(report.shards_to_rerun)} — they resume — "
            f"then merge again (report: {out / 'merge_report.json'})"
        )
    return report
