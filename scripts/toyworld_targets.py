#!/usr/bin/env python
"""Benchmark: the toy-world targets of MPA (issue 3), measured over several seeds.

Runs ``mpa demo`` once per seed and prints every target with the measured value and PASS/FAIL,
then one JSON line with all numbers. Usage: ``python scripts/toyworld_targets.py --seeds 0 1 2``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")


def targets(r: dict) -> list[tuple[str, float, bool]]:
    acc, per = r["accuracy"], r["per_type"]
    worst_drop = min(row["student_mpa"] - row["student_zero_shot"] for row in per.values())
    plc = r["pseudo_label_correctness"]
    return [
        ("teacher min per type (>= 90)", min(row["teacher"] for row in per.values()),
         min(row["teacher"] for row in per.values()) >= 90),
        ("teacher - student zero-shot (>= 20)", acc["teacher"] - acc["student_zero_shot"],
         acc["teacher"] - acc["student_zero_shot"] >= 20),
        ("MPA gain over zero-shot (>= 10)", acc["student_mpa"] - acc["student_zero_shot"],
         acc["student_mpa"] - acc["student_zero_shot"] >= 10),
        ("worst per-type change after MPA (>= -3)", worst_drop, worst_drop >= -3),
        ("MPA - no-PI (> 0)", acc["student_mpa"] - acc["student_no_pi"], acc["student_mpa"] > acc["student_no_pi"]),
        ("pseudo-label correctness gain from PI (>= 0.15)", plc["post_pi"] - plc["pre_pi"],
         plc["post_pi"] - plc["pre_pi"] >= 0.15),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--temperature", type=float, default=None, help="default: the demo's")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    from mpa.toyworld import DEMO_TEMPERATURE
    from mpa.toyworld.demo import run_demo

    temperature = DEMO_TEMPERATURE if args.temperature is None else args.temperature
    root = args.out or tempfile.mkdtemp(prefix="mpa-targets-")
    results = []
    for seed in args.seeds:
        t = time.perf_counter()
        r = run_demo(f"{root}/seed{seed}", seed=seed, temperature=temperature)
        r["wall_s"] = round(time.perf_counter() - t, 1)
        results.append(r)
    print(f"\ntoy-world targets, PA temperature {temperature}")
    for r in results:
        print(f"seed {r['seed']}: accuracy {r['accuracy']}  K={r['k_parity']}  {r['wall_s']} s")
        for name, value, ok in targets(r):
            print(f"  {'PASS' if ok else 'FAIL'}  {name}: {value:+.3f}")
    print(json.dumps({"temperature": temperature, "seeds": {
        r["seed"]: {"accuracy": r["accuracy"], "pseudo_label_correctness": r["pseudo_label_correctness"],
                    "k_parity": r["k_parity"], "wall_s": r["wall_s"],
                    "targets": {n: [round(v, 3), ok] for n, v, ok in targets(r)}} for r in results}}))


if __name__ == "__main__":
    main()
