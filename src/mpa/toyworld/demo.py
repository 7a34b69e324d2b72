"""``mpa demo``: MPA end to end in the toy world, with ground truth to check every claim.

PA on fresh unlabeled toy images (the shipped tiny teacher), PI against the shipped tiny
student, PL, then evaluation of teacher, student zero-shot, student + MPA and student + all
pseudo-labels (no PI) on a held-out labeled toy test set — all through the same stage code as
a real run. The oracle grades the pseudo-labels before and after PI (the paper's Table 4 needed
human raters). Writes ``report.json``, ``report.html`` (parity-set grid + before/after chart)
and ``chart.png``.
"""

from __future__ import annotations

import base64
import io
import time
from pathlib import Path
from typing import Any

from mpa.config import ModelConfig, apply_overrides, parse_config
from mpa.orchestrate.local import run_pipeline
from mpa.records import read_jsonl, write_json_atomic
from mpa.stages.evaluate import benchmark_samples, evaluate_with_config
from mpa.stages.level import level_with_config
from mpa.toyworld import DEMO_N_IMAGES, DEMO_N_TEST, DEMO_TEMPERATURE, DEMO_TRAIN
from mpa.ui import console

MODELS = ("teacher", "student_zero_shot", "student_mpa", "student_no_pi", "student_mpa_replay")
LABELS = {"teacher": "teacher", "student_zero_shot": "student", "student_mpa": "student + MPA",
          "student_no_pi": "student + all pseudo-labels (no PI)",
          "student_mpa_replay": "student + MPA + replay"}
REPLAY_FRACTION = 0.5


def demo_config(out: Path, n_images: int, n_test: int, seed: int, temperature: float) -> dict[str, Any]:
    from mpa.toyworld import STUDENT_CHECKPOINT, TEACHER_CHECKPOINT

    return {
        "task": {"name": "toyvqa"},
        "teacher": {"model": str(TEACHER_CHECKPOINT), "batch_size": 32},
        "student": {"model": str(STUDENT_CHECKPOINT), "batch_size": 32},
        "data": {"images": str(out / "unlabeled" / "images")},
        # top-k 50 is what transformers applied implicitly when the demo's figures were measured; now explicit
        "annotate": {"temperature": temperature, "top_p": 1.0, "top_k": 50, "max_new_tokens": 32},
        "identify": {"match": "vqa", "max_new_tokens": 8},
        "train": {**DEMO_TRAIN, "seed": seed},
        "evaluate": {"benchmark": "textvqa", "annotations": str(out / "test" / "annotations.json"),
                     "images": str(out / "test" / "images"), "max_new_tokens": 8},
        "out": str(out / "run"),
        "seed": seed,
    }


def grade_pseudo_labels(records: list[dict]) -> dict[str, float | None]:
    """Oracle grading of (question, answer) pseudo-labels, as the paper's human study (Table 4) rates them.

    ``correctness``: the question is answerable about its image and the answer is right;
    ``answerability``: the question is a well-formed question the image answers.
    """
    from mpa.toyworld.grading import grade_annotation, scene_for_image

    grades = []
    for r in records:
        scene = scene_for_image(r["image"])
        grades.append(grade_annotation(scene, r["question"], r["answer"]) if scene is not None else None)
    if not grades:
        return {"correctness": None, "answerability": None}
    return {"correctness": sum(g is True for g in grades) / len(grades),
            "answerability": sum(g is not None for g in grades) / len(grades)}


def run_demo(out: str | Path = "runs/demo", seed: int = 0, n_images: int = DEMO_N_IMAGES, n_test: int = DEMO_N_TEST,
             temperature: float = DEMO_TEMPERATURE, overrides: dict | None = None) -> dict[str, Any]:
    from mpa.toyworld.data import make_testset, make_unlabeled

    if str(out).startswith("s3:"):  # also the Path("s3://b/p") == "s3:/b/p" a CLI option turns it into
        raise ValueError(f"mpa demo writes its images, run and report to a local directory, not to {out}: give a "
                         "local --out, then copy it (e.g. `aws s3 sync runs/demo s3://bucket/prefix`)")
    out = Path(out)
    t0 = time.perf_counter()
    _check_or_mark_data(out, {"seed": seed, "n_images": n_images, "n_test": n_test, "temperature": temperature})
    if not (out / "unlabeled" / "truth.jsonl").is_file():
        make_unlabeled(out / "unlabeled", n_images, seed=seed)
    if not (out / "test" / "annotations.json").is_file():
        make_testset(out / "test", n_test, seed=1000 + seed)
    raw = apply_overrides(demo_config(out, n_images, n_test, seed, temperature), overrides, "mpa demo")
    cfg = parse_config(raw, "mpa demo")
    timings: dict[str, float] = {"make_data": time.perf_counter() - t0}

    summary = run_pipeline(cfg, show=True)
    timings.update(summary["timings_s"])
    run_dir = Path(cfg.out)
    bench = benchmark_samples(cfg)

    def score(model_cfg: ModelConfig, name: str) -> dict:
        t = time.perf_counter()
        try:
            return evaluate_with_config(cfg, run_dir / "eval" / f"{name}.jsonl", model=model_cfg, samples=bench,
                                        label=f"eval {name}")
        finally:
            timings[f"eval_{name}"] = time.perf_counter() - t

    def train_student(name: str, **where: Any) -> tuple[ModelConfig, int]:
        t = time.perf_counter()
        run_cfg = cfg
        if name == "replay":
            # A label-free remedy for forgetting, shown beside the paper's method (not its default):
            # the parity set plus as many teacher-consistent samples the student already answers.
            replay = cfg.train.model_copy(update={"replay_fraction": REPLAY_FRACTION})
            run_cfg = cfg.model_copy(update={"train": replay})
        pl = level_with_config(run_cfg, run_dir / f"level_{name}", show=False, **where)
        timings[f"level_{name}"] = time.perf_counter() - t
        return cfg.student.at(pl.checkpoint), pl.n_samples

    teacher_eval = score(cfg.teacher, "teacher")
    no_pi_eval = score(train_student("no_pi", samples_path=run_dir / "annotations.jsonl")[0], "no_pi")
    replay_student, mix = train_student("replay", pi_dir=run_dir / "pi")
    replay_eval = score(replay_student, "replay")

    evals = {"teacher": teacher_eval, "student_zero_shot": summary["eval_before"],
             "student_mpa": summary["eval_after"], "student_no_pi": no_pi_eval, "student_mpa_replay": replay_eval}
    parsed = [r for r in read_jsonl(run_dir / "annotations.jsonl") if r["parse_ok"]]
    parity = list(read_jsonl(run_dir / "pi" / "parity.jsonl"))
    pi = summary["identify"]
    types = sorted(teacher_eval.get("by_type", {}))
    pre, post = grade_pseudo_labels(parsed), grade_pseudo_labels(parity)
    report = {
        "seed": seed,
        "n_images": pi["n_images"],
        "n_parsed": pi["n_parsed"],
        "n_teacher_consistent": pi["n_teacher_consistent"],
        "k_parity": pi["k_parity"],
        "n_no_pi_samples": summary["annotate"]["n_parsed"],
        "n_replay_mix_samples": mix,
        "accuracy": {m: round(evals[m]["score"], 2) for m in MODELS},
        "contains": {m: round(evals[m]["contains"], 2) for m in MODELS},  # the MPA authors' substring rule
        "per_type": {t: {m: round(evals[m]["by_type"][t], 2) for m in MODELS} for t in types},
        "pseudo_label_correctness": {"pre_pi": pre["correctness"], "post_pi": post["correctness"]},
        "pseudo_label_answerability": {"pre_pi": pre["answerability"], "post_pi": post["answerability"]},
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
        "total_s": round(time.perf_counter() - t0, 1),
        "run_dir": str(run_dir),
    }
    if "rounds" in summary:
        report["rounds"] = rounds_report(summary["rounds"], types)
        gap = report["accuracy"]["teacher"] - report["accuracy"]["student_zero_shot"]
        last = report["rounds"][-1]["accuracy"]
        report["gap_closed"] = round((last - report["accuracy"]["student_zero_shot"]) / gap, 4) if gap else None
    write_json_atomic(out / "report.json", report)
    chart = render_chart(report)
    chart.save(out / "chart.png")
    (out / "report.html").write_text(render_html(report, parity, chart), encoding="utf-8")
    print_report(report, out)
    return report


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


def _check_or_mark_data(out: Path, settings: dict[str, Any]) -> None:
    """A demo directory resumes only the demo it was made for; other settings need another ``--out``."""
    import json

    marker = out / "demo_settings.json"
    if marker.is_file():
        before = json.loads(marker.read_text(encoding="utf-8"))
        if before != settings:
            raise ValueError(f"{out} holds a demo made with {before}, not {settings}: choose another --out "
                             "or delete it")
    elif (out / "run").exists():
        raise ValueError(f"{out} holds a demo from an older mpa version: choose another --out or delete it")
    else:
        write_json_atomic(marker, settings)


def print_report(report: dict, out: Path) -> None:
    from rich.table import Table

    table = Table(title=f"MPA in the toy world (seed {report['seed']}): accuracy on the held-out test set, %")
    table.add_column("question type")
    for m in MODELS:
        table.add_column(LABELS[m], justify="right")
    for t, row in report["per_type"].items():
        table.add_row(t, *(f"{row[m]:.1f}" for m in MODELS))
    table.add_row("[bold]overall", *(f"[bold]{report['accuracy'][m]:.1f}" for m in MODELS))
    if "contains" in report:
        table.add_row("overall, authors' `contains` rule", *(f"{report['contains'][m]:.1f}" for m in MODELS))
    console.print(table)
    plc = report["pseudo_label_correctness"]
    console.print(
        f"N={report['n_images']} images → {report['n_parsed']} parsed → {report['n_teacher_consistent']} "
        f"teacher-consistent → K={report['k_parity']} parity samples; pseudo-label correctness "
        f"{_fmt(plc['pre_pi'])} before PI → {_fmt(plc['post_pi'])} after PI; {report['total_s']} s"
    )
    if report.get("rounds"):
        console.print("rounds (K → student accuracy): " + " → ".join(
            f"{i}: K={r['k_parity']} {r['accuracy']:.1f}" + (" (stopped)" if r.get("stopped") else "")
            for i, r in enumerate(report["rounds"], 1))
            + f"; gap closed {_fmt(report['gap_closed'])}")
    console.print(f"report: {out / 'report.json'}  pictures: {out / 'report.html'}, {out / 'chart.png'}")


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


COLORS = {"teacher": (90, 90, 90), "student_zero_shot": (230, 140, 40), "student_mpa": (40, 150, 80),
          "student_no_pi": (90, 120, 200), "student_mpa_replay": (150, 200, 90)}


def render_chart(report: dict):
    """A grouped bar chart (PIL): accuracy per question type and overall, one bar per model."""
    from PIL import Image, ImageDraw

    groups = [*report["per_type"], "overall"]
    values = {**report["per_type"], "overall": report["accuracy"]}
    bar, gap, left, top, height = 14, 18, 40, 40, 220
    width = left + len(groups) * (len(MODELS) * bar + gap) + 20
    img = Image.new("RGB", (max(width, 560), top + height + 40 + 14 * len(MODELS)), "white")
    d = ImageDraw.Draw(img)
    d.text((left, 10), "accuracy % on held-out toy test set", fill="black")
    for pct in (0, 25, 50, 75, 100):
        y = top + height - pct * height / 100
        d.line([(left - 4, y), (width - 10, y)], fill=(225, 225, 225))
        d.text((4, y - 6), str(pct), fill="black")
    for gi, g in enumerate(groups):
        x0 = left + gi * (len(MODELS) * bar + gap)
        for mi, m in enumerate(MODELS):
            v = values[g][m]
            x = x0 + mi * bar
            d.rectangle([x, top + height - v * height / 100, x + bar - 2, top + height], fill=COLORS[m])
        d.text((x0, top + height + 6), g[:12], fill="black")
    for mi, m in enumerate(MODELS):
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
    for key, m in (("teacher", "teacher"), ("student_zero_shot", "student_zero_shot")):
        v = report["accuracy"][key]
        d.line([(left, y(v)), (left + step * len(rounds) + 20, y(v))], fill=COLORS[m], width=1)
    pts = [(left + step * i + 20, y(r["accuracy"])) for i, r in enumerate(rounds)]
    d.line(pts, fill=COLORS["student_mpa"], width=2)
    for i, ((px, py), r) in enumerate(zip(pts, rounds, strict=True), 1):
        d.ellipse([px - 3, py - 3, px + 3, py + 3], fill=COLORS["student_mpa"])
        d.text((px - 10, y0 + height + 6), f"r{i} K={r['k_parity']}", fill="black")
    return img


def _data_url(img) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def render_html(report: dict, parity: list[dict], chart, max_samples: int = 24) -> str:
    from html import escape

    from PIL import Image

    from mpa.data.images import load_image

    cells = []
    for r in parity[:max_samples]:
        img = load_image(r["image"]).image.resize((168, 168), Image.NEAREST)
        cells.append(
            f"<figure><img src='{_data_url(img)}'><figcaption><b>Q:</b> {escape(r['question'])}<br>"
            f"<b>pseudo A:</b> {escape(r['answer'])}<br><b>teacher:</b> {escape(str(r['teacher_answer']))}"
            f"<br><b>student:</b> <span class=bad>{escape(str(r['student_answer']))}</span></figcaption></figure>"
        )
    acc = report["accuracy"]
    rows = "".join(f"<tr><td>{LABELS[m]}</td><td>{acc[m]:.1f}</td></tr>" for m in MODELS)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>MPA toy-world demo</title>
<style>body{{font-family:sans-serif;margin:24px}} .grid{{display:flex;flex-wrap:wrap;gap:12px}}
figure{{width:190px;margin:0;border:1px solid #ddd;padding:6px;font-size:12px}} .bad{{color:#b00}}
td{{padding:2px 10px}}</style></head><body>
<h1>MPA in the toy world</h1>
<p>N={report['n_images']} unlabeled images → {report['n_parsed']} parsed pseudo-annotations →
{report['n_teacher_consistent']} teacher-consistent → <b>K={report['k_parity']}</b> parity samples.
Pseudo-label correctness (oracle): {_fmt(report['pseudo_label_correctness']['pre_pi'])} before PI,
{_fmt(report['pseudo_label_correctness']['post_pi'])} after.</p>
<table>{rows}</table>
<h2>Before / after</h2><img src='{_data_url(chart)}'>
<h2>Parity-set samples (teacher right, student wrong)</h2><div class=grid>{''.join(cells)}</div>
</body></html>"""
