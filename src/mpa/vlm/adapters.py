"""Per-family adapters: what differs between VLM families behind the one ``VLM`` interface.

An adapter knows, for one model family:

- the chat format and where the image goes in the user turn (``render_prompts``);
- how the processor wants the images of a batch (flat list, or one list per sample);
- how an answer is appended for training and which tokens carry labels (answer-only, paper
  Eq. 3): the text between the generation prompt and the answer (SmolVLM and LLaVA put a space
  there), the answer, and the end-of-turn marker the model must learn to emit;
- generation settings (which tokens stop a turn; whether ``generate`` returns the prompt);
- the paper's PL preset (batch size, learning rate) for that family;
- whether the family needs ``trust_remote_code`` (only InternVL2's original checkpoints).

Families: Qwen2-VL and Qwen2.5-VL, SmolVLM / Idefics3, LLaVA-style (llava-hf checkpoints, and the
paper's TinyLLaVA-2.0B once ``mpa convert-tinyllava`` has made it one), InternVL (transformers-native
``-hf`` checkpoints) and InternVL2 with its original remote code (``internvl_chat``; :class:`InternVL2Processor`).

The Qwen2-VL path is the engine's original code, unchanged byte for byte (checkpoints are being
trained with it); other families get the same answer-only masking through a sentinel rendering of
their own chat template.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from mpa.vlm.base import user_messages

SENTINEL = "MPA_END"


@dataclass(frozen=True)
class Preset:
    """The paper's PL settings for one student family (full fine-tuning, one epoch)."""

    batch_size: int
    learning_rate: float


class Adapter:
    """Chat-template families whose processor renders ``user_messages`` (the default)."""

    family = "generic"
    model_types: tuple[str, ...] = ()
    processor_classes: tuple[str, ...] = ()
    preset = Preset(16, 1e-5)
    needs_remote_code = False
    #: ``generate`` returns prompt + new tokens (transformers' convention); remote code may not.
    generate_returns_prompt = True

    def preset_for(self, config: dict[str, Any]) -> Preset:
        """The paper's PL preset for this checkpoint (``config``: its config.json as a dict)."""
        return self.preset

    # --- prompts --------------------------------------------------------------------------

    def messages(self, prompt: str) -> list[dict]:
        """The single user turn: image first, then the text (every family here wants that order)."""
        return user_messages(prompt)

    def render_prompts(self, processor: Any, prompts: list[str]) -> list[str]:
        return [
            processor.apply_chat_template(self.messages(p), add_generation_prompt=True, tokenize=False) for p in prompts
        ]

    def processor_images(self, images: list) -> list:
        """The ``images=`` argument for a batch with one image per sample."""
        return list(images)

    # --- answers and labels ---------------------------------------------------------------

    def eos_text(self, processor: Any) -> str:
        """The text that ends an assistant turn (``<|im_end|>`` for Qwen2-VL)."""
        tok = processor.tokenizer
        rendered = processor.apply_chat_template(
            [
                {"role": "user", "content": [{"type": "text", "text": "x"}]},
                {"role": "assistant", "content": [{"type": "text", "text": SENTINEL}]},
            ],
            tokenize=False,
        )
        tail = rendered.split(SENTINEL, 1)[1]
        return tail.rstrip("\n") or (tok.eos_token or "")

    def answer_text(self, processor: Any, answer: str) -> str:
        """What follows the generation prompt in a training sample (all of it carries labels)."""
        return answer.strip() + self.eos_text(processor)

    def encode_for_training(
        self, processor: Any, images: list, prompts: list[str], answers: list[str]
    ) -> dict[str, torch.Tensor]:
        """Tokenize (image, prompt, answer) triples with labels on answer tokens only (paper Eq. 3).

        Prompt tokens and padding carry label -100; the answer and the end-of-turn marker are
        learned. Right padding (training does not generate).
        """
        tok = processor.tokenizer
        side = tok.padding_side
        tok.padding_side = "right"
        try:
            prompt_texts = self.render_prompts(processor, prompts)
            full_texts = [p + self.answer_text(processor, a) for p, a in zip(prompt_texts, answers, strict=True)]
            imgs = self.processor_images(images)
            full = self._tensors(processor, full_texts, imgs)
            prompt_only = self._tensors(processor, prompt_texts, imgs)
        finally:
            tok.padding_side = side
        labels = full["input_ids"].clone()
        prompt_lens = prompt_only["attention_mask"].sum(dim=1)
        for i, n in enumerate(prompt_lens.tolist()):
            if not torch.equal(full["input_ids"][i, :n], prompt_only["input_ids"][i, :n]):
                raise RuntimeError("tokenizing prompt+answer changed the prompt's tokens; cannot mask labels")
            labels[i, :n] = -100
        labels[full["attention_mask"] == 0] = -100
        full["labels"] = labels
        return dict(full)

    # --- generation -----------------------------------------------------------------------

    def encode_for_generation(self, processor: Any, images: list, prompts: list[str]) -> Any:
        """Left-padded batch ready for ``model.generate``."""
        processor.tokenizer.padding_side = "left"
        texts = self.render_prompts(processor, prompts)
        return self._tensors(processor, texts, self.processor_images(images))

    def _tensors(self, processor: Any, texts: list[str], images: list) -> Any:
        return processor(text=texts, images=images, padding=True, return_tensors="pt")

    def prepare_model(self, model: Any, processor: Any) -> None:
        """Set what a loaded model needs from its processor before it generates or trains (default: nothing)."""

    def generate_kwargs(self, processor: Any) -> dict[str, Any]:
        """Extra ``generate`` arguments for this family (e.g. the end-of-turn token as a stop)."""
        return {}

    def decode(self, processor: Any, new_tokens: torch.Tensor) -> list[str]:
        return [t.strip() for t in processor.batch_decode(new_tokens, skip_special_tokens=True)]


class QwenVLAdapter(Adapter):
    """Qwen2-VL and Qwen2.5-VL: ``<|im_start|>user\\n<|vision_start|><|image_pad|><|vision_end|>…``.

    Uses the base implementation unchanged: the engine's original Qwen2-VL code path.
    """

    family = "qwen2_vl"
    model_types = ("qwen2_vl",)
    processor_classes = ("Qwen2VLProcessor",)
    preset = Preset(16, 1e-5)


class Qwen25VLAdapter(QwenVLAdapter):
    family = "qwen2_5_vl"
    model_types = ("qwen2_5_vl",)
    processor_classes = ("Qwen2_5_VLProcessor",)
    preset = Preset(16, 1e-5)


class SentinelAdapter(Adapter):
    """Families whose assistant turn differs from ``generation prompt + answer + eos``.

    The chat template is rendered once with a sentinel answer; the text between the generation
    prompt and the sentinel (SmolVLM: ``" "``, LLaVA: ``" "``) goes before the answer, the text after
    it up to the end-of-turn marker goes after (when the template emits no end marker, as LLaVA's
    does not, the tokenizer's EOS is used so the model learns to stop). Both carry labels.
    """

    def _tensors(self, processor: Any, texts: list[str], images: list) -> Any:
        # some processors default to their own padding side (InternVL: left); the tokenizer's setting wins
        side = processor.tokenizer.padding_side
        return processor(text=texts, images=images, padding=True, padding_side=side, return_tensors="pt")

    def _affixes(self, processor: Any) -> tuple[str, str]:
        cached = getattr(processor, "_mpa_affixes", None)
        if cached is not None:
            return cached
        user = self.messages("x")
        gen = processor.apply_chat_template(user, add_generation_prompt=True, tokenize=False)
        full = processor.apply_chat_template(
            [*user, {"role": "assistant", "content": [{"type": "text", "text": SENTINEL}]}], tokenize=False
        )
        head, tail = full.split(SENTINEL, 1)
        prefix = head[len(gen) :] if head.startswith(gen) else ""
        suffix = tail.rstrip()
        eos = processor.tokenizer.eos_token or ""
        if eos and eos not in suffix:
            suffix += eos
        try:
            processor._mpa_affixes = (prefix, suffix)
        except AttributeError:
            pass
        return prefix, suffix

    def eos_text(self, processor: Any) -> str:
        return self._affixes(processor)[1]

    def answer_text(self, processor: Any, answer: str) -> str:
        prefix, suffix = self._affixes(processor)
        return prefix + answer.strip() + suffix

    def generate_kwargs(self, processor: Any) -> dict[str, Any]:
        tok = processor.tokenizer
        stops = []
        for text in (self.eos_text(processor), tok.eos_token):
            if text:
                tid = tok.convert_tokens_to_ids(text)
                if isinstance(tid, int) and tid != tok.unk_token_id and tid not in stops:
                    stops.append(tid)
        return {"eos_token_id": stops} if stops else {}


class Idefics3Adapter(SentinelAdapter):
    """SmolVLM / Idefics3: ``<|im_start|>User:<image>…<end_of_utterance>\\nAssistant:`` + `` answer``."""

    family = "idefics3"
    model_types = ("idefics3",)
    processor_classes = ("Idefics3Processor",)
    preset = Preset(16, 1e-4)

    def processor_images(self, images: list) -> list:
        return [[img] for img in images]


class SmolVLMAdapter(Idefics3Adapter):
    """SmolVLM2 (``smolvlm`` model type): Idefics3's format."""

    family = "smolvlm"
    model_types = ("smolvlm",)
    processor_classes = ("SmolVLMProcessor",)


#: TinyLLaVA's ``phi`` conversation (its Phi-2 and StableLM models, e.g. the paper's TinyLLaVA-2.0B):
#: ``{system} USER: <image>\n{question} ASSISTANT:`` and, in training, `` {answer}<|endoftext|>``.
#: Written into checkpoints converted by ``mpa convert-tinyllava`` (:mod:`mpa.vlm.tinyllava`).
TINYLLAVA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
TINYLLAVA_CHAT_TEMPLATE = (
    "{{- '" + TINYLLAVA_SYSTEM.replace("'", "\\'") + " ' -}}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}{{- 'USER: ' -}}"
    "{%- for c in message['content'] -%}{%- if c['type'] == 'image' -%}{{- '<image>\\n' -}}{%- endif -%}{%- endfor -%}"
    "{%- for c in message['content'] -%}{%- if c['type'] == 'text' -%}{{- c['text'] -}}{%- endif -%}{%- endfor -%}"
    "{{- ' ' -}}"
    "{%- elif message['role'] == 'assistant' -%}{{- 'ASSISTANT: ' -}}"
    "{%- for c in message['content'] -%}{%- if c['type'] == 'text' -%}{{- c['text'] -}}{%- endif -%}{%- endfor -%}"
    "{{- '<|endoftext|>' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- 'ASSISTANT:' -}}{%- endif -%}"
)


class LlavaAdapter(SentinelAdapter):
    """LLaVA-style (llava-hf, TinyLLaVA): ``USER: <image>\\n… ASSISTANT:`` + `` answer</s>``.

    A processor without a chat template (some converted checkpoints) gets the Vicuna-v1 format
    LLaVA-1.5 was trained with. TinyLLaVA's original checkpoints (the paper's TinyLLaVA-2.0B) are
    converted to this family by ``mpa convert-tinyllava``, which writes TinyLLaVA's own format
    (:data:`TINYLLAVA_CHAT_TEMPLATE`: system sentence, answer ended by ``<|endoftext|>``) into the
    checkpoint; the sentinel rendering then masks everything but `` {answer}<|endoftext|>``.
    The PL preset (16, 1e-4) is the paper's TinyLLaVA-2B setting.
    """

    family = "llava"
    model_types = ("llava", "tinyllava", "llava_next", "llava_onevision")
    processor_classes = ("LlavaProcessor", "LlavaNextProcessor", "LlavaOnevisionProcessor")
    preset = Preset(16, 1e-4)

    VICUNA_TEMPLATE = (
        "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': ' }}"
        "{% endif %}{% for c in message['content'] %}{% if c['type'] == 'image' %}{{ '<image>\n' }}{% endif %}"
        "{% endfor %}{% for c in message['content'] %}{% if c['type'] == 'text' %}{{ c['text'] + ' ' }}{% endif %}"
        "{% endfor %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
    )

    def _ensure_template(self, processor: Any) -> None:
        if not getattr(processor, "chat_template", None):
            processor.chat_template = self.VICUNA_TEMPLATE

    def render_prompts(self, processor: Any, prompts: list[str]) -> list[str]:
        self._ensure_template(processor)
        return super().render_prompts(processor, prompts)

    def _affixes(self, processor: Any) -> tuple[str, str]:
        self._ensure_template(processor)
        return super()._affixes(processor)


#: InternVL2-4B (its language model is Phi-3-mini): batch 6, not 16 (paper Table 11).
INTERNVL2_4B_PRESET = Preset(6, 4e-5)


def uses_phi3(config: dict[str, Any]) -> bool:
    """Is the language model of this InternVL checkpoint Phi-3 (InternVL2-4B)?"""
    if config.get("template") == "phi3-chat":
        return True
    for key in ("llm_config", "text_config"):
        sub = config.get(key) or {}
        if sub.get("model_type") == "phi3" or "Phi3ForCausalLM" in (sub.get("architectures") or []):
            return True
    return False


class InternVLAdapter(SentinelAdapter):
    """InternVL, transformers-native (``-hf`` checkpoints): ``<img><IMG_CONTEXT>…</img>`` tiles."""

    family = "internvl"
    model_types = ("internvl",)
    processor_classes = ("InternVLProcessor",)
    preset = Preset(16, 4e-5)

    def preset_for(self, config: dict[str, Any]) -> Preset:
        return INTERNVL2_4B_PRESET if uses_phi3(config) else self.preset


class InternVL2RemoteAdapter(SentinelAdapter):
    """InternVL2 with its original remote code (``internvl_chat``); only with ``trust_remote_code``.

    Its processor is :class:`InternVL2Processor` (tokenizer + the dynamic 448-px
    tiling + the conversation template named in the checkpoint's config); its ``generate`` returns
    only the new tokens.
    """

    family = "internvl_chat"
    model_types = ("internvl_chat",)
    processor_classes = ("InternVL2Processor",)
    preset = Preset(16, 4e-5)
    needs_remote_code = True
    generate_returns_prompt = False

    def preset_for(self, config: dict[str, Any]) -> Preset:
        return INTERNVL2_4B_PRESET if uses_phi3(config) else self.preset

    def encode_for_generation(self, processor: Any, images: list, prompts: list[str]) -> Any:
        batch = super().encode_for_generation(processor, images, prompts)
        batch.pop("image_flags", None)  # the reference generate() takes pixel_values, input_ids, attention_mask
        return batch

    def prepare_model(self, model: Any, processor: Any) -> None:
        model.img_context_token_id = processor.tokenizer.convert_tokens_to_ids(InternVL2Processor.IMG_CONTEXT)


ADAPTERS: tuple[Adapter, ...] = (
    QwenVLAdapter(),
    Qwen25VLAdapter(),
    Idefics3Adapter(),
    SmolVLMAdapter(),
    LlavaAdapter(),
    InternVLAdapter(),
    InternVL2RemoteAdapter(),
)
DEFAULT_ADAPTER = Adapter()

#: Model types that only load with ``trust_remote_code`` (the loader refuses them otherwise).
REMOTE_CODE_MODEL_TYPES = frozenset(t for a in ADAPTERS if a.needs_remote_code for t in a.model_types)

#: The paper's PL presets per model type (batch size, learning rate). One model type can hold several
#: sizes: InternVL2-4B (Phi-3 language model) trains with batch 6 — :func:`preset_for_config` knows.
PRESETS: dict[str, tuple[int, float]] = {
    t: (a.preset.batch_size, a.preset.learning_rate) for a in ADAPTERS for t in a.model_types
}


def preset_for_config(config: dict[str, Any]) -> Preset:
    """The paper's PL preset for a checkpoint, from its config.json (as a dict)."""
    return adapter_for_model_type(config.get("model_type")).preset_for(config)


def adapter_for_model_type(model_type: str | None) -> Adapter:
    for a in ADAPTERS:
        if model_type in a.model_types:
            return a
    return DEFAULT_ADAPTER


def adapter_for(processor: Any) -> Adapter:
    """The adapter for a loaded processor (by class; an explicit ``_mpa_family`` wins)."""
    family = getattr(processor, "_mpa_family", None)
    if family is not None:
        return adapter_for_model_type(family)
    names = {c.__name__ for c in type(processor).__mro__}
    for a in ADAPTERS:
        if names.intersection(a.processor_classes):
            return a
    return DEFAULT_ADAPTER


# --- InternVL2, original remote-code checkpoints (``internvl_chat``) --------------------------------

#: InternVL2's conversation templates (``config.template``), in its MPT separator style:
#: ``system + sep + user_role + query + sep + assistant_role`` (no newline between turns).
INTERNVL2_SYSTEM = (
    "你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型，英文名叫InternVL, 是一个有用无害的人工智能助手。"
)
INTERNVL2_TEMPLATES: dict[str, dict[str, str]] = {
    # InternVL2-2B / 8B / 26B (InternLM2 chat) and InternVL2-1B / 40B / 76B (Hermes-2): ChatML
    "internlm2-chat": {
        "system": "<|im_start|>system\n",
        "user": "<|im_start|>user\n",
        "assistant": "<|im_start|>assistant\n",
        "sep": "<|im_end|>",
    },
    "Hermes-2": {
        "system": "<|im_start|>system\n",
        "user": "<|im_start|>user\n",
        "assistant": "<|im_start|>assistant\n",
        "sep": "<|im_end|>",
    },
    # InternVL2-4B (Phi-3)
    "phi3-chat": {"system": "<|system|>\n", "user": "<|user|>\n", "assistant": "<|assistant|>\n", "sep": "<|end|>"},
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def internvl2_tile_grid(
    width: int, height: int, max_tiles: int = 12, min_tiles: int = 1, image_size: int = 448
) -> tuple[int, int]:
    """InternVL2's dynamic resolution: the (columns, rows) grid whose aspect ratio is closest to the image's
    (ties go to the larger grid when the image has more than half its pixels)."""
    ratios = sorted(
        {
            (i, j)
            for n in range(min_tiles, max_tiles + 1)
            for i in range(1, n + 1)
            for j in range(1, n + 1)
            if min_tiles <= i * j <= max_tiles
        },
        key=lambda r: r[0] * r[1],
    )
    aspect = width / height
    best, best_diff, area = (1, 1), float("inf"), width * height
    for r in ratios:
        diff = abs(aspect - r[0] / r[1])
        if diff < best_diff:
            best, best_diff = r, diff
        elif diff == best_diff and area > 0.5 * image_size * image_size * r[0] * r[1]:
            best = r
    return best


def internvl2_tiles(image, max_tiles: int = 12, image_size: int = 448, use_thumbnail: bool = True) -> list:
    """Split an image into ``image_size`` tiles on its grid, plus a thumbnail when there are several."""
    cols, rows = internvl2_tile_grid(*image.size, max_tiles=max_tiles, image_size=image_size)
    resized = image.resize((cols * image_size, rows * image_size))
    tiles = [
        resized.crop((c * image_size, r * image_size, (c + 1) * image_size, (r + 1) * image_size))
        for r in range(rows)
        for c in range(cols)
    ]
    if use_thumbnail and len(tiles) != 1:
        tiles.append(image.resize((image_size, image_size)))
    return tiles


class InternVL2Processor:
    """What ``AutoProcessor`` is for other families, for InternVL2's remote-code checkpoints.

    The checkpoint ships only a tokenizer; this adds the image side and the chat format, following
    the reference ``chat()``/``batch_chat()``: 448-px tiles (up to ``max_dynamic_patch``, plus a
    thumbnail), ImageNet normalisation, ``<image>`` → ``<img>`` + ``<IMG_CONTEXT>`` × (tokens per
    tile × tiles) + ``</img>``, the conversation template named in ``config.template``.
    """

    _mpa_family = "internvl_chat"
    IMG_START, IMG_END, IMG_CONTEXT = "<img>", "</img>", "<IMG_CONTEXT>"

    def __init__(
        self,
        tokenizer: Any,
        *,
        template: str = "internlm2-chat",
        image_size: int = 448,
        num_image_token: int = 256,
        max_tiles: int = 12,
        use_thumbnail: bool = True,
        system_message: str = INTERNVL2_SYSTEM,
    ) -> None:
        if template not in INTERNVL2_TEMPLATES:
            raise ValueError(f"unknown InternVL2 template {template!r}; known: {', '.join(INTERNVL2_TEMPLATES)}")
        self.tokenizer = tokenizer
        self.template = template
        self.image_size = image_size
        self.num_image_token = num_image_token
        self.max_tiles = max_tiles
        self.use_thumbnail = use_thumbnail
        self.system_message = system_message

    @classmethod
    def from_pretrained(cls, path: str, revision: str | None = None, max_tiles: int | None = None):
        """Read tokenizer and config (``template``, image size, ``downsample_ratio``) of a checkpoint."""
        import json
        from pathlib import Path

        from transformers import AutoTokenizer

        kwargs: dict[str, Any] = {"trust_remote_code": True}
        if revision and not Path(path).is_dir():
            kwargs["revision"] = revision
        if Path(path, "config.json").is_file():
            cfg = json.loads(Path(path, "config.json").read_text(encoding="utf-8"))
        else:
            from transformers import AutoConfig

            cfg = AutoConfig.from_pretrained(path, **kwargs).to_dict()
        vision = cfg.get("vision_config", {})
        image_size = int(cfg.get("force_image_size") or vision.get("image_size", 448))
        patch = int(vision.get("patch_size", 14))
        num_image_token = int((image_size // patch) ** 2 * float(cfg.get("downsample_ratio", 0.5)) ** 2)
        tok = AutoTokenizer.from_pretrained(path, use_fast=False, **kwargs)
        return cls(
            tok,
            template=cfg.get("template", "internlm2-chat"),
            image_size=image_size,
            num_image_token=num_image_token,
            max_tiles=max_tiles or int(cfg.get("max_dynamic_patch", 12)),
            use_thumbnail=bool(cfg.get("use_thumbnail", True)),
        )

    def save_pretrained(self, path: str) -> None:
        self.tokenizer.save_pretrained(path)

    # chat format -----------------------------------------------------------------------------

    def apply_chat_template(
        self, messages: list[dict], add_generation_prompt: bool = False, tokenize: bool = False, **_: Any
    ) -> str:
        t = INTERNVL2_TEMPLATES[self.template]
        out = t["system"] + self.system_message + t["sep"]
        for m in messages:
            content = m["content"]
            if isinstance(content, str):
                text = content
            else:
                text = "".join("<image>\n" if c["type"] == "image" else c.get("text", "") for c in content)
            out += (t["user"] if m["role"] == "user" else t["assistant"]) + text + t["sep"]
        if add_generation_prompt:
            out += t["assistant"]
        return out

    # tensors ---------------------------------------------------------------------------------

    def pixel_values(self, image) -> torch.Tensor:
        import numpy as np

        tiles = internvl2_tiles(image.convert("RGB"), self.max_tiles, self.image_size, self.use_thumbnail)
        mean, std = np.array(IMAGENET_MEAN, dtype=np.float32), np.array(IMAGENET_STD, dtype=np.float32)
        arrays = []
        for tile in tiles:
            tile = tile.resize((self.image_size, self.image_size), resample=3)  # bicubic
            a = (np.asarray(tile, dtype=np.float32) / 255.0 - mean) / std
            arrays.append(torch.from_numpy(a.transpose(2, 0, 1).copy()))
        return torch.stack(arrays)

    def __call__(
        self, text: list[str], images: list | None = None, padding: bool = True, return_tensors: str = "pt", **_: Any
    ):
        from transformers import BatchFeature

        images = list(images or [])
        pixel_values, expanded, it = [], [], iter(images)
        for t in text:
            parts = t.split("<image>")
            out = parts[0]
            for part in parts[1:]:
                pv = self.pixel_values(next(it))
                pixel_values.append(pv)
                out += self.IMG_START + self.IMG_CONTEXT * (self.num_image_token * len(pv)) + self.IMG_END + part
            expanded.append(out)
        enc = self.tokenizer(expanded, padding=padding, return_tensors=return_tensors)
        data = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        if pixel_values:
            pv = torch.cat(pixel_values)
            data["pixel_values"] = pv
            data["image_flags"] = torch.ones(len(pv), 1, dtype=torch.long)
        return BatchFeature(data)

    def batch_decode(self, ids: Any, **kwargs: Any) -> list[str]:
        return self.tokenizer.batch_decode(ids, **kwargs)
