#!/usr/bin/env python
"""Benchmark: iterative MPA in the toy world — both training choices, several seeds, three rounds.

For each training choice (``iterate.train_from``: ``previous`` continues from the last round's
checkpoint, ``base`` retrains the base student on the union of parity sets) and seed it runs
``mpa demo --rounds R`` in a fresh directory (a demo directory is never copied: its records name their
images by path). It prints, per seed and choice: K and overall accuracy per round, the per-type change
against zero-shot, the share of the teacher–student gap closed, and the demo's wall time; then one JSON line.
Goals (issue 13): >= 75 % of the gap closed after three rounds, no type more than 3 points below
zero-shot, at most 5 minutes warm.

Usage: ``python scripts/rounds_targets.py --seeds 0 1 2 [--rounds 3] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

CHOICES = ("previous", "base")


def measures(r: dict) -> dict:
    zs, teacher = r["accuracy"]["student_zero_shot"], r["accuracy"]["teacher"]
    last = r["rounds"][-1]
    per_zero = {t: row["student_zero_shot"] for t, row in r["per_type"].items()}
    change = {t: round(last["per_type"][t] - per_zero[t], 1) for t in per_zero}
    gap = teacher - zs
    return {
        "k": [x["k_parity"] for x in r["rounds"]],
        "accuracy": [x["accuracy"] for x in r["rounds"]],
        "stopped": [x.get("stopped") for x in r["rounds"]],
        "per_type_change": change,
        "worst_change": min(change.values()),
        "gap_closed": round((last["accuracy"] - zs) / gap, 3) if gap else None,
        "gap_closed_round1": round((r["rounds"][0]["accuracy"] - zs) / gap, 3) if gap else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--choices", nargs="+", default=list(CHOICES), choices=CHOICES)
    ap.add_argument("--out", default=None, help="keep the demo directories here (default: a temp dir)")
    args = ap.parse_args()
    from mpa.toyworld.demo import run_demo

    root = args.out or tempfile.mkdtemp(prefix="mpa-rounds-")
    results: dict = {}
    for choice in args.choices:
        for seed in args.seeds:
            t = time.perf_counter()
            r = run_demo(f"{root}/seed{seed}-{choice}", seed=seed,
                         overrides={"rounds": args.rounds, "iterate.train_from": choice})
            m = measures(r)
            m["wall_s"] = round(time.perf_counter() - t, 1)
            results.setdefault(str(seed), {})[choice] = m
    print(f"\niterative MPA, {args.rounds} rounds (goals: gap closed >= 0.75, worst type change >= -3, <= 300 s)")
    for seed, by in results.items():
        for choice, m in by.items():
            print(f"seed {seed} {choice:8s}: K {m['k']} accuracy {m['accuracy']} gap closed {m['gap_closed']} "
                  f"(round 1: {m['gap_closed_round1']}) worst type {m['worst_change']:+.1f} {m['wall_s']} s")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
