"""transformers backend: batched, left-padded generation; the trainable backend for PL."""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from mpa.config import ModelConfig
from mpa.errors import one_line
from mpa.vlm.adapters import REMOTE_CODE_MODEL_TYPES, adapter_for, adapter_for_model_type
from mpa.vlm.base import VLM, GenParams, VLMRequest

log = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
    """A model reference that cannot be loaded; the message names it and says what to do."""


def resolve_model_ref(ref: str, revision: str | None = None) -> str:
    """Turn an HF id, a local directory, an ``s3://`` prefix or an MLflow ``models:/<name>@<alias>``
    reference into what ``from_pretrained`` takes."""
    from mpa import storage

    if ref.startswith("models:/"):  # the MLflow registry (mpa.tracking)
        from mpa.tracking import download_model

        return str(download_model(ref))
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
    """``auto`` (a GPU if there is one), or the named device; a name this machine cannot use is a one-line error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    gpus = f"cuda:0..cuda:{n_gpus - 1}" if n_gpus else "no GPU here"
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ModelLoadError(f"unknown device {device!r}: use auto, cpu or cuda[:N] ({gpus})") from None
    if dev.type == "cuda" and (n_gpus == 0 or (dev.index or 0) >= n_gpus):
        raise ModelLoadError(f"device {device!r} is not available ({gpus}): use auto or cpu, or another GPU index")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ModelLoadError(f"device {device!r} is not available on this machine: use auto or cpu")
    return dev


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, dtype)


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def peek_model_type(path: str) -> str | None:
    """``model_type`` from a local checkpoint's config.json, without loading anything (None if unknown)."""
    import json

    cfg_file = Path(path) / "config.json"
    if not cfg_file.is_file():
        return None
    try:
        return json.loads(cfg_file.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError):
        return None


def check_remote_code(cfg: ModelConfig, path: str) -> str | None:
    """Refuse families that need remote code unless the config allows it; return the model type.

    Local checkpoints are recognised from config.json; for a hub id the config is resolved the way
    ``from_pretrained`` resolves it (then cached), which refuses custom code unless allowed.
    """
    if Path(path).is_dir():
        model_type = peek_model_type(path)
    else:
        from transformers import AutoConfig

        kwargs: dict[str, Any] = {"trust_remote_code": cfg.trust_remote_code}
        if cfg.revision:
            kwargs["revision"] = cfg.revision
        try:
            model_type = AutoConfig.from_pretrained(path, **kwargs).model_type
        except ValueError as exc:
            if "trust_remote_code" not in str(exc):
                raise ModelLoadError(f"cannot read the config of {cfg.model}: {exc}") from exc
            raise ModelLoadError(
                f"{cfg.model} runs the model author's own Python code; set trust_remote_code: true in its "
                "model config (or --trust-remote-code) if you trust it"
            ) from exc
        except OSError:
            return None  # unreachable or missing: from_pretrained reports it with its own message
    if model_type in REMOTE_CODE_MODEL_TYPES and not cfg.trust_remote_code:
        raise ModelLoadError(
            f"{cfg.model} is a {model_type!r} checkpoint, which runs the model author's own Python code; "
            "set trust_remote_code: true in its model config (or --trust-remote-code) if you trust it"
        )
    return model_type


def load_processor(cfg: ModelConfig, path: str | None = None) -> Any:
    from transformers import AutoProcessor

    _quiet_transformers()
    path = path or resolve_model_ref(cfg.model, cfg.revision)
    model_type = check_remote_code(cfg, path)
    if adapter_for_model_type(model_type).needs_remote_code:
        from mpa.vlm.adapters import InternVL2Processor

        try:
            return InternVL2Processor.from_pretrained(
                path, revision=cfg.revision, max_tiles=cfg.options.get("max_tiles")
            )
        except OSError as exc:
            raise ModelLoadError(f"cannot load the tokenizer of {cfg.model}: {exc}") from exc
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
    from transformers import AutoModel, AutoModelForImageTextToText

    _quiet_transformers()
    path = path or resolve_model_ref(cfg.model, cfg.revision)
    model_type = check_remote_code(cfg, path)
    auto = AutoModel if adapter_for_model_type(model_type).needs_remote_code else AutoModelForImageTextToText
    device = device or pick_device(cfg.device)
    kwargs: dict[str, Any] = {
        "trust_remote_code": cfg.trust_remote_code,
        "dtype": pick_dtype(cfg.dtype, device),
    }
    if cfg.revision and not Path(path).is_dir():
        kwargs["revision"] = cfg.revision
    try:
        model = auto.from_pretrained(path, **kwargs)
    except OSError as exc:
        raise ModelLoadError(f"cannot load model {cfg.model}: {one_line(str(exc))}") from exc
    except pickle.UnpicklingError as exc:  # torch's weights-only loader refused a pickled checkpoint
        lines = str(exc).splitlines()
        why = next((ln for ln in lines if "Unpickler error" in ln or "Unsupported" in ln), lines[0] if lines else "")
        raise ModelLoadError(
            f"cannot load model {cfg.model}: its weights are a pickle that asks to run code, which mpa refuses "
            f"({one_line(why, 160)}); use a checkpoint saved as safetensors") from None
    if adapter_for_model_type(model_type).needs_remote_code:
        _prepare_remote_code_model(model, cfg, path)
    if device.type == "cpu":
        tune_cpu_threads(model)
    return model.to(device)


def _prepare_remote_code_model(model: Any, cfg: ModelConfig, path: str) -> None:
    """InternVL2 (remote code) needs ``img_context_token_id`` set by its caller (its own ``chat()`` and
    fine-tuning script do so), and its vision tower expects pixels in its own dtype (bf16 on GPU)."""
    from mpa.vlm.adapters import InternVL2Processor

    processor = load_processor(cfg, path)
    model.img_context_token_id = processor.tokenizer.convert_tokens_to_ids(InternVL2Processor.IMG_CONTEXT)
    vision = getattr(model, "vision_model", None)
    if isinstance(vision, torch.nn.Module):
        def cast_pixels(module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            dtype = next(module.parameters()).dtype
            if args and torch.is_tensor(args[0]) and args[0].is_floating_point():
                args = (args[0].to(dtype), *args[1:])
            if torch.is_tensor(kwargs.get("pixel_values")):
                kwargs = {**kwargs, "pixel_values": kwargs["pixel_values"].to(dtype)}
            return args, kwargs

        vision.register_forward_pre_hook(cast_pixels, with_kwargs=True)


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
    return adapter_for(processor).render_prompts(processor, prompts)


def eos_text(processor: Any) -> str:
    """The text that ends an assistant turn for this model (``<|im_end|>`` for Qwen2-VL)."""
    return adapter_for(processor).eos_text(processor)


def encode_for_training(
    processor: Any, images: list, prompts: list[str], answers: list[str]
) -> dict[str, torch.Tensor]:
    """Tokenize (image, prompt, answer) triples with labels on answer tokens only (paper Eq. 3).

    Prompt tokens and padding carry label -100; the answer and the end-of-turn marker are
    learned. Right padding (training does not generate). The family's adapter
    (:mod:`mpa.vlm.adapters`) decides the chat format and the answer's affixes.
    """
    return adapter_for(processor).encode_for_training(processor, images, prompts, answers)


# what a checkpoint's generation_config.json may keep: which tokens end or pad a sequence
_TOKEN_ID_FIELDS = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")


def generate_kwargs(params: GenParams) -> dict[str, Any]:
    """``model.generate`` arguments for one decoding setting, every knob explicit.

    Greedy passes no sampling knob (none applies); sampling passes temperature, top_p and top_k
    (``0``: off — transformers' own default would be 50). Run under
    :func:`neutral_generation_config`, nothing else reaches the logits.
    """
    kw: dict[str, Any] = {"max_new_tokens": params.max_new_tokens, "do_sample": not params.greedy,
                          "num_beams": 1, "repetition_penalty": params.repetition_penalty}
    if not params.greedy:
        kw.update(temperature=params.temperature, top_p=params.top_p, top_k=params.top_k)
    return kw


@contextmanager
def neutral_generation_config(model: Any) -> Iterator[None]:
    """Hide a checkpoint's decoding defaults (``generation_config.json``) for one ``generate`` call.

    transformers fills every ``generate`` argument left unset from the model's generation config
    (Qwen2-VL-Instruct's ships ``do_sample``, ``top_k``, ``top_p``, ``temperature`` and a
    ``repetition_penalty``), while vLLM's offline engine, given complete sampling parameters, uses
    none of them. Swapping in a config that keeps only the token ids (on every sub-model that
    generates, e.g. InternVL2's inner language model) makes :func:`generate_kwargs` the whole story.
    """
    from transformers import GenerationConfig

    swapped: list[tuple[Any, Any]] = []
    for module in model.modules():
        gc = getattr(module, "generation_config", None)
        if isinstance(gc, GenerationConfig):
            ids = {k: getattr(gc, k) for k in _TOKEN_ID_FIELDS if getattr(gc, k, None) is not None}
            swapped.append((module, gc))
            module.generation_config = GenerationConfig(**ids)
    try:
        yield
    finally:
        for module, gc in swapped:
            module.generation_config = gc


def _standard_generate(model: Any) -> bool:
    """Whether ``model.generate`` is transformers' own (remote-code models, e.g. InternVL2, bring theirs)."""
    from transformers import GenerationMixin

    return getattr(type(model), "generate", None) is GenerationMixin.generate


def _complete_config(model: Any, kwargs: dict[str, Any]) -> Any:
    """The GenerationConfig ``generate(**kwargs)`` would build under :func:`neutral_generation_config`."""
    from transformers import GenerationConfig

    return GenerationConfig(**{**model.generation_config.to_diff_dict(), **kwargs})


class HFVLM(VLM):
    """A transformers model answering batches with left padding (the trainable backend)."""

    def __init__(self, cfg: ModelConfig, model: Any = None, processor: Any = None) -> None:
        self.cfg = cfg
        self.model_id = cfg.model
        path = None if (model is not None and processor is not None) else resolve_model_ref(cfg.model, cfg.revision)
        self.device = pick_device(cfg.device)
        self.processor = processor if processor is not None else load_processor(cfg, path)
        self.model = model if model is not None else load_model(cfg, path, self.device)
        adapter_for(self.processor).prepare_model(self.model, self.processor)
        self.model.eval()
        if self.device.type == "cpu":
            log.info("CPU inference with %d torch threads (OMP_NUM_THREADS=%s)",
                     torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS", "unset"))

    @torch.inference_mode()
    def generate(self, requests: list[VLMRequest], params: GenParams) -> list[str]:
        if not requests:
            return []
        tok = self.processor.tokenizer
        adapter = adapter_for(self.processor)
        batch = adapter.encode_for_generation(
            self.processor, [r.image for r in requests], [r.prompt for r in requests]
        ).to(self.model.device)
        gen_kwargs = generate_kwargs(params)
        if not params.greedy and params.seed is not None:
            torch.manual_seed(params.seed)
        gen_kwargs.update(adapter.generate_kwargs(self.processor))
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        with neutral_generation_config(self.model):
            if _standard_generate(self.model):
                # one complete GenerationConfig: transformers then skips building and validating a default model
                # config on every call (``_get_generation_parameters``; ~5 ms a call for the toy models)
                out = self.model.generate(**batch, generation_config=_complete_config(
                    self.model, {**gen_kwargs, "pad_token_id": pad_id}))
            else:
                out = self.model.generate(**batch, pad_token_id=pad_id, **gen_kwargs)
        new_tokens = out[:, batch["input_ids"].shape[1]:] if adapter.generate_returns_prompt else out
        return adapter.decode(self.processor, new_tokens)

    def close(self) -> None:
        self.model = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
