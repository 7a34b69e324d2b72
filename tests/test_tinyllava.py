"""TinyLLaVA (the paper's TinyLLaVA-2B student): a tiny checkpoint in the authors' original format is
converted to a stock LLaVA checkpoint that computes the same thing, then loads, generates and trains
through the engine with answer-only labels.

The stand-in has the structure of ``bczhou/TinyLLaVA-2.0B`` (TinyLLaVABench layout, StableLM text
model, SigLIP tower with its last layer and head deleted, mlp2x_gelu projector) at tiny sizes; the real
checkpoint cannot be downloaded here, so what this does not prove is that its config/tokenizer files
carry no field the converter does not know (the converter fails loudly on unmatched weights).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from mpa.config import ModelConfig
from mpa.devtools.tinymodels import DEFAULT_CORPUS, build_tiny_tinyllava_legacy, quick_train
from mpa.stages.level import PRESETS as LEVEL_PRESETS
from mpa.vlm.adapters import PRESETS, TINYLLAVA_SYSTEM, adapter_for
from mpa.vlm.base import GenParams, VLMRequest
from mpa.vlm.hf import HFVLM, encode_for_training, load_model, load_processor, render_prompts
from mpa.vlm.tinyllava import TinyLlavaConversionError, convert_tinyllava

CORPUS = [*DEFAULT_CORPUS, "red green blue yellow", "What color is the image?", TINYLLAVA_SYSTEM]


@pytest.fixture(scope="module")
def legacy(tmp_path_factory):
    return build_tiny_tinyllava_legacy(tmp_path_factory.mktemp("tinyllava") / "legacy", corpus=CORPUS)


@pytest.fixture(scope="module")
def converted(legacy, tmp_path_factory):
    return convert_tinyllava(legacy, tmp_path_factory.mktemp("tinyllava_hf") / "hf", vision_heads=2)


def _img(color=(200, 20, 20), size=(56, 28)):
    return Image.new("RGB", size, color)


def test_conversion_writes_a_stock_llava_checkpoint(converted):
    cfg = json.loads((converted / "config.json").read_text())
    assert cfg["model_type"] == "llava" and cfg["architectures"] == ["LlavaForConditionalGeneration"]
    assert cfg["vision_config"]["model_type"] == "siglip_vision_model"
    assert cfg["vision_config"]["num_hidden_layers"] == 2  # the layers TinyLLaVABench kept
    assert cfg["text_config"]["model_type"] == "stablelm"
    assert cfg["text_config"]["partial_rotary_factor"] == 0.25 and cfg["text_config"]["layer_norm_eps"] == 1e-5
    assert cfg["vision_feature_layer"] == -1 and cfg["vision_feature_select_strategy"] == "full"
    assert json.loads((converted / "mpa_conversion.json").read_text())["source_architecture"] == (
        "TinyLlavaStablelmForCausalLM"
    )


def test_converted_model_computes_what_tinyllava_computes(legacy, converted):
    """Logits of the converted model = TinyLLaVABench's forward rebuilt from the original weights:
    SigLIP minus its last layer → last hidden state (729 tokens at full size, no CLS drop) → Linear-GELU-Linear
    → spliced where the image sits in the token sequence → StableLM."""
    from transformers import SiglipVisionConfig, SiglipVisionModel, StableLmConfig, StableLmForCausalLM

    weights = load_file(str(legacy / "model.safetensors"))
    legacy_cfg = json.loads((legacy / "config.json").read_text())
    vt = "model.vision_tower.vision_tower.vision_model."
    tower = SiglipVisionModel(SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                                 num_attention_heads=2, image_size=28, patch_size=14,
                                                 vision_use_head=False)).eval()
    tower.load_state_dict({k[len(vt):]: v for k, v in weights.items() if k.startswith(vt)})
    proj = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 64))
    proj.load_state_dict({k[len("model.mm_projector."):]: v for k, v in weights.items() if "mm_projector" in k})
    text_fields = {k: legacy_cfg[k] for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                              "num_attention_heads", "num_key_value_heads", "use_qkv_bias")}
    lm = StableLmForCausalLM(StableLmConfig(**text_fields, partial_rotary_factor=legacy_cfg["rope_pct"],
                                            layer_norm_eps=legacy_cfg["norm_eps"], tie_word_embeddings=False)).eval()
    lm.load_state_dict({k: v for k, v in weights.items() if k.startswith(("model.embed_tokens", "model.layers",
                                                                           "model.norm", "lm_head"))})

    proc = load_processor(ModelConfig(model=str(converted)))
    model = load_model(ModelConfig(model=str(converted), device="cpu"), device=torch.device("cpu")).eval()
    [text] = render_prompts(proc, ["What color is the image?"])
    batch = proc(text=[text], images=[_img()], return_tensors="pt")
    ids = batch["input_ids"][0]
    image_id = model.config.image_token_id
    where = (ids == image_id).nonzero().flatten()
    assert len(where) == 4  # (28 / 14)^2 patches, all kept
    with torch.no_grad():
        got = model(**batch).logits[0]
        feats = proj(tower(batch["pixel_values"], output_hidden_states=True).hidden_states[-1])[0]
        embed = lm.get_input_embeddings()
        seq = torch.cat([embed(ids[: where[0]]), feats, embed(ids[where[-1] + 1:])])
        want = lm(inputs_embeds=seq[None]).logits[0]
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_images_are_padded_to_square_not_cropped(converted):
    proc = load_processor(ModelConfig(model=str(converted)))
    pix = proc.image_processor(images=[_img(size=(56, 28))], return_tensors="pt")["pixel_values"][0]
    assert pix.shape == (3, 28, 28)
    # a wide red image: the top row is the mean-grey padding (≈ 0 after normalising), the middle row red
    assert pix[:, 0, :].abs().max() < 0.02
    assert pix[0, 14, 14] > 0.5 and pix[1, 14, 14] < -0.5


def test_engine_renders_masks_generates_and_trains(converted):
    vlm = HFVLM(ModelConfig(model=str(converted), device="cpu"))
    proc = vlm.processor
    assert adapter_for(proc).family == "llava"
    assert PRESETS["llava"] == LEVEL_PRESETS["llava"] == (16, 1e-4)  # the paper's TinyLLaVA-2B setting
    [text] = render_prompts(proc, ["What color?"])
    assert text == f"{TINYLLAVA_SYSTEM} USER: <image>\nWhat color? ASSISTANT:"

    batch = encode_for_training(proc, [_img(), _img(size=(40, 56))], ["What color?", "A longer question?"],
                                ["red", "blue"])
    labels = batch["labels"]
    for i, answer in enumerate(["red", "blue"]):
        assert proc.tokenizer.decode(labels[i][labels[i] != -100]) == f" {answer}<|endoftext|>"
    assert (labels[batch["attention_mask"] == 0] == -100).all()
    assert (labels[batch["input_ids"] == vlm.model.config.image_token_id] == -100).all()

    # the loss is cross-entropy over exactly the answer tokens
    model = vlm.model.train()
    out = model(**batch)
    logits, target = out.logits[:, :-1].float(), labels[:, 1:]
    manual = torch.nn.functional.cross_entropy(logits[target != -100], target[target != -100])
    torch.testing.assert_close(out.loss, manual)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    out.loss.backward()
    torch.optim.AdamW(model.parameters(), lr=1e-3).step()
    changed = {n.split(".")[1] for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert {"vision_tower", "multi_modal_projector", "language_model"} <= changed  # full fine-tuning
    model.eval()

    reqs = [VLMRequest(_img(), "What color?"), VLMRequest(_img((20, 20, 200)), "A much longer question here?")]
    together = vlm.generate(reqs, GenParams(max_new_tokens=4))
    assert together == [vlm.generate([r], GenParams(max_new_tokens=4))[0] for r in reqs]


def test_learns_an_answer_and_stops_at_endoftext(converted):
    cfg = ModelConfig(model=str(converted), device="cpu")
    proc, model = load_processor(cfg), load_model(cfg, device=torch.device("cpu"))
    losses = quick_train(model, proc, [(_img(), "What color is the image?", "red")], steps=80, lr=1e-2, batch=2)
    assert losses[-1] < losses[0] / 4
    vlm = HFVLM(cfg, model=model, processor=proc)
    assert vlm.generate([VLMRequest(_img(), "What color is the image?")], GenParams(max_new_tokens=8)) == ["red"]


def test_conversion_refuses_what_it_cannot_convert(legacy, tmp_path):
    cfg = json.loads((legacy / "config.json").read_text())

    def variant(name, weights=None, **changes):
        d = tmp_path / name
        d.mkdir()
        (d / "config.json").write_text(json.dumps({**cfg, **changes}))
        save_file(weights if weights is not None else load_file(str(legacy / "model.safetensors")),
                  str(d / "model.safetensors"))
        for f in ("tokenizer.json", "tokenizer_config.json"):
            (d / f).write_bytes((legacy / f).read_bytes())
        return d

    with pytest.raises(TinyLlavaConversionError, match="TinyLLaVA Factory checkpoint"):
        convert_tinyllava(variant("factory", model_type="tinyllava"), tmp_path / "o1", vision_heads=2)
    with pytest.raises(TinyLlavaConversionError, match="'TinyLlavaLlamaForCausalLM' is not a convertible"):
        convert_tinyllava(variant("llama", architectures=["TinyLlavaLlamaForCausalLM"]), tmp_path / "o2")
    with pytest.raises(TinyLlavaConversionError, match="projector 'linear'"):
        convert_tinyllava(variant("linear", mm_projector_type="linear"), tmp_path / "o3")
    with pytest.raises(TinyLlavaConversionError, match="hidden size 32, not so400m's 1152"):
        convert_tinyllava(legacy, tmp_path / "o4")
    extra = {**load_file(str(legacy / "model.safetensors")), "model.extra.weight": torch.zeros(1)}
    with pytest.raises(TinyLlavaConversionError, match="unexpected \\['model.language_model.extra.weight'\\]"):
        convert_tinyllava(variant("extra", weights=extra), tmp_path / "o5", vision_heads=2)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(TinyLlavaConversionError, match="not empty"):
        convert_tinyllava(legacy, tmp_path / "full", vision_heads=2)
    with pytest.raises(FileNotFoundError, match="config.json missing"):
        convert_tinyllava(tmp_path / "nothing", tmp_path / "o6")


def test_cli_convert(legacy, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ok = subprocess.run([sys.executable, "-m", "mpa", "convert-tinyllava", "--src", str(legacy), "--out",
                         str(tmp_path / "hf"), "--vision-heads", "2"], capture_output=True, text=True, env=env,
                        timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["model"] == str(tmp_path / "hf")
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["model_type"] == "llava"
