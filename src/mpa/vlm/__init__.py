"""One interface for every vision-language model: ``VLM.generate(requests, params) -> texts``."""

from mpa.vlm.base import VLM, GenParams, VLMRequest, user_messages
from mpa.vlm.loader import LazyVLM, load_vlm

__all__ = ["VLM", "GenParams", "VLMRequest", "LazyVLM", "load_vlm", "user_messages"]
