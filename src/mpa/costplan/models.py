"""What the cost model knows about a model: parameters (counted, from a built-in table of the paper's
students, or from the name), the vision tower's FLOPs per image token, image tokens per image."""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mpa.config import ModelConfig
from mpa.stages.annotate import smart_resize

QWEN_DEFAULT_MAX_PIXELS = 16384 * 28 * 28
QWEN_DEFAULT_MIN_PIXELS = 56 * 56
GPT4O_DEFAULT_PRICES = (2.50, 10.00)  # USD per 1M input / output tokens (gpt-4o-2024-11-20)

# LM parameters a token is multiplied by (decoder layers, no embedding or head), vision GFLOP per merged image
# token and the LM head's parameters, by model-name size tag (Qwen2-VL family; mpa.archs has the shapes).
NAMED_SIZES = {"72b": (70.2e9, 6.4, 1.25e9), "7b": (6.53e9, 6.4, 0.545e9), "2b": (1.31e9, 6.4, 0.233e9)}
# what a checkpoint's input embedding and LM head are called (the embedding is a lookup: no FLOPs)
EMBEDDING_NAMES = ("embed_tokens", "tok_embeddings", "wte.", "word_embeddings")
HEAD_NAMES = ("lm_head", "output.weight")


@dataclass
class ModelFacts:
    lm_params: float  # weights every prefilled and decoded token is multiplied by
    vision_gflop_per_image_token: float
    source: str
    head_params: float = 0.0  # the LM head: computed only where a token is generated (once per decoded token)


def qwen_image_tokens(width: int, height: int, max_pixels: int | None, min_pixels: int | None = None) -> int:
    """Visual tokens Qwen2-VL spends on one image (after the 2×2 merge: one per 28×28 px)."""
    h, w = smart_resize(height, width, 28, min_pixels or QWEN_DEFAULT_MIN_PIXELS, max_pixels or QWEN_DEFAULT_MAX_PIXELS)
    return (h // 28) * (w // 28)


def gpt4o_image_tokens(width: int, height: int, detail: str = "high") -> int:
    """OpenAI's published image-token rule for GPT-4o: 85 base + 170 per 512-px tile (high detail)."""
    if detail == "low":
        return 85
    scale = min(1.0, 2048 / max(width, height))
    w, h = width * scale, height * scale
    scale = min(1.0, 768 / min(w, h))
    w, h = w * scale, h * scale
    return 85 + 170 * math.ceil(w / 512) * math.ceil(h / 512)


def safetensors_params(path: Path) -> tuple[float, float] | None:
    """(LM params, vision params) counted from safetensors headers (no tensors are read)."""
    parts = safetensors_parts(path)
    return None if parts is None else (parts["lm"], parts["vision"])


def safetensors_parts(path: Path) -> dict[str, float] | None:
    """Parameters by part from safetensors headers: ``lm`` (all non-vision), ``vision``, ``embedding``, ``head``
    (a tied head is the embedding: ``head`` is then the embedding's size, counted once in ``lm``)."""
    files = sorted(path.glob("*.safetensors"))
    if not files:
        return None
    lm = vision = embedding = head = 0.0
    for f in files:
        with open(f, "rb") as fh:
            n = struct.unpack("<Q", fh.read(8))[0]
            header = json.loads(fh.read(n))
        for name, meta in header.items():
            if name == "__metadata__":
                continue
            count = math.prod(meta["shape"]) if meta["shape"] else 1
            if "visual" in name or "vision" in name:
                vision += count
                continue
            lm += count
            if any(k in name for k in EMBEDDING_NAMES):
                embedding += count
            elif any(k in name for k in HEAD_NAMES):
                head += count
    return {"lm": lm, "vision": vision, "embedding": embedding, "head": head or embedding, "tied": float(not head)}


def model_facts(cfg: ModelConfig, override: float | None, vision_gflop: float) -> ModelFacts:
    if override:
        return ModelFacts(override, vision_gflop, "plan config")
    path = Path(cfg.model).expanduser()
    if path.is_dir():
        parts = safetensors_parts(path)
        if parts:
            # per token: the decoder's weights (not the embedding lookup, not the head: the head runs only
            # where a token is generated); a merged image token covers 2×2 patches, ~2 FLOP per weight per patch
            untied_head = 0.0 if parts["tied"] else parts["head"]
            body = parts["lm"] - parts["embedding"] - untied_head
            return ModelFacts(body, 2 * parts["vision"] * 4 / 1e9, f"counted from {path}/*.safetensors",
                              head_params=parts["head"])
    name = cfg.model.lower()
    key = named_student(name)
    if key:  # the paper's students: their own LM size and vision tower
        conf = NAMED_STUDENTS[key]
        per_token = int(conf.get("scale_factor", 2)) ** 2  # vision patches behind one image token
        text = conf.get("text_config") or conf.get("llm_config") or {}
        embed = float(text.get("vocab_size", 0) * text.get("hidden_size", 0))
        heads = 1 if text.get("tie_word_embeddings") else 2  # the embedding, and an untied head beside it
        lm = conf["params"] - conf["vision_params"] - heads * embed
        return ModelFacts(lm, 2 * conf["vision_params"] * per_token / 1e9, f"built-in table ({key})",
                          head_params=embed)
    for tag, (p, vg, head) in NAMED_SIZES.items():
        if re.search(rf"(?<![0-9.]){tag}\b", name):
            return ModelFacts(p, vg, f"model name ({tag.upper()})", head_params=head)
    raise ValueError(f"cannot tell the size of {cfg.model}: set plan.teacher_params / plan.student_params")


def checkpoint_pixel_cap(cfg: ModelConfig) -> tuple[int | None, int | None]:
    """(max_pixels, min_pixels): the config's, else the local checkpoint's image processor settings."""
    if cfg.max_pixels is not None:
        return cfg.max_pixels, cfg.min_pixels
    d = Path(cfg.model).expanduser()
    for name in ("preprocessor_config.json", "processor_config.json"):
        f = d / name
        if f.is_file():
            data = json.loads(f.read_text())
            ip = data.get("image_processor", data)
            size = ip.get("size") or {}
            mx = ip.get("max_pixels") or size.get("longest_edge")
            mn = ip.get("min_pixels") or size.get("shortest_edge")
            if mx:
                return int(mx), (int(mn) if mn else cfg.min_pixels)
    return None, cfg.min_pixels


#: Architectures of the paper's students (from their config.json files), for plans without a local copy.
NAMED_STUDENTS: dict[str, dict[str, Any]] = {
    "qwen2-vl-2b": {
        "model_type": "qwen2_vl", "params": 2.21e9, "vision_params": 0.675e9,
        "text_config": {"hidden_size": 1536, "num_hidden_layers": 28, "num_attention_heads": 12,
                        "num_key_value_heads": 2, "intermediate_size": 8960, "vocab_size": 151936,
                        "tie_word_embeddings": True},
        "vision_config": {"embed_dim": 1280, "depth": 32, "mlp_ratio": 4, "temporal_patch_size": 2},
    },
    "internvl2-2b": {
        "model_type": "internvl_chat", "template": "internlm2-chat", "params": 2.21e9, "vision_params": 0.30e9,
        "llm_config": {"hidden_size": 2048, "num_hidden_layers": 24, "num_attention_heads": 16,
                       "num_key_value_heads": 8, "intermediate_size": 8192, "vocab_size": 92553},
        "vision_config": {"hidden_size": 1024, "num_hidden_layers": 24, "intermediate_size": 4096,
                          "image_size": 448, "patch_size": 14},
        "downsample_ratio": 0.5, "max_dynamic_patch": 12,
    },
    "internvl2-4b": {
        "model_type": "internvl_chat", "template": "phi3-chat", "params": 4.15e9, "vision_params": 0.30e9,
        "llm_config": {"hidden_size": 3072, "num_hidden_layers": 32, "num_attention_heads": 32,
                       "num_key_value_heads": 32, "intermediate_size": 8192, "vocab_size": 32020,
                       "model_type": "phi3"},
        "vision_config": {"hidden_size": 1024, "num_hidden_layers": 24, "intermediate_size": 4096,
                          "image_size": 448, "patch_size": 14},
        "downsample_ratio": 0.5, "max_dynamic_patch": 12,
    },
    "smolvlm-500m": {
        "model_type": "idefics3", "params": 0.507e9, "vision_params": 0.093e9, "scale_factor": 4,
        "text_config": {"hidden_size": 960, "num_hidden_layers": 32, "num_attention_heads": 15,
                        "num_key_value_heads": 5, "intermediate_size": 2560, "vocab_size": 49280},
        "vision_config": {"hidden_size": 768, "num_hidden_layers": 12, "intermediate_size": 3072,
                          "image_size": 512, "patch_size": 16},
        "longest_edge": 2048,
    },
}
def named_student(name: str) -> str | None:
    """The :data:`NAMED_STUDENTS` key a model name refers to (``OpenGVLab/InternVL2-4B`` -> ``internvl2-4b``)."""
    flat = name.lower().replace("_", "-")
    return next((k for k in NAMED_STUDENTS if k in flat), None)
