"""The VLM interface shared by all backends (hf, vllm, openai)."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path

from PIL import Image


@dataclass(frozen=True)
class GenParams:
    """Every decoding setting, explicit; each backend applies all of them and nothing else.

    ``temperature == 0`` means greedy (then ``top_p``/``top_k`` play no part). ``top_k == 0`` and
    ``top_p == 1`` switch those filters off, ``repetition_penalty == 1`` switches the penalty off
    (the CTRL-style penalty of transformers and vLLM: logits of already generated or prompt
    tokens are divided by it when positive, multiplied when negative). A model's own
    ``generation_config.json`` never adds to these: the hf backend neutralizes it and vLLM is given
    complete sampling parameters, so one config decodes the same on every backend.
    """

    max_new_tokens: int = 32
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0: off), got {self.top_k}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0 (1.0: off), got {self.repetition_penalty}")

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    @property
    def penalized(self) -> bool:
        return self.repetition_penalty != 1.0


@dataclass
class VLMRequest:
    """One image and one text prompt (the image always comes first in the chat turn)."""

    image: Image.Image
    prompt: str


def user_messages(prompt: str) -> list[dict]:
    """The single user turn every backend sends: image first (prefix-cache friendly), then text."""
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]


class VLM(abc.ABC):
    """A loaded model that answers batches of (image, prompt) requests."""

    model_id: str

    @abc.abstractmethod
    def generate(self, requests: list[VLMRequest], params: GenParams) -> list[str]:
        """Return one completion per request, in request order."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the model's memory (backends override when they hold resources)."""


def bind_run_dir(vlm: object, directory: str | Path) -> None:
    """Tell a backend that keeps state across a crash (the OpenAI Batch API's batch ids) where the stage
    writes; backends without such state ignore it."""
    hook = getattr(vlm, "bind_run_dir", None)
    if callable(hook):
        hook(Path(directory))
