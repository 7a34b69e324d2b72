"""Decoding is explicit and the same on every backend: a checkpoint's generation_config adds nothing.

The hf backend runs the shipped tiny toy student (a real Qwen2-VL) with a generation_config.json
that sets the sampling knobs Qwen2-VL-Instruct checkpoints ship (do_sample, top_k, top_p,
temperature, repetition_penalty) plus others transformers would apply; vLLM and OpenAI-compatible
requests are checked for completeness (their engines are exercised in test_vllm_backend.py and
test_openai_vllm_server.py).
"""

from __future__ import annotations

import copy

import pytest
from PIL import Image

from mpa.vlm.base import GenParams, VLMRequest


@pytest.fixture(scope="module")
def vlm():
    from mpa.config import ModelConfig
    from mpa.toyworld import STUDENT_CHECKPOINT
    from mpa.vlm.hf import HFVLM

    return HFVLM(ModelConfig(model=str(STUDENT_CHECKPOINT), device="cpu"))


@pytest.fixture(scope="module")
def requests_(tmp_path_factory):
    from mpa.tasks import TOYVQA
    from mpa.toyworld.data import make_unlabeled

    d = tmp_path_factory.mktemp("decoding")
    images = sorted((make_unlabeled(d, 4, seed=11) / "images").glob("*.png"))
    return [VLMRequest(Image.open(p).convert("RGB"), TOYVQA.answer_prompt(q))
            for p, q in zip(images, ["What is the tallest bar?", "What word is on the sign?",
                                     "How many bars are there?", "What colour is the sign?"], strict=True)]


HOSTILE = {"do_sample": True, "top_k": 1, "top_p": 0.001, "temperature": 0.01, "repetition_penalty": 5.0,
           "no_repeat_ngram_size": 1, "min_new_tokens": 6}


def _with_generation_config(vlm, **settings):
    """Context: the model's generation_config carries ``settings`` (as if read from the checkpoint)."""

    class Ctx:
        def __enter__(self):
            self.saved = vlm.model.generation_config
            gc = copy.deepcopy(self.saved)
            for k, v in settings.items():
                setattr(gc, k, v)
            vlm.model.generation_config = gc

        def __exit__(self, *exc):
            vlm.model.generation_config = self.saved

    return Ctx()


def test_hf_ignores_the_checkpoints_generation_config_when_greedy(vlm, requests_):
    params = GenParams(max_new_tokens=8)
    clean = vlm.generate(requests_, params)
    with _with_generation_config(vlm, **HOSTILE):
        # what transformers does with those settings left to it: the output changes
        batch = vlm.processor(text=vlm.processor.apply_chat_template(
            [[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": r.prompt}]}]
             for r in requests_], add_generation_prompt=True), images=[r.image for r in requests_],
            padding=True, return_tensors="pt")
        raw = vlm.model.generate(**batch, max_new_tokens=8, do_sample=False)
        inherited = [t.strip() for t in vlm.processor.batch_decode(raw[:, batch["input_ids"].shape[1]:],
                                                                    skip_special_tokens=True)]
        assert inherited != clean, "the hostile generation_config should change transformers' own output"
        assert vlm.generate(requests_, params) == clean


def test_hf_sampling_ignores_the_checkpoints_top_k(vlm, requests_):
    sample = GenParams(max_new_tokens=8, temperature=1.5, seed=3)
    clean = vlm.generate(requests_, sample)
    assert clean != vlm.generate(requests_, GenParams(max_new_tokens=8)), "sampling should differ from greedy"
    with _with_generation_config(vlm, top_k=1, do_sample=True, temperature=0.01, top_p=0.001):
        assert vlm.generate(requests_, sample) == clean  # top_k=1 from the checkpoint would make it greedy


def test_hf_applies_the_explicit_settings(vlm, requests_):
    greedy = vlm.generate(requests_, GenParams(max_new_tokens=8))
    # top_k=1 at any temperature is greedy; the penalty changes a greedy decode
    assert vlm.generate(requests_, GenParams(max_new_tokens=8, temperature=2.0, top_k=1, seed=0)) == greedy
    assert vlm.generate(requests_, GenParams(max_new_tokens=8, repetition_penalty=5.0)) != greedy


def test_the_model_keeps_its_own_generation_config(vlm, requests_):
    before = vlm.model.generation_config.to_dict()
    vlm.generate(requests_[:1], GenParams(max_new_tokens=2, temperature=1.0, seed=0))
    assert vlm.model.generation_config.to_dict() == before


def test_generate_kwargs_are_complete():
    from mpa.vlm.hf import generate_kwargs

    assert generate_kwargs(GenParams(max_new_tokens=5)) == {
        "max_new_tokens": 5, "do_sample": False, "num_beams": 1, "repetition_penalty": 1.0}
    assert generate_kwargs(GenParams(temperature=0.7, top_p=0.9, top_k=0, repetition_penalty=1.05)) == {
        "max_new_tokens": 32, "do_sample": True, "num_beams": 1, "repetition_penalty": 1.05,
        "temperature": 0.7, "top_p": 0.9, "top_k": 0}


def test_vllm_sampling_params_are_complete():
    from mpa.vlm.vllm_backend import sampling_kwargs

    greedy = sampling_kwargs(GenParams(max_new_tokens=5, repetition_penalty=1.05))
    assert greedy == {"max_tokens": 5, "skip_special_tokens": True, "repetition_penalty": 1.05, "min_p": 0.0,
                      "presence_penalty": 0.0, "frequency_penalty": 0.0, "temperature": 0.0, "top_p": 1.0,
                      "top_k": -1}
    sampled = sampling_kwargs(GenParams(temperature=0.7, top_p=0.9, top_k=20, seed=4), per_request_seed=True)
    assert (sampled["temperature"], sampled["top_p"], sampled["top_k"], sampled["seed"]) == (0.7, 0.9, 20, 4)
    assert sampling_kwargs(GenParams(temperature=0.7))["top_k"] == -1  # off, not vLLM's or the model's default


def test_openai_request_fields_are_complete_or_refused():
    from mpa.vlm.openai_backend import sampling_fields

    ext = sampling_fields(GenParams(temperature=0.7, top_p=0.9), extended=True)
    assert ext == {"temperature": 0.7, "top_p": 0.9, "presence_penalty": 0.0, "frequency_penalty": 0.0,
                   "top_k": -1, "repetition_penalty": 1.0, "min_p": 0.0}
    plain = sampling_fields(GenParams(), extended=False)
    assert plain == {"temperature": 0.0, "top_p": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0}
    with pytest.raises(ValueError, match="extended_sampling"):
        sampling_fields(GenParams(temperature=1.0, top_k=20), extended=False)
    with pytest.raises(ValueError, match="repetition_penalty"):
        sampling_fields(GenParams(repetition_penalty=1.05), extended=False)


def test_openai_extended_sampling_defaults_by_endpoint(monkeypatch):
    from mpa.config import ModelConfig, OpenAISettings
    from mpa.vlm.openai_backend import OpenAIVLM

    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    assert not OpenAIVLM(ModelConfig(model="gpt-4o", backend="openai")).extended_sampling
    local = ModelConfig(model="t", backend="openai", openai=OpenAISettings(base_url="http://127.0.0.1:9/v1"))
    assert OpenAIVLM(local).extended_sampling
    forced = ModelConfig(model="t", backend="openai",
                         openai=OpenAISettings(base_url="http://127.0.0.1:9/v1", extended_sampling=False))
    assert not OpenAIVLM(forced).extended_sampling


@pytest.mark.parametrize("bad", [{"top_k": -1}, {"top_p": 0.0}, {"repetition_penalty": 0.0}, {"temperature": -1},
                                 {"max_new_tokens": 0}])
def test_gen_params_reject_bad_values(bad):
    with pytest.raises(ValueError):
        GenParams(**bad)
