"""InternVL2 remote code (``internvl_chat``) through the real loader, without downloading anything.

InternVL2's modeling code lives on the Hub, so it cannot run here. What is real: a local checkpoint
whose config.json names custom classes via ``auto_map`` (as InternVL2's does), loaded by
``AutoModel`` with ``trust_remote_code`` through mpa's loader; the model class here is a stand-in
with InternVL2's ``forward``/``generate`` signatures. This covers the gate, the processor built
from the checkpoint's config (template, tile size, tokens per tile), ``img_context_token_id``,
generation and a training step with answer-only labels and ``image_flags``.
"""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from mpa.config import ModelConfig
from mpa.devtools.tinymodels import DEFAULT_CORPUS, train_bpe_tokenizer
from mpa.vlm.adapters import InternVL2Processor
from mpa.vlm.base import GenParams, VLMRequest
from mpa.vlm.hf import HFVLM, ModelLoadError, encode_for_training, load_model, load_processor

CONFIG_PY = """
from transformers import PretrainedConfig


class StubInternVLChatConfig(PretrainedConfig):
    model_type = "internvl_chat"

    def __init__(self, vision_config=None, llm_config=None, template="internlm2-chat", downsample_ratio=0.5,
                 max_dynamic_patch=12, use_thumbnail=True, vocab_size=400, **kwargs):
        super().__init__(**kwargs)
        self.vision_config = vision_config or {}
        self.llm_config = llm_config or {}
        self.template = template
        self.downsample_ratio = downsample_ratio
        self.max_dynamic_patch = max_dynamic_patch
        self.use_thumbnail = use_thumbnail
        self.vocab_size = vocab_size
"""

MODEL_PY = '''
import torch
from transformers import PreTrainedModel

from .configuration_stub import StubInternVLChatConfig


class Vision(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(3, 16)

    def forward(self, pixel_values):
        assert pixel_values.dtype == self.proj.weight.dtype, "pixels must arrive in the tower's dtype"
        return self.proj(pixel_values.mean(dim=(2, 3)))


class StubInternVLChatModel(PreTrainedModel):
    """InternVL2's call signatures over a one-layer model (vision: mean-pooled pixels)."""

    config_class = StubInternVLChatConfig
    img_context_token_id = None

    def __init__(self, config):
        super().__init__(config)
        self.embed = torch.nn.Embedding(config.vocab_size, 16)
        self.vision_model = Vision()
        self.head = torch.nn.Linear(16, config.vocab_size)
        self.post_init()

    def _embeds(self, pixel_values, input_ids):
        x = self.embed(input_ids)
        vit = self.vision_model(pixel_values)  # one feature per tile
        mask = input_ids == self.img_context_token_id
        per_tile = mask.sum() // max(len(vit), 1)
        x = x.clone()
        x[mask] = vit.repeat_interleave(per_tile, dim=0).to(x.dtype)
        return x

    def forward(self, pixel_values, input_ids, attention_mask=None, position_ids=None, image_flags=None,
                past_key_values=None, labels=None, **kwargs):
        assert image_flags is not None and image_flags.shape == (len(pixel_values), 1)
        logits = self.head(self._embeds(pixel_values, input_ids))
        loss = None  # like InternVL2's forward: a loss only when labels are given
        if labels is not None:
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(),
                                                     ignore_index=-100)
        return type("Out", (), {"loss": loss, "logits": logits})()

    @torch.no_grad()
    def generate(self, pixel_values=None, input_ids=None, attention_mask=None, visual_features=None,
                 generation_config=None, output_hidden_states=None, **generate_kwargs):
        assert self.img_context_token_id is not None
        logits = self.head(self._embeds(pixel_values, input_ids))[:, -1]
        n = generate_kwargs.get("max_new_tokens", 1)
        return logits.argmax(-1, keepdim=True).repeat(1, n)  # new tokens only, like InternVL2
'''


@pytest.fixture(scope="module")
def remote_ckpt(tmp_path_factory):
    from transformers import Qwen2TokenizerFast

    d = tmp_path_factory.mktemp("internvl2_remote")
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>"]
    tok = Qwen2TokenizerFast(
        tokenizer_object=train_bpe_tokenizer(DEFAULT_CORPUS, 400, special),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
    )
    tok.save_pretrained(d)
    (d / "configuration_stub.py").write_text(CONFIG_PY)
    (d / "modeling_stub.py").write_text(MODEL_PY)
    (d / "config.json").write_text(
        json.dumps(
            {
                "model_type": "internvl_chat",
                "architectures": ["StubInternVLChatModel"],
                "auto_map": {
                    "AutoConfig": "configuration_stub.StubInternVLChatConfig",
                    "AutoModel": "modeling_stub.StubInternVLChatModel",
                },
                "template": "internlm2-chat",
                "downsample_ratio": 0.5,
                "max_dynamic_patch": 4,
                "use_thumbnail": True,
                "force_image_size": 28,
                "vision_config": {"image_size": 28, "patch_size": 14},
                "vocab_size": len(tok),
            }
        )
    )
    from transformers import AutoConfig, AutoModel

    torch.manual_seed(0)
    model = AutoModel.from_config(AutoConfig.from_pretrained(d, trust_remote_code=True), trust_remote_code=True)
    model.save_pretrained(d)
    return d


def test_gate_then_load_through_automodel(remote_ckpt):
    with pytest.raises(ModelLoadError, match="trust_remote_code"):
        load_model(ModelConfig(model=str(remote_ckpt), device="cpu"))
    cfg = ModelConfig(model=str(remote_ckpt), device="cpu", trust_remote_code=True)
    proc = load_processor(cfg)
    assert isinstance(proc, InternVL2Processor)
    assert (proc.template, proc.image_size, proc.num_image_token, proc.max_tiles) == ("internlm2-chat", 28, 1, 4)
    vlm = HFVLM(cfg)
    assert type(vlm.model).__name__ == "StubInternVLChatModel"
    assert vlm.model.img_context_token_id == proc.tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
    out = vlm.generate(
        [
            VLMRequest(Image.new("RGB", (56, 28), (200, 0, 0)), "What color?"),
            VLMRequest(Image.new("RGB", (28, 28), (0, 0, 200)), "A longer question, really?"),
        ],
        GenParams(max_new_tokens=2),
    )
    assert len(out) == 2 and all(isinstance(t, str) for t in out)


def test_training_step_with_answer_only_labels(remote_ckpt):
    cfg = ModelConfig(model=str(remote_ckpt), device="cpu", trust_remote_code=True)
    proc, model = load_processor(cfg), load_model(cfg)
    HFVLM(cfg, model=model, processor=proc)  # prepares img_context_token_id
    img = Image.new("RGB", (56, 28), (200, 0, 0))
    batch = encode_for_training(proc, [img, img], ["What color?", "Which colour is it?"], ["red", "red"])
    labels = batch["labels"][0]
    assert proc.tokenizer.decode(labels[labels != -100]) == "red<|im_end|>"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    first = None
    for _ in range(5):
        loss = model(**batch).loss
        first = first if first is not None else loss.item()
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert loss.item() < first


def test_pl_stage_trains_a_remote_code_student(remote_ckpt, tmp_path):
    """mpa.stages.level on the remote-code checkpoint: AutoModel, img_context_token_id, image_flags."""
    from mpa.config import TrainConfig
    from mpa.stages.level import level
    from mpa.tasks import get_task

    Image.new("RGB", (56, 28), (200, 0, 0)).save(tmp_path / "a.png")
    rows = [{"image": str(tmp_path / "a.png"), "question": "What color?", "answer": "red", "kept": True}] * 4
    (tmp_path / "parity.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    cfg = ModelConfig(model=str(remote_ckpt), device="cpu", trust_remote_code=True)
    s = level(
        samples_path=tmp_path / "parity.jsonl",
        student=cfg,
        task=get_task("textvqa"),
        cfg=TrainConfig(batch_size=2, learning_rate=1e-2, epochs=2),
        out_dir=tmp_path / "level",
        show=False,
    )
    assert s.steps == 4 and s.last_loss < s.first_loss
    assert load_model(ModelConfig(model=s.checkpoint, device="cpu", trust_remote_code=True)).img_context_token_id


def test_bf16_model_gets_pixels_in_its_dtype(remote_ckpt):
    cfg = ModelConfig(model=str(remote_ckpt), device="cpu", trust_remote_code=True, dtype="bfloat16")
    vlm = HFVLM(cfg)
    assert next(vlm.model.parameters()).dtype == torch.bfloat16
    assert len(vlm.generate([VLMRequest(Image.new("RGB", (28, 28)), "What color?")], GenParams(max_new_tokens=1))) == 1
