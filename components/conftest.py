"""Fixtures for the component tests: a toy-world run config (the shipped tiny teacher and student,
freshly rendered images and a small labeled test set) and its run spec, built once per session.
Each component's ``python_func`` runs for real on them; KFP artifacts are local-path artifacts."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("kfp")

from kfp.dsl import Dataset, Metrics, Model  # noqa: E402


def artifact(kind, path: Path):
    """A KFP artifact whose ``.path`` is ``path`` (what the launcher hands a component in a pod)."""
    return kind(uri=str(path))


@pytest.fixture(scope="session")
def toy_config(tmp_path_factory) -> dict:
    from mpa.toyworld.data import make_testset, make_unlabeled
    from mpa.toyworld.demo import demo_config

    out = tmp_path_factory.mktemp("toy")
    make_unlabeled(out / "unlabeled", 8)
    make_testset(out / "test", 6)
    cfg = demo_config(out, 8, 6, seed=0, temperature=1.0)
    cfg["train"] = {**cfg["train"], "epochs": 1}
    cfg["tracking"] = {"uri": f"sqlite:///{out / 'mlflow.db'}"}
    return cfg


@pytest.fixture(scope="session")
def toy_spec(toy_config, tmp_path_factory) -> tuple[Path, list[int]]:
    """The prepare component's output for the toy config, 2 shards."""
    from mpa_kfp.components.data_processing.prepare import prepare

    spec = tmp_path_factory.mktemp("run_spec") / "run_spec"
    shards = prepare.python_func(run_spec=artifact(Dataset, spec), resolved_rounds=f"{spec}.rounds", shards=2,
                                 config=toy_config)
    return spec, shards


@pytest.fixture(scope="session")
def toy_parity(toy_spec, tmp_path_factory) -> Path:
    """annotate → identify on every shard, merged: the parity set later components read."""
    from mpa_kfp.components.data_processing.annotate import annotate
    from mpa_kfp.components.data_processing.identify import identify
    from mpa_kfp.components.data_processing.merge import merge

    spec, shards = toy_spec
    root = tmp_path_factory.mktemp("shards")
    judged = []
    for i in shards:
        ann = artifact(Dataset, root / f"ann-{i}")
        annotate.python_func(run_spec=artifact(Dataset, spec), shard=i, annotations=ann)
        jud = artifact(Dataset, root / f"judge-{i}")
        identify.python_func(run_spec=artifact(Dataset, spec), shard=i, annotations=ann, judgements=jud)
        judged.append(jud)
    parity = root / "parity"
    merge.python_func(run_spec=artifact(Dataset, spec), shards=judged, parity=artifact(Dataset, parity),
                      counts=artifact(Metrics, root / "counts"))
    return parity


@pytest.fixture(scope="session")
def toy_checkpoint(toy_spec, toy_parity, tmp_path_factory) -> Model:
    from mpa_kfp.components.training.level import level

    spec, _ = toy_spec
    root = tmp_path_factory.mktemp("level")
    ckpt = artifact(Model, root / "checkpoint")
    level.python_func(run_spec=artifact(Dataset, spec), parity=artifact(Dataset, toy_parity), checkpoint=ckpt,
                      train_log=artifact(Dataset, root / "log"), train_metrics=artifact(Metrics, root / "metrics"))
    return ckpt
