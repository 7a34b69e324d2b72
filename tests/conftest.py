"""Shared fixtures: tiny real-architecture models and images, built locally once per test run."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # tiny models: thread overhead dominates (~40x slower with 2)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_ws(tmp_path_factory) -> dict[str, Path]:
    """Tiny teacher (briefly trained), untrained student, unlabeled images, TextVQA-format benchmark."""
    from mpa.devtools.tinymodels import make_tiny_workspace

    return make_tiny_workspace(tmp_path_factory.mktemp("tiny_ws"), n_images=12)


@pytest.fixture
def tiny_config(tiny_ws, tmp_path):
    """A RunConfig dict for the tiny workspace; tests tweak it and call ``parse_config``."""
    return {
        "task": {"name": "textvqa"},
        "teacher": {"model": str(tiny_ws["teacher"]), "batch_size": 8},
        "student": {"model": str(tiny_ws["student"]), "batch_size": 8},
        "data": {"images": str(tiny_ws["images"])},
        "annotate": {"temperature": 1.0, "max_new_tokens": 24},
        "identify": {"match": "vqa", "max_new_tokens": 6},
        "train": {"batch_size": 4, "learning_rate": 0.003, "epochs": 2},
        "evaluate": {"benchmark": "textvqa", "annotations": str(tiny_ws["benchmark"]), "max_new_tokens": 6},
        "out": str(tmp_path / "run"),
    }


@pytest.fixture(autouse=True)
def _own_mpa_cache(tmp_path_factory, monkeypatch):
    """Each test gets its own ``$MPA_CACHE`` (the shared result cache lives there by default): a test never
    sees model answers another test, or the user's own runs, left behind."""
    monkeypatch.setenv("MPA_CACHE", str(tmp_path_factory.mktemp("mpa-cache")))
