"""HFVLM.generate hands transformers one complete GenerationConfig (the demo's PA/PI/eval speed, issue 25).

Without it, transformers 5 builds and validates a default model config on every ``generate`` call
(``PreTrainedConfig._get_generation_parameters``, ~5 ms each for the toy models; a whole seed-11 demo went
from 132 to 129 CPU-s). The outputs must stay exactly those of the keyword-argument call.
"""

from __future__ import annotations

import pytest
from PIL import Image

from mpa.vlm.base import GenParams, VLMRequest


@pytest.fixture(scope="module")
def vlm():
    from mpa.config import ModelConfig
    from mpa.toyworld import TEACHER_CHECKPOINT
    from mpa.vlm.hf import HFVLM

    return HFVLM(ModelConfig(model=str(TEACHER_CHECKPOINT), device="cpu"))


@pytest.fixture(scope="module")
def requests_(tmp_path_factory):
    from mpa.tasks import TOYVQA
    from mpa.toyworld.data import make_unlabeled

    d = tmp_path_factory.mktemp("toy")
    make_unlabeled(d, 6, seed=3)
    return [VLMRequest(Image.open(p).convert("RGB"), TOYVQA.pa_prompt) for p in sorted((d / "images").glob("*.png"))]


def _by_keywords(vlm, requests, params):
    """The call before the change: every setting as a keyword, under the neutral config."""
    import torch

    from mpa.vlm.adapters import adapter_for
    from mpa.vlm.hf import generate_kwargs, neutral_generation_config

    adapter = adapter_for(vlm.processor)
    batch = adapter.encode_for_generation(vlm.processor, [r.image for r in requests], [r.prompt for r in requests])
    kw = {**generate_kwargs(params), **adapter.generate_kwargs(vlm.processor)}
    if not params.greedy and params.seed is not None:
        torch.manual_seed(params.seed)
    with torch.inference_mode(), neutral_generation_config(vlm.model):
        out = vlm.model.generate(**batch, pad_token_id=vlm.processor.tokenizer.pad_token_id, **kw)
    return adapter.decode(vlm.processor, out[:, batch["input_ids"].shape[1]:])


@pytest.mark.parametrize("params", [GenParams(max_new_tokens=12),
                                    GenParams(max_new_tokens=12, temperature=1.75, top_p=1.0, top_k=50, seed=11)])
def test_same_outputs_without_rebuilding_the_model_config(vlm, requests_, params, monkeypatch):
    expected = _by_keywords(vlm, requests_, params)
    calls = []
    cls = type(vlm.model.config)
    original = cls._get_generation_parameters
    monkeypatch.setattr(cls, "_get_generation_parameters", lambda self: calls.append(1) or original(self))
    assert vlm.generate(requests_, params) == expected
    assert calls == []  # transformers was handed a complete GenerationConfig
