"""identify + merge: PI per shard, one parity set from all shards, every image accounted for."""

from __future__ import annotations

import json

from mpa.records import read_jsonl


def test_parity_set_from_every_shard(toy_spec, toy_parity):
    spec, _ = toy_spec
    counts = json.loads((toy_parity / "counts.json").read_text())
    assert counts["n_images"] == 8 and counts["done"] + counts["skipped_corrupt"] + counts["failed"] == 8
    parity = list(read_jsonl(toy_parity / "pi" / "parity.jsonl"))
    assert len(parity) == counts["k_parity"]
    assert all(p["kept"] and p["teacher_match"] and not p["student_match"] for p in parity)
    audit = list(read_jsonl(toy_parity / "pi" / "audit.jsonl"))
    assert {a["image"] for a in audit} <= {r["uri"] for r in read_jsonl(spec / "images.jsonl")}
