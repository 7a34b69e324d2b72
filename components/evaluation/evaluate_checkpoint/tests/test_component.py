"""evaluate_checkpoint: the trained checkpoint is what gets scored."""

from __future__ import annotations

import html
import json

from kfp.dsl import HTML, Dataset, Metrics

from mpa_kfp.components.evaluation.evaluate_checkpoint import evaluate_checkpoint


def test_scores_the_checkpoint_and_shows_it_against_the_base_student(toy_spec, toy_checkpoint, toy_parity, tmp_path,
                                                                      monkeypatch):
    from mpa.records import read_jsonl
    from mpa_kfp.components.evaluation.evaluate_base import evaluate_base

    spec, _ = toy_spec
    evaluate_base.python_func(run_spec=Dataset(uri=str(spec)), predictions=Dataset(uri=str(tmp_path / "b")),
                              metrics=Metrics(uri=str(tmp_path / "bm")))
    loaded = []
    import mpa.vlm.loader as loader

    real = loader.load_vlm
    monkeypatch.setattr(loader, "load_vlm", lambda cfg: loaded.append(cfg.model) or real(cfg))
    report = HTML(uri=str(tmp_path / "report.html"))
    score = evaluate_checkpoint.python_func(run_spec=Dataset(uri=str(spec)), checkpoint=toy_checkpoint,
                                            before=Dataset(uri=str(tmp_path / "b")),
                                            parity=Dataset(uri=str(toy_parity)),
                                            predictions=Dataset(uri=str(tmp_path / "p")),
                                            metrics=Metrics(uri=str(tmp_path / "m")), report=report)
    assert loaded == [toy_checkpoint.path]
    assert score == json.loads((tmp_path / "p" / "score.json").read_text())["score"]
    # the KFP visualization: both scores, K, parity samples (escaped), the chart as an embedded PNG
    page = (tmp_path / "report.html").read_text()
    before = json.loads((tmp_path / "b" / "score.json").read_text())["score"]
    parity = list(read_jsonl(toy_parity / "pi" / "parity.jsonl"))
    assert f"<td>{before:.2f}</td>" in page and f"<td>{score:.2f}</td>" in page
    assert f"<th>K (parity-set size)</th><td>{len(parity)}</td>" in page and parity
    assert html.escape(parity[0]["question"]) in page
    assert page.count("data:image/png;base64,") == 1
