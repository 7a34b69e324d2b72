"""The paper's human study (Table 4): rate pseudo-labels before and after PI, blinded.

``sample`` draws ``n`` items from one run directory: ``n/2`` parsed pseudo-labels written by the
teacher in PA (``annotations.jsonl``: ``parse_ok`` and no ``error``) and ``n/2`` samples of the
parity set PI kept (``pi/parity.jsonl``). The parity set is a subset of the pseudo-labels, so
the "before" half is drawn from the pseudo-labels *not* drawn for the "after" half (no item is
shown twice; with thousands of pseudo-labels this leaves the "before" distribution practically
unchanged). Both halves are shuffled together and numbered ``H0001``… in that order, so the
sheet says nothing about which set an item comes from; ``<sheet>.key.json`` does, and must not
go to the raters. Written beside each other:

- ``SHEET`` (CSV): ``item_id, image, question, answer`` and four empty rating columns for 0/1
  answers (see :data:`MEASURES`);
- ``SHEET`` with suffix ``.html``: the same items with the images embedded as base64 JPEG
  thumbnails and the rating instructions, for raters to look at while filling the CSV;
- ``SHEET`` with suffix ``.key.json``: item id → set (``before``/``after``) and the record id,
  with the question and answer, so ``score`` can check that a filled sheet is this sample.

``score`` reads one filled sheet per rater plus the key and computes each measure before and
after PI — the fraction of 1-ratings over items × raters, and per rater — and, per measure, the
agreement between raters over all items: percent agreement (the mean over items of the share of
rater pairs that agree; for two raters, the share of items they agree on), Cohen's kappa for two
raters, Fleiss' kappa for three or more. A kappa is ``None`` when chance agreement is 1 (every
rating the same value), where it is undefined.

**The paper's human-likeness score** (Table 4) is a different measurement: the share of post-PI items
that raters *take for human-written* when they are mixed, blind, with real human questions of the
benchmark. ``likeness_sheet`` draws ``n/2`` items of the parity set and ``n/2`` human-written
questions (with their most frequent answer) from a benchmark annotation file, shuffles them into one
sheet with a single 0/1 column ``human_written`` ("was this written by a person?"), and keys each item
to its source (``mpa`` or ``human``); ``score_likeness`` reports the paper's score (the share of
``mpa`` items rated 1), the same share for the real human questions (the control: how often raters
recognise a person's question) and the agreement between raters. The ``human_like`` column above asks
something else — could a person plausibly have asked this — with no human questions to compare with.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import random
from itertools import combinations
from pathlib import Path
from typing import Any

from mpa.records import read_jsonl, write_json_atomic
from mpa.safeio import write_atomic

__all__ = [
    "MEASURES",
    "cohen_kappa",
    "fleiss_kappa",
    "likeness_sheet",
    "percent_agreement",
    "sample_sheet",
    "score_likeness",
    "score_sheets",
]

#: rating column -> (the paper's measure, the question raters answer with 0 or 1)
MEASURES: dict[str, tuple[str, str]] = {
    "answer_correct": ("answer correctness", "Is the answer right for this question about this image?"),
    "answerable": ("answerability", "Can the question be answered by looking at the image?"),
    "task_relevant": (
        "task relevance",
        "Does the question exercise the task's skill (e.g. reading the text in the image, reading the chart)?",
    ),
    "human_like": ("human-likeness", "Could a person plausibly have asked this question?"),
}
ITEM_COLUMNS = ("item_id", "image", "question", "answer")
SETS = ("before", "after")


class StudyError(ValueError):
    """Bad input to the human study (a message naming the file and line)."""


# ---------------------------------------------------------------------------------------------
# sample
# ---------------------------------------------------------------------------------------------


def _records(path: Path, what: str) -> list[dict[str, Any]]:
    if not path.is_file():
        raise FileNotFoundError(f"no {what} at {path}")
    return list(read_jsonl(path))


def _thumbnail(image: str, max_side: int) -> str | None:
    from mpa.data.images import UnreadableImage, load_image

    try:
        img = load_image(image).image
    except UnreadableImage:
        return None
    img.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _html(items: list[dict[str, str]], thumbs: list[str | None], title: str,
          questions: dict[str, str] | None = None) -> str:
    """The raters' page; ``questions``: rating column -> what raters answer (default: :data:`MEASURES`)."""
    from html import escape

    questions = questions or {col: q for col, (_, q) in MEASURES.items()}
    rules = "".join(f"<li><code>{col}</code>: {escape(q)}</li>" for col, q in questions.items())
    rows = []
    for item, thumb in zip(items, thumbs, strict=True):
        img = (
            f'<img alt="{escape(item["item_id"])}" src="data:image/jpeg;base64,{thumb}">'
            if thumb
            else f"<p><em>image not readable: {escape(item['image'])}</em></p>"
        )
        rows.append(
            f'<section id="{escape(item["item_id"])}"><h2>{escape(item["item_id"])}</h2>{img}'
            f"<p><b>Q:</b> {escape(item['question'])}</p><p><b>A:</b> {escape(item['answer'])}</p></section>"
        )
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title><style>body{{font-family:sans-serif;max-width:60em;margin:auto}}"
        "section{border-top:1px solid #ccc;padding:.5em 0}img{max-width:100%}</style></head><body>"
        f"<h1>{escape(title)}</h1><p>For every item, write 1 (yes) or 0 (no) in each rating column of "
        "the CSV sheet, on the row with the same item id:</p>"
        f"<ul>{rules}</ul>{''.join(rows)}</body></html>\n"
    )


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(text: str) -> str:
    """``text`` safe for a spreadsheet: a cell that starts like a formula (``=``, ``+``, ``-``, ``@``, tab, CR)
    gets a leading ``'`` so Excel/LibreOffice show it as text instead of running it (OWASP's CSV-injection
    rule). Teacher text is untrusted: ``=HYPERLINK(...)`` in a pseudo-label must not reach a rater as a formula.
    """
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def _write_text(path: Path, text: str) -> None:
    write_atomic(path, text)


def sample_sheet(run: str | os.PathLike, n: int, out: str | os.PathLike, *, seed: int = 0,
                 thumb_size: int = 384) -> dict[str, Any]:
    """Draw ``n`` blinded items (half before, half after PI) from a run; write sheet, HTML and key."""
    from mpa.ui import progress_bar

    run_dir = Path(run)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory not found: {run_dir}")
    if n < 2 or n % 2:
        raise StudyError(f"--n must be an even number >= 2 (equal halves before and after PI), got {n}")
    sheet = Path(out)
    if sheet.suffix.lower() != ".csv":
        raise StudyError(f"the sheet must be a .csv file, got {sheet}")
    if sheet.is_dir():
        raise StudyError(f"the sheet path {sheet} is a directory")
    half = n // 2
    parsed = [
        r for r in _records(run_dir / "annotations.jsonl", "pseudo-labels (run `mpa annotate` first)")
        if r.get("parse_ok") and not r.get("error") and r.get("question") and r.get("answer")
    ]
    parity = _records(run_dir / "pi" / "parity.jsonl", "parity set (run `mpa identify` first)")
    if len(parity) < half:
        raise StudyError(
            f"the parity set has {len(parity)} samples, fewer than n/2 = {half}; use --n {2 * len(parity)}"
        )
    rng = random.Random(seed)
    after = rng.sample(parity, half)
    taken = {r["id"] for r in after}
    pool = [r for r in parsed if r["id"] not in taken]
    if len(pool) < half:
        raise StudyError(f"only {len(pool)} parsed pseudo-labels outside the drawn parity samples, "
                         f"fewer than n/2 = {half}")
    before = rng.sample(pool, half)
    drawn = [("before", r) for r in before] + [("after", r) for r in after]
    rng.shuffle(drawn)
    width = max(4, len(str(n)))
    items, key = [], {}
    for i, (which, rec) in enumerate(drawn, 1):
        item_id = f"H{i:0{width}d}"
        items.append({"item_id": item_id, "image": str(rec["image"]), "question": str(rec["question"]),
                      "answer": str(rec["answer"])})
        key[item_id] = {"set": which, "record_id": rec["id"], "question": str(rec["question"]),
                        "answer": str(rec["answer"])}
    sheet.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*ITEM_COLUMNS, *MEASURES])
    for item in items:
        writer.writerow([csv_cell(item[c]) for c in ITEM_COLUMNS] + [""] * len(MEASURES))
    thumbs = []
    with progress_bar("thumbnails", total=len(items)) as advance:
        for item in items:
            thumbs.append(_thumbnail(item["image"], thumb_size))
            advance()
    key_path = sheet.with_suffix(".key.json")
    html_path = sheet.with_suffix(".html")
    write_json_atomic(key_path, {"run": str(run_dir), "seed": seed, "n": n, "items": key})
    _write_text(html_path, _html(items, thumbs, f"MPA human study: {sheet.stem}"))
    _write_text(sheet, buf.getvalue())
    return {"sheet": str(sheet), "html": str(html_path), "key": str(key_path), "n": n,
            "before": half, "after": half, "unreadable_images": sum(t is None for t in thumbs)}


# ---------------------------------------------------------------------------------------------
# agreement
# ---------------------------------------------------------------------------------------------


def percent_agreement(ratings: list[list[int]]) -> float:
    """Mean over items of the share of rater pairs giving the same rating (``ratings[item][rater]``)."""
    shares = []
    for row in ratings:
        pairs = list(combinations(row, 2))
        if not pairs:
            raise ValueError("agreement needs at least two raters")
        shares.append(sum(a == b for a, b in pairs) / len(pairs))
    return sum(shares) / len(shares)


def cohen_kappa(a: list[int], b: list[int]) -> float | None:
    """Cohen's kappa of two raters' labels; None when chance agreement is 1 (undefined)."""
    if len(a) != len(b) or not a:
        raise ValueError("cohen_kappa needs two equally long, non-empty rating lists")
    n = len(a)
    p_o = sum(x == y for x, y in zip(a, b, strict=True)) / n
    cats = set(a) | set(b)
    p_e = sum((a.count(c) / n) * (b.count(c) / n) for c in cats)
    return None if p_e == 1 else (p_o - p_e) / (1 - p_e)


def fleiss_kappa(ratings: list[list[int]]) -> float | None:
    """Fleiss' kappa for ``ratings[item][rater]`` (same number of raters per item); None if undefined."""
    if not ratings:
        raise ValueError("fleiss_kappa needs at least one item")
    m = len(ratings[0])
    if m < 2 or any(len(r) != m for r in ratings):
        raise ValueError("fleiss_kappa needs the same number (>= 2) of raters for every item")
    cats = sorted({v for row in ratings for v in row})
    n_items = len(ratings)
    counts = [[row.count(c) for c in cats] for row in ratings]
    p_i = [(sum(x * x for x in row) - m) / (m * (m - 1)) for row in counts]
    p_bar = sum(p_i) / n_items
    p_j = [sum(row[j] for row in counts) / (n_items * m) for j in range(len(cats))]
    p_e = sum(p * p for p in p_j)
    return None if p_e == 1 else (p_bar - p_e) / (1 - p_e)


# ---------------------------------------------------------------------------------------------
# score
# ---------------------------------------------------------------------------------------------


def _read_key(path: Path) -> dict[str, dict[str, str]]:
    if not path.is_file():
        raise FileNotFoundError(f"key file not found: {path}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        items = doc["items"]
        for item_id, entry in items.items():
            if entry["set"] not in SETS:
                raise StudyError(f"{path}: item {item_id} has set {entry['set']!r}, expected before/after")
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise StudyError(f"{path}: not a human-study key file ({exc})") from exc
    return items


def _read_sheet(path: Path, key: dict[str, dict[str, str]]) -> dict[str, dict[str, int]]:
    if not path.is_file():
        raise FileNotFoundError(f"sheet not found: {path}")
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in (*ITEM_COLUMNS, *MEASURES) if c not in (reader.fieldnames or [])]
        if missing:
            raise StudyError(f"{path}:1: missing column(s) {', '.join(missing)}")
        ratings: dict[str, dict[str, int]] = {}
        for row in reader:
            line = reader.line_num
            item_id = (row["item_id"] or "").strip()
            if not item_id and not any((v or "").strip() for v in row.values()):
                continue  # a blank line
            if item_id not in key:
                raise StudyError(f"{path}:{line}: item {item_id!r} is not in the key (a sheet from another sample?)")
            if item_id in ratings:
                raise StudyError(f"{path}:{line}: item {item_id} appears twice")
            expected = key[item_id]
            # the question only: spreadsheets rewrite number-like answers ("007" -> "7")
            if (row["question"] or "").strip() != expected["question"].strip():
                raise StudyError(f"{path}:{line}: item {item_id}'s question differs from the key "
                                 "(a sheet from another sample, or edited text)")
            values = {}
            for col in MEASURES:
                raw = (row[col] or "").strip()
                if raw not in ("0", "1"):
                    shown = "empty" if not raw else repr(raw)
                    raise StudyError(f"{path}:{line}: column {col} of item {item_id} is {shown}; write 0 or 1")
                values[col] = int(raw)
            ratings[item_id] = values
    absent = sorted(set(key) - set(ratings))
    if absent:
        more = f" and {len(absent) - 5} more" if len(absent) > 5 else ""
        raise StudyError(f"{path}: {len(absent)} item(s) of the key are missing: {', '.join(absent[:5])}{more}")
    return ratings


def _rater_sheets(sheets: list[str | os.PathLike]) -> list[Path]:
    """One filled sheet per rater, at least one."""
    if not sheets:
        raise StudyError("give at least one filled sheet")
    paths = [Path(s) for s in sheets]
    if len(set(paths)) != len(paths):
        raise StudyError("the same sheet is given twice; give one sheet per rater")
    return paths


def score_sheets(sheets: list[str | os.PathLike], key_path: str | os.PathLike) -> dict[str, Any]:
    """The four measures before/after PI and the agreement between raters (one sheet per rater)."""
    paths = _rater_sheets(sheets)
    key = _read_key(Path(key_path))
    per_rater = [_read_sheet(p, key) for p in paths]
    item_ids = sorted(key)
    measures: dict[str, Any] = {}
    agreement: dict[str, Any] = {}
    for col, (name, _) in MEASURES.items():
        entry: dict[str, Any] = {}
        for which in SETS:
            ids = [i for i in item_ids if key[i]["set"] == which]
            values = [r[i][col] for r in per_rater for i in ids]
            entry[which] = sum(values) / len(values) if values else None
            entry[f"{which}_per_rater"] = {
                str(p): (sum(r[i][col] for i in ids) / len(ids) if ids else None)
                for p, r in zip(paths, per_rater, strict=True)
            }
        if entry["before"] is not None and entry["after"] is not None:
            entry["delta"] = entry["after"] - entry["before"]
        measures[name] = entry
        if len(per_rater) >= 2:
            table = [[r[i][col] for r in per_rater] for i in item_ids]
            if len(per_rater) == 2:
                kappa, kind = cohen_kappa([t[0] for t in table], [t[1] for t in table]), "cohen"
            else:
                kappa, kind = fleiss_kappa(table), "fleiss"
            agreement[name] = {"percent_agreement": percent_agreement(table), "kappa": kappa, "kappa_kind": kind}
    counts = {which: sum(1 for i in item_ids if key[i]["set"] == which) for which in SETS}
    return {"n_items": len(item_ids), "n_raters": len(paths), "raters": [str(p) for p in paths],
            "items": counts, "measures": measures, "agreement": agreement}


# ---------------------------------------------------------------------------------------------
# the paper's human-likeness score: post-PI items mixed with real human questions
# ---------------------------------------------------------------------------------------------

LIKENESS_COLUMN = "human_written"
LIKENESS_QUESTION = ("Was this question (with its answer) written by a person? 1: a person wrote it; "
                     "0: a machine did. Some items are real questions people wrote for this dataset, some are not.")
LIKENESS_SOURCES = ("mpa", "human")


def likeness_sheet(run: str | os.PathLike, benchmark: str, annotations: str, out: str | os.PathLike, n: int, *,
                   questions: str | None = None, images: str | None = None, seed: int = 0,
                   thumb_size: int = 384) -> dict[str, Any]:
    """Draw ``n/2`` parity-set items of ``run`` and ``n/2`` human questions of a benchmark file (its most
    frequent answer beside each), shuffled into one blind sheet; write the CSV, the HTML and the key."""
    from collections import Counter

    from mpa.data.benchmarks import load_benchmark
    from mpa.ui import progress_bar

    run_dir = Path(run)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory not found: {run_dir}")
    if n < 2 or n % 2:
        raise StudyError(f"--n must be an even number >= 2 (half post-PI items, half human questions), got {n}")
    sheet = Path(out)
    if sheet.suffix.lower() != ".csv" or sheet.is_dir():
        raise StudyError(f"the sheet must be a .csv file, got {sheet}")
    half = n // 2
    parity = _records(run_dir / "pi" / "parity.jsonl", "parity set (run `mpa identify` first)")
    human = [s for s in load_benchmark(benchmark, annotations, questions=questions, images=images)
             if s.question.strip() and s.answers]
    for what, pool in (("the parity set", parity), (f"{annotations}", human)):
        if len(pool) < half:
            raise StudyError(f"{what} has {len(pool)} items, fewer than n/2 = {half}; use a smaller --n")
    rng = random.Random(seed)
    drawn = ([("mpa", str(r["id"]), str(r["image"]), str(r["question"]), str(r["answer"]))
              for r in rng.sample(parity, half)]
             + [("human", s.question_id, s.image, s.question, Counter(s.answers).most_common(1)[0][0])
                for s in rng.sample(human, half)])
    rng.shuffle(drawn)
    width = max(4, len(str(n)))
    items, key = [], {}
    for i, (source, record_id, image, question, answer) in enumerate(drawn, 1):
        item_id = f"L{i:0{width}d}"
        items.append({"item_id": item_id, "image": image, "question": question, "answer": answer})
        key[item_id] = {"source": source, "record_id": record_id, "question": question, "answer": answer}
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*ITEM_COLUMNS, LIKENESS_COLUMN])
    for item in items:
        writer.writerow([item[c] for c in ITEM_COLUMNS] + [""])
    thumbs = []
    with progress_bar("thumbnails", total=len(items)) as advance:
        for item in items:
            thumbs.append(_thumbnail(item["image"], thumb_size))
            advance()
    sheet.parent.mkdir(parents=True, exist_ok=True)
    key_path, html_path = sheet.with_suffix(".key.json"), sheet.with_suffix(".html")
    write_json_atomic(key_path, {"kind": "likeness", "run": str(run_dir), "human": str(annotations),
                                 "benchmark": benchmark, "seed": seed, "n": n, "items": key})
    _write_text(html_path, _html(items, thumbs, f"MPA human-likeness study: {sheet.stem}",
                                 {LIKENESS_COLUMN: LIKENESS_QUESTION}))
    _write_text(sheet, buf.getvalue())
    return {"sheet": str(sheet), "html": str(html_path), "key": str(key_path), "n": n, "mpa": half,
            "human": half, "unreadable_images": sum(t is None for t in thumbs)}


def _read_likeness_key(path: Path) -> dict[str, dict[str, str]]:
    if not path.is_file():
        raise FileNotFoundError(f"key file not found: {path}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        items = doc["items"]
        bad = [i for i, e in items.items() if e["source"] not in LIKENESS_SOURCES]
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise StudyError(f"{path}: not a human-likeness key file ({exc}); `human-study score` takes the "
                         "key of `human-study sample`") from exc
    if bad:
        raise StudyError(f"{path}: item {bad[0]} has a source other than mpa/human")
    return items


def _read_likeness_sheet(path: Path, key: dict[str, dict[str, str]]) -> dict[str, int]:
    if not path.is_file():
        raise FileNotFoundError(f"sheet not found: {path}")
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in ("item_id", "question", LIKENESS_COLUMN) if c not in (reader.fieldnames or [])]
        if missing:
            raise StudyError(f"{path}:1: missing column(s) {', '.join(missing)}")
        ratings: dict[str, int] = {}
        for row in reader:
            line = reader.line_num
            item_id = (row["item_id"] or "").strip()
            if not item_id and not any((v or "").strip() for v in row.values()):
                continue
            if item_id not in key:
                raise StudyError(f"{path}:{line}: item {item_id!r} is not in the key (a sheet from another sample?)")
            if item_id in ratings:
                raise StudyError(f"{path}:{line}: item {item_id} appears twice")
            question, expected = (row["question"] or "").strip(), key[item_id]["question"].strip()
            if question not in (expected, "'" + expected):  # a leading ' keeps a formula-like cell text
                raise StudyError(f"{path}:{line}: item {item_id}'s question differs from the key")
            raw = (row[LIKENESS_COLUMN] or "").strip()
            if raw not in ("0", "1"):
                shown = "empty" if not raw else repr(raw)
                raise StudyError(f"{path}:{line}: column {LIKENESS_COLUMN} of item {item_id} is {shown}; "
                                 "write 1 (a person) or 0 (a machine)")
            ratings[item_id] = int(raw)
    absent = sorted(set(key) - set(ratings))
    if absent:
        raise StudyError(f"{path}: {len(absent)} item(s) of the key are missing, e.g. {absent[0]}")
    return ratings


def score_likeness(sheets: list[str | os.PathLike], key_path: str | os.PathLike) -> dict[str, Any]:
    """The paper's human-likeness score: the share of post-PI (``mpa``) items rated human-written, pooled over
    raters and per rater; the same share for the real human questions (the control); rater agreement."""
    paths = _rater_sheets(sheets)
    key = _read_likeness_key(Path(key_path))
    per_rater = [_read_likeness_sheet(p, key) for p in paths]
    item_ids = sorted(key)
    out: dict[str, Any] = {"n_items": len(item_ids), "n_raters": len(paths), "raters": [str(p) for p in paths]}
    for source, name in (("mpa", "human_likeness"), ("human", "human_questions_taken_for_human")):
        ids = [i for i in item_ids if key[i]["source"] == source]
        values = [r[i] for r in per_rater for i in ids]
        out[name] = sum(values) / len(values) if values else None
        out[f"{name}_per_rater"] = {str(p): (sum(r[i] for i in ids) / len(ids) if ids else None)
                                    for p, r in zip(paths, per_rater, strict=True)}
        out.setdefault("items", {})[source] = len(ids)
    if len(per_rater) >= 2:
        table = [[r[i] for r in per_rater] for i in item_ids]
        if len(per_rater) == 2:
            kappa, kind = cohen_kappa([t[0] for t in table], [t[1] for t in table]), "cohen"
        else:
            kappa, kind = fleiss_kappa(table), "fleiss"
        out["agreement"] = {"percent_agreement": percent_agreement(table), "kappa": kappa, "kappa_kind": kind}
    return out

