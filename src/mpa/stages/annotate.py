"""PA — Pseudo Annotator: the teacher writes task-specific question+answer pairs per image."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from mpa.config import AnnotateConfig
from mpa.data.images import UnreadableImage, list_images, load_image
from mpa.parsing import parse_qa
from mpa.records import Annotation, JsonlLog
from mpa.tasks import Task
from mpa.ui import progress_bar, summary_table
from mpa.vlm.base import VLM, GenParams, VLMRequest

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


def _question_key(q: str) -> str:
    return " ".join(q.lower().split()).rstrip("?").strip()


def annotate(
    *,
    images: str,
    teacher: VLM,
    task: Task,
    cfg: AnnotateConfig,
    out_path: str | Path,
    batch_size: int = 8,
    max_images: int | None = None,
    seed: int = 0,
    show: bool = True,
) -> AnnotateSummary:
    """Run PA over every image in ``images``; append to ``out_path`` (resumable)."""
    start = time.perf_counter()
    uris = list_images(images, max_images)
    max_words = cfg.max_answer_words or task.max_answer_words
    params = GenParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p)
    k = cfg.qa_per_image
    with JsonlLog(out_path, group_of=lambda r: r["image"], group_size=lambda r: k) as out:
        todo = [u for u in uris if u not in out.done]
        n_resumed = len(uris) - len(todo)
        with progress_bar("PA annotate", total=len(uris), completed=n_resumed) as advance:
            for b in range(0, len(todo), batch_size):
                chunk = todo[b: b + batch_size]
                loaded, groups = [], []
                for uri in chunk:
                    try:
                        loaded.append(load_image(uri))
                    except UnreadableImage as exc:
                        log.warning("%s", exc)
                        groups.append(
                            [_failed(uri, "", task, teacher, i, f"unreadable image: {exc}") for i in range(k)]
                        )
                requests = [VLMRequest(img.image, task.pa_prompt) for img in loaded for _ in range(k)]
                batch_params = GenParams(**{**asdict(params), "seed": seed * 1_000_003 + hash_seed(chunk)})
                texts = teacher.generate(requests, batch_params) if requests else []
                for j, img in enumerate(loaded):
                    groups.append(_records_for_image(img.uri, img.sha256, texts[j * k:(j + 1) * k],
                                                     task, teacher, max_words, cfg.dedupe_questions))
                for group in groups:
                    out.append_group(group)
                advance(len(chunk))
        records = [Annotation.model_validate(r) for r in out.records if r["image"] in set(uris)]
    failures: dict[str, int] = {}
    for r in records:
        if not r.parse_ok and r.error:
            reason = r.error.split(":")[0].split(" (")[0]
            failures[reason] = failures.get(reason, 0) + 1
    summary = AnnotateSummary(
        n_images=len(uris),
        n_unreadable=len({r.image for r in records if (r.error or "").startswith("unreadable image")}),
        n_attempts=len(records),
        n_parsed=sum(r.parse_ok for r in records),
        n_duplicates=failures.get("duplicate question", 0),
        n_resumed=n_resumed,
        seconds=time.perf_counter() - start,
        failures=failures,
    )
    if show:
        summary_table("PA — pseudo-annotation", {k_: v for k_, v in asdict(summary).items() if k_ != "failures"}
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
    uri: str, sha: str, texts: list[str], task: Task, teacher: VLM, max_words: int, dedupe: bool
) -> list[Annotation]:
    seen: set[str] = set()
    out = []
    for k, raw in enumerate(texts):
        parsed = parse_qa(raw, max_words)
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
