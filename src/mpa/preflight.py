"""Preflight: before any weight is loaded or any API call is paid for, prove the run can finish.

In seconds and without loading a model it checks what would otherwise fail hours in:

- both models resolvable: a local checkpoint has ``config.json`` and processor/tokenizer files; an ``s3://``
  prefix holds ``config.json``; a Hugging Face id is in the local HF cache or the hub answers for it
  (metadata only, nothing is downloaded); an ``openai`` endpoint answers ``/models`` with the key and
  serves the model; ``models:/`` references need the tracking server;
- the image source, the benchmark files, the run directory (``s3://``: bucket reachable and writable with
  the given credentials) and the MLflow tracking server;
- the output marks: a stage output already in ``out`` that was made with other settings (another learning
  rate, another teacher) is refused now, not after PA and PI re-checked every record.

A failure is one line, ``preflight: <setting>: <what is wrong and what to do>``. ``mpa run``, every stage
command and the pipeline's prepare step call :func:`preflight` first.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from mpa.errors import MpaError, one_line

if TYPE_CHECKING:
    from mpa.config import ModelConfig, RunConfig

log = logging.getLogger(__name__)

#: a checkpoint's processor: one of these next to config.json (image processor, or at least the tokenizer)
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json", "tokenizer_config.json", "tokenizer.json")
STAGES = ("annotate", "identify", "level", "evaluate")
TIMEOUT_S = 10.0


class PreflightError(MpaError, ValueError):
    """The run cannot finish as configured; the message names the setting."""


def _fail(setting: str, message: str) -> PreflightError:
    from mpa.redact import redact_text

    return PreflightError(f"preflight: {setting}: {redact_text(one_line(message, 400))}")


# ----------------------------------------------------------------------------- models
def check_model(setting: str, mc: ModelConfig) -> None:
    """``setting`` (``teacher`` / ``student``) names a model that can be loaded or called."""
    if mc.backend == "openai":
        check_endpoint(setting, mc)
        return
    ref = mc.model
    if ref.startswith("models:/"):
        return  # resolved through the registry: the tracking check covers the server
    from mpa import storage

    if storage.is_s3(ref):
        cfg_uri = storage.join(ref, "config.json")
        try:
            found = storage.exists(cfg_uri)
        except storage.StorageError as exc:
            raise _fail(f"{setting}.model", str(exc)) from None
        if not found:
            raise _fail(f"{setting}.model", f"no config.json under {ref}: not a Hugging Face checkpoint prefix")
        return
    path = Path(ref).expanduser()
    looks_local = path.is_absolute() or ref.startswith((".", "~")) or path.exists() or ref.count("/") != 1
    if looks_local:
        if not path.is_dir():
            raise _fail(f"{setting}.model", f"model directory not found: {ref} (give an HF id, a local dir or "
                        "an s3:// prefix)")
        if not (path / "config.json").is_file():
            raise _fail(f"{setting}.model", f"{ref} is not a Hugging Face checkpoint (no config.json in it)")
        if not any((path / f).is_file() for f in PROCESSOR_FILES):
            raise _fail(f"{setting}.model", f"{ref} has no processor or tokenizer files ({', '.join(PROCESSOR_FILES)}"
                        "): save the processor with the model (processor.save_pretrained)")
        return
    _check_hub_id(setting, ref, mc.revision)


def _check_hub_id(setting: str, repo: str, revision: str | None) -> None:
    """An HF id: in the local HF cache, or (online) the hub answers for its config.json (metadata only)."""
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(repo, "config.json", revision=revision)
    if isinstance(cached, str):
        return
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    if offline:
        raise _fail(f"{setting}.model", f"{repo} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set: "
                    "download it first (hf download) or give a local directory")
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        get_hf_file_metadata(hf_hub_url(repo, "config.json", revision=revision), timeout=TIMEOUT_S)
    except GatedRepoError:
        raise _fail(f"{setting}.model", f"{repo} is gated: accept its terms on the hub and set HF_TOKEN") from None
    except RevisionNotFoundError:
        raise _fail(f"{setting}.revision", f"{repo} has no revision {revision!r}") from None
    except RepositoryNotFoundError:
        raise _fail(f"{setting}.model", f"no model {repo!r} on the Hugging Face hub (private? set HF_TOKEN)") from None
    except Exception as exc:  # noqa: BLE001 - connection errors come in many types; all mean the same here
        raise _fail(f"{setting}.model", f"{repo} is not in the local Hugging Face cache and the hub cannot be "
                    f"reached ({type(exc).__name__}): download it where the hub is reachable, or give a local "
                    "directory or s3:// prefix") from None


def check_endpoint(setting: str, mc: ModelConfig) -> None:
    """An OpenAI-compatible endpoint: the key is there (when needed) and goes only over a safe transport,
    ``/models`` answers with it, and the served model is listed (when the server lists models)."""
    from mpa.redact import redact_text, register_secret
    from mpa.vlm.openai_backend import OpenAIRequestError, check_key_transport

    s = mc.openai
    base = s.base_url.rstrip("/")
    key = os.environ.get(s.api_key_env) or None
    if key is None and "api.openai.com" in base:
        raise _fail(f"{setting}.openai.api_key_env", f"no API key for {base}: set the environment variable "
                    f"{s.api_key_env}")
    if key:
        register_secret(key)
        try:
            check_key_transport(base, s.allow_plain_http)
        except OpenAIRequestError as exc:
            raise _fail(f"{setting}.openai.base_url", str(exc)) from None
    import openai

    client = openai.OpenAI(base_url=base, api_key=key or "EMPTY", max_retries=0, timeout=min(TIMEOUT_S, s.timeout_s))
    try:
        ids = [m.id for m in client.models.list()]
    except openai.APIStatusError as exc:
        if exc.status_code in (401, 403):
            raise _fail(f"{setting}.openai.api_key_env", f"{redact_text(base)} refused the key in ${s.api_key_env} "
                        f"(HTTP {exc.status_code})") from None
        if exc.status_code == 404:
            raise _fail(f"{setting}.openai.base_url", f"{redact_text(base)}/models is not there (HTTP 404): "
                        "base_url must be an OpenAI-compatible API root ending in /v1") from None
        return  # the server answers; a listing it does not offer is not ours to judge
    except openai.APIConnectionError as exc:
        reason = exc.__cause__ or exc
        raise _fail(f"{setting}.openai.base_url", f"{redact_text(base)} cannot be reached ({reason}): start the "
                    "server or fix the URL") from None
    except (openai.OpenAIError, ValueError, TypeError):
        return  # an answer that is not a model list: the backend's own checks name what is wrong
    finally:
        client.close()
    served = mc.served_name or mc.model
    if ids and served not in ids:
        field = "served_name" if mc.served_name else "model"
        raise _fail(f"{setting}.{field}", f"{redact_text(base)} does not serve {served!r} (it serves: "
                    f"{', '.join(map(str, ids[:5]))})")


# ----------------------------------------------------------------------------- data, storage, tracking
def check_images(source: str, setting: str = "data.images") -> None:
    from mpa.data.sources import parse_source

    spec = parse_source(source)
    if spec["kind"] == "bench":
        check_path(setting, spec["annotations"])
        return
    if spec["kind"] == "hf":
        return  # hf:… datasets are listed by the datasets library (and its cache) when PA starts
    if spec["kind"] == "s3":
        _bucket(setting, source, write=False)
    elif not Path(source).expanduser().is_dir():
        raise _fail(setting, f"image directory not found: {source}")


def check_path(setting: str, path: str | None) -> None:
    from mpa import storage

    if not path:
        return
    if storage.is_s3(path):
        try:
            found = storage.exists(path)
        except storage.StorageError as exc:
            raise _fail(setting, str(exc)) from None
        if not found:
            raise _fail(setting, f"{path} does not exist")
    elif not Path(path).expanduser().exists():
        raise _fail(setting, f"file not found: {path}")


def _bucket(setting: str, uri: str, write: bool) -> None:
    from mpa import storage

    try:
        storage.check_bucket(uri, write=write)
    except storage.StorageError as exc:
        raise _fail(setting, str(exc)) from None


def check_out(out: str) -> None:
    """The run directory can be written: an ``s3://`` bucket reachable and writable, a local directory creatable."""
    from mpa import storage

    if storage.is_s3(out):
        _bucket("out", out, write=True)
        return
    p = Path(out).expanduser()
    while not p.exists() and p != p.parent:
        p = p.parent
    if not p.is_dir() or not os.access(p, os.W_OK):
        raise _fail("out", f"{out} cannot be created: {p} is not a writable directory")


def check_tracking(cfg: RunConfig) -> None:
    uri = cfg.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI")
    needs = cfg.tracking.enabled or any(m.model.startswith("models:/") for m in (cfg.teacher, cfg.student))
    if not (uri and needs):
        return
    from mpa.tracking.server import check_reachable

    try:
        check_reachable(uri)
    except MpaError as exc:
        raise _fail("tracking.uri", str(exc)) from None


# ----------------------------------------------------------------------------- stage marks
def check_marks(cfg: RunConfig, out_dir: str | Path, stages: Iterable[str] = STAGES) -> None:
    """A stage output already in ``out_dir`` made with other settings is refused now (unless ``force``),
    naming the settings that differ — not after the stages before it re-checked their records.

    The keys are the stages' own (``annotate_mark_settings``, ``identify_mark_settings``,
    ``level_mark_settings``); inputs (the earlier stage's output digests) are left to the stage itself.
    """
    if cfg.force:
        return
    from mpa.records import StageRun, read_mark

    out = Path(out_dir)
    for stage, output, settings, present in _mark_candidates(cfg, out, set(stages)):
        old = read_mark(output)
        if old is None or not any(p.exists() for p in present):
            continue
        new = StageRun(output, stage, settings=settings).mark  # builds the mark only; no lock, nothing written
        changed = [c for c in old.changes(new) if not c.startswith("input ")]
        if changed:
            shown = ", ".join(changed[:6]) + (f" and {len(changed) - 6} more" if len(changed) > 6 else "")
            raise _fail("out", f"{output} was made by {stage} with other settings (changed: {shown}); write to a "
                        "new --out (the shared result cache keeps the teacher's answers) or pass --force to redo it")


def _mark_candidates(cfg: RunConfig, out: Path, stages: set[str]):
    from mpa.config import task_for

    task = task_for(cfg)
    if "annotate" in stages:
        from mpa.sharding import parse_shard
        from mpa.stages.annotate import annotate_mark_settings

        output = out / "annotations.jsonl"
        _, settings = annotate_mark_settings(
            task=task, cfg=cfg.annotate, teacher=cfg.teacher, seed=cfg.seed, max_pixels=cfg.teacher.max_pixels,
            images=cfg.data.images, max_images=cfg.data.max_images,
            shard=parse_shard(cfg.data.shard) if cfg.data.shard else None)
        yield "annotate", output, settings, [output]
    if "identify" in stages:
        from mpa.stages.identify import identify_mark_settings

        output = out / "pi"
        yield "identify", output, identify_mark_settings(task, cfg.identify, cfg.teacher, cfg.student), [output]
    if "level" in stages:
        from mpa.stages.level import level_mark_settings

        output = out / "level"
        present = [output / "checkpoint", output / "level_summary.json", output / "train_log.jsonl", output / "resume"]
        yield "level", output, level_mark_settings(cfg.student, task, cfg.train), present


# ----------------------------------------------------------------------------- the whole check
def preflight(cfg: RunConfig, *, stages: Iterable[str] = STAGES, out_dir: str | Path | None = None,
              models: Iterable[str] = ("teacher", "student"), output: bool = True) -> float:
    """Every check a run of ``stages`` needs; raises :class:`PreflightError` (one line) on the first failure.

    ``out_dir``: the local run directory whose marks are compared (default ``cfg.out`` when local; an
    ``s3://`` out skips the marks: that run's working copy is compared by the stages themselves).
    ``output=False`` (a Kubeflow step, whose outputs are artifacts) checks neither ``out`` nor marks.
    Returns the seconds it took.
    """
    from mpa import storage

    refs = [cfg.teacher.model, cfg.student.model, cfg.data.images, cfg.out, cfg.evaluate.annotations or "",
            cfg.evaluate.questions or "", cfg.evaluate.images or ""]
    if not any(storage.is_s3(r) or "s3://" in r for r in refs):
        return _preflight(cfg, set(stages), out_dir, models, output)
    from mpa.orchestrate.local import storage_settings

    previous = storage.settings()
    storage.configure(storage_settings(cfg))  # the run's own endpoint and credentials, as the run will use them
    try:
        return _preflight(cfg, set(stages), out_dir, models, output)
    finally:
        storage.configure(previous)


def _preflight(cfg: RunConfig, stages: set[str], out_dir: str | Path | None, models: Iterable[str],
               output: bool) -> float:
    from mpa import storage

    start = time.perf_counter()
    for role in models:
        check_model(role, getattr(cfg, role))
    if "annotate" in stages:
        check_images(cfg.data.images)
    if "evaluate" in stages and cfg.evaluate.benchmark:
        check_path("evaluate.annotations", cfg.evaluate.annotations)
        check_path("evaluate.questions", cfg.evaluate.questions)
        if cfg.evaluate.images:
            check_path("evaluate.images", cfg.evaluate.images)
    if cfg.task.prompt_file is not None:
        check_path("task.prompt_file", str(cfg.task.prompt_file))
    check_tracking(cfg)
    if output:
        check_out(cfg.out)
        if out_dir is None and not storage.is_s3(cfg.out):
            out_dir = cfg.out
        if out_dir is not None:
            check_marks(cfg, out_dir, stages)
    took = time.perf_counter() - start
    log.info("preflight passed in %.1f s", took)
    return took
