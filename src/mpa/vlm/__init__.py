"""One interface for every vision-language model: ``VLM.generate(requests, params) -> texts``."""

from mpa.vlm.base import VLM, GenParams, VLMRequest, load_vlm, user_messages

__all__ = ["VLM", "GenParams", "VLMRequest", "load_vlm", "user_messages"]
