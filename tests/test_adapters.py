"""Per-family adapters on tiny, locally built models of each architecture transformers has.

Qwen2-VL, Qwen2.5-VL, SmolVLM (Idefics3), LLaVA and transformers-native InternVL are built here
and run through the engine's own loader, prompt rendering, answer-only label masking, batched
left-padded generation and a few training steps. InternVL2's original checkpoints are remote code
(``internvl_chat``): they cannot be built without downloading, so what is tested is the part that
lives in this repository — the trust_remote_code gate, the dynamic tiling, the conversation
templates, token expansion, label masking and the generate call against a stand-in model.
"""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from mpa.config import ModelConfig
from mpa.devtools.tinymodels import DEFAULT_CORPUS, TINY_FAMILIES, build_tiny, quick_train
from mpa.stages.level import PRESETS as LEVEL_PRESETS
from mpa.vlm.adapters import (
    PRESETS,
    InternVL2Processor,
    InternVL2RemoteAdapter,
    adapter_for,
    internvl2_tile_grid,
    internvl2_tiles,
)
from mpa.vlm.base import GenParams, VLMRequest
from mpa.vlm.hf import HFVLM, ModelLoadError, encode_for_training, load_model, load_processor, render_prompts

CORPUS = [*DEFAULT_CORPUS, "red green blue yellow", "What color is the image?"]

# what the generation prompt ends with, and what the label tokens of answer "red" decode to
EXPECTED = {
    "qwen2_vl": ("<|vision_end|>What color?<|im_end|>\n<|im_start|>assistant\n", "red<|im_end|>"),
    "qwen2_5_vl": ("<|vision_end|>What color?<|im_end|>\n<|im_start|>assistant\n", "red<|im_end|>"),
    "smolvlm": ("User:<image>What color?<end_of_utterance>\nAssistant:", " red<end_of_utterance>"),
    "llava": ("USER: <image>\nWhat color? ASSISTANT:", " red</s>"),
    "internvl": ("<IMG_CONTEXT>\nWhat color?<|im_end|>\n<|im_start|>assistant\n", "red<|im_end|>"),
}
FAMILY = {
    "qwen2_vl": "qwen2_vl",
    "qwen2_5_vl": "qwen2_5_vl",
    "smolvlm": "idefics3",
    "llava": "llava",
    "internvl": "internvl",
}


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {f: build_tiny(f, root / f, corpus=CORPUS) for f in TINY_FAMILIES}


def _img(color=(200, 20, 20), size=(56, 40)):
    return Image.new("RGB", size, color)


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_family_renders_trains_and_generates(tiny_dirs, family):
    vlm = HFVLM(ModelConfig(model=str(tiny_dirs[family]), device="cpu"))
    proc = vlm.processor
    adapter = adapter_for(proc)
    assert adapter.family == FAMILY[family]
    assert PRESETS[vlm.model.config.model_type] == LEVEL_PRESETS[vlm.model.config.model_type]
    prompt_end, label_text = EXPECTED[family]
    [text] = render_prompts(proc, ["What color?"])
    assert text.endswith(prompt_end)

    # answer-only labels: exactly the answer (with the family's leading space) and its end marker
    batch = encode_for_training(
        proc, [_img(), _img(size=(40, 56))], ["What color?", "A longer question?"], ["red", "blue"]
    )
    labels = batch["labels"]
    assert labels.shape == batch["input_ids"].shape
    first = labels[0][labels[0] != -100]
    assert proc.tokenizer.decode(first) == label_text
    assert (labels[batch["attention_mask"] == 0] == -100).all()

    # batched, left-padded greedy generation equals one-by-one generation
    reqs = [VLMRequest(_img(), "What color?"), VLMRequest(_img((20, 20, 200)), "A much longer question here?")]
    together = vlm.generate(reqs, GenParams(max_new_tokens=4))
    alone = [vlm.generate([r], GenParams(max_new_tokens=4))[0] for r in reqs]
    assert together == alone
    assert all(isinstance(t, str) for t in together)


@pytest.mark.parametrize("family", ["smolvlm", "llava"])
def test_family_learns_answer_and_stops(tiny_dirs, family, tmp_path):
    """A few steps on one Q/A make the model answer it and stop at the family's end marker."""
    cfg = ModelConfig(model=str(tiny_dirs[family]), device="cpu")
    proc, model = load_processor(cfg), load_model(cfg, device=torch.device("cpu"))
    examples = [(_img(), "What color is the image?", "red")]
    losses = quick_train(model, proc, examples, steps=80, lr=1e-2, batch=2)
    assert losses[-1] < losses[0] / 4
    vlm = HFVLM(cfg, model=model, processor=proc)
    assert vlm.generate([VLMRequest(_img(), "What color is the image?")], GenParams(max_new_tokens=8)) == ["red"]


# --- InternVL2 (remote code): what can be tested without downloading ------------------------------


def test_remote_code_family_is_refused_unless_configured(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "internvl_chat", "template": "internlm2-chat"}))
    cfg = ModelConfig(model=str(tmp_path), device="cpu")
    with pytest.raises(ModelLoadError, match="trust_remote_code"):
        load_model(cfg)
    with pytest.raises(ModelLoadError, match="trust_remote_code"):
        load_processor(cfg)


@pytest.mark.parametrize(
    ("size", "max_tiles", "grid"),
    [
        ((448, 448), 12, (1, 1)),
        ((896, 448), 12, (2, 1)),
        ((1024, 768), 12, (4, 3)),
        ((800, 600), 6, (3, 2)),
        ((300, 1200), 12, (1, 4)),
        ((1920, 1080), 6, (2, 1)),
    ],
)
def test_internvl2_tile_grid_matches_reference(size, max_tiles, grid):
    assert internvl2_tile_grid(*size, max_tiles=max_tiles) == grid
    tiles = internvl2_tiles(Image.new("RGB", size), max_tiles=max_tiles, image_size=448)
    n = grid[0] * grid[1]
    assert len(tiles) == (n + 1 if n > 1 else 1)  # + thumbnail
    assert all(t.size == (448, 448) for t in tiles)


@pytest.fixture(scope="module")
def internvl2_processor():
    from transformers import Qwen2TokenizerFast

    from mpa.devtools.tinymodels import train_bpe_tokenizer

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>"]
    raw = train_bpe_tokenizer(CORPUS, 400, special)
    tok = Qwen2TokenizerFast(
        tokenizer_object=raw, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None, bos_token=None
    )
    return InternVL2Processor(tok, template="internlm2-chat", image_size=28, num_image_token=2, max_tiles=4)


def test_internvl2_prompt_tokens_and_labels(internvl2_processor):
    proc = internvl2_processor
    assert adapter_for(proc) is not None and isinstance(adapter_for(proc), InternVL2RemoteAdapter)
    [text] = render_prompts(proc, ["What color?"])
    assert text.startswith("<|im_start|>system\n")
    assert text.endswith("<|im_end|><|im_start|>user\n<image>\nWhat color?<|im_end|><|im_start|>assistant\n")
    batch = encode_for_training(proc, [_img(size=(56, 28))], ["What color?"], ["red"])
    ids = batch["input_ids"][0].tolist()
    ctx = proc.tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
    n_tiles = batch["pixel_values"].shape[0]
    assert n_tiles == 3  # 2×1 grid + thumbnail
    assert ids.count(ctx) == 2 * n_tiles
    assert batch["image_flags"].shape == (n_tiles, 1)
    labels = batch["labels"][0]
    assert proc.tokenizer.decode(labels[labels != -100]) == "red<|im_end|>"


def test_internvl2_generate_through_engine(internvl2_processor):
    """HFVLM drives a model with InternVL2's generate() signature (new tokens only, no image_flags)."""
    proc = internvl2_processor
    red = proc.tokenizer.encode("red")

    class StandIn(torch.nn.Module):
        img_context_token_id = None
        device = torch.device("cpu")

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def generate(self, pixel_values, input_ids, attention_mask, **kwargs):
            assert self.img_context_token_id == proc.tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
            assert "image_flags" not in kwargs and pixel_values.shape[1:] == (3, 28, 28)
            assert (attention_mask[:, -1] == 1).all()  # left padded
            return torch.tensor([red] * input_ids.shape[0])

    vlm = HFVLM(ModelConfig(model="stand-in", device="cpu", trust_remote_code=True), model=StandIn(), processor=proc)
    out = vlm.generate(
        [VLMRequest(_img(), "What color?"), VLMRequest(_img(size=(28, 90)), "Longer question?")],
        GenParams(max_new_tokens=3),
    )
    assert out == ["red", "red"]
