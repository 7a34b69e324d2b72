"""Build the backend a model config names, now or on first use."""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING

from mpa.vlm.base import VLM

if TYPE_CHECKING:
    from mpa.config import ModelConfig


def load_vlm(cfg: ModelConfig) -> VLM:
    """Build the backend the config names (``hf``, ``vllm`` or ``openai``)."""
    if cfg.backend == "hf":
        from mpa.vlm.hf import HFVLM

        return HFVLM(cfg)
    if cfg.backend == "vllm":
        from mpa.vlm.vllm_backend import VLLMVLM

        return VLLMVLM(cfg)
    if cfg.backend == "openai":
        from mpa.vlm.openai_backend import OpenAIVLM

        return OpenAIVLM(cfg)
    raise ValueError(f"unknown VLM backend {cfg.backend!r}; choose hf, vllm or openai")


class LazyVLM:
    """Load a model on first use; free it on ``release``."""

    def __init__(self, cfg: ModelConfig) -> None:
        self.cfg = cfg
        self._vlm: VLM | None = None

    def __call__(self) -> VLM:
        if self._vlm is None:
            self._vlm = load_vlm(self.cfg)
        return self._vlm

    @property
    def loaded(self) -> VLM | None:
        """The model if it has been loaded, else None (nothing is loaded by asking)."""
        return self._vlm

    def release(self) -> None:
        if self._vlm is not None:
            self._vlm.close()
            self._vlm = None
            gc.collect()
