"""transformers backend: batched, left-padded generation; the trainable backend for PL."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from mpa.config import ModelConfig
from mpa.vlm.base import VLM, GenParams, VLMRequest, user_messages

log = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
    """A model reference that cannot be loaded; the message names it and says what to do."""


def resolve_model_ref(ref: str, revision: str | None = None) -> str:
    """Turn an HF id, a local directory or an ``s3://`` prefix into what ``from_pretrained`` takes."""
    from mpa import storage

    if storage.is_s3(ref):
        return str(storage.download_prefix_cached(ref))
    path = Path(ref).expanduser()
    looks_local = path.is_absolute() or ref.startswith((".", "~")) or path.exists() or ref.count("/") != 1
    if looks_local:
        if not path.is_dir():
            raise ModelLoadError(f"model directory not found: {ref} (give an HF id, a local dir or s3:// prefix)")
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{ref} is not a Hugging Face checkpoint (no config.json in it)")
        return str(path)
    return ref  # an HF hub id: transformers resolves (and caches) it


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, dtype)


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def load_processor(cfg: ModelConfig, path: str | None = None) -> Any:
    from transformers import AutoProcessor

    _quiet_transformers()
    path = path or resolve_model_ref(cfg.model, cfg.revision)
    kwargs: dict[str, Any] = {"trust_remote_code": cfg.trust_remote_code}
    if cfg.revision and not Path(path).is_dir():
        kwargs["revision"] = cfg.revision
    if cfg.min_pixels is not None:
        kwargs["min_pixels"] = cfg.min_pixels
    if cfg.max_pixels is not None:
        kwargs["max_pixels"] = cfg.max_pixels
    try:
        return AutoProcessor.from_pretrained(path, **kwargs)
    except OSError as exc:
        raise ModelLoadError(f"cannot load the processor of {cfg.model}: {exc}") from exc


def load_model(cfg: ModelConfig, path: str | None = None, device: torch.device | None = None) -> Any:
    from transformers import AutoModelForImageTextToText

    _quiet_transformers()
    path = path or resolve_model_ref(cfg.model, cfg.revision)
    device = device or pick_device(cfg.device)
    kwargs: dict[str, Any] = {
        "trust_remote_code": cfg.trust_remote_code,
        "dtype": pick_dtype(cfg.dtype, device),
    }
    if cfg.revision and not Path(path).is_dir():
        kwargs["revision"] = cfg.revision
    try:
        model = AutoModelForImageTextToText.from_pretrained(path, **kwargs)
    except OSError as exc:
        raise ModelLoadError(f"cannot load model {cfg.model}: {exc}") from exc
    if device.type == "cpu":
        tune_cpu_threads(model)
    return model.to(device)


TINY_MODEL_PARAMS = 50_000_000


def tune_cpu_threads(model: Any) -> None:
    """Tiny models run far slower with several intra-op threads (thread overhead dominates).

    Unless ``OMP_NUM_THREADS`` says otherwise, use one thread for models under 50 M parameters.
    """
    if "OMP_NUM_THREADS" in os.environ:
        return
    n_params = sum(p.numel() for p in model.parameters())
    if n_params < TINY_MODEL_PARAMS and torch.get_num_threads() != 1:
        log.info("tiny model (%d params) on CPU: using 1 torch thread (set OMP_NUM_THREADS to override)", n_params)
        torch.set_num_threads(1)


def render_prompts(processor: Any, prompts: list[str]) -> list[str]:
    """Apply the model's chat template to single-image user turns, ready for generation."""
    return [
        processor.apply_chat_template(user_messages(p), add_generation_prompt=True, tokenize=False)
        for p in prompts
    ]


def eos_text(processor: Any) -> str:
    """The text that ends an assistant turn for this model (``<|im_end|>`` for Qwen2-VL)."""
    tok = processor.tokenizer
    rendered = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "text", "text": "x"}]},
         {"role": "assistant", "content": [{"type": "text", "text": "MPA_END"}]}],
        tokenize=False,
    )
    tail = rendered.split("MPA_END", 1)[1]
    return tail.rstrip("\n") or (tok.eos_token or "")


def encode_for_training(
    processor: Any, images: list, prompts: list[str], answers: list[str]
) -> dict[str, torch.Tensor]:
    """Tokenize (image, prompt, answer) triples with labels on answer tokens only (paper Eq. 3).

    Prompt tokens and padding carry label -100; the answer and the end-of-turn marker are
    learned. Right padding (training does not generate).
    """
    tok = processor.tokenizer
    side = tok.padding_side
    tok.padding_side = "right"
    try:
        prompt_texts = render_prompts(processor, prompts)
        end = eos_text(processor)
        full_texts = [p + a.strip() + end for p, a in zip(prompt_texts, answers, strict=True)]
        full = processor(text=full_texts, images=images, padding=True, return_tensors="pt")
        prompt_only = processor(text=prompt_texts, images=images, padding=True, return_tensors="pt")
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


class HFVLM(VLM):
    """A transformers model answering batches with left padding (the trainable backend)."""

    def __init__(self, cfg: ModelConfig, model: Any = None, processor: Any = None) -> None:
        self.cfg = cfg
        self.model_id = cfg.model
        path = None if (model is not None and processor is not None) else resolve_model_ref(cfg.model, cfg.revision)
        self.device = pick_device(cfg.device)
        self.processor = processor if processor is not None else load_processor(cfg, path)
        self.model = model if model is not None else load_model(cfg, path, self.device)
        self.model.eval()
        if self.device.type == "cpu":
            log.info("CPU inference with %d torch threads (OMP_NUM_THREADS=%s)",
                     torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS", "unset"))

    @torch.inference_mode()
    def generate(self, requests: list[VLMRequest], params: GenParams) -> list[str]:
        if not requests:
            return []
        tok = self.processor.tokenizer
        tok.padding_side = "left"
        texts = render_prompts(self.processor, [r.prompt for r in requests])
        batch = self.processor(
            text=texts, images=[r.image for r in requests], padding=True, return_tensors="pt"
        ).to(self.model.device)
        gen_kwargs: dict[str, Any] = {"max_new_tokens": params.max_new_tokens, "do_sample": not params.greedy}
        if not params.greedy:
            gen_kwargs.update(temperature=params.temperature, top_p=params.top_p)
            if params.seed is not None:
                torch.manual_seed(params.seed)
        else:
            gen_kwargs.update(temperature=None, top_p=None, top_k=None)
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        out = self.model.generate(**batch, pad_token_id=pad_id, **gen_kwargs)
        new_tokens = out[:, batch["input_ids"].shape[1]:]
        return [t.strip() for t in self.processor.batch_decode(new_tokens, skip_special_tokens=True)]

    def close(self) -> None:
        self.model = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
