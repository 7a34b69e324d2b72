#!/usr/bin/env python
"""Measure PA's answer-length filter (``annotate.max_answer_words``) in the toy world.

Runs the whole pipeline (PA → PI → PL → evaluate) twice on the same unlabeled toy images and
held-out test set: once with the task's limit (``max_answer_words: task``; toyvqa: 3 words, mpa's
default until this measurement) and once without (unset: mpa's default now, and the paper's).
Both runs share one result cache, so PA and PI decode once and the two runs see identical teacher
outputs; only the filter differs. The oracle grades
what the filter removed and what each parity set holds. Prints a table and one JSON line.

Usage: ``python scripts/answer_filter_ablation.py --n-images 2000 --seeds 0 1``.

What it can show: whether the filter removes wrong pseudo-labels or useful ones, whether PI
would have removed them anyway, and the effect on the aligned student — for a teacher whose right
answers are single words. What it cannot show: real teachers write right answers of 4+ words
("Symbol of freedom", "Protection from rain"); the toy world has none, so a removed long answer
here is wrong by construction.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")


def _grade(records: list[dict]) -> dict:
    from mpa.toyworld.demo import grade_pseudo_labels

    g = grade_pseudo_labels(records)
    return {"n": len(records), **{k: (round(v, 3) if v is not None else None) for k, v in g.items()}}


def run_seed(root: Path, seed: int, n_images: int, n_test: int, temperature: float) -> dict:
    from mpa.config import parse_config
    from mpa.orchestrate.local import run_pipeline
    from mpa.records import read_jsonl
    from mpa.toyworld.data import make_testset, make_unlabeled
    from mpa.toyworld.demo import demo_config

    out = root / f"seed{seed}"
    if not (out / "unlabeled" / "truth.jsonl").is_file():
        make_unlabeled(out / "unlabeled", n_images, seed=seed)
    if not (out / "test" / "annotations.json").is_file():
        make_testset(out / "test", n_test, seed=1000 + seed)
    res: dict = {"seed": seed}
    for name, limit in (("filter", "task"), ("no_filter", None)):
        raw = demo_config(out, n_images, n_test, seed, temperature)
        raw["out"] = str(out / name)
        raw["annotate"]["max_answer_words"] = limit
        raw["cache"] = {"dir": str(out / "cache")}
        raw["tracking"] = {"enabled": False}
        t = time.perf_counter()
        summary = run_pipeline(parse_config(raw, name), show=False)
        anns = list(read_jsonl(out / name / "annotations.jsonl"))
        parity = list(read_jsonl(out / name / "pi" / "parity.jsonl"))
        res[name] = {
            "n_parsed": summary["annotate"]["n_parsed"],
            "k_parity": summary["identify"]["k_parity"],
            "pseudo_labels": _grade([r for r in anns if r["parse_ok"]]),
            "parity": _grade(parity),
            "before": {"official": round(summary["eval_before"]["official"], 2),
                       "contains": round(summary["eval_before"]["contains"], 2)},
            "after": {"official": round(summary["eval_after"]["official"], 2),
                      "contains": round(summary["eval_after"]["contains"], 2)},
            "seconds": round(time.perf_counter() - t, 1),
        }
        if name == "filter":
            removed = [r for r in anns if (r.get("error") or "").startswith("answer too long")]
            res["removed_by_filter"] = _grade([{**r} for r in removed])
            res["removed_examples"] = [f"{r['question']} → {r['answer']}" for r in removed[:5]]
    ids_f = {r["id"] for r in read_jsonl(out / "filter" / "pi" / "parity.jsonl")}
    extra = [r for r in read_jsonl(out / "no_filter" / "pi" / "parity.jsonl") if r["id"] not in ids_f]
    res["parity_only_without_filter"] = _grade(extra)
    res["parity_only_without_filter_examples"] = [f"{r['question']} → {r['answer']}" for r in extra[:5]]
    return res


def main() -> None:
    from mpa.toyworld import DEMO_N_TEST, DEMO_TEMPERATURE

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--n-images", type=int, default=2000)
    ap.add_argument("--n-test", type=int, default=DEMO_N_TEST)
    ap.add_argument("--temperature", type=float, default=DEMO_TEMPERATURE, help="PA temperature (demo's default)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    root = Path(args.out or tempfile.mkdtemp(prefix="mpa-answer-filter-"))
    results = [run_seed(root, s, args.n_images, args.n_test, args.temperature) for s in args.seeds]
    print(f"\nanswer-length filter in the toy world: {args.n_images} images, PA temperature {args.temperature}")
    for r in results:
        print(f"seed {r['seed']}: the filter removed {r['removed_by_filter']['n']} parsed pseudo-labels "
              f"(correct: {r['removed_by_filter']['correctness']}); in the parity set only without it: "
              f"{r['parity_only_without_filter']['n']} (correct: {r['parity_only_without_filter']['correctness']})")
        for name in ("filter", "no_filter"):
            x = r[name]
            print(f"  {name:9s}: parsed {x['n_parsed']} (correct {x['pseudo_labels']['correctness']}), "
                  f"K={x['k_parity']} (correct {x['parity']['correctness']}), student {x['before']['official']} → "
                  f"{x['after']['official']} (contains {x['before']['contains']} → {x['after']['contains']}), "
                  f"{x['seconds']} s")
    print(json.dumps({"n_images": args.n_images, "temperature": args.temperature, "results": results}))


if __name__ == "__main__":
    main()
