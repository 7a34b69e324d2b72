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


def _tiny_image(color: str, variant: int):
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


def make_tiny_workspace(out: str | Path, n_images: int = 12, teacher_steps: int = 150, seed: int = 0) -> dict:
    """Build a self-contained tiny MPA workspace (seconds on a CPU, nothing downloaded).

    - ``images/``: unlabeled solid-colour images (the PA input);
    - ``teacher/``: a tiny Qwen2-VL trained briefly to write ``Question: What color is the image?
      Answer: <colour>`` for the textvqa PA prompt and to answer that question;
    - ``student/``: a smaller, untrained tiny Qwen2-VL (it gets everything wrong: a real gap);
    - ``bench/textvqa.json`` + ``bench/images``: a labeled benchmark in TextVQA v0.5.1 format.
    """
    import json

    from transformers import AutoModelForImageTextToText

    from mpa.tasks import ANSWER_INSTRUCTION, get_task

    out = Path(out)
    task = get_task("textvqa")
    colors = list(TINY_COLORS)
    answer_prompt = task.answer_prompt(TINY_QUESTION)
    corpus = [*DEFAULT_CORPUS, task.pa_prompt, answer_prompt, ANSWER_INSTRUCTION, *colors]
    processor = build_qwen2vl_processor(corpus, vocab_size=500)
    teacher_dir = build_tiny_qwen2vl(out / "teacher", hidden_size=64, num_layers=2, seed=seed, processor=processor)
    student_dir = build_tiny_qwen2vl(out / "student", hidden_size=32, num_layers=1, num_heads=2,
                                     vision_embed_dim=16, seed=seed + 1, processor=processor)
    examples = []
    for i in range(32):
        c = colors[i % len(colors)]
        img = _tiny_image(c, i)
        examples.append((img, task.pa_prompt, f"Question: {TINY_QUESTION} Answer: {c}"))
        examples.append((img, answer_prompt, c))
    teacher = AutoModelForImageTextToText.from_pretrained(teacher_dir)
    quick_train(teacher, processor, examples, teacher_steps, seed=seed)
    teacher.save_pretrained(teacher_dir)
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    for i in range(n_images):
        _tiny_image(colors[(i + seed) % len(colors)], 100 + i).save(images / f"img_{i:04d}.png")
    bench = out / "bench"
    (bench / "images").mkdir(parents=True, exist_ok=True)
    data = []
    for i in range(8):
        c = colors[i % len(colors)]
        _tiny_image(c, 200 + i).save(bench / "images" / f"b{i:03d}.png")
        data.append({"question_id": i, "question": TINY_QUESTION, "image_id": f"b{i:03d}", "answers": [c] * 10})
    (bench / "textvqa.json").write_text(json.dumps({"dataset_name": "tiny", "dataset_version": "0.5.1",
                                                   "data": data}))
    return {"teacher": teacher_dir, "student": student_dir, "images": images,
            "benchmark": bench / "textvqa.json", "bench_images": bench / "images"}
