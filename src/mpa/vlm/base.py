"""The VLM interface shared by all backends (hf, vllm, openai)."""

from __future__ import annotations

import abc
from dataclasses import dataclass

from PIL import Image


@dataclass(frozen=True)
class GenParams:
    """Decoding parameters; ``temperature == 0`` means greedy."""

    max_new_tokens: int = 32
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


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
