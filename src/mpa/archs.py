"""Published architectures of the paper's teachers and students, for benchmarks with random weights.

Throughput does not depend on weight values: a model built from the published ``config.json`` with
random weights costs what the released checkpoint costs per token. Nothing is downloaded; the
shapes below are copied from each model's ``config.json`` on the Hugging Face hub (the source is
named beside each entry). ``layers`` / ``width`` cut a model so it runs on a small machine; the
FLOP count of the cut model is computed from the model that was actually built.

InternVL2 ships as remote code (``internvl_chat``, InternLM2 + InternViT). Its bench model is
transformers' own ``InternVLForConditionalGeneration`` with the published InternViT-300M vision
shapes and a Llama-type language model of InternLM2's shapes (InternLM2 is a Llama with a fused
``wqkv``: the same matrices, the same FLOPs). It is therefore FLOP- and memory-equivalent, not the
remote code itself.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

HUB = "https://huggingface.co"


@dataclass(frozen=True)
class Arch:
    name: str
    family: str  # qwen2_vl | internvl | idefics3
    source: str  # where the shapes come from
    text: dict[str, Any]
    vision: dict[str, Any]
    extra: dict[str, Any]
    role: str  # what the paper uses it as


ARCHS: dict[str, Arch] = {
    "qwen2-vl-7b": Arch(
        "qwen2-vl-7b", "qwen2_vl", f"{HUB}/Qwen/Qwen2-VL-7B-Instruct/blob/main/config.json",
        text={"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28,
              "num_key_value_heads": 4, "vocab_size": 152064, "tie_word_embeddings": False,
              "rope_theta": 1000000.0, "mrope_section": [16, 24, 24], "rms_norm_eps": 1e-6},
        vision={"depth": 32, "embed_dim": 1280, "num_heads": 16, "mlp_ratio": 4, "patch_size": 14,
                "spatial_merge_size": 2, "temporal_patch_size": 2, "in_channels": 3},
        extra={}, role="teacher",
    ),
    "qwen2-vl-2b": Arch(
        "qwen2-vl-2b", "qwen2_vl", f"{HUB}/Qwen/Qwen2-VL-2B-Instruct/blob/main/config.json",
        text={"hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28, "num_attention_heads": 12,
              "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": True,
              "rope_theta": 1000000.0, "mrope_section": [16, 24, 24], "rms_norm_eps": 1e-6},
        vision={"depth": 32, "embed_dim": 1280, "num_heads": 16, "mlp_ratio": 4, "patch_size": 14,
                "spatial_merge_size": 2, "temporal_patch_size": 2, "in_channels": 3},
        extra={}, role="student",
    ),
    "internvl2-8b": Arch(
        "internvl2-8b", "internvl", f"{HUB}/OpenGVLab/InternVL2-8B/blob/main/config.json",
        text={"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
              "num_key_value_heads": 8, "vocab_size": 92553, "tie_word_embeddings": False,
              "rope_theta": 1000000.0, "rms_norm_eps": 1e-5},
        vision={"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
                "image_size": 448, "patch_size": 14},
        extra={"downsample_ratio": 0.5}, role="teacher",
    ),
    "internvl2-2b": Arch(
        "internvl2-2b", "internvl", f"{HUB}/OpenGVLab/InternVL2-2B/blob/main/config.json",
        text={"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 24, "num_attention_heads": 16,
              "num_key_value_heads": 8, "vocab_size": 92553, "tie_word_embeddings": False,
              "rope_theta": 1000000.0, "rms_norm_eps": 1e-5},
        vision={"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
                "image_size": 448, "patch_size": 14},
        extra={"downsample_ratio": 0.5}, role="student",
    ),
    "smolvlm-500m": Arch(
        "smolvlm-500m", "idefics3", f"{HUB}/HuggingFaceTB/SmolVLM-500M-Instruct/blob/main/config.json",
        text={"hidden_size": 960, "intermediate_size": 2560, "num_hidden_layers": 32, "num_attention_heads": 15,
              "num_key_value_heads": 5, "vocab_size": 49280, "tie_word_embeddings": False,
              "rope_theta": 100000.0, "rms_norm_eps": 1e-5},
        vision={"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
                "image_size": 512, "patch_size": 16},
        extra={"scale_factor": 4}, role="student",
    ),
}


def get_arch(name: str) -> Arch:
    key = name.lower()
    if key not in ARCHS:
        raise ValueError(f"unknown architecture {name!r}; choose from {', '.join(ARCHS)}")
    return ARCHS[key]


def _round(x: float, to: int) -> int:
    return max(to, int(round(x / to)) * to)


def scaled(arch: Arch, layers: int | None = None, width: float = 1.0, vision_layers: int | None = None) -> Arch:
    """``arch`` with fewer decoder layers / vision blocks and ``width`` × the hidden and MLP sizes.

    Widths keep the head size (64 or 128 for every model here) and the query/key-value head ratio, so
    attention kernels see the published head shape; the vocabulary is kept (the LM head is a real cost).
    """
    if not 0 < width <= 1:
        raise ValueError(f"width must be in (0, 1], got {width}")
    text, vision = copy.deepcopy(arch.text), copy.deepcopy(arch.vision)
    if layers is not None:
        text["num_hidden_layers"] = max(1, min(layers, text["num_hidden_layers"]))
    if vision_layers is not None:
        key = "depth" if "depth" in vision else "num_hidden_layers"
        vision[key] = max(1, min(vision_layers, vision[key]))
    if width < 1:
        heads, kv = text["num_attention_heads"], text["num_key_value_heads"]
        head_dim = text["hidden_size"] // heads
        group = heads // kv
        new_kv = max(1, round(kv * width))
        text["num_attention_heads"] = new_kv * group
        text["num_key_value_heads"] = new_kv
        text["hidden_size"] = new_kv * group * head_dim
        text["intermediate_size"] = _round(text["intermediate_size"] * width, 64)
        vkey = "embed_dim" if "embed_dim" in vision else "hidden_size"
        vheads = vision.get("num_heads") or vision["num_attention_heads"]
        vhead_dim = vision[vkey] // vheads
        new_vheads = max(1, round(vheads * width))
        vision[vkey] = new_vheads * vhead_dim
        vision["num_heads" if "num_heads" in vision else "num_attention_heads"] = new_vheads
        if "intermediate_size" in vision:
            vision["intermediate_size"] = _round(vision["intermediate_size"] * width, 64)
    cut = [f"layers {text['num_hidden_layers']}/{arch.text['num_hidden_layers']}"] if layers else []
    if width < 1:
        cut.append(f"width {width:g}")
    name = arch.name + (f" ({', '.join(cut)})" if cut else "")
    return Arch(name, arch.family, arch.source, text, vision, dict(arch.extra), arch.role)


def hf_config(arch: Arch, token_ids: dict[str, int] | None = None) -> Any:
    """The transformers config of ``arch`` (special token ids from the tokenizer the bench uses)."""
    ids = token_ids or {}
    t, v = arch.text, arch.vision
    if arch.family == "qwen2_vl":
        from transformers import Qwen2VLConfig

        head_dim = t["hidden_size"] // t["num_attention_heads"]
        section = list(t["mrope_section"])
        if sum(section) != head_dim // 2:  # a cut width keeps head_dim, so this only guards odd inputs
            half = head_dim // 2
            section = [half - 2 * (half // 3), half // 3, half // 3]
        text = {k: t[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                                  "num_key_value_heads", "vocab_size", "rms_norm_eps", "tie_word_embeddings")}
        text["rope_parameters"] = {"rope_type": "default", "mrope_section": section, "rope_theta": t["rope_theta"]}
        text["max_position_embeddings"] = 32768
        for k in ("bos_token_id", "eos_token_id", "pad_token_id"):
            if k in ids:
                text[k] = ids[k]
        vision = {**v, "hidden_size": t["hidden_size"]}
        return Qwen2VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=t["tie_word_embeddings"],
                             **{k: ids[k] for k in ("image_token_id", "video_token_id", "vision_start_token_id",
                                                    "vision_end_token_id") if k in ids})
    if arch.family == "internvl":
        from transformers import InternVLConfig

        text = {"model_type": "llama", **{k: t[k] for k in (
            "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
            "vocab_size", "rms_norm_eps", "tie_word_embeddings", "rope_theta")}}
        vision = {"hidden_size": v["hidden_size"], "intermediate_size": v["intermediate_size"],
                  "num_hidden_layers": v["num_hidden_layers"], "num_attention_heads": v["num_attention_heads"],
                  "image_size": [v["image_size"]] * 2, "patch_size": [v["patch_size"]] * 2}
        return InternVLConfig(text_config=text, vision_config=vision, downsample_ratio=arch.extra["downsample_ratio"],
                              tie_word_embeddings=t["tie_word_embeddings"],
                              **({"image_token_id": ids["image_token_id"]} if "image_token_id" in ids else {}))
    if arch.family == "idefics3":
        from transformers import Idefics3Config

        text = {"model_type": "llama", **{k: t[k] for k in (
            "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
            "vocab_size", "rms_norm_eps", "tie_word_embeddings", "rope_theta")}}
        return Idefics3Config(text_config=text, vision_config=dict(v), scale_factor=arch.extra["scale_factor"],
                              tie_word_embeddings=t["tie_word_embeddings"],
                              **({"image_token_id": ids["image_token_id"]} if "image_token_id" in ids else {}))
    raise ValueError(f"no transformers config for family {arch.family!r}")


def param_counts(arch: Arch) -> dict[str, float]:
    """Parameters by part, from the shapes alone (what the plan's FLOP model multiplies by 2 per token).

    ``lm_matmul``: the decoder's weight matrices plus the LM head — the parameters a token is multiplied by
    (the input embedding is a lookup, no FLOPs). ``vision``: the vision tower with its projector.
    """
    t = arch.text
    h, i, layers = t["hidden_size"], t["intermediate_size"], t["num_hidden_layers"]
    kv = t["num_key_value_heads"] * (h // t["num_attention_heads"])
    per_layer = 2 * h * h + 2 * h * kv + 3 * h * i
    embed = t["vocab_size"] * h
    head = embed
    lm_matmul = layers * per_layer + head
    lm_total = layers * per_layer + embed + (0 if t["tie_word_embeddings"] else head)
    v = arch.vision
    if arch.family == "qwen2_vl":
        vh, depth = v["embed_dim"], v["depth"]
        vi = int(vh * v["mlp_ratio"])
        blocks = depth * (4 * vh * vh + 2 * vh * vi)
        merged = vh * v["spatial_merge_size"] ** 2
        vision = blocks + merged * merged + merged * h + vh * v["in_channels"] * v["temporal_patch_size"] \
            * v["patch_size"] ** 2
    else:
        vh, vi, depth = v["hidden_size"], v["intermediate_size"], v["num_hidden_layers"]
        blocks = depth * (4 * vh * vh + 2 * vh * vi)
        ratio = int(round(1 / arch.extra["downsample_ratio"])) if arch.family == "internvl" \
            else arch.extra["scale_factor"]
        merged = vh * ratio ** 2
        projector = merged * h + (h * h if arch.family == "internvl" else 0)
        vision = blocks + projector + vh * 3 * v["patch_size"] ** 2
    return {"lm_matmul": float(lm_matmul), "lm_total": float(lm_total), "vision": float(vision),
            "vision_blocks": float(blocks)}
