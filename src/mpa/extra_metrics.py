"""The paper's beyond-VQA checks as optional evaluations.

- **Word recognition rate** on cropped words in the ICDAR2015 (Incidental Scene Text, task 4.3)
  format: a ``gt.txt`` of ``word_1.png, "Tiredness"`` lines (UTF-8, optional BOM, ``\\"`` escapes)
  beside the word images. WRR = fraction of words read exactly; reported case-sensitive
  (``wrr_exact``) and in the common normalised protocol (``wrr``: case-insensitive, letters and
  digits only). Words whose ground truth is ``###`` (illegible, "do not care") are skipped.
- **Text-aware captioning** (TextCaps-style): BLEU-1, ROUGE-L and CIDEr(-D) from ``pycocoevalcap``
  (the COCO caption evaluation code TextCaps' evaluator uses). Captions are tokenised with the
  Stanford PTB tokenizer when ``java`` is available (exactly as the COCO toolkit does), else
  with :func:`ptb_like_tokenize`, a Python re-implementation of its lower-casing and
  punctuation removal (pass ``tokenizer="python"`` to force it). Annotations: the TextCaps json
  (``{"data": [{image_id, reference_strs | caption_str}]}``, several entries per image are merged)
  or a jsonl of ``{"image_id", "references": [...]}``.

Both read predictions as jsonl (``{"question_id"|"image_id", "answer"|"caption"}``).
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mpa import storage

WORD_PROMPT = "What is the word in this image? Answer with the word only, exactly as written."
CAPTION_PROMPT = "Describe this image in one sentence, including any text you can read in it."


# --- word recognition (ICDAR2015 cropped words) -----------------------------------------------------


@dataclass
class WordSample:
    id: str
    image: str
    word: str


def _unquote(field: str) -> str:
    field = field.strip()
    if len(field) >= 2 and field[0] == '"' and field[-1] == '"':
        field = field[1:-1]
    return re.sub(r'\\(["\\])', r"\1", field)


def load_icdar2015_words(gt_file: str, images: str | None = None, *, skip_dont_care: bool = True) -> list[WordSample]:
    """Read an ICDAR2015 word-recognition ground-truth file (``word_1.png, "Tiredness"`` per line)."""
    root = images if images is not None else storage.parent(gt_file)
    samples = []
    for lineno, line in enumerate(storage.read_bytes(gt_file).decode("utf-8-sig").splitlines(), 1):
        if not line.strip():
            continue
        name, sep, word = line.partition(",")
        if not sep:
            raise ValueError(f"{gt_file}:{lineno}: expected 'word_N.png, \"text\"'")
        word = _unquote(word)
        if skip_dont_care and word == "###":
            continue
        name = name.strip()
        samples.append(WordSample(id=Path(name).stem, image=storage.join(root, name), word=word))
    if not samples:
        raise ValueError(f"{gt_file}: no words")
    return samples


def normalize_word(word: str) -> str:
    """The common WRR protocol: case-insensitive, letters and digits only."""
    return "".join(ch for ch in word.lower() if ch.isalnum())


def word_recognition_rate(samples: list[WordSample], predictions: dict[str, str]) -> dict[str, Any]:
    """``wrr`` (normalised) and ``wrr_exact`` (case-sensitive, trimmed) in percent; missing = wrong."""
    n = len(samples)
    if not n:
        raise ValueError("no words to score")
    norm = exact = missing = 0
    for s in samples:
        pred = predictions.get(s.id)
        if pred is None:
            missing += 1
            continue
        exact += pred.strip() == s.word.strip()
        norm += normalize_word(pred) == normalize_word(s.word)
    return {"metric": "wrr", "wrr": 100.0 * norm / n, "wrr_exact": 100.0 * exact / n, "n": n, "n_missing": missing}


# --- text-aware captioning -----------------------------------------------------------------------

PTB_PUNCTUATIONS = {
    "''",
    "'",
    "``",
    "`",
    "-LRB-",
    "-RRB-",
    "-LCB-",
    "-RCB-",
    ".",
    "?",
    "!",
    ",",
    ":",
    "-",
    "--",
    "...",
    ";",
    '"',
}  # PTB turns " into `` or ''
_PTB_TOKEN = re.compile(
    r"\.\.\.|--|``|''"  # multi-character punctuation
    r"|n't\b|'(?:s|re|ve|ll|d|m)\b"  # clitics (split off by the word loop below)
    r"|(?:[^\W\d_]\.){2,}"  # abbreviations: u.s.a.
    r"|[^\W_]+(?:[-/.,_][^\W_]+)*"  # words, numbers (3.50, 1,000, 24/7), hyphenated words
    r"|[^\s\w]|_"  # any other single symbol
)
_PTB_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "{": "-lcb-", "}": "-rcb-", "[": "-lsb-", "]": "-rsb-"}


def ptb_like_tokenize(text: str) -> str:
    """Lower-case, split words from punctuation and clitics (``don't`` → ``do n't``) and drop the
    punctuation tokens the COCO toolkit drops; returns space-joined tokens. Brackets become
    ``-lrb-``/``-rrb-`` and are kept, as the lower-cased PTB output is."""
    text = text.replace("\n", " ").lower()
    tokens = []
    for word in text.split():
        m = re.match(r"^(.+?)(n't|'(?:s|re|ve|ll|d|m))([^\w]*)$", word)
        parts = [m.group(1), m.group(2), m.group(3)] if m else [word]
        for part in parts:
            tokens.extend(_PTB_BRACKETS.get(t, t) for t in _PTB_TOKEN.findall(part))
    return " ".join(t for t in tokens if t not in PTB_PUNCTUATIONS)


def _tokenize(captions: dict[str, list[str]], tokenizer: str) -> dict[str, list[str]]:
    if tokenizer == "auto":
        tokenizer = "ptb" if shutil.which("java") else "python"
    if tokenizer == "ptb":
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        return PTBTokenizer().tokenize({k: [{"caption": c} for c in v] for k, v in captions.items()})
    if tokenizer == "python":
        return {k: [ptb_like_tokenize(c) for c in v] for k, v in captions.items()}
    raise ValueError(f"unknown tokenizer {tokenizer!r}; choose auto, ptb or python")


def caption_scores(
    references: dict[str, list[str]], predictions: dict[str, str], *, tokenizer: str = "auto"
) -> dict[str, Any]:
    """BLEU-1, ROUGE-L and CIDEr (×100) of one predicted caption per image against its references.

    Images without a prediction are scored with an empty caption (and counted in ``n_missing``).
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    if not references:
        raise ValueError("no reference captions")
    ids = sorted(references)
    missing = sum(1 for i in ids if i not in predictions)
    gts = _tokenize({i: references[i] for i in ids}, tokenizer)
    res = _tokenize({i: [predictions.get(i, "")] for i in ids}, tokenizer)
    res = {i: [c if c.strip() else "<empty>"] for i, c in ((i, v[0]) for i, v in res.items())}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, _ = Rouge().compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)
    return {
        "metric": "captioning",
        "bleu1": 100.0 * bleu[0],
        "bleu4": 100.0 * bleu[3],
        "rouge_l": 100.0 * rouge,
        "cider": 100.0 * cider,
        "n": len(ids),
        "n_missing": missing,
    }


@dataclass
class CaptionSample:
    id: str
    image: str
    references: list[str]


def load_caption_references(path: str, images: str | None = None) -> list[CaptionSample]:
    """TextCaps json (``data`` entries with ``image_id`` and ``reference_strs``/``caption_str``) or a jsonl of
    ``{"image_id", "references"}``; image = ``{images}/{image_id}.jpg`` (``.png`` if that exists)."""
    root = images if images is not None else storage.parent(path)
    raw = storage.read_bytes(path).decode("utf-8-sig")
    refs: dict[str, list[str]] = {}
    if str(path).endswith(".jsonl"):
        for lineno, line in enumerate(raw.splitlines(), 1):
            if line.strip():
                obj = json.loads(line)
                if "image_id" not in obj or "references" not in obj:
                    raise ValueError(f"{path}:{lineno}: expected keys 'image_id' and 'references'")
                refs.setdefault(str(obj["image_id"]), []).extend(map(str, obj["references"]))
    else:
        data = json.loads(raw)
        entries = data.get("data") if isinstance(data, dict) else None
        if not isinstance(entries, list):
            raise ValueError(f"{path}: expected TextCaps json with a 'data' list")
        for i, e in enumerate(entries):
            if "image_id" not in e:
                raise ValueError(f"{path}: entry {i} is missing 'image_id'")
            bucket = refs.setdefault(str(e["image_id"]), [])
            if e.get("reference_strs"):
                bucket.extend(r for r in map(str, e["reference_strs"]) if r not in bucket)
            elif e.get("caption_str") and e["caption_str"] not in bucket:
                bucket.append(str(e["caption_str"]))
    out = []
    for image_id, rs in refs.items():
        image = storage.join(root, f"{image_id}.jpg")
        png = storage.join(root, f"{image_id}.png")
        if not Path(image).exists() and Path(png).exists():
            image = png
        if rs:
            out.append(CaptionSample(image_id, image, rs))
    if not out:
        raise ValueError(f"{path}: no reference captions")
    return out


# --- predictions -----------------------------------------------------------------------------------


def read_predictions(path: str) -> dict[str, str]:
    """jsonl with an id (``question_id``, ``image_id`` or ``id``) and a text (``answer``, ``caption``, ``text``)."""
    out = {}
    for lineno, line in enumerate(storage.read_bytes(path).decode("utf-8-sig").splitlines(), 1):
        if not line.strip():
            continue
        obj = json.loads(line)
        key = next((k for k in ("question_id", "image_id", "id") if k in obj), None)
        val = next((k for k in ("answer", "caption", "text") if k in obj), None)
        if key is None or val is None:
            raise ValueError(f"{path}:{lineno}: expected an id and an answer/caption")
        out[str(obj[key])] = str(obj[val])
    return out


def generate_answers(
    model: Any,
    items: list[tuple[str, str]],
    prompt: str,
    predictions_path: str | Path,
    *,
    batch_size: int = 8,
    max_new_tokens: int = 16,
    label: str = "extra eval",
) -> dict[str, str]:
    """Have a VLM answer ``prompt`` for each ``(id, image)``; resumable jsonl of ``{"id", "answer"}``."""
    from mpa.stages.evaluate import answer_all

    return answer_all(model, [(i, img, prompt) for i, img in items], predictions_path, id_key="id",
                      batch_size=batch_size, max_new_tokens=max_new_tokens, label=label)


def evaluate_words(
    model: Any,
    samples: list[WordSample],
    predictions_path: str | Path,
    *,
    batch_size: int = 8,
    prompt: str = WORD_PROMPT,
) -> dict[str, Any]:
    preds = generate_answers(
        model,
        [(s.id, s.image) for s in samples],
        prompt,
        predictions_path,
        batch_size=batch_size,
        label="word recognition",
    )
    return word_recognition_rate(samples, preds) | {"model": model.model_id}


def evaluate_captions(
    model: Any,
    samples: list[CaptionSample],
    predictions_path: str | Path,
    *,
    batch_size: int = 8,
    prompt: str = CAPTION_PROMPT,
    max_new_tokens: int = 48,
    tokenizer: str = "auto",
) -> dict[str, Any]:
    preds = generate_answers(
        model,
        [(s.id, s.image) for s in samples],
        prompt,
        predictions_path,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        label="captioning",
    )
    return caption_scores({s.id: s.references for s in samples}, preds, tokenizer=tokenizer) | {"model": model.model_id}
