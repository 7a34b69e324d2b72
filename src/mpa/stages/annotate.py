"""PA — Pseudo Annotator: the teacher writes task-specific question+answer pairs per image."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mpa.cache import ResultCache, cache_key, model_identity, text_digest
from mpa.config import AnnotateConfig, RunConfig, task_for
from mpa.data.images import LoadedImage, UnreadableImage, load_image
from mpa.data.sources import list_images
from mpa.errors import MpaError, one_line
from mpa.parsing import parse_qa
from mpa.records import Annotation, JsonlLog, StageRun
from mpa.tasks import Task, max_answer_words_for
from mpa.ui import progress_bar, summary_table
from mpa.vlm.base import VLM, GenParams, VLMRequest, bind_run_dir

log = logging.getLogger(__name__)


@dataclass
class AnnotateSummary:
    n_images: int
    n_unreadable: int
    n_attempts: int
    n_parsed: int
    n_duplicates: int
    n_resumed: int
    seconds: float
    failures: dict[str, int]
    n_source_images: int | None = None
    shard: str | None = None
    cache_hits: int = 0
    cache_misses: int = 0
    generated: int = 0
    engine_seconds: float = 0.0
    extra: dict = field(default_factory=dict)


# --- inputs a model cannot take: skipped and recorded, never the end of a stage ---

# Qwen2-VL-style processors refuse images whose long side exceeds 200x the short side (and the
# others gain nothing from a sliver); checked before any model call.
MAX_ASPECT_RATIO = 200.0
# A prompt (instruction + question) longer than this is skipped and recorded: a 100,000-character
# question made the HF backend try to allocate 32 GB. Real VQA questions are a few hundred characters.
MAX_PROMPT_CHARS = 8192
# how the ``error`` of a record made for a bad input starts (summaries count them as unreadable)
BAD_INPUT_PREFIXES = ("unreadable image", "unusable image", "rejected by the model's processor", "prompt too long")


def prompt_problem(prompt: str, limit: int = MAX_PROMPT_CHARS) -> str | None:
    """Why a prompt cannot be sent (too long), or None."""
    if len(prompt) > limit:
        return f"prompt too long: {len(prompt)} characters (the limit is {limit})"
    return None


def generate_skipping_bad(vlm: VLM, requests: list[VLMRequest], params: GenParams) -> tuple[list[str | None],
                                                                                              dict[int, str]]:
    """``vlm.generate`` on a batch; a request the model's processor rejects (``ValueError``) is left out.

    On a rejected batch, its halves are retried (so a bad input costs a few extra calls, and the good
    inputs of its batch are kept). Returns the texts (None where rejected) and ``{index: reason}``.
    An error that every request of a batch of several hits is not about one input: it is raised.
    """
    try:
        return list(vlm.generate(requests, params)), {}
    except MpaError:
        raise
    except ValueError as exc:
        if len(requests) == 1:
            return [None], {0: f"rejected by the model's processor: {one_line(str(exc), 200)}"}
        mid = len(requests) // 2
        left, bad_l = generate_skipping_bad(vlm, requests[:mid], params)
        right, bad_r = generate_skipping_bad(vlm, requests[mid:], params)
        if len(bad_l) + len(bad_r) == len(requests):
            raise
        for i, reason in bad_r.items():
            bad_l[mid + i] = reason
        return left + right, bad_l


# --- image preparation: decode + resize to the model's pixel cap, in worker processes ---

def smart_resize(height: int, width: int, factor: int = 28, min_pixels: int = 56 * 56,
                 max_pixels: int = 28 * 28 * 1280) -> tuple[int, int]:
    """Qwen2-VL's resize rule: sides multiples of ``factor``, area within [min_pixels, max_pixels]."""
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def prepare_image(uri: str, max_pixels: int | None = None, min_pixels: int | None = None) -> LoadedImage:
    """Read, hash and decode one image; if a pixel cap is given, resize it to what the model will see.

    The size is Qwen2-VL's ``smart_resize`` of the original, so the engine's own processor finds
    nothing left to resize (and the bytes sent to an API shrink). Raises :class:`UnreadableImage`.
    """
    img = load_image(uri)
    w, h = img.image.size
    if max(w, h) / max(1, min(w, h)) > MAX_ASPECT_RATIO:
        raise UnreadableImage(f"unusable image: {uri} is {w}x{h}, an aspect ratio above {MAX_ASPECT_RATIO:g}:1 "
                              "that vision processors refuse")
    if max_pixels:
        from PIL import Image

        w, h = img.image.size
        nh, nw = smart_resize(h, w, min_pixels=min_pixels or 56 * 56, max_pixels=max_pixels)
        if (nw, nh) != (w, h) and w * h > max_pixels:
            img.image = img.image.resize((nw, nh), Image.Resampling.BICUBIC)
    return img


def prepare_or_error(uri: str, max_pixels: int | None = None, min_pixels: int | None = None) -> LoadedImage | str:
    """:func:`prepare_image`, or the reason the image cannot be used (unreadable, unusable, no permission).

    An object-store outage is not a bad image: :class:`~mpa.storage.StorageError` propagates.
    """
    from mpa.storage import StorageError

    try:
        return prepare_image(uri, max_pixels, min_pixels)
    except UnreadableImage as exc:
        text = str(exc)
        return text if text.startswith("unusable image") else f"unreadable image: {text}"
    except StorageError:
        raise
    except OSError as exc:  # PermissionError, IsADirectoryError, EIO...: this file, not the run
        return f"unreadable image: {uri} ({type(exc).__name__}: {exc.strerror or exc})"


class ImagePrefetcher:
    """Decode and resize images in ``workers`` processes, one batch ahead of the engine.

    With ``workers == 0`` everything happens inline. Yields ``(uri, LoadedImage | error)`` per
    URI, in order, for each batch of ``batch_size``.
    """

    def __init__(self, workers: int = 0, max_pixels: int | None = None, min_pixels: int | None = None) -> None:
        self.workers = workers
        self.max_pixels = max_pixels
        self.min_pixels = min_pixels
        self.seconds = 0.0

    def batches(self, uris: list[str], batch_size: int) -> Iterator[list[tuple[str, LoadedImage | str]]]:
        chunks = [uris[b: b + batch_size] for b in range(0, len(uris), batch_size)]
        if self.workers <= 0:
            for chunk in chunks:
                t = time.perf_counter()
                res = [(u, prepare_or_error(u, self.max_pixels, self.min_pixels)) for u in chunk]
                self.seconds += time.perf_counter() - t
                yield res
            return
        import multiprocessing as mp

        with ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn")) as pool:
            pending: list[list[Future]] = []
            for j in range(min(2, len(chunks))):
                pending.append(self._submit(pool, chunks[j]))
            for j, chunk in enumerate(chunks):
                futs = pending.pop(0)
                if j + 2 < len(chunks):
                    pending.append(self._submit(pool, chunks[j + 2]))
                t = time.perf_counter()
                res = [(u, f.result()) for u, f in zip(chunk, futs, strict=True)]
                self.seconds += time.perf_counter() - t  # time the engine waited for images
                yield res

    def _submit(self, pool: Executor, chunk: list[str]) -> list[Future]:
        return [pool.submit(prepare_or_error, u, self.max_pixels, self.min_pixels) for u in chunk]


def pixel_cap(vlm: VLM, max_pixels: int | None) -> tuple[int | None, int | None]:
    cfg = getattr(vlm, "cfg", None)
    if max_pixels is None and cfg is not None:
        max_pixels = cfg.max_pixels
    return max_pixels, (cfg.min_pixels if cfg is not None else None)


def _pa_params(cfg: AnnotateConfig) -> GenParams:
    return GenParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                     top_k=cfg.top_k, repetition_penalty=cfg.repetition_penalty)


def annotate_mark_settings(*, task: Task, cfg: AnnotateConfig, teacher: object, seed: int, max_pixels: int | None,
                           images: str | list[str], max_images: int | None,
                           shard: tuple[int, int] | None) -> tuple[dict, dict]:
    """PA's result-cache key parts and what its output is keyed by (the cache key's parts, and what selects
    the images and makes records). ``teacher`` is a VLM or a model config (the identity is the same);
    :mod:`mpa.preflight` compares these with an existing mark before any model is loaded."""
    base_key = {"stage": "pa", "task": task.name, "prompt_version": task.prompt_version,
                "prompt": text_digest(task.pa_prompt), **model_identity(teacher), "params": asdict(_pa_params(cfg)),
                "seed": seed, "max_pixels": max_pixels}
    settings = {**base_key, "qa_per_image": cfg.qa_per_image, "dedupe_questions": cfg.dedupe_questions,
                "max_answer_words": max_answer_words_for(task, cfg.max_answer_words),
                "images": images, "max_images": max_images, "shard": list(shard) if shard else None}
    if not cfg.strip_answer_period:  # only when set: runs made before the setting existed stay resumable
        settings["strip_answer_period"] = False
    return base_key, settings


def _question_key(q: str) -> str:
    return " ".join(q.lower().split()).rstrip("?").strip()


def annotate(
    *,
    images: str | list[str],
    teacher: VLM,
    task: Task,
    cfg: AnnotateConfig,
    out_path: str | Path,
    batch_size: int = 8,
    max_images: int | None = None,
    seed: int = 0,
    show: bool = True,
    shard: str | tuple[int, int] | None = None,
    cache: ResultCache | None = None,
    preprocess_workers: int = 0,
    max_pixels: int | None = None,
    force: bool = False,
) -> AnnotateSummary:
    """Run PA over every image in ``images``; append to ``out_path`` (resumable).

    ``images`` is an image source (listed with :func:`mpa.data.images.list_images`) or the URIs
    themselves, already listed (e.g. a KFP shard's part of the run spec: nothing is listed again).

    ``out_path`` is keyed by the teacher, prompt, decoding and image selection (:class:`StageRun`): a
    re-run with other settings is refused (:class:`~mpa.records.StageMismatch`) unless ``force``,
    which discards the old annotations first. Images a model cannot take (unreadable, no permission,
    extreme aspect ratio, rejected by its processor) are recorded with the reason and skipped.

    ``shard="i/n"`` keeps only shard i of n (by content hash, :mod:`mpa.sharding`); ``cache``
    answers attempts already made with the same image, task, prompt, model and decoding;
    ``preprocess_workers`` processes decode and resize images to ``max_pixels`` (default: the
    teacher's configured cap) one batch ahead of the engine.
    """
    from mpa.sharding import parse_shard, select_shard

    start = time.perf_counter()
    all_uris = list_images(images, max_images) if isinstance(images, str) else list(images)
    shard_t = parse_shard(shard) if isinstance(shard, str) else shard
    uris = select_shard(all_uris, shard_t) if shard_t else all_uris
    uri_set = set(uris)
    max_words = max_answer_words_for(task, cfg.max_answer_words)
    params = _pa_params(cfg)
    k = cfg.qa_per_image
    mp_, minp = pixel_cap(teacher, max_pixels)
    prefetch = ImagePrefetcher(preprocess_workers, mp_, minp)
    too_long = prompt_problem(task.pa_prompt)
    if too_long:
        raise ValueError(f"the PA prompt of task {task.name!r} cannot be used: {too_long}; shorten task.prompt_file")
    base_key, settings = annotate_mark_settings(task=task, cfg=cfg, teacher=teacher, seed=seed, max_pixels=mp_,
                                                images=images, max_images=max_images, shard=shard_t)
    hits = misses = generated = 0
    engine_s = 0.0
    bind_run_dir(teacher, Path(out_path).parent)  # batch ids (openai.batch) live beside the output
    with StageRun(out_path, "annotate", settings=settings, force=force) as run, \
            JsonlLog(out_path, group_of=lambda r: r["image"], group_size=lambda r: k) as out:
        todo = [u for u in uris if u not in out.done]
        n_resumed = len(uris) - len(todo)
        if todo and run.done:
            run.reopen()  # more images than when it was finished: unfinished again until they are done
        with progress_bar("PA annotate", total=len(uris), completed=n_resumed) as advance:
            for batch in prefetch.batches(todo, batch_size):
                loaded: list[LoadedImage] = []
                groups = []
                for uri, item in batch:
                    if isinstance(item, str):
                        log.warning("%s", item)
                        groups.append([_failed(uri, "", task, teacher, i, item) for i in range(k)])
                    else:
                        loaded.append(item)
                keys = [cache_key(**base_key, image=img.sha256, k=i) for img in loaded for i in range(k)]
                cached = cache.get_many(keys) if cache is not None else {}
                miss = [j for j, key in enumerate(keys) if key not in cached]
                requests = [VLMRequest(loaded[j // k].image, task.pa_prompt) for j in miss]
                # seeded by the images' contents, so a run samples the same wherever its files live
                content = [img.sha256 for img in loaded]
                batch_params = GenParams(**{**asdict(params), "seed": seed * 1_000_003 + hash_seed(content)})
                t = time.perf_counter()
                fresh, rejected = generate_skipping_bad(teacher, requests, batch_params) if requests else ([], {})
                engine_s += time.perf_counter() - t
                generated += len(requests)
                texts = [cached.get(key, "") for key in keys]
                bad: dict[int, str] = {}  # index in ``loaded`` -> why the model could not take it
                for r_i, (j, txt) in enumerate(zip(miss, fresh, strict=True)):
                    if r_i in rejected:
                        bad[j // k] = rejected[r_i]
                    else:
                        texts[j] = txt or ""
                if cache is not None:
                    cache.put_many({keys[j]: txt for j, txt in zip(miss, fresh, strict=True) if txt is not None})
                    cache.stats.count("pa", len(keys) - len(miss), len(miss))
                    hits += len(keys) - len(miss)
                    misses += len(miss)
                for j, img in enumerate(loaded):
                    if j in bad:
                        log.warning("%s: %s", img.uri, bad[j])
                        groups.append([_failed(img.uri, img.sha256, task, teacher, i, bad[j]) for i in range(k)])
                        continue
                    groups.append(_records_for_image(img.uri, img.sha256, texts[j * k:(j + 1) * k],
                                                     task, teacher, max_words, cfg.dedupe_questions,
                                                     cfg.strip_answer_period))
                for group in groups:
                    out.append_group(group)
                advance(len(batch))
        records = [Annotation.model_validate(r) for r in out.records if r["image"] in uri_set]
        run.finish([out_path])
    failures: dict[str, int] = {}
    for r in records:
        if not r.parse_ok and r.error:
            reason = r.error.split(":")[0].split(" (")[0]
            failures[reason] = failures.get(reason, 0) + 1
    summary = AnnotateSummary(
        n_images=len(uris),
        n_unreadable=len({r.image for r in records if (r.error or "").startswith(BAD_INPUT_PREFIXES)}),
        n_attempts=len(records),
        n_parsed=sum(r.parse_ok for r in records),
        n_duplicates=failures.get("duplicate question", 0),
        n_resumed=n_resumed,
        seconds=time.perf_counter() - start,
        failures=failures,
        n_source_images=len(all_uris) if shard_t else None,
        shard=f"{shard_t[0]}/{shard_t[1]}" if shard_t else None,
        cache_hits=hits,
        cache_misses=misses,
        generated=generated,
        engine_seconds=engine_s,
        extra={"image_wait_seconds": round(prefetch.seconds, 3)},
    )
    if show:
        summary_table("PA — pseudo-annotation", {k_: v for k_, v in asdict(summary).items()
                                                  if k_ not in ("failures", "extra") and v is not None}
                      | {f"failed: {k_}": v for k_, v in failures.items()})
    return summary


def hash_seed(items: list[str]) -> int:
    """A stable per-batch seed (Python's hash() is salted per process)."""
    import hashlib

    return int(hashlib.sha256("\n".join(items).encode()).hexdigest()[:8], 16)


def _failed(uri: str, sha: str, task: Task, teacher: VLM, k: int, error: str) -> Annotation:
    return Annotation(
        id=record_id(uri, sha, k), image=uri, image_sha256=sha, task=task.name,
        prompt_version=task.prompt_version, teacher=teacher.model_id, k=k, error=error,
    )


def record_id(uri: str, sha: str, k: int) -> str:
    """Stable id of attempt ``k`` on one image file (path and content both count)."""
    import hashlib

    digest = hashlib.sha256(f"{uri}\n{sha}".encode()).hexdigest()
    return f"{digest[:16]}-{k}"


def _records_for_image(
    uri: str, sha: str, texts: list[str], task: Task, teacher: VLM, max_words: int | None, dedupe: bool,
    strip_period: bool = True,
) -> list[Annotation]:
    seen: set[str] = set()
    out = []
    for k, raw in enumerate(texts):
        parsed = parse_qa(raw, max_words, strip_period=strip_period)
        error = parsed.error
        if error is None and dedupe:
            key = _question_key(parsed.question or "")
            if key in seen:
                error = "duplicate question"
            seen.add(key)
        out.append(Annotation(
            id=record_id(uri, sha, k), image=uri, image_sha256=sha, task=task.name,
            prompt_version=task.prompt_version, teacher=teacher.model_id, k=k,
            question=parsed.question, answer=parsed.answer, raw=raw, parse_ok=error is None, error=error,
        ))
    return out


def annotate_with_config(
    cfg: RunConfig,
    teacher: VLM,
    out_path: str | Path,
    *,
    shard: str | tuple[int, int] | None = None,
    images: list[str] | None = None,
    cache: ResultCache | None = None,
    show: bool = True,
) -> AnnotateSummary:
    """PA with every setting taken from a run config (``shard`` overrides ``data.shard``; ``images``,
    URIs already listed, replace listing ``data.images``)."""
    return annotate(
        images=cfg.data.images if images is None else images,
        teacher=teacher,
        task=task_for(cfg),
        cfg=cfg.annotate,
        out_path=out_path,
        batch_size=cfg.teacher.batch_size,
        max_images=cfg.data.max_images,
        seed=cfg.seed,
        show=show,
        shard=cfg.data.shard if shard is None else shard,
        cache=cache,
        preprocess_workers=cfg.teacher.preprocess_workers,
        force=cfg.force,
    )
