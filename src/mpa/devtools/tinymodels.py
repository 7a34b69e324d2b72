"""Tiny, real-architecture VLMs built locally (no downloads): for tests, demos and the toy world.

``build_tiny_qwen2vl`` makes a stock ``Qwen2VLForConditionalGeneration`` with a locally trained
byte-level BPE ``Qwen2Tokenizer`` carrying Qwen2-VL's special tokens and chat template;
``build_tiny_smolvlm`` makes a stock Idefics3 (SmolVLM). Both save with ``save_pretrained`` and
load back through the engine's normal loader (``AutoProcessor`` +
``AutoModelForImageTextToText``).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch

QWEN2VL_SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>",
    "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>",
]

# Qwen2-VL's chat template, reduced to what the engine sends (text and images, no video/tools).
QWEN2VL_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif c['type'] == 'text' %}{{ c['text'] }}"
    "{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

DEFAULT_CORPUS = [
    "Question: What is written on the sign? Answer: stop",
    "Question: What is the value of the red bar? Answer: 3",
    "Question: Which bar is the tallest? Answer: blue",
    "Question: How many bars are there? Answer: 4",
    "Answer the question using a single word or phrase.",
    "user assistant system yes no one two three four five six seven eight nine ten",
    "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 .,:;?!'\"-()",
]


def train_bpe_tokenizer(corpus: Iterable[str], vocab_size: int, special_tokens: list[str]):
    """A byte-level BPE tokenizer (the kind Qwen2 uses) trained on ``corpus``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus), trainer)
    return tok


def build_qwen2vl_processor(
    corpus: Iterable[str] = DEFAULT_CORPUS,
    vocab_size: int = 400,
    min_pixels: int = 28 * 28 * 4,
    max_pixels: int = 28 * 28 * 16,
):
    from transformers import (
        Qwen2TokenizerFast,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    raw = train_bpe_tokenizer(corpus, vocab_size, QWEN2VL_SPECIAL_TOKENS)
    tokenizer = Qwen2TokenizerFast(
        tokenizer_object=raw, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None, bos_token=None
    )
    tokenizer.chat_template = QWEN2VL_CHAT_TEMPLATE
    image_processor = Qwen2VLImageProcessor(min_pixels=min_pixels, max_pixels=max_pixels)
    return Qwen2VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(),
        chat_template=QWEN2VL_CHAT_TEMPLATE,
    )


def build_tiny_qwen2vl(
    out_dir: str | Path,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    vision_embed_dim: int = 32,
    vision_depth: int = 2,
    corpus: Iterable[str] = DEFAULT_CORPUS,
    vocab_size: int = 400,
    min_pixels: int = 28 * 28 * 4,
    max_pixels: int = 28 * 28 * 16,
    seed: int = 0,
    processor=None,
) -> Path:
    """Build and save a randomly initialised stock Qwen2-VL; return its directory."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    processor = processor or build_qwen2vl_processor(corpus, vocab_size, min_pixels, max_pixels)
    tok = processor.tokenizer
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN2VL_SPECIAL_TOKENS}
    head_dim = hidden_size // num_heads
    half = head_dim // 2  # mrope_section must sum to head_dim / 2
    section = [half - 2 * (half // 3), half // 3, half // 3]
    config = Qwen2VLConfig(
        text_config={
            "vocab_size": len(tok),
            "hidden_size": hidden_size,
            "intermediate_size": hidden_size * 2,
            "num_hidden_layers": num_layers,
            "num_attention_heads": num_heads,
            "num_key_value_heads": max(1, num_heads // 2),
            "rope_parameters": {"rope_type": "default", "mrope_section": section, "rope_theta": 10000.0},
            "max_position_embeddings": 4096,
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
            "tie_word_embeddings": True,
        },
        vision_config={
            "depth": vision_depth,
            "embed_dim": vision_embed_dim,
            "hidden_size": hidden_size,
            "num_heads": 2,
            "mlp_ratio": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "in_channels": 3,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


# --- a tiny workspace: models that really learn a little, images, a TextVQA-format benchmark ---

TINY_COLORS = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (40, 60, 220), "yellow": (235, 215, 40)}
TINY_QUESTION = "What color is the image?"


def tiny_image(color: str, variant: int):
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (56, 56), TINY_COLORS[color])
    draw = ImageDraw.Draw(img)
    x = 4 + (variant * 7) % 36
    draw.rectangle([x, x, x + 10, x + 10], outline=(0, 0, 0))
    return img


def quick_train(model, processor, examples: list[tuple], steps: int, lr: float = 3e-3, batch: int = 8,
                seed: int = 0) -> list[float]:
    """A few AdamW steps on (image, prompt, answer) triples with the engine's training encoding."""
    import random

    from mpa.vlm.hf import encode_for_training

    rng = random.Random(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        items = [examples[rng.randrange(len(examples))] for _ in range(batch)]
        enc = encode_for_training(processor, [i[0] for i in items], [i[1] for i in items], [i[2] for i in items])
        loss = model(**enc).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    model.eval()
    return losses


def tiny_processor():
    """The tiny workspace's processor: a BPE trained on the textvqa prompts and the colour answers."""
    from mpa.tasks import ANSWER_INSTRUCTION, get_task

    task = get_task("textvqa")
    corpus = [*DEFAULT_CORPUS, task.pa_prompt, task.answer_prompt(TINY_QUESTION), ANSWER_INSTRUCTION,
              *TINY_COLORS]
    return build_qwen2vl_processor(corpus, vocab_size=500)


def teach_tiny_teacher(teacher_dir: str | Path, processor, steps: int, seed: int = 0) -> None:
    """Train a saved tiny model in place to write ``Question: What color is the image? Answer: <c>``
    for the textvqa PA prompt and to answer that question."""
    from transformers import AutoModelForImageTextToText

    from mpa.tasks import get_task

    task = get_task("textvqa")
    colors = list(TINY_COLORS)
    examples = []
    for i in range(32):
        c = colors[i % len(colors)]
        img = tiny_image(c, i)
        examples.append((img, task.pa_prompt, f"Question: {TINY_QUESTION} Answer: {c}"))
        examples.append((img, task.answer_prompt(TINY_QUESTION), c))
    teacher = AutoModelForImageTextToText.from_pretrained(teacher_dir)
    quick_train(teacher, processor, examples, steps, seed=seed)
    teacher.save_pretrained(teacher_dir)


def make_tiny_workspace(out: str | Path, n_images: int = 12, teacher_steps: int = 150, seed: int = 0) -> dict:
    """Build a self-contained tiny MPA workspace (seconds on a CPU, nothing downloaded).

    - ``images/``: unlabeled solid-colour images (the PA input);
    - ``teacher/``: a tiny Qwen2-VL trained briefly to write ``Question: What color is the image?
      Answer: <colour>`` for the textvqa PA prompt and to answer that question;
    - ``student/``: a smaller, untrained tiny Qwen2-VL (it gets everything wrong: a real gap);
    - ``bench/textvqa.json`` + ``bench/b*.png``: a labeled benchmark in TextVQA v0.5.1 format.
    """
    import json

    out = Path(out)
    colors = list(TINY_COLORS)
    processor = tiny_processor()
    teacher_dir = build_tiny_qwen2vl(out / "teacher", hidden_size=64, num_layers=2, seed=seed, processor=processor)
    student_dir = build_tiny_qwen2vl(out / "student", hidden_size=32, num_layers=1, num_heads=2,
                                     vision_embed_dim=16, seed=seed + 1, processor=processor)
    teach_tiny_teacher(teacher_dir, processor, teacher_steps, seed=seed)
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    for i in range(n_images):
        tiny_image(colors[(i + seed) % len(colors)], 100 + i).save(images / f"img_{i:04d}.png")
    bench = out / "bench"  # images beside the annotations: the TextVQA loader's default image dir
    bench.mkdir(parents=True, exist_ok=True)
    data = []
    for i in range(8):
        c = colors[i % len(colors)]
        tiny_image(c, 200 + i).save(bench / f"b{i:03d}.png")
        data.append({"question_id": i, "question": TINY_QUESTION, "image_id": f"b{i:03d}", "answers": [c] * 10})
    (bench / "textvqa.json").write_text(json.dumps({"dataset_name": "tiny", "dataset_version": "0.5.1",
                                                   "data": data}))
    return {"teacher": teacher_dir, "student": student_dir, "images": images,
            "benchmark": bench / "textvqa.json", "bench_images": bench}


# --- more families (Qwen2.5-VL, SmolVLM/Idefics3, LLaVA, InternVL): same recipe, stock classes ---

SMOLVLM_SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<end_of_utterance>", "<fake_token_around_image>", "<image>", "<global-img>",
    *[f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)],
]
# SmolVLM-Instruct's chat template (text and images).
SMOLVLM_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
LLAVA_SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
# llava-hf's LLaVA-1.5 chat template (Vicuna v1 roles; no end-of-turn marker: EOS ends the answer).
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': ' }}"
    "{% endif %}{% for c in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}"
    "{% endfor %}{% for c in message['content'] | selectattr('type', 'equalto', 'text') %}{{ c['text'] + ' ' }}"
    "{% endfor %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
INTERNVL_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>"]
# InternVL-hf's ChatML template, reduced to text and images.
INTERNVL_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<IMG_CONTEXT>\n"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

TINY_FAMILIES = ("qwen2_vl", "qwen2_5_vl", "smolvlm", "llava", "internvl")


def _text_config(tok, ids: dict, hidden_size: int, num_layers: int, num_heads: int, bos: str, eos: str, pad: str,
                 model_type: str | None = None) -> dict:
    cfg = {
        "vocab_size": len(tok), "hidden_size": hidden_size, "intermediate_size": hidden_size * 2,
        "num_hidden_layers": num_layers, "num_attention_heads": num_heads,
        "num_key_value_heads": max(1, num_heads // 2), "max_position_embeddings": 4096,
        "bos_token_id": ids[bos], "eos_token_id": ids[eos], "pad_token_id": ids[pad], "tie_word_embeddings": True,
    }
    if model_type:
        cfg["model_type"] = model_type
    return cfg


def _save(model, processor, out_dir: str | Path, eos_id: int, pad_id: int) -> Path:
    model.generation_config.eos_token_id = eos_id
    model.generation_config.pad_token_id = pad_id
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def build_qwen2_5_vl_processor(corpus: Iterable[str] = DEFAULT_CORPUS, vocab_size: int = 400,
                               min_pixels: int = 28 * 28 * 4, max_pixels: int = 28 * 28 * 16):
    from transformers import Qwen2_5_VLProcessor, Qwen2VLVideoProcessor

    base = build_qwen2vl_processor(corpus, vocab_size, min_pixels, max_pixels)
    return Qwen2_5_VLProcessor(image_processor=base.image_processor, tokenizer=base.tokenizer,
                               video_processor=Qwen2VLVideoProcessor(), chat_template=QWEN2VL_CHAT_TEMPLATE)


def build_tiny_qwen2_5_vl(out_dir: str | Path, *, hidden_size: int = 64, num_layers: int = 2, num_heads: int = 4,
                          vision_embed_dim: int = 32, vision_depth: int = 2, corpus: Iterable[str] = DEFAULT_CORPUS,
                          vocab_size: int = 400, seed: int = 0, processor=None) -> Path:
    """A stock ``Qwen2_5_VLForConditionalGeneration`` (window attention + full-attention block)."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    processor = processor or build_qwen2_5_vl_processor(corpus, vocab_size)
    tok = processor.tokenizer
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN2VL_SPECIAL_TOKENS}
    half = hidden_size // num_heads // 2
    text = _text_config(tok, ids, hidden_size, num_layers, num_heads, "<|endoftext|>", "<|im_end|>", "<|endoftext|>")
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0,
                               "mrope_section": [half - 2 * (half // 3), half // 3, half // 3]}
    config = Qwen2_5_VLConfig(
        text_config=text,
        vision_config={"depth": vision_depth, "hidden_size": vision_embed_dim, "out_hidden_size": hidden_size,
                       "intermediate_size": vision_embed_dim * 2, "num_heads": 2, "patch_size": 14,
                       "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 56,
                       "fullatt_block_indexes": [vision_depth - 1], "in_channels": 3},
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    return _save(model, processor, out_dir, ids["<|im_end|>"], ids["<|endoftext|>"])


def build_smolvlm_processor(corpus: Iterable[str] = DEFAULT_CORPUS, vocab_size: int = 400, image_size: int = 32,
                            image_seq_len: int = 4):
    """An ``Idefics3Processor`` (SmolVLM's) with a local byte-level BPE tokenizer; no image splitting."""
    from transformers import Idefics3ImageProcessor, Idefics3Processor, PreTrainedTokenizerFast

    raw = train_bpe_tokenizer(corpus, vocab_size, SMOLVLM_SPECIAL_TOKENS)
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<end_of_utterance>", pad_token="<|endoftext|>",
                                  bos_token="<|im_start|>")
    tok.chat_template = SMOLVLM_CHAT_TEMPLATE
    image_processor = Idefics3ImageProcessor(size={"longest_edge": image_size},
                                             max_image_size={"longest_edge": image_size}, do_image_splitting=False)
    return Idefics3Processor(image_processor=image_processor, tokenizer=tok, image_seq_len=image_seq_len,
                             chat_template=SMOLVLM_CHAT_TEMPLATE)


def build_tiny_smolvlm(out_dir: str | Path, *, hidden_size: int = 64, num_layers: int = 2, num_heads: int = 4,
                       vision_hidden_size: int = 32, corpus: Iterable[str] = DEFAULT_CORPUS, vocab_size: int = 400,
                       seed: int = 0, processor=None) -> Path:
    """A stock ``Idefics3ForConditionalGeneration`` (SmolVLM): 32-px images, 8-px patches, pixel shuffle 2
    → 4 image tokens per image."""
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration

    processor = processor or build_smolvlm_processor(corpus, vocab_size)
    tok = processor.tokenizer
    ids = {t: tok.convert_tokens_to_ids(t) for t in SMOLVLM_SPECIAL_TOKENS}
    config = Idefics3Config(
        text_config=_text_config(tok, ids, hidden_size, num_layers, num_heads, "<|im_start|>", "<end_of_utterance>",
                                 "<|endoftext|>", model_type="llama"),
        vision_config={"hidden_size": vision_hidden_size, "intermediate_size": vision_hidden_size * 2,
                       "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
        scale_factor=2, image_token_id=ids["<image>"], pad_token_id=ids["<|endoftext|>"], tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(config)
    return _save(model, processor, out_dir, ids["<end_of_utterance>"], ids["<|endoftext|>"])


def build_llava_processor(corpus: Iterable[str] = DEFAULT_CORPUS, vocab_size: int = 400, image_size: int = 28,
                          patch_size: int = 7):
    """A ``LlavaProcessor`` (CLIP image processor, llava-hf chat template) with a local BPE tokenizer."""
    from transformers import CLIPImageProcessor, LlavaProcessor, PreTrainedTokenizerFast

    raw = train_bpe_tokenizer(corpus, vocab_size, LLAVA_SPECIAL_TOKENS)
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="</s>", pad_token="<pad>", bos_token="<s>",
                                  unk_token="<unk>")
    tok.chat_template = LLAVA_CHAT_TEMPLATE
    image_processor = CLIPImageProcessor(size={"shortest_edge": image_size},
                                         crop_size={"height": image_size, "width": image_size})
    return LlavaProcessor(image_processor=image_processor, tokenizer=tok, patch_size=patch_size,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1,
                          chat_template=LLAVA_CHAT_TEMPLATE)


def build_tiny_llava(out_dir: str | Path, *, hidden_size: int = 64, num_layers: int = 2, num_heads: int = 4,
                     vision_hidden_size: int = 32, corpus: Iterable[str] = DEFAULT_CORPUS, vocab_size: int = 400,
                     seed: int = 0, processor=None) -> Path:
    """A stock ``LlavaForConditionalGeneration`` (CLIP vision tower + Llama, the TinyLLaVA ``-hf`` layout):
    28-px images, 7-px patches → 16 image tokens."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    processor = processor or build_llava_processor(corpus, vocab_size)
    tok = processor.tokenizer
    ids = {t: tok.convert_tokens_to_ids(t) for t in LLAVA_SPECIAL_TOKENS}
    config = LlavaConfig(
        vision_config={"model_type": "clip_vision_model", "hidden_size": vision_hidden_size,
                       "intermediate_size": vision_hidden_size * 2, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "image_size": 28, "patch_size": 7, "projection_dim": vision_hidden_size},
        text_config=_text_config(tok, ids, hidden_size, num_layers, num_heads, "<s>", "</s>", "<pad>",
                                 model_type="llama"),
        image_token_id=ids["<image>"], vision_feature_select_strategy="default", vision_feature_layer=-1,
        projector_hidden_act="gelu", tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    return _save(model, processor, out_dir, ids["</s>"], ids["<pad>"])


def build_internvl_processor(corpus: Iterable[str] = DEFAULT_CORPUS, vocab_size: int = 400, image_size: int = 28,
                             max_patches: int = 2):
    """An ``InternVLProcessor`` (InternVL ``-hf`` layout: tiles, ``<img><IMG_CONTEXT>…</img>``)."""
    from transformers import GotOcr2ImageProcessor, InternVLProcessor, InternVLVideoProcessor, Qwen2TokenizerFast

    raw = train_bpe_tokenizer(corpus, vocab_size, INTERNVL_SPECIAL_TOKENS)
    tok = Qwen2TokenizerFast(
        tokenizer_object=raw, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None, bos_token=None,
        extra_special_tokens={"start_image_token": "<img>", "end_image_token": "</img>",
                              "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"},
    )
    tok.chat_template = INTERNVL_CHAT_TEMPLATE
    image_processor = GotOcr2ImageProcessor(size={"height": image_size, "width": image_size}, crop_to_patches=True,
                                            max_patches=max_patches)
    return InternVLProcessor(image_processor=image_processor, tokenizer=tok, video_processor=InternVLVideoProcessor(),
                             image_seq_length=1, chat_template=INTERNVL_CHAT_TEMPLATE)


def build_tiny_internvl(out_dir: str | Path, *, hidden_size: int = 64, num_layers: int = 2, num_heads: int = 4,
                        vision_hidden_size: int = 32, corpus: Iterable[str] = DEFAULT_CORPUS, vocab_size: int = 400,
                        seed: int = 0, processor=None) -> Path:
    """A stock transformers-native ``InternVLForConditionalGeneration`` (the ``-hf`` conversion of InternVL;
    InternVL2's original checkpoints are remote code and cannot be built here): 28-px tiles, 14-px patches,
    pixel shuffle 0.5 → 1 token per tile."""
    from transformers import InternVLConfig, InternVLForConditionalGeneration

    processor = processor or build_internvl_processor(corpus, vocab_size)
    tok = processor.tokenizer
    ids = {t: tok.convert_tokens_to_ids(t) for t in INTERNVL_SPECIAL_TOKENS}
    config = InternVLConfig(
        vision_config={"hidden_size": vision_hidden_size, "intermediate_size": vision_hidden_size * 2,
                       "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 28, "patch_size": 14},
        text_config=_text_config(tok, ids, hidden_size, num_layers, num_heads, "<|endoftext|>", "<|im_end|>",
                                 "<|endoftext|>", model_type="qwen2"),
        image_token_id=ids["<IMG_CONTEXT>"], image_seq_length=1, downsample_ratio=0.5,
    )
    torch.manual_seed(seed)
    model = InternVLForConditionalGeneration(config)
    return _save(model, processor, out_dir, ids["<|im_end|>"], ids["<|endoftext|>"])


def build_tiny(family: str, out_dir: str | Path, *, corpus: Iterable[str] = DEFAULT_CORPUS, vocab_size: int = 400,
               seed: int = 0, **kwargs) -> Path:
    """Build a tiny model of ``family`` (one of :data:`TINY_FAMILIES`) and return its directory."""
    builders = {"qwen2_vl": build_tiny_qwen2vl, "qwen2_5_vl": build_tiny_qwen2_5_vl, "smolvlm": build_tiny_smolvlm,
                "llava": build_tiny_llava, "internvl": build_tiny_internvl}
    if family not in builders:
        raise ValueError(f"no tiny builder for {family!r}; choose one of: {', '.join(TINY_FAMILIES)}")
    return builders[family](out_dir, corpus=corpus, vocab_size=vocab_size, seed=seed, **kwargs)


# --- TinyLLaVA as its authors saved it (TinyLLaVABench), for `mpa convert-tinyllava` ----------------

TINYLLAVA_SPECIAL_TOKENS = ["<|endoftext|>"]


def build_tiny_tinyllava_legacy(out_dir: str | Path, *, hidden_size: int = 64, num_layers: int = 2,
                                num_heads: int = 4, vision_hidden_size: int = 32, vision_layers: int = 2,
                                vision_heads: int = 2,
                                image_size: int = 28, patch_size: int = 14, corpus: Iterable[str] = DEFAULT_CORPUS,
                                vocab_size: int = 400, seed: int = 0) -> Path:
    """A tiny checkpoint in TinyLLaVA-2.0B's original on-disk format (TinyLLaVABench, not loadable by transformers).

    Same structure as ``bczhou/TinyLLaVA-2.0B`` at tiny sizes: ``architectures:
    ["TinyLlavaStablelmForCausalLM"]`` with StableLM-Epoch config names (``rope_pct``, ``norm_eps``)
    and the ``mm_*`` settings; weights of a StableLM language model (``model.*``, ``lm_head``), a
    SigLIP tower saved the way TinyLLaVABench saves it (``model.vision_tower.vision_tower.vision_model.*``,
    its last encoder layer and pooling head deleted: ``vision_layers`` remain) and the ``mlp2x_gelu``
    projector (``model.mm_projector.{0,2}``); a byte-level BPE tokenizer whose only special token is
    StableLM-2's ``<|endoftext|>`` (bos = eos = pad), and no ``<image>`` token (TinyLLaVABench splices
    image features at a sentinel id, -200). The SigLIP head count is not in the weights: pass
    ``vision_heads`` to the converter.
    """
    import json

    from safetensors.torch import save_file
    from transformers import (
        PreTrainedTokenizerFast,
        SiglipVisionConfig,
        SiglipVisionModel,
        StableLmConfig,
        StableLmForCausalLM,
    )

    raw = train_bpe_tokenizer(corpus, vocab_size, TINYLLAVA_SPECIAL_TOKENS)
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                  unk_token="<|endoftext|>", pad_token="<|endoftext|>")
    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    text = {"vocab_size": len(tok) + 8, "hidden_size": hidden_size, "intermediate_size": hidden_size * 2,
            "num_hidden_layers": num_layers, "num_attention_heads": num_heads, "num_key_value_heads": num_heads,
            "hidden_act": "silu", "max_position_embeddings": 4096, "use_qkv_bias": True, "rope_theta": 10000,
            "bos_token_id": eos, "eos_token_id": eos, "tie_word_embeddings": False, "use_cache": True}
    torch.manual_seed(seed)
    lm = StableLmForCausalLM(StableLmConfig(**text, partial_rotary_factor=0.25, layer_norm_eps=1e-5))
    tower = SiglipVisionModel(SiglipVisionConfig(hidden_size=vision_hidden_size,
                                                 intermediate_size=vision_hidden_size * 2,
                                                 num_hidden_layers=vision_layers + 1, num_attention_heads=vision_heads,
                                                 image_size=image_size, patch_size=patch_size))
    projector = torch.nn.Sequential(torch.nn.Linear(vision_hidden_size, hidden_size), torch.nn.GELU(),
                                    torch.nn.Linear(hidden_size, hidden_size))
    weights = {k: v.contiguous() for k, v in lm.state_dict().items()}
    deleted = f"encoder.layers.{vision_layers}."
    for k, v in tower.state_dict().items():
        if not k.startswith(("head.", deleted)):
            weights[f"model.vision_tower.vision_tower.vision_model.{k}"] = v.contiguous()
    for k, v in projector.state_dict().items():
        weights[f"model.mm_projector.{k}"] = v.contiguous()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = {
        "architectures": ["TinyLlavaStablelmForCausalLM"], "model_type": "tiny_llava_stablelm", **text,
        "rope_pct": 0.25, "norm_eps": 1e-5,
        "mm_vision_tower": "bczhou/TinyLLaVA-2.0B-SigLIP", "mm_projector_type": "mlp2x_gelu",
        "mm_hidden_size": vision_hidden_size, "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch",
        "mm_patch_merge_type": "flat", "image_aspect_ratio": "pad", "use_mm_proj": True, "pad_token": "<|endoftext|>",
        "tokenizer_padding_side": "right", "tokenizer_model_max_length": 3072, "torch_dtype": "float32",
    }
    (out / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    tok.save_pretrained(out)
    return out
