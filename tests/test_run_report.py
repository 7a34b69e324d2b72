"""`mpa run` writes the demo's report: report.json, report.html (scores, K, parity samples, rounds) and chart.png."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from mpa.config import parse_config
from mpa.records import read_jsonl
from mpa.report import render_chart, run_report


def test_run_writes_report_html_and_chart(tiny_config):
    from mpa.orchestrate.local import run_pipeline

    cfg = parse_config({**tiny_config, "rounds": 2, "iterate": {"min_k": 1}, "tracking": {"enabled": False}})
    summary = run_pipeline(cfg, show=False)
    out = Path(cfg.out)
    report = json.loads((out / "report.json").read_text())
    assert report == json.loads(json.dumps(run_report(summary)))
    assert report["k_parity"] == summary["identify"]["k_parity"] > 0
    assert set(report["accuracy"]) == {"student_zero_shot", "student_mpa"}
    assert report["accuracy"]["student_zero_shot"] == round(summary["eval_before"]["score"], 2)
    assert len(report["rounds"]) == len(summary["rounds"])
    html = (out / "report.html").read_text()
    parity = list(read_jsonl(out / "pi" / "parity.jsonl"))
    assert html.count("<figure>") == min(len(parity), 24) and html.count("data:image/png;base64,") >= 2
    assert f"K={report['k_parity']}</b>" in html and "student + MPA" in html
    chart = Image.open(out / "chart.png")
    one_round = render_chart({k: v for k, v in report.items() if k != "rounds"})
    if len(report["rounds"]) > 1:
        assert chart.size[1] > one_round.size[1]  # the per-round panel below the bars
    assert chart.size[0] >= 400
