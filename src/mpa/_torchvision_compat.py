"""Make torchvision importable beside a CPU-only torch build.

transformers 5 needs torchvision for the Qwen2-VL processors. On a CPU-only torch (the
``+cpu`` wheel), the PyPI torchvision wheel's C extension cannot load (it links CUDA
libraries), and torchvision's import then fails while registering fake kernels for
``torchvision::nms``/``qnms`` ("operator torchvision::nms does not exist"). The pure-Python
transforms transformers uses do not need those ops, so when the extension cannot load we
declare the two op schemas before torchvision is imported. Where the extension loads (a CUDA
image), this does nothing.

The hook is lazy: nothing is imported until something imports torchvision. It is installed
by ``import mpa`` and, for processes that never import mpa (a vLLM server), by the
``mpa_torchvision_compat.pth`` file that ``scripts/setup_env.sh`` writes into the venv.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from pathlib import Path

_OP_SCHEMAS = {
    "torchvision::nms": "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "torchvision::qnms": "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}


def _prepare_torchvision() -> None:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return
    import torch

    ext = next(Path(next(iter(spec.submodule_search_locations))).glob("_C*.so"), None)
    if ext is not None:
        try:
            torch.ops.load_library(str(ext))
            return
        except OSError:
            pass
    for name, schema in _OP_SCHEMAS.items():
        try:
            torch.library.define(name, schema)
        except RuntimeError:  # already defined (extension loaded elsewhere, or a second call)
            pass


class _TorchvisionFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):  # noqa: ANN001
        if fullname == "torchvision":
            sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _TorchvisionFinder)]
            _prepare_torchvision()
        return None


def install() -> None:
    """Install the lazy hook (idempotent; a no-op if torchvision is already imported)."""
    if "torchvision" in sys.modules:
        return
    if not any(isinstance(f, _TorchvisionFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _TorchvisionFinder())
