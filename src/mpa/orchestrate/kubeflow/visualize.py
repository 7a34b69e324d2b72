"""What a Kubeflow Pipelines user sees of an evaluation without opening MLflow: one self-contained HTML
page (a KFP ``HTML`` output artifact, shown under the task's Visualization tab) with the scores
before/after, K, a few parity samples and the before/after chart.

The chart is the tracking run's (:func:`mpa.tracking.runlog.before_after_chart`) and the picture is
embedded the way the demo's report embeds its chart (:func:`mpa.report.data_url`): no second
renderer. Every model-written string is HTML-escaped (the KFP UI renders the page).
"""

from __future__ import annotations

from html import escape
from typing import Any

MAX_SAMPLES = 8


def _num(x: Any) -> str:
    return "n/a" if x is None else f"{float(x):.2f}"


def evaluation_html(title: str, before: dict, after: dict, k: int | None, samples: list[dict],
                    before_label: str = "before", after_label: str = "after") -> str:
    """The page: ``before``/``after`` are evaluation results (``score.json``: benchmark, metric, score, n),
    ``k`` the parity-set size, ``samples`` parity records (question, answer, teacher and student answers)."""
    from mpa.report import data_url
    from mpa.tracking.runlog import before_after_chart

    bench, metric = after.get("benchmark", "?"), after.get("metric", "score")
    chart = before_after_chart(f"{bench} ({metric})", float(before["score"]), float(after["score"]))
    rows = "".join(
        f"<tr><td>{escape(str(s.get('question', '')))}</td><td>{escape(str(s.get('answer', '')))}</td>"
        f"<td>{escape(str(s.get('teacher_answer', '')))}</td>"
        f"<td class=bad>{escape(str(s.get('student_answer', '')))}</td></tr>"
        for s in samples[:MAX_SAMPLES]
    )
    delta = float(after["score"]) - float(before["score"])
    what = f"{escape(str(bench))} ({escape(str(metric))}, n={escape(str(after.get('n', '?')))})"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{escape(title)}</title>
<style>body{{font-family:sans-serif;margin:16px}} td,th{{padding:2px 10px;text-align:left}} .bad{{color:#b00}}</style>
</head><body><h2>{escape(title)}</h2>
<table><tr><th>benchmark</th><td>{what}</td></tr>
<tr><th>{escape(before_label)}</th><td>{_num(before['score'])}</td></tr>
<tr><th>{escape(after_label)}</th><td>{_num(after['score'])}</td></tr>
<tr><th>delta</th><td>{delta:+.2f}</td></tr>
<tr><th>K (parity-set size)</th><td>{"n/a" if k is None else int(k)}</td></tr></table>
<img alt="before/after chart" src='{data_url(chart)}'>
<h3>Parity samples (teacher right, student wrong): {min(len(samples), MAX_SAMPLES)} of {len(samples)}</h3>
<table><tr><th>question</th><th>pseudo answer</th><th>teacher</th><th>student</th></tr>{rows}</table>
</body></html>"""
