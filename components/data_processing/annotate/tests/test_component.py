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


def test_the_teacher_url_points_pa_at_the_per_run_server_and_needs_an_openai_teacher(toy_spec, toy_config, tmp_path,
                                                                                    monkeypatch):
    """The pipeline hands PA/PI the per-run server's URL (not the run spec: it would enter every cache key)."""
    import pytest

    from mpa.config import ConfigError
    from mpa.orchestrate.kubeflow.steps import load_run_spec, with_teacher_url
    from mpa_kfp.components.data_processing.prepare import prepare

    spec, shards = toy_spec  # the toy teacher runs in the pod (hf): a URL makes no sense there
    with pytest.raises(ConfigError, match="teacher.backend is 'hf', not openai"):
        annotate.python_func(run_spec=Dataset(uri=str(spec)), shard=shards[0], annotations=Dataset(uri=str(tmp_path)),
                             teacher_url="http://mpa-teacher.mpa.svc.cluster.local:8000/v1")
    monkeypatch.setenv("MPA_TEACHER_IN_POD", "0")
    monkeypatch.setenv("MPA_TEACHER_SERVER", "1")  # what the compiled pipeline sets: the server starts after prepare
    served = tmp_path / "served"
    prepare.python_func(run_spec=Dataset(uri=str(served)), resolved_rounds=f"{served}.rounds", shards=2,
                        config=toy_config, teacher_backend="openai",
                        teacher_served_name="teacher", teacher_openai_allow_plain_http=True)
    cfg, _ = load_run_spec(str(served))
    url = "http://mpa-teacher-0123abcd.mpa.svc.cluster.local:8000/v1"
    moved = with_teacher_url(cfg, url)
    assert moved.teacher.openai.base_url == url and moved.teacher.openai.allow_plain_http
    assert cfg.teacher.openai.base_url != url and with_teacher_url(cfg, "") is cfg  # empty: the run spec's
