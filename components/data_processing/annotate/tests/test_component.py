"""annotate: PA on exactly the images the run spec assigns to the shard (nothing listed again)."""

from __future__ import annotations

import json

from kfp.dsl import Dataset

from mpa.records import read_jsonl
from mpa_kfp.components.data_processing.annotate import annotate


def test_annotates_the_shards_images_from_the_run_spec(toy_spec, tmp_path, monkeypatch):
    spec, shards = toy_spec
    rows = list(read_jsonl(spec / "images.jsonl"))
    # the shard's images come from the run spec: a listing of the source is never made again
    monkeypatch.setattr("mpa.stages.annotate.list_images", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    shard = shards[0]
    out = tmp_path / "ann"
    summary = annotate.python_func(run_spec=Dataset(uri=str(spec)), shard=shard, annotations=Dataset(uri=str(out)))
    mine = {r["uri"] for r in rows if r["shard"] == shard}
    records = list(read_jsonl(out / "annotations.jsonl"))
    assert {r["image"] for r in records} == mine and summary["n_images"] == len(mine)
    assert {r["image_sha256"] for r in records} == {r["sha256"] for r in rows if r["shard"] == shard}
    assert json.loads((out / "summary.json").read_text())["shard"] == shard
