#!/usr/bin/env bash
# One H100, nothing downloaded: PA + PI with Qwen2-VL-7B-teacher / Qwen2-VL-2B-student shapes (random
# weights, the published configs in mpa.archs) through vLLM's offline engine and batched transformers,
# then PL steps of the 2B student; one JSON of results with mpa plan's prediction beside each measurement.
#
#   scripts/gpu_check.sh [--out DIR] [--images N] [--layers L] [--python PY] [--dry-run]
#
# --dry-run: the same steps on a CPU at reduced depth and width (1 decoder layer, 1 vision block, 1/8 width,
# one image, batched HF and PL only): proves the script and the bench run end to end without a GPU. The full
# run has not been run on a GPU from this repository yet (no GPU where it was written); budget < 8 minutes.
set -euo pipefail

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; }

OUT=runs/gpu_check
IMAGES=64
LAYERS=""
PY=${PYTHON:-python}
DRY=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) OUT=${2:?--out needs a directory}; shift 2 ;;
    --images) IMAGES=${2:?--images needs a number}; shift 2 ;;
    --layers) LAYERS=${2:?--layers needs a number}; shift 2 ;;
    --python) PY=${2:?--python needs an interpreter}; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ "$IMAGES" =~ ^[1-9][0-9]*$ ]] || { echo "gpu_check.sh: --images must be a positive integer, not $IMAGES" >&2; exit 2; }
[[ -z "$LAYERS" || "$LAYERS" =~ ^[1-9][0-9]*$ ]] || { echo "gpu_check.sh: --layers must be a positive integer, not $LAYERS" >&2; exit 2; }

if [[ $DRY == 1 ]]; then
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
  ARGS=(--layers 1 --vision-layers 1 --width 0.125 --n-images 1 --batch-size 1 --backends hf_batched
        --pl-steps 1 --pl-micro-batch 1 --dtype float32)
else
  if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check.sh: no CUDA device visible to $PY (use --dry-run on a CPU)" >&2; exit 3
  fi
  "$PY" -c "import vllm" 2>/dev/null || { echo "gpu_check.sh: vllm is not importable by $PY (pip install '.[vllm]')" >&2; exit 3; }
  ARGS=(--n-images "$IMAGES" --batch-size "$IMAGES" --backends hf_batched,vllm_offline --pl-steps 3
        --pl-micro-batch 4 --dtype bfloat16)
  [[ -n "$LAYERS" ]] && ARGS+=(--layers "$LAYERS")
fi

mkdir -p "$OUT"
start=$(date +%s)
"$PY" -m mpa bench-arch --workdir "$OUT" --teacher qwen2-vl-7b --student qwen2-vl-2b "${ARGS[@]}" | tee "$OUT/gpu_check.log"
secs=$(( $(date +%s) - start ))
"$PY" - "$OUT" "$secs" "$DRY" <<'EOF'
import json, sys
from pathlib import Path

out, secs, dry = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
res = json.loads((out / "bench_arch.json").read_text())
res["gpu_check"] = {"seconds": secs, "dry_run": dry, "budget_s": 480, "within_budget": secs <= 480}
(out / "gpu_check.json").write_text(json.dumps(res, indent=2, default=str))
print(f"\nmeasured beside the plan (plan: {res['rows'] and 'FLOP model at the measured peak and on mpa plan GPU'}):")
for kind, row in res["rows"].items():
    if "error" in row:
        print(f"  {kind}: failed: {row['error']}")
        continue
    for st in ("pa", "pi"):
        s = row[st]
        print(f"  {kind:<13} {st.upper()}: {s['images_per_s']:.2f} img/s, {s['generated_tokens_per_s']:.1f} tok/s, "
              f"{s['fraction_of_peak']:.1%} of peak; measured {s['seconds']:.2f}s, plan {s['plan_seconds_at_peak']:.2f}s "
              f"at peak, {s['plan_seconds_on_plan_gpu']:.3f}s on mpa plan's GPU")
pl = res.get("pl") or {}
if pl and "error" not in pl:
    print(f"  PL step {pl['step_s']:.2f}s (plan at peak {pl['plan_step_s_at_peak']:.2f}s), "
          f"memory {pl.get('gpu_peak_gib', pl.get('peak_above_start_gib')):.2f} GiB (plan weights+grads+AdamW "
          f"{pl['plan_state_gib']:.2f} GiB + activations)")
print(f"total {secs}s (budget 480s); results: {out / 'gpu_check.json'}")
EOF
