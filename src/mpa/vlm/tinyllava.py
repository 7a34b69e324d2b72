"""TinyLLaVA's original checkpoints → transformers-native LLaVA checkpoints (``mpa convert-tinyllava``).

The paper's "TinyLLaVA-2B" is, we infer, TinyLLaVA-2.0B (``bczhou/TinyLLaVA-2.0B``: a SigLIP-so400m
vision tower, a two-layer GELU MLP projector and StableLM-2-1.6B), released with the TinyLLaVA
paper in the authors' first code base (TinyLLaVABench). That code base saves a checkpoint
transformers cannot load: ``architectures: ["TinyLlavaStablelmForCausalLM"]``, the vision and
projector settings as ``mm_*`` keys beside the language model's, and weights named
``model.vision_tower.vision_tower.vision_model.*``, ``model.mm_projector.{0,2}.*``,
``model.{embed_tokens,layers,norm}.*`` and ``lm_head.*``. The architecture, though, is exactly
LLaVA's, so the checkpoint converts losslessly into a stock ``LlavaForConditionalGeneration``
(SigLIP vision config, StableLM text config) that ``AutoModelForImageTextToText`` and vLLM load
without remote code, and that :class:`mpa.vlm.adapters.LlavaAdapter` drives:

- the vision tower: TinyLLaVABench deletes SigLIP's last encoder layer and its pooling head and
  feeds the projector the last remaining layer's hidden states, all 729 tokens (no CLS token to
  drop); here that is a SigLIP config with the layer count found in the weights, no head,
  ``vision_feature_layer = -1`` and ``vision_feature_select_strategy = "full"``;
- the projector ``mlp2x_gelu`` is ``linear_1 → GELU → linear_2`` (``projector_hidden_act: gelu``);
- images: ``image_aspect_ratio: pad`` pads to a square with the mean colour, then resizes to the
  tower's size without cropping, mean/std 0.5 (a ``LlavaImageProcessor`` with ``do_pad``);
- the chat format is TinyLLaVA's ``phi`` conversation (used for its Phi-2 and StableLM models):
  the fixed system sentence, ``USER: <image>\\n{question} ASSISTANT:``, the answer after a space and
  ``<|endoftext|>`` after it (:data:`mpa.vlm.adapters.TINYLLAVA_CHAT_TEMPLATE`); the converter adds
  an ``<image>`` token to the tokenizer for the processor to expand into 729 image tokens.

Converted: ``TinyLlavaStablelmForCausalLM`` (TinyLLaVA-2.0B) and ``TinyLlavaPhiForCausalLM``
(TinyLLaVA-3.1B). Not converted: ``TinyLlavaLlamaForCausalLM`` (TinyLLaVA-1.5B, whose chat format
differs) and checkpoints of the later TinyLLaVA Factory (``model_type: tinyllava``, remote code).
The vision tower's head count is not in the weights: so400m (hidden size 1152) has 16, other
towers need ``vision_heads``.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import torch

__all__ = ["LEGACY_ARCHITECTURES", "TinyLlavaConversionError", "convert_tinyllava", "legacy_key"]

#: TinyLLaVABench architecture -> transformers text model type
LEGACY_ARCHITECTURES: dict[str, str] = {"TinyLlavaStablelmForCausalLM": "stablelm", "TinyLlavaPhiForCausalLM": "phi"}
#: StableLM-Epoch config names (StableLM-2's original remote code) -> transformers' StableLM names
_RENAMED = {"rope_pct": "partial_rotary_factor", "norm_eps": "layer_norm_eps"}
_NOT_TEXT = re.compile(r"^(mm_|tokenizer_|image_|architectures$|model_type$|auto_map$|_name_or_path$|"
                       r"transformers_version$|tune_|freeze_|use_mm_proj$|pad_token$|unfreeze_)")
_HEADS_BY_WIDTH = {1152: 16}  # siglip-so400m-patch14-384
IMAGE_TOKEN = "<image>"


class TinyLlavaConversionError(ValueError):
    """A checkpoint that is not a convertible TinyLLaVA (the message says why)."""


def legacy_key(key: str) -> str:
    """The ``LlavaForConditionalGeneration`` parameter name of a TinyLLaVABench weight name."""
    for old, new in (
        ("model.vision_tower.vision_tower.vision_model.", "model.vision_tower."),
        ("model.mm_projector.0.", "model.multi_modal_projector.linear_1."),
        ("model.mm_projector.2.", "model.multi_modal_projector.linear_2."),
        ("model.", "model.language_model."),
    ):
        if key.startswith(old):
            return new + key[len(old):]
    return key  # lm_head.*


def _state_dict(src: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(src.glob("*.safetensors"))
    if files:
        out: dict[str, torch.Tensor] = {}
        for f in files:
            out.update(load_file(str(f)))
        return out
    bins = sorted(src.glob("pytorch_model*.bin"))
    if not bins:
        raise TinyLlavaConversionError(f"{src}: no *.safetensors or pytorch_model*.bin weights")
    out = {}
    for f in bins:
        out.update(torch.load(f, map_location="cpu", weights_only=True))
    return out


def _vision_config(weights: dict[str, torch.Tensor], heads: int | None) -> dict[str, Any]:
    prefix = "model.vision_tower.vision_tower.vision_model."
    try:
        patch = weights[prefix + "embeddings.patch_embedding.weight"]
        positions = weights[prefix + "embeddings.position_embedding.weight"]
        fc1 = weights[prefix + "encoder.layers.0.mlp.fc1.weight"]
    except KeyError as exc:
        raise TinyLlavaConversionError(f"no SigLIP vision tower weights ({exc.args[0]} missing)") from exc
    hidden, patch_size = int(patch.shape[0]), int(patch.shape[-1])
    side = math.isqrt(int(positions.shape[0]))
    layers = {int(m.group(1)) for k in weights if (m := re.match(re.escape(prefix) + r"encoder\.layers\.(\d+)\.", k))}
    heads = heads or _HEADS_BY_WIDTH.get(hidden)
    if heads is None:
        raise TinyLlavaConversionError(
            f"the vision tower has hidden size {hidden}, not so400m's 1152: "
            "give its attention head count (vision_heads)"
        )
    return {"model_type": "siglip_vision_model", "hidden_size": hidden, "intermediate_size": int(fc1.shape[0]),
            "num_hidden_layers": max(layers) + 1,
            "num_attention_heads": heads, "image_size": side * patch_size, "patch_size": patch_size,
            "vision_use_head": False}


def _text_config(legacy: dict[str, Any], text_type: str) -> Any:
    from transformers import AutoConfig

    fields = {_RENAMED.get(k, k): v for k, v in legacy.items() if not _NOT_TEXT.match(k)}
    return AutoConfig.for_model(text_type, **fields)


def convert_tinyllava(src: str | Path, out: str | Path, *, vision_heads: int | None = None,
                      tokenizer: str | Path | None = None) -> Path:
    """Convert a TinyLLaVABench checkpoint directory into a transformers LLaVA checkpoint at ``out``.

    ``tokenizer`` loads the tokenizer from another directory (default: the checkpoint's own).
    Every weight must land on a parameter and every parameter must get a weight, else
    :class:`TinyLlavaConversionError` names the first ones.
    """
    from transformers import (
        AutoTokenizer,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaImageProcessor,
        LlavaProcessor,
    )

    from mpa.vlm.adapters import TINYLLAVA_CHAT_TEMPLATE

    src, out = Path(src), Path(out)
    cfg_file = src / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"no TinyLLaVA checkpoint at {src} (config.json missing)")
    if out.exists() and any(out.iterdir()):
        raise TinyLlavaConversionError(f"{out} exists and is not empty; choose a new directory")
    legacy = json.loads(cfg_file.read_text(encoding="utf-8"))
    arch = (legacy.get("architectures") or [None])[0]
    if legacy.get("model_type") == "tinyllava":
        raise TinyLlavaConversionError(f"{src} is a TinyLLaVA Factory checkpoint (remote code); only the original "
                                       f"TinyLLaVA checkpoints ({', '.join(LEGACY_ARCHITECTURES)}) are converted")
    if arch not in LEGACY_ARCHITECTURES:
        raise TinyLlavaConversionError(f"{src}: architecture {arch!r} is not a convertible TinyLLaVA; "
                                       f"expected one of {', '.join(LEGACY_ARCHITECTURES)}")
    if legacy.get("mm_projector_type", "linear") != "mlp2x_gelu":
        raise TinyLlavaConversionError(f"{src}: projector {legacy.get('mm_projector_type')!r} is not mlp2x_gelu")
    weights = _state_dict(src)
    vision = _vision_config(weights, vision_heads)
    text = _text_config(legacy, LEGACY_ARCHITECTURES[arch])

    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # AutoTokenizer peeks at config.json and warns about its unknown model_type
    try:
        tok = AutoTokenizer.from_pretrained(str(tokenizer or src))
    finally:
        hf_logging.set_verbosity(verbosity)
    if IMAGE_TOKEN not in tok.get_vocab():
        tok.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    if tok.pad_token is None:
        tok.pad_token = legacy.get("pad_token") or tok.eos_token
    image_token_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    config = LlavaConfig(vision_config=vision, text_config=text.to_dict(), image_token_id=image_token_id,
                         projector_hidden_act="gelu", vision_feature_layer=-1,
                         vision_feature_select_strategy="full",
                         tie_word_embeddings=bool(getattr(text, "tie_word_embeddings", False)))
    dtype = next(iter(weights.values())).dtype
    model = LlavaForConditionalGeneration(config)
    mapped = {legacy_key(k): v for k, v in weights.items()}
    expected = set(model.state_dict())
    if config.tie_word_embeddings:
        mapped.pop("lm_head.weight", None)
        expected.discard("lm_head.weight")
    unexpected, missing = sorted(set(mapped) - expected), sorted(expected - set(mapped))
    if unexpected or missing:
        raise TinyLlavaConversionError(
            f"{src}: weights do not match the LLaVA layout; unexpected {unexpected[:3]}, missing {missing[:3]}"
        )
    model.load_state_dict(mapped, strict=not config.tie_word_embeddings)
    if image_token_id >= model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tok))
    model.to(dtype)
    eos = tok.convert_tokens_to_ids("<|endoftext|>") if "<|endoftext|>" in tok.get_vocab() else tok.eos_token_id
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = tok.pad_token_id
    size = vision["image_size"]
    image_processor = LlavaImageProcessor(
        do_pad=legacy.get("image_aspect_ratio", "pad") == "pad", size={"height": size, "width": size},
        do_center_crop=False, crop_size={"height": size, "width": size}, image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5], resample=3,
    )
    tok.chat_template = TINYLLAVA_CHAT_TEMPLATE
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tok, patch_size=vision["patch_size"],
                               vision_feature_select_strategy="full", num_additional_image_tokens=0,
                               image_token=IMAGE_TOKEN, chat_template=TINYLLAVA_CHAT_TEMPLATE)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / "mpa_conversion.json").write_text(json.dumps(
        {"source": str(src), "source_architecture": arch, "converted_by": "mpa convert-tinyllava"}, indent=1) + "\n")
    return out
