"""``openai`` backend: any OpenAI-compatible chat-completions endpoint (GPT-4o, a vLLM server).

The transport is the ``openai`` SDK (one client, shared by the worker threads). Images go as
base64 data URLs, image first then text (the same turn every backend sends). Requests run with
bounded concurrency (``openai.max_concurrency`` threads); 408/409/425/429, 5xx, timeouts and
connection errors are retried with exponential back-off and full jitter (honouring
``Retry-After``), up to ``openai.max_retries``; any other 4xx fails at once with the server's
message. The retry policy is ours, not the SDK's (its client runs with ``max_retries=0``): the SDK's
back-off is fixed (0.5–8 s) and silent, while ours is configurable, counted in the usage summary,
and logs one redacted line per retry. The API key is read only from the environment variable
named by ``openai.api_key_env`` — never from the config file, and never from the SDK's own
environment variables. Token usage and the estimated cost (``openai.price_*_per_mtok``) are
counted and reported by :meth:`OpenAIVLM.usage_summary`.

``openai.batch.enabled``: each ``generate`` call becomes one (or, above the API's size limits,
several) Batch API job — see :mod:`mpa.vlm.openai_batch`.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import random
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import openai

from mpa.config import ModelConfig
from mpa.errors import MpaError, one_line
from mpa.redact import redact_text, register_secret
from mpa.vlm.base import VLM, GenParams, VLMRequest

log = logging.getLogger(__name__)

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class OpenAIRequestError(MpaError, RuntimeError):
    """A request the endpoint refused for good (or that kept failing after every retry); one line naming
    the endpoint and what to do."""


@dataclass
class Usage:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retries: int = 0
    failures: int = 0
    seconds_in_requests: float = 0.0
    cost_usd: float = 0.0
    batch_requests: int = 0  # answered through the Batch API (priced at openai.batch.price_factor)


def image_data_url(image: Any, fmt: str = "png") -> str:
    """A PIL image as a ``data:image/...;base64,`` URL."""
    buf = io.BytesIO()
    if fmt == "jpeg":
        image.convert("RGB").save(buf, format="JPEG", quality=90)
    else:
        image.save(buf, format="PNG")
    return f"data:image/{fmt};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def chat_messages(request: VLMRequest, fmt: str = "png", detail: str = "auto") -> list[dict]:
    image_url: dict[str, str] = {"url": image_data_url(request.image, fmt)}
    if detail != "auto":
        image_url["detail"] = detail
    return [
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": image_url}, {"type": "text", "text": request.prompt}],
        }
    ]


def is_loopback_host(host: str | None) -> bool:
    """``localhost``, ``127.0.0.0/8`` or ``::1``: traffic that never leaves the machine (or the pod)."""
    import ipaddress

    if not host:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_key_transport(base_url: str, allow_plain_http: bool = False) -> None:
    """Refuse to send an API key in clear text: plain ``http://`` only to loopback, or when allowed."""
    parts = urllib.parse.urlsplit(base_url)
    if parts.scheme == "http" and not allow_plain_http and not is_loopback_host(parts.hostname):
        raise OpenAIRequestError(
            f"refusing to send the API key over plain http to {redact_text(base_url)}: use an https:// base_url or "
            "a loopback address (localhost, 127.0.0.1), or set openai.allow_plain_http: true for an in-cluster "
            "server reached over a private network"
        )


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential back-off with full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
    return rng.uniform(0.0, min(cap, base * (2**attempt)))


def sampling_fields(params: GenParams, *, extended: bool) -> dict[str, Any]:
    """The request's decoding fields, every one explicit (so a server's defaults never fill a gap).

    ``extended``: the endpoint takes ``top_k``/``repetition_penalty``/``min_p`` (vLLM, SGLang); a
    vLLM server would otherwise take them from the model's ``generation_config.json``. Without it
    (api.openai.com), a setting the API cannot express is an error, never silently dropped.
    """
    fields: dict[str, Any] = {"temperature": 0.0 if params.greedy else params.temperature,
                              "top_p": 1.0 if params.greedy else params.top_p,
                              "presence_penalty": 0.0, "frequency_penalty": 0.0}
    top_k = 0 if params.greedy else params.top_k
    if extended:
        fields.update(top_k=top_k or -1, repetition_penalty=params.repetition_penalty, min_p=0.0)
    elif top_k or params.penalized:
        raise ValueError(
            f"this endpoint takes no top_k / repetition_penalty (asked: top_k={top_k}, repetition_penalty="
            f"{params.repetition_penalty}); set them to 0 / 1.0, or openai.extended_sampling: true for a "
            "vLLM-style server"
        )
    return fields


# the chat-completions fields the SDK's ``create`` names; the rest (vLLM's top_k, ...) goes in ``extra_body``
SDK_FIELDS = frozenset({"model", "messages", "max_tokens", "temperature", "top_p", "presence_penalty",
                        "frequency_penalty", "seed"})
# what a keyless endpoint (a local vLLM server) is sent: the SDK always sends a bearer token
NO_KEY = "EMPTY"


class OpenAIVLM(VLM):
    """Chat completions through the ``openai`` SDK with retries, bounded concurrency and usage accounting
    (or, with ``openai.batch.enabled``, through the Batch API)."""

    # what the Batch API path (:mod:`mpa.vlm.openai_batch`) raises and retries, handed over on the instance so
    # that module does not import this one back
    request_error = OpenAIRequestError
    retry_status = RETRY_STATUS

    def __init__(self, cfg: ModelConfig, *, sleep: Any = time.sleep) -> None:
        self.cfg = cfg
        self.settings = cfg.openai
        self.model_id = cfg.model
        self.served_model = cfg.served_name or cfg.model
        self.url = self.settings.base_url.rstrip("/") + "/chat/completions"
        self.shown_url = redact_text(self.url)  # what messages and logs name
        self._api_key = os.environ.get(self.settings.api_key_env) or None
        if self._api_key is None and "api.openai.com" in self.settings.base_url:
            raise OpenAIRequestError(
                f"no API key for {redact_text(self.settings.base_url)}: set the environment variable "
                f"{self.settings.api_key_env} "
                "(teacher.openai.api_key_env names it; keys never go in the config file)"
            )
        if self._api_key is not None:
            register_secret(self._api_key)  # never shown, even when a server echoes it back
            check_key_transport(self.settings.base_url, self.settings.allow_plain_http)
        self.usage = Usage()
        self._lock = threading.Lock()
        self._sleep = sleep
        self._rng = random.Random()
        # the key is always passed explicitly, so the SDK never picks OPENAI_API_KEY up for an endpoint whose
        # api_key_env names another variable (or none is set): that key would bypass the transport check
        self.client = openai.OpenAI(api_key=self._api_key or NO_KEY, base_url=self.settings.base_url,
                                    timeout=self.settings.timeout_s, max_retries=0)
        b = self.settings.batch
        self.batch_dir: Path | None = Path(b.state_dir) if b.state_dir else None
        if b.enabled and cfg.batch_size < 1000:
            log.warning("openai.batch is on with batch_size=%d: every %d requests become one batch job that may "
                        "take up to 24 h; set batch_size to thousands (e.g. 10000)", cfg.batch_size, cfg.batch_size)

    def bind_run_dir(self, directory: str | Path) -> None:
        """Where the stage writes: batch ids are kept in ``<directory>/openai-batches`` (unless
        ``openai.batch.state_dir`` names another place), so a re-run resumes the same batches."""
        if self.settings.batch.state_dir is None:
            self.batch_dir = Path(directory) / "openai-batches"

    # -- one request --------------------------------------------------------------------------
    @property
    def extended_sampling(self) -> bool:
        """Does the endpoint take ``top_k`` and ``repetition_penalty`` (vLLM-style servers)?"""
        if self.settings.extended_sampling is not None:
            return self.settings.extended_sampling
        return "api.openai.com" not in self.settings.base_url

    def _body(self, request: VLMRequest, params: GenParams) -> dict:
        s = self.settings
        body: dict[str, Any] = {
            "model": self.served_model,
            "messages": chat_messages(request, s.image_format, s.image_detail),
            "max_tokens": params.max_new_tokens,
            **sampling_fields(params, extended=self.extended_sampling),
        }
        if params.seed is not None and s.send_seed:
            body["seed"] = params.seed
        return body

    def _send(self, body: dict) -> dict:
        """One POST to chat/completions through the SDK; the raw JSON object it answered."""
        known = {k: v for k, v in body.items() if k in SDK_FIELDS}
        extra = {k: v for k, v in body.items() if k not in SDK_FIELDS}
        raw = self.client.chat.completions.with_raw_response.create(**known, extra_body=extra or None)
        resp = raw.http_response
        return self.parse_json(resp.content, resp.headers.get("Content-Type", "no content type"))

    def parse_json(self, body: bytes, kind: str) -> dict:
        try:
            payload = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            start = one_line(redact_text(body[:120].decode("utf-8", "replace")), 80)
            raise OpenAIRequestError(
                f"{self.shown_url} answered with a body that is not JSON ({kind}: {start!r}); "
                "base_url must be an OpenAI-compatible API root ending in /v1") from None
        if not isinstance(payload, dict):
            raise OpenAIRequestError(f"{self.shown_url} answered JSON that is not an object; base_url must be an "
                                     "OpenAI-compatible API root ending in /v1")
        return payload

    def refused(self, code: int, detail: str) -> OpenAIRequestError:
        """The one-line error for a 4xx the endpoint will not change its mind about."""
        s = self.settings
        if code in (401, 403):
            todo = (f"put a valid key in ${s.api_key_env}" if self._api_key else
                    f"set the environment variable {s.api_key_env} (teacher.openai.api_key_env names it)")
            return OpenAIRequestError(f"{self.shown_url} refused the API key (HTTP {code}: {detail}); {todo}")
        if code == 404:
            return OpenAIRequestError(f"{self.shown_url} answered HTTP 404 ({detail}); check base_url (the API root, "
                                      f"ending in /v1) and the model name {self.served_model!r} (served_name)")
        return OpenAIRequestError(f"{self.shown_url} refused the request (HTTP {code}: {detail}); check the model name "
                                  f"{self.served_model!r} and the teacher.openai settings")

    def content_of(self, payload: dict) -> str:
        """``choices[0].message.content`` of an answer, stripped; a one-line error when it has none."""
        try:
            content = payload["choices"][0]["message"]["content"]
            if content is not None and not isinstance(content, str):
                raise TypeError(type(content).__name__)
            return (content or "").strip()
        except (KeyError, IndexError, TypeError):
            with self._lock:
                self.usage.failures += 1
            raise OpenAIRequestError(
                f"{self.shown_url} answered without choices[0].message.content (top-level keys: "
                f"{', '.join(sorted(map(str, payload))) or 'none'}); base_url must be an OpenAI-compatible "
                "chat-completions API") from None

    def complete(self, request: VLMRequest, params: GenParams) -> str:
        """One chat completion, retried on transient failures."""
        s = self.settings
        body = self._body(request, params)
        last = ""
        for attempt in range(s.max_retries + 1):
            t = time.perf_counter()
            retry_after: float | None = None
            try:
                payload = self._send(body)
            except openai.APIStatusError as exc:
                detail = one_line(redact_text(exc.response.text), 500) or "no body"
                if exc.status_code not in RETRY_STATUS:
                    with self._lock:
                        self.usage.failures += 1
                    raise self.refused(exc.status_code, detail) from None
                last = f"HTTP {exc.status_code}: {detail}"
                ra = exc.response.headers.get("Retry-After")
                if ra:
                    try:
                        retry_after = float(ra)
                    except ValueError:
                        retry_after = None
            except OpenAIRequestError:
                with self._lock:
                    self.usage.failures += 1
                raise
            except openai.APITimeoutError:
                last = f"no answer within timeout_s={s.timeout_s:g} s"
            except openai.APIConnectionError as exc:
                cause = exc.__cause__ or exc
                last = one_line(redact_text(f"{type(cause).__name__}: {cause}"), 200)
            else:
                self.account(payload, time.perf_counter() - t)
                return self.content_of(payload)
            if attempt == s.max_retries:
                break
            delay = backoff_delay(attempt, s.backoff_base_s, s.backoff_max_s, self._rng)
            if retry_after is not None:
                delay = max(delay, min(retry_after, s.backoff_max_s))
            with self._lock:
                self.usage.retries += 1
            log.warning("%s: %s; retry %d/%d in %.2fs", self.shown_url, last, attempt + 1, s.max_retries, delay)
            self._sleep(delay)
        with self._lock:
            self.usage.failures += 1
        raise OpenAIRequestError(
            f"{self.shown_url} failed after {s.max_retries + 1} attempts (last: {last}); check that the server is up "
            "and healthy, or raise teacher.openai.max_retries / timeout_s — re-running resumes where it stopped"
        )

    def account(self, payload: dict, seconds: float, *, batch: bool = False) -> None:
        """Count one answer's tokens and cost (Batch API answers at ``openai.batch.price_factor``)."""
        u = payload.get("usage") or {}
        s = self.settings
        prompt, completion = int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0)
        factor = s.batch.price_factor if batch else 1.0
        with self._lock:
            self.usage.requests += 1
            self.usage.batch_requests += int(batch)
            self.usage.prompt_tokens += prompt
            self.usage.completion_tokens += completion
            self.usage.seconds_in_requests += seconds
            cost = prompt * s.price_input_per_mtok + completion * s.price_output_per_mtok
            self.usage.cost_usd += factor * cost / 1e6

    # -- the VLM interface --------------------------------------------------------------------
    def generate(self, requests: list[VLMRequest], params: GenParams) -> list[str]:
        if not requests:
            return []
        if params.seed is not None and not params.greedy:
            # one seed per request: a shared seed would make the k samples of one image identical
            per = [replace(params, seed=params.seed + i) for i in range(len(requests))]
        else:
            per = [params] * len(requests)
        if self.settings.batch.enabled:
            from mpa.vlm.openai_batch import run_batch

            answers = run_batch(self, [self._body(r, p) for r, p in zip(requests, per, strict=True)])
            return [self.content_of(a) for a in answers]
        n = min(self.settings.max_concurrency, len(requests))
        if n == 1:
            return [self.complete(r, p) for r, p in zip(requests, per, strict=True)]
        with ThreadPoolExecutor(n, thread_name_prefix="mpa-openai") as pool:
            return list(pool.map(self.complete, requests, per))

    def usage_summary(self) -> dict[str, Any]:
        return {"endpoint": redact_text(self.settings.base_url), "model": self.served_model, **asdict(self.usage)}

    def close(self) -> None:
        if self.usage.requests:
            log.info("openai usage: %s", self.usage_summary())
        self.client.close()
