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

# LM parameters and vision GFLOP per merged image token, by model-name size tag (Qwen2-VL family).
NAMED_SIZES = {"72b": (72.7e9, 6.4), "7b": (6.6e9, 6.4), "2b": (1.35e9, 6.4)}


@dataclass
class ModelFacts:
    lm_params: float
    vision_gflop_per_image_token: float
    source: str


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
    files = sorted(path.glob("*.safetensors"))
    if not files:
        return None
    lm = vision = 0.0
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
            else:
                lm += count
    return lm, vision


def model_facts(cfg: ModelConfig, override: float | None, vision_gflop: float) -> ModelFacts:
    if override:
        return ModelFacts(override, vision_gflop, "plan config")
    path = Path(cfg.model).expanduser()
    if path.is_dir():
        counted = safetensors_params(path)
        if counted:
            lm, vis = counted
            # a merged token covers 2×2 patches; ~2 FLOP per parameter per patch
            return ModelFacts(lm, 2 * vis * 4 / 1e9, f"counted from {path}/*.safetensors")
    name = cfg.model.lower()
    key = named_student(name)
    if key:  # the paper's students: their own LM size and vision tower
        conf = NAMED_STUDENTS[key]
        per_token = int(conf.get("scale_factor", 2)) ** 2  # vision patches behind one image token
        lm = conf["params"] - conf["vision_params"]
        return ModelFacts(lm, 2 * conf["vision_params"] * per_token / 1e9, f"built-in table ({key})")
    for tag, (p, vg) in NAMED_SIZES.items():
        if re.search(rf"(?<![0-9.]){tag}\b", name):
            return ModelFacts(p, vg, f"model name ({tag.upper()})")
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
