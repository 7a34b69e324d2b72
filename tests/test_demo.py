"""`mpa demo` on a reduced toy world: the report a user gets, with every promised field."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from mpa.toyworld.demo import MODELS, run_demo


def test_demo_writes_report_and_pictures(tmp_path):
    report = run_demo(tmp_path, seed=3, n_images=64, n_test=28)
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert on_disk == json.loads(json.dumps(report))
    for key in ("n_images", "n_parsed", "n_teacher_consistent", "k_parity"):
        assert isinstance(report[key], int)
    assert report["n_images"] == 64
    assert report["n_parsed"] >= report["n_teacher_consistent"] >= report["k_parity"] > 0
    assert set(report["accuracy"]) == set(MODELS)
    assert all(0.0 <= v <= 100.0 for v in report["accuracy"].values())
    # the MPA authors' substring rule beside the official score: toy answers are digits and single
    # words (no articles or number words to normalise), so what VQA accuracy counts, `contains` counts
    assert set(report["contains"]) == set(MODELS)
    assert all(report["contains"][m] >= report["accuracy"][m] for m in MODELS)
    assert report["per_type"] and all(set(row) == set(MODELS) for row in report["per_type"].values())
    plc = report["pseudo_label_correctness"]
    assert 0.0 <= plc["pre_pi"] <= 1.0 and 0.0 <= plc["post_pi"] <= 1.0
    assert {"annotate", "identify", "level", "eval_before", "eval_after", "eval_teacher"} <= set(report["timings_s"])
    assert report["cpu_s"] > 0 and report["torch_threads"] >= 1  # a regression shows also on a shared machine
    # the shipped teacher really knows more than the shipped student
    assert report["accuracy"]["teacher"] > report["accuracy"]["student_zero_shot"] + 20
    chart = Image.open(tmp_path / "chart.png")
    assert chart.size[0] >= 400
    html = (tmp_path / "report.html").read_text()
    assert html.count("<figure>") == min(report["k_parity"], 24) and "data:image/png;base64," in html


def test_a_demo_directory_resumes_only_its_own_settings(tmp_path):
    from mpa.toyworld.demo import _check_or_mark_data

    settings = {"seed": 0, "n_images": 64, "n_test": 28, "temperature": 1.75}
    _check_or_mark_data(tmp_path, settings)
    _check_or_mark_data(tmp_path, dict(settings))  # same settings: resumes
    with pytest.raises(ValueError, match="choose another --out"):
        _check_or_mark_data(tmp_path, {**settings, "n_images": 128})
    old = tmp_path / "old"
    (old / "run").mkdir(parents=True)
    with pytest.raises(ValueError, match="older mpa version"):
        _check_or_mark_data(old, settings)
