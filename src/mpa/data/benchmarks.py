"""Loaders for the official benchmark annotation formats, prediction files, and scoring.

Supported benchmarks (name -> metric, see :mod:`mpa.metrics`):

- ``textvqa`` (VQA accuracy): TextVQA v0.5.1 json ``{"data": [{question_id, question, image_id,
  answers}]}``. Image = ``{images}/{image_id}.jpg``; for local image dirs, if that file is missing
  but ``{image_id}.png`` exists, the png is used (no existence checks for ``s3://`` image roots).
- ``stvqa`` (ANLS): ST-VQA task-1 json ``{"data": [{question_id, question, file_path, answers}]}``.
  Image = ``{images}/{file_path}``.
- ``chartqa`` (relaxed accuracy): ``test_human.json`` / ``test_augmented.json`` (a list of
  ``{imgname, query, label}``); ``annotations`` is one such file (split inferred from the file
  name: it must contain ``human`` or ``augmented``) or a directory holding ``test_human.json``
  and/or ``test_augmented.json`` (human first; in the official ``train/`` and ``val/`` folders the
  single ``*_human.json`` / ``*_augmented.json``). ``answers = [label]``,
  ``question_id = f"{split}-{index}"`` (index within its file). Image = ``{images}/{imgname}``;
  when ``images`` is not given and the annotation directory has a ``png/`` sub-directory (the
  official ChartQA layout), that sub-directory is used.
- ``okvqa`` (VQA accuracy): ``questions`` = VQA-v2 style questions file ``{"questions": [...]}``,
  ``annotations`` = ``{"annotations": [{question_id, image_id, answers: [{answer, ...}]}]}``.
  Image = ``{images}/COCO_val2014_{image_id:012d}.jpg``.
- ``pathvqa`` (paper Table 7; normalised exact match, reported for yes/no and open questions):
  the common JSON export of PathVQA, a list of ``{image, question, answer}`` records (or
  ``{"data": [...]}``, or JSON lines); ``answer`` may be a string or a list. ``image`` is a file
  name with or without extension (``test_0000`` → ``{images}/test_0000.jpg``, else ``.png``) or a
  relative path; ``question_id``/``qid``/``id`` names a sample (default: its index in the file).
  ``answer_type``/``question_type``/``qtype`` (``yes/no``/``closed`` or ``open``/``other``) sets
  :attr:`BenchmarkSample.qtype`; without it, a question whose answer is yes or no is ``yes/no``,
  any other ``open``. The score is the EvalAI-normalised exact match against the single answer
  (VQA accuracy with one answer), and ``by_type`` gives the yes/no accuracy and the open-question
  accuracy (exact match: what the paper's Table 7 computes for open questions is not known to us).

``images`` defaults to the annotation file's directory (or the directory itself for a ChartQA
directory). ``annotations``/``questions`` may be ``s3://`` URIs (read via
:func:`mpa.storage.read_bytes`); a ChartQA ``s3://`` URI not ending in ``.json`` is treated as a
directory prefix. An optional ``question_type``/``qtype`` key (TextVQA, ST-VQA, OK-VQA
annotations) becomes :attr:`BenchmarkSample.qtype`. A missing ``answers`` key (e.g. a test split
with hidden ground truth) loads as ``answers=[]``; such samples cannot be scored.

``max_samples`` keeps the first N samples in file order (for ChartQA directories: human, then
augmented).

Hugging Face ``datasets``: ``annotations="hf:<dataset id>[:<split>]"`` (e.g.
``hf:lmms-lab/textvqa:validation``, ``hf:HuggingFaceM4/ChartQA:test``, ``hf:lmms-lab/OK-VQA:val2014``)
loads the same samples from a dataset with an image column; see :func:`load_benchmark_hf` for the
column names recognised. Images are written once as PNG files under a cache directory so samples
keep a plain file reference.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mpa import storage
from mpa.metrics import score_sample
from mpa.safeio import write_atomic

__all__ = [
    "BENCHMARKS",
    "SCORE_CHOICES",
    "load_benchmark_hf",
    "CHARTQA_FILES",
    "BenchmarkSample",
    "load_benchmark",
    "load_predictions",
    "pathvqa_qtype",
    "score_predictions",
]

BENCHMARKS: dict[str, str] = {
    "textvqa": "vqa",
    "stvqa": "anls",
    "chartqa": "relaxed",
    "okvqa": "vqa",
    "pathvqa": "vqa",  # one answer per question: normalised exact match
}
SCORE_CHOICES: tuple[str, ...] = ("official", "contains")  # score_predictions(metric=...)
CHARTQA_FILES: dict[str, str] = {"human": "test_human.json", "augmented": "test_augmented.json"}


@dataclass
class BenchmarkSample:
    question_id: str  # always str
    question: str
    image: str  # local path or s3:// URI of the image file
    answers: list[str]  # ground truth (never read by PA/PI/PL)
    split: str | None = None  # e.g. ChartQA "human"/"augmented"
    qtype: str | None = None  # optional question type (toy world uses it)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

PathLike = str | os.PathLike


def _check_name(name: str) -> str:
    key = str(name).lower()
    if key not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; valid benchmarks: {', '.join(BENCHMARKS)}")
    return key


def _load_json(path: PathLike) -> Any:
    raw = storage.read_bytes(path)
    try:
        return json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc


def _list_key(obj: Any, key: str, path: PathLike) -> list[Any]:
    if not isinstance(obj, dict) or key not in obj:
        raise ValueError(f"{path}: missing top-level key {key!r}")
    value = obj[key]
    if not isinstance(value, list):
        raise ValueError(f"{path}: top-level key {key!r} is not a list")
    return value


def _field(entry: Any, key: str, path: PathLike, index: int) -> Any:
    if not isinstance(entry, dict):
        raise ValueError(f"{path}: entry {index} is not an object")
    if key not in entry:
        raise ValueError(f"{path}: entry {index} is missing key {key!r}")
    return entry[key]


def _qtype(entry: dict[str, Any]) -> str | None:
    value = entry.get("question_type", entry.get("qtype"))
    return None if value is None else str(value)


def _answers(entry: dict[str, Any], path: PathLike, index: int) -> list[str]:
    raw = entry.get("answers")
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ValueError(f"{path}: entry {index} key 'answers' is not a list")
    out = []
    for a in raw:
        if isinstance(a, dict):  # VQA-v2 style {"answer": ...}
            if "answer" not in a:
                raise ValueError(f"{path}: entry {index} has an answer without key 'answer'")
            a = a["answer"]
        out.append(str(a))
    return out


# ---------------------------------------------------------------------------------------------
# per-benchmark loaders
# ---------------------------------------------------------------------------------------------


def _load_textvqa(annotations: PathLike, images: str) -> list[BenchmarkSample]:
    entries = _list_key(_load_json(annotations), "data", annotations)
    local = not storage.is_s3(images)
    samples = []
    for i, e in enumerate(entries):
        qid = _field(e, "question_id", annotations, i)
        question = _field(e, "question", annotations, i)
        image_id = str(_field(e, "image_id", annotations, i))
        image = storage.join(images, f"{image_id}.jpg")
        if local and not Path(image).exists():
            png = storage.join(images, f"{image_id}.png")
            if Path(png).exists():
                image = png
        samples.append(
            BenchmarkSample(str(qid), str(question), image, _answers(e, annotations, i), qtype=_qtype(e))
        )
    return samples


def _load_stvqa(annotations: PathLike, images: str) -> list[BenchmarkSample]:
    entries = _list_key(_load_json(annotations), "data", annotations)
    samples = []
    for i, e in enumerate(entries):
        qid = _field(e, "question_id", annotations, i)
        question = _field(e, "question", annotations, i)
        file_path = str(_field(e, "file_path", annotations, i))
        samples.append(
            BenchmarkSample(
                str(qid),
                str(question),
                storage.join(images, file_path),
                _answers(e, annotations, i),
                qtype=_qtype(e),
            )
        )
    return samples


def _chartqa_split(path: PathLike) -> str:
    stem = Path(str(path).rstrip("/").rsplit("/", 1)[-1]).stem.lower()
    if "augmented" in stem:
        return "augmented"
    if "human" in stem:
        return "human"
    raise ValueError(
        f"{path}: cannot infer the ChartQA split from the file name (expected 'human' or 'augmented' in it)"
    )


def _load_chartqa_file(path: PathLike, split: str, images: str) -> list[BenchmarkSample]:
    entries = _load_json(path)
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a JSON list of {{imgname, query, label}} objects")
    samples = []
    for i, e in enumerate(entries):
        imgname = str(_field(e, "imgname", path, i))
        query = _field(e, "query", path, i)
        label = _field(e, "label", path, i)
        samples.append(
            BenchmarkSample(f"{split}-{i}", str(query), storage.join(images, imgname), [str(label)], split=split)
        )
    return samples


def _load_chartqa(annotations: PathLike, images: str | None) -> list[BenchmarkSample]:
    ann = str(annotations)
    if storage.is_s3(ann):
        is_dir = ann.endswith("/") or not ann.lower().endswith(".json")
    else:
        if not Path(ann).exists():
            raise FileNotFoundError(f"file not found: {ann}")
        is_dir = Path(ann).is_dir()
    if not is_dir:
        root = images if images is not None else storage.parent(ann)
        return _load_chartqa_file(ann, _chartqa_split(ann), root)
    if images is not None:
        root = images
    elif not storage.is_s3(ann) and (Path(ann) / "png").is_dir():
        root = str(Path(ann) / "png")
    else:
        root = ann.rstrip("/") if storage.is_s3(ann) else ann
    samples: list[BenchmarkSample] = []
    found = []
    for split, fname in CHARTQA_FILES.items():
        path = storage.join(ann, fname)
        if not storage.is_s3(ann) and not Path(path).exists():
            # the official train/ and val/ folders hold train_human.json / val_human.json and so on
            others = sorted(Path(ann).glob(f"*_{split}.json"))
            if len(others) == 1:
                path = str(others[0])
        try:
            samples.extend(_load_chartqa_file(path, split, root))
        except FileNotFoundError:
            continue
        found.append(path)
    if not found:
        raise FileNotFoundError(
            f"no ChartQA annotation file in {ann} (expected {' and/or '.join(CHARTQA_FILES.values())})"
        )
    return samples


def _load_okvqa(annotations: PathLike, questions: PathLike | None, images: str) -> list[BenchmarkSample]:
    if questions is None:
        raise ValueError("okvqa needs questions= (the OpenEnded_mscoco_val2014_questions.json file)")
    q_entries = _list_key(_load_json(questions), "questions", questions)
    a_entries = _list_key(_load_json(annotations), "annotations", annotations)
    by_qid: dict[str, dict[str, Any]] = {}
    for i, a in enumerate(a_entries):
        qid = str(_field(a, "question_id", annotations, i))
        _field(a, "answers", annotations, i)
        by_qid[qid] = {"answers": _answers(a, annotations, i), "qtype": _qtype(a)}
    samples = []
    for i, q in enumerate(q_entries):
        qid = str(_field(q, "question_id", questions, i))
        question = _field(q, "question", questions, i)
        image_id = _field(q, "image_id", questions, i)
        try:
            image_num = int(image_id)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{questions}: entry {i} has a non-integer 'image_id' {image_id!r}") from exc
        if qid not in by_qid:
            raise ValueError(f"{annotations}: no annotation for question_id {qid} (from {questions})")
        ann = by_qid[qid]
        samples.append(
            BenchmarkSample(
                qid,
                str(question),
                storage.join(images, f"COCO_val2014_{image_num:012d}.jpg"),
                ann["answers"],
                qtype=ann["qtype"],
            )
        )
    return samples


PATHVQA_YES_NO = "yes/no"
PATHVQA_OPEN = "open"
_PATHVQA_TYPES = {"yes/no": PATHVQA_YES_NO, "yes_no": PATHVQA_YES_NO, "yesno": PATHVQA_YES_NO,
                  "closed": PATHVQA_YES_NO, "close": PATHVQA_YES_NO, "open": PATHVQA_OPEN,
                  "other": PATHVQA_OPEN}


def pathvqa_qtype(answers: list[str], declared: str | None = None) -> str:
    """``yes/no`` or ``open``: the declared answer type when it names one, else by the answer."""
    if declared is not None and str(declared).strip().lower() in _PATHVQA_TYPES:
        return _PATHVQA_TYPES[str(declared).strip().lower()]
    from mpa.metrics import normalize_answer

    return PATHVQA_YES_NO if answers and normalize_answer(answers[0]) in ("yes", "no") else PATHVQA_OPEN


def _pathvqa_records(path: PathLike) -> list[Any]:
    raw = storage.read_bytes(path).decode("utf-8-sig")
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError:
        doc = []
        for lineno, line in enumerate(raw.splitlines(), 1):
            if line.strip():
                try:
                    doc.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{lineno}: neither a JSON file nor JSON lines ({exc.msg})") from exc
    if isinstance(doc, dict):
        doc = _list_key(doc, "data", path)
    if not isinstance(doc, list):
        raise ValueError(f"{path}: expected a JSON list of {{image, question, answer}} records")
    return doc


def _load_pathvqa(annotations: PathLike, images: str) -> list[BenchmarkSample]:
    local = not storage.is_s3(images)
    samples = []
    for i, e in enumerate(_pathvqa_records(annotations)):
        question = _field(e, "question", annotations, i)
        image = next((e[k] for k in ("image", "image_name", "img_id", "image_id") if k in e), None)
        if image is None:
            raise ValueError(f"{annotations}: entry {i} is missing key 'image'")
        if "answers" in e:
            answers = _answers(e, annotations, i)
        else:
            answers = [str(_field(e, "answer", annotations, i))]
        qid = next((e[k] for k in ("question_id", "qid", "id") if k in e), i)
        image = str(image)
        path = image if Path(image).is_absolute() else storage.join(images, image)
        if local and not Path(image).suffix:
            path = next((p for p in (f"{path}.jpg", f"{path}.png") if Path(p).exists()), f"{path}.jpg")
        declared = next((e[k] for k in ("answer_type", "question_type", "qtype") if k in e), None)
        samples.append(BenchmarkSample(str(qid), str(question), path, answers,
                                       qtype=pathvqa_qtype(answers, declared)))
    return samples


def load_benchmark(
    name: str,
    annotations: str,
    *,
    questions: str | None = None,
    images: str | None = None,
    max_samples: int | None = None,
) -> list[BenchmarkSample]:
    """Load a benchmark from its official annotation file(s); see the module docstring."""
    key = _check_name(name)
    ann = str(annotations)
    if ann.startswith("hf:"):
        dataset, _, split = ann[3:].partition(":")
        samples = load_benchmark_hf(key, dataset, split or "validation", max_samples=max_samples)
        if key == "pathvqa":
            for s in samples:
                s.qtype = pathvqa_qtype(s.answers, s.qtype)
        return _unique_ids(samples, ann)
    if key == "chartqa":
        samples = _load_chartqa(ann, None if images is None else str(images))
    else:
        root = str(images) if images is not None else storage.parent(ann)
        if key == "textvqa":
            samples = _load_textvqa(ann, root)
        elif key == "stvqa":
            samples = _load_stvqa(ann, root)
        elif key == "pathvqa":
            samples = _load_pathvqa(ann, root)
        else:
            samples = _load_okvqa(ann, None if questions is None else str(questions), root)
    _unique_ids(samples, ann)
    if max_samples is not None:
        if max_samples < 0:
            raise ValueError(f"max_samples must be >= 0, got {max_samples}")
        samples = samples[:max_samples]
    return samples


def _unique_ids(samples: list[BenchmarkSample], source: str) -> list[BenchmarkSample]:
    """Refuse a benchmark in which two samples share a question id: predictions are keyed by id, so both
    would be scored with one answer (a silently wrong score)."""
    seen: set[str] = set()
    for s in samples:
        if s.question_id in seen:
            n = sum(x.question_id == s.question_id for x in samples)
            raise ValueError(f"{source}: question id {s.question_id!r} appears {n} times; every question needs "
                             "its own id (predictions are keyed by it) — fix the file")
        seen.add(s.question_id)
    return samples


# ---------------------------------------------------------------------------------------------
# Hugging Face datasets
# ---------------------------------------------------------------------------------------------

HF_COLUMNS: dict[str, tuple[str, ...]] = {
    "question_id": ("question_id", "qid", "questionId", "id"),
    "question": ("question", "query"),
    "answers": ("answers", "label", "answer", "labels", "ground_truth"),
}


def _hf_column(columns: list[str], field: str, dataset: str, required: bool = True) -> str | None:
    for c in HF_COLUMNS[field]:
        if c in columns:
            return c
    if required:
        raise ValueError(f"hf:{dataset} has no {field} column (looked for {', '.join(HF_COLUMNS[field])}; "
                         f"columns: {', '.join(columns)})")
    return None


def _hf_answers(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str | int | float):
        return [str(value)]
    out = []
    for a in value:
        out.append(str(a["answer"]) if isinstance(a, dict) else str(a))
    return out


def _chartqa_hf_split(row: dict[str, Any]) -> str | None:
    if "human_or_machine" in row:  # HuggingFaceM4/ChartQA: 0 = human-written, 1 = machine-generated
        return "human" if int(row["human_or_machine"]) == 0 else "augmented"
    kind = str(row.get("type", row.get("split", ""))).lower()
    if "human" in kind:
        return "human"
    if "aug" in kind or "machine" in kind:
        return "augmented"
    return None


def load_benchmark_hf(
    name: str,
    dataset: str,
    split: str = "validation",
    *,
    max_samples: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    load_dataset: Any = None,
) -> list[BenchmarkSample]:
    """Load a benchmark split from a Hugging Face dataset id (or a local dataset directory).

    Columns: question id (``question_id``/``qid``/``questionId``/``id``; default: the row index),
    question (``question``/``query``), answers (``answers``/``label``/``answer``/…; a string, a list of
    strings or VQA-v2 ``{answer: …}`` dicts) and the first ``Image`` column (else ``image``). ChartQA's
    human/augmented split comes from ``human_or_machine`` (0/1) or a ``type`` column.
    """
    import hashlib

    from mpa.data.hf_datasets import image_column, png_bytes

    key = _check_name(name)
    if load_dataset is None:
        try:
            from datasets import load_dataset
        except ImportError as exc:
            raise ValueError(f"reading hf:{dataset} needs the `datasets` package: pip install datasets") from exc
    ds = load_dataset(dataset, split=split)
    cols = list(ds.column_names)
    image_col = image_column(ds)
    q_col = _hf_column(cols, "question", dataset)
    a_col = _hf_column(cols, "answers", dataset)
    id_col = _hf_column(cols, "question_id", dataset, required=False)
    root = Path(cache_dir or Path(os.environ.get("MPA_CACHE", "~/.cache/mpa")).expanduser() / "hf_images")
    out_dir = root / hashlib.sha256(f"{dataset}\n{split}\n{image_col}".encode()).hexdigest()[:16]
    out_dir.mkdir(parents=True, exist_ok=True)
    n = len(ds) if max_samples is None else min(len(ds), max_samples)
    samples = []
    for i in range(n):
        row = ds[i]
        data = png_bytes(row[image_col])
        path = out_dir / f"{hashlib.sha256(data).hexdigest()[:20]}.png"
        if not path.exists():
            write_atomic(path, data)
        sample_split = _chartqa_hf_split(row) if key == "chartqa" else None
        if key == "chartqa":
            qid = f"{sample_split or split}-{i}"
        else:
            qid = str(row[id_col]) if id_col else str(i)
        samples.append(BenchmarkSample(qid, str(row[q_col]), str(path), _hf_answers(row[a_col]),
                                       split=sample_split, qtype=_qtype(row)))
    return samples


# ---------------------------------------------------------------------------------------------
# predictions and scoring
# ---------------------------------------------------------------------------------------------


def load_predictions(path: PathLike) -> dict[str, str]:
    """Read a JSONL prediction file of ``{"question_id": ..., "answer": ...}`` lines.

    Blank lines are skipped; ``question_id`` is converted to str; a numeric ``answer`` is converted
    to str. Invalid JSON, a non-object line, a missing key, a non-scalar answer or a duplicate
    question_id raises ValueError naming ``file:line``.
    """
    text = storage.read_bytes(path).decode("utf-8-sig")
    preds: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: invalid JSON ({exc.msg})") from exc
        if not isinstance(obj, dict):
            raise ValueError(f"{where}: expected a JSON object with 'question_id' and 'answer'")
        for k in ("question_id", "answer"):
            if k not in obj:
                raise ValueError(f"{where}: missing key {k!r}")
        answer = obj["answer"]
        if isinstance(answer, bool) or not isinstance(answer, str | int | float):
            raise ValueError(f"{where}: 'answer' must be a string, got {type(answer).__name__}")
        qid = str(obj["question_id"])
        if qid in preds:
            raise ValueError(f"{where}: duplicate question_id {qid!r}")
        preds[qid] = str(answer)
    return preds


def _percent(values: list[float]) -> float:
    return 100.0 * sum(values) / len(values) if values else 0.0


def score_predictions(
    name: str, samples: list[BenchmarkSample], predictions: dict[str, str], metric: str = "official"
) -> dict:
    """Score predictions with the benchmark's official metric and with the MPA authors' ``contains`` rule.

    ``metric`` picks the headline: ``official`` (default) or ``contains``. Returns
    ``{"benchmark", "metric" (the headline's name), "score" (the headline, percent), "official_metric",
    "official" (percent), "contains" (percent), "n", "n_missing"}`` plus, for the headline metric,
    ``"by_split"`` (``human``/``augmented``/``overall`` percents) for ChartQA and ``"by_type"``
    (qtype -> percent) when any sample has a qtype. A sample without a prediction scores 0 and is
    counted in ``n_missing``. Predictions for unknown question ids are ignored, but predictions of
    which none matches a question (another benchmark's file, or an empty one) raise ValueError.
    """
    key = _check_name(name)
    official = BENCHMARKS[key]
    if metric not in SCORE_CHOICES:
        raise ValueError(f"unknown metric {metric!r}; choose one of: {', '.join(SCORE_CHOICES)}")
    headline = official if metric == "official" else metric
    if not samples:
        raise ValueError(f"{key}: no samples to score")
    if not any(str(s.question_id) in predictions for s in samples):
        got = ", ".join(repr(q) for q in list(predictions)[:3]) or "none"
        want = ", ".join(repr(str(s.question_id)) for s in samples[:3])
        raise ValueError(f"{key}: none of the {len(predictions)} predictions answers one of the {len(samples)} "
                         f"questions (prediction ids: {got}; the benchmark's: {want}); is it the predictions "
                         "file of this benchmark and these annotations?")
    no_gt = [s.question_id for s in samples if not s.answers]
    if no_gt:
        raise ValueError(f"{key}: {len(no_gt)} sample(s) have no ground-truth answers, e.g. {no_gt[:3]}")
    columns: dict[str, list[float]] = {official: [], "contains": []}
    by_split: dict[str, list[float]] = defaultdict(list)
    by_type: dict[str, list[float]] = defaultdict(list)
    n_missing = 0
    for s in samples:
        pred = predictions.get(str(s.question_id))
        if pred is None:
            n_missing += 1
        for m, values in columns.items():
            values.append(0.0 if pred is None else score_sample(m, pred, s.answers))
        value = columns[headline][-1]
        if s.split is not None:
            by_split[s.split].append(value)
        if s.qtype is not None:
            by_type[s.qtype].append(value)
    result: dict[str, Any] = {
        "benchmark": key,
        "metric": headline,
        "score": _percent(columns[headline]),
        "official_metric": official,
        "official": _percent(columns[official]),
        "contains": _percent(columns["contains"]),
        "n": len(samples),
        "n_missing": n_missing,
    }
    if key == "chartqa":
        result["by_split"] = {
            **{split: _percent(by_split[split]) for split in CHARTQA_FILES if split in by_split},
            "overall": result["score"],
        }
    if by_type:
        result["by_type"] = {t: _percent(v) for t, v in sorted(by_type.items())}
    return result
