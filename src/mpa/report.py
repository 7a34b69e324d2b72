"""The run report: ``report.json``, ``report.html`` (scores, K, parity-set samples, chart) and ``chart.png``.

One renderer for ``mpa demo`` (five models, oracle-graded pseudo-labels) and ``mpa run`` (the student
before and after MPA, per round): it draws the models a report holds, in :data:`MODELS` order, and the
per-round panel when there are several rounds.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

MODELS = ("teacher", "student_zero_shot", "student_mpa", "student_no_pi", "student_mpa_replay")
LABELS = {"teacher": "teacher", "student_zero_shot": "student", "student_mpa": "student + MPA",
          "student_no_pi": "student + all pseudo-labels (no PI)",
          "student_mpa_replay": "student + MPA + replay"}
COLORS = {"teacher": (90, 90, 90), "student_zero_shot": (230, 140, 40), "student_mpa": (40, 150, 80),
          "student_no_pi": (90, 120, 200), "student_mpa_replay": (150, 200, 90)}


def models_in(report: dict) -> list[str]:
    return [m for m in MODELS if m in report["accuracy"]]


def fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def rounds_report(records: list[dict], types: list[str]) -> list[dict[str, Any]]:
    """``report["rounds"]``: per round K and the student's accuracy after it (a round that stopped before
    training leaves the previous round's student, so it repeats that round's accuracy)."""
    out: list[dict[str, Any]] = []
    for r in records:
        ev = r.get("eval")
        if ev is None and out:
            entry = {"k_parity": r["k_parity"], "accuracy": out[-1]["accuracy"], "per_type": out[-1]["per_type"]}
        elif ev is None:
            continue
        else:
            entry = {"k_parity": r["k_parity"], "accuracy": round(ev["score"], 2),
                     "per_type": {t: round(ev["by_type"][t], 2) for t in types}}
        if r.get("stopped"):
            entry["stopped"] = r["stopped"]
        out.append(entry)
    return out


def render_chart(report: dict, title: str = "accuracy % on held-out toy test set"):
    """A grouped bar chart (PIL): accuracy per question type and overall, one bar per model."""
    from PIL import Image, ImageDraw

    models = models_in(report)
    groups = [*report.get("per_type", {}), "overall"]
    values = {**report.get("per_type", {}), "overall": report["accuracy"]}
    bar, gap, left, top, height = 14, 18, 40, 40, 220
    width = left + len(groups) * (len(models) * bar + gap) + 20
    img = Image.new("RGB", (max(width, 560), top + height + 40 + 14 * len(models)), "white")
    d = ImageDraw.Draw(img)
    d.text((left, 10), title, fill="black")
    for pct in (0, 25, 50, 75, 100):
        y = top + height - pct * height / 100
        d.line([(left - 4, y), (width - 10, y)], fill=(225, 225, 225))
        d.text((4, y - 6), str(pct), fill="black")
    for gi, g in enumerate(groups):
        x0 = left + gi * (len(models) * bar + gap)
        for mi, m in enumerate(models):
            v = values[g][m]
            x = x0 + mi * bar
            d.rectangle([x, top + height - v * height / 100, x + bar - 2, top + height], fill=COLORS[m])
        d.text((x0, top + height + 6), g[:12], fill="black")
    for mi, m in enumerate(models):
        y = top + height + 26 + 14 * mi
        d.rectangle([left, y, left + 10, y + 10], fill=COLORS[m])
        d.text((left + 16, y - 1), LABELS[m], fill="black")
    rounds = report.get("rounds") or []
    if len(rounds) > 1:
        img = _with_rounds_panel(img, report, rounds)
    return img


def _with_rounds_panel(chart, report: dict, rounds: list[dict]):
    """The bar chart with a panel below: overall accuracy after each round, teacher and zero-shot for reference."""
    from PIL import Image, ImageDraw

    left, top, height, step = 40, 30, 160, 70
    img = Image.new("RGB", (chart.width, chart.height + top + height + 40), "white")
    img.paste(chart, (0, 0))
    d = ImageDraw.Draw(img)
    y0 = chart.height + top
    d.text((left, chart.height + 8), "overall accuracy % after each round (iterative MPA)", fill="black")
    lo = max(0.0, min([report["accuracy"]["student_zero_shot"], *(r["accuracy"] for r in rounds)]) - 5)

    def y(v: float) -> float:
        return y0 + height - (v - lo) * height / (100 - lo)

    for pct in range(int(lo // 5 * 5), 101, 5):
        if pct >= lo:
            d.line([(left - 4, y(pct)), (left + step * len(rounds) + 20, y(pct))], fill=(235, 235, 235))
            d.text((4, y(pct) - 6), str(pct), fill="black")
    for m in ("teacher", "student_zero_shot"):
        if m in report["accuracy"]:
            v = report["accuracy"][m]
            d.line([(left, y(v)), (left + step * len(rounds) + 20, y(v))], fill=COLORS[m], width=1)
    pts = [(left + step * i + 20, y(r["accuracy"])) for i, r in enumerate(rounds)]
    d.line(pts, fill=COLORS["student_mpa"], width=2)
    for i, ((px, py), r) in enumerate(zip(pts, rounds, strict=True), 1):
        d.ellipse([px - 3, py - 3, px + 3, py + 3], fill=COLORS["student_mpa"])
        d.text((px - 10, y0 + height + 6), f"r{i} K={r['k_parity']}", fill="black")
    return img


def data_url(img) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _thumbnail(uri: str):
    """The parity sample's image, small (local path or s3://); None when it cannot be read."""
    from PIL import Image

    from mpa.data.images import load_image

    try:
        return load_image(uri).image.convert("RGB").resize((168, 168), Image.NEAREST)
    except Exception:  # noqa: BLE001 - a sample the report cannot show is left out, the run is not failed
        return None


def render_html(report: dict, parity: list[dict], chart, max_samples: int = 24,
                title: str = "MPA in the toy world") -> str:
    from html import escape

    cells = []
    for r in parity[:max_samples]:
        img = _thumbnail(r["image"])
        pic = f"<img src='{data_url(img)}'>" if img is not None else f"<code>{escape(str(r['image']))}</code>"
        cells.append(
            f"<figure>{pic}<figcaption><b>Q:</b> {escape(r['question'])}<br>"
            f"<b>pseudo A:</b> {escape(r['answer'])}<br><b>teacher:</b> {escape(str(r['teacher_answer']))}"
            f"<br><b>student:</b> <span class=bad>{escape(str(r['student_answer']))}</span></figcaption></figure>"
        )
    acc = report["accuracy"]
    rows = "".join(f"<tr><td>{LABELS[m]}</td><td>{acc[m]:.1f}</td></tr>" for m in models_in(report))
    plc = report.get("pseudo_label_correctness")
    oracle = (f"\nPseudo-label correctness (oracle): {fmt(plc['pre_pi'])} before PI, {fmt(plc['post_pi'])} after."
              if plc else "")
    rounds = "".join(f"<tr><td>round {i}</td><td>K={r['k_parity']}</td><td>{r['accuracy']:.1f}</td></tr>"
                     for i, r in enumerate(report.get("rounds") or [], 1))
    rounds_table = f"<h2>Rounds (K → student score)</h2><table>{rounds}</table>" if rounds else ""
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{escape(title)}</title>
<style>body{{font-family:sans-serif;margin:24px}} .grid{{display:flex;flex-wrap:wrap;gap:12px}}
figure{{width:190px;margin:0;border:1px solid #ddd;padding:6px;font-size:12px}} .bad{{color:#b00}}
td{{padding:2px 10px}}</style></head><body>
<h1>{escape(title)}</h1>
<p>N={report['n_images']} unlabeled images → {report['n_parsed']} parsed pseudo-annotations →
{report['n_teacher_consistent']} teacher-consistent → <b>K={report['k_parity']}</b> parity samples.{oracle}</p>
<table>{rows}</table>
<h2>Before / after</h2><img src='{data_url(chart)}'>{rounds_table}
<h2>Parity-set samples (teacher right, student wrong)</h2><div class=grid>{''.join(cells)}</div>
</body></html>"""


def write_report(out: str | Path, report: dict, parity: list[dict], *, title: str, chart_title: str) -> None:
    """``report.json``, ``chart.png`` and ``report.html`` in the local directory ``out``."""
    from mpa.records import write_json_atomic

    out = Path(out)
    write_json_atomic(out / "report.json", report)
    chart = render_chart(report, chart_title)
    chart.save(out / "chart.png")
    (out / "report.html").write_text(render_html(report, parity, chart, title=title), encoding="utf-8")


def run_report(summary: dict[str, Any]) -> dict[str, Any] | None:
    """The report of an ``mpa run`` from its summary (None without an evaluation before and after)."""
    if "eval_before" not in summary or "eval_after" not in summary:
        return None
    pi = summary["identify"]
    evals = {"student_zero_shot": summary["eval_before"], "student_mpa": summary.get("eval_final",
                                                                                     summary["eval_after"])}
    types = sorted(set.intersection(*(set(e.get("by_type") or {}) for e in evals.values())))
    report: dict[str, Any] = {
        "task": summary.get("task"), "benchmark": summary["eval_before"].get("benchmark"),
        "teacher": summary.get("teacher"), "student": summary.get("student"),
        "n_images": pi["n_images"], "n_parsed": pi["n_parsed"], "n_teacher_consistent": pi["n_teacher_consistent"],
        "k_parity": pi["k_parity"],
        "accuracy": {m: round(e["score"], 2) for m, e in evals.items()},
        "contains": {m: round(e["contains"], 2) for m, e in evals.items() if "contains" in e},
        "timings_s": {k: round(v, 2) for k, v in (summary.get("timings_s") or {}).items()},
        "run_dir": summary.get("out"),
    }
    if types:
        report["per_type"] = {t: {m: round(e["by_type"][t], 2) for m, e in evals.items()} for t in types}
    if "rounds" in summary:
        report["rounds"] = rounds_report(summary["rounds"], types)
    return report


def write_run_report(run_dir: str | Path, summary: dict[str, Any]) -> Path | None:
    """``mpa run``'s report next to its ``summary.json`` (the local run directory); the path of report.html."""
    from mpa.records import read_jsonl

    report = run_report(summary)
    if report is None:
        return None
    run_dir = Path(run_dir)
    parity_path = run_dir / "pi" / "parity.jsonl"
    parity = list(read_jsonl(parity_path)) if parity_path.is_file() else []
    bench = report.get("benchmark") or "benchmark"
    write_report(run_dir, report, parity, title=f"MPA run: {report['task']} ({report['student']})",
                 chart_title=f"{bench} score %, student before and after MPA")
    return run_dir / "report.html"
