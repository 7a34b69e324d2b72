"""merge: refuses shard outputs of another split and a shard given twice."""

from __future__ import annotations

import json
import shutil

import pytest
from kfp.dsl import Dataset, Metrics

from mpa_kfp.components.data_processing.merge import merge


def _shard_output(tmp_path, name: str, shard: int, n: int):
    d = tmp_path / name
    (d / "pi").mkdir(parents=True)
    (d / "shard.json").write_text(json.dumps({"shard": shard, "n": n}))
    (d / "pi" / "counts.json").write_text("{}")
    return Dataset(uri=str(d))


def test_shard_outputs_must_match_the_run_spec(toy_spec, tmp_path):
    spec, _ = toy_spec
    out = Dataset(uri=str(tmp_path / "parity"))
    with pytest.raises(ValueError, match="made for 3 shards, the run spec has 2"):
        merge.python_func(run_spec=Dataset(uri=str(spec)), shards=[_shard_output(tmp_path, "a", 0, 3)], parity=out,
                          counts=Metrics(uri=str(tmp_path / "m")))
    shutil.rmtree(tmp_path / "parity", ignore_errors=True)
    twice = [_shard_output(tmp_path, "b", 0, 2), _shard_output(tmp_path, "c", 0, 2)]
    with pytest.raises(ValueError, match="appears twice"):
        merge.python_func(run_spec=Dataset(uri=str(spec)), shards=twice, parity=Dataset(uri=str(tmp_path / "p2")),
                          counts=Metrics(uri=str(tmp_path / "m2")))


def test_counts_become_metrics(toy_spec, toy_parity):
    counts = json.loads((toy_parity / "counts.json").read_text())
    assert counts["n_shards"] == 2 and counts["k_over_n"] == counts["k_parity"] / counts["n_images"]
