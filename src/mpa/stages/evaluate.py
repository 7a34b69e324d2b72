"""Evaluate: a model answers a labeled benchmark; score with the benchmark's official metric."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from mpa import storage
from mpa.data.images import UnreadableImage, load_image
from mpa.records import JsonlLog
from mpa.tasks import ANSWER_INSTRUCTION
from mpa.ui import progress_bar
from mpa.vlm.base import VLM, GenParams, VLMRequest

if TYPE_CHECKING:
    from mpa.data.benchmarks import BenchmarkSample


class MissingBenchmarkImages(FileNotFoundError):
    """The benchmark's images are not where the loader looked (wrong or missing ``images`` dir)."""


def check_images_exist(samples: list[BenchmarkSample]) -> None:
    """Fail before any model call if local benchmark images are missing (a wrong ``--images``)."""
    from pathlib import Path

    missing = [s.image for s in samples if not storage.is_s3(s.image) and not Path(s.image).is_file()]
    if missing:
        raise MissingBenchmarkImages(
            f"{len(missing)} of {len(samples)} benchmark images not found, e.g. {missing[0]}; "
            "point --images / evaluate.images at the benchmark's image directory"
        )


def evaluate(
    *,
    model: VLM,
    benchmark: str,
    samples: list[BenchmarkSample],
    predictions_path: str | Path,
    batch_size: int = 8,
    max_new_tokens: int = 16,
    answer_instruction: str = ANSWER_INSTRUCTION,
    label: str = "evaluate",
) -> dict:
    """Answer every sample (resumable ``{question_id, answer}`` jsonl), then score it."""
    from mpa.data.benchmarks import score_predictions

    start = time.perf_counter()
    check_images_exist(samples)
    params = GenParams(max_new_tokens=max_new_tokens, temperature=0.0)
    with JsonlLog(predictions_path, group_of=lambda r: r["question_id"]) as out:
        todo = [s for s in samples if s.question_id not in out.done]
        with progress_bar(label, total=len(samples), completed=len(samples) - len(todo)) as advance:
            for b in range(0, len(todo), batch_size):
                chunk = todo[b: b + batch_size]
                reqs, ok = [], []
                for s in chunk:
                    try:
                        prompt = f"{s.question.strip()}\n{answer_instruction}"
                        reqs.append(VLMRequest(load_image(s.image).image, prompt))
                        ok.append(s)
                    except UnreadableImage as exc:
                        out.append_group([{"question_id": s.question_id, "answer": "", "error": str(exc)}])
                answers = model.generate(reqs, params) if reqs else []
                out.append_group(
                    [{"question_id": s.question_id, "answer": a} for s, a in zip(ok, answers, strict=True)]
                )
                advance(len(chunk))
        predictions = {r["question_id"]: r["answer"] for r in out.records}
    result = score_predictions(benchmark, samples, predictions)
    result["seconds"] = time.perf_counter() - start
    result["model"] = model.model_id
    return result
