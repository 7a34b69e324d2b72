"""Parse a teacher's pseudo-annotation into (question, answer), or say why not.

Accepted shapes: ``Question: … Answer: …`` on one line or several (any case; ``Q:``/``A:``;
markdown bold or headings around the labels; quotes around the values), and a JSON object
with ``question`` and ``answer`` keys, bare or in a fenced code block.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

_LABEL = r"[\*_#\s>]*"
_Q = re.compile(rf"{_LABEL}(?:question|q)\s*\d*\s*{_LABEL}[:：]{_LABEL}", re.IGNORECASE)
_A = re.compile(rf"{_LABEL}(?:answer|a)\s*\d*\s*{_LABEL}[:：]{_LABEL}", re.IGNORECASE)
_JSON = re.compile(r"\{.*\}", re.DOTALL)
_QUOTES = "\"'`“”‘’"


@dataclass(frozen=True)
class ParsedQA:
    question: str | None
    answer: str | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None


def _clean(s: str) -> str:
    s = s.strip().strip("*_").strip()
    if len(s) >= 2 and s[0] in _QUOTES and s[-1] in _QUOTES:
        s = s[1:-1].strip()
    return s


def _from_json(raw: str) -> tuple[str, str] | None:
    m = _JSON.search(raw)
    if not m:
        return None
    try:
        obj = json.loads(m.group(0))
    except json.JSONDecodeError:
        return None
    if not isinstance(obj, dict):
        return None
    keys = {k.lower(): v for k, v in obj.items()}
    q, a = keys.get("question"), keys.get("answer")
    if isinstance(q, str) and isinstance(a, str | int | float):
        return q, str(a)
    return None


def parse_qa(raw: str, max_answer_words: int | None = None) -> ParsedQA:
    """Parse one teacher output; ``max_answer_words`` rejects long answers (not kept, reason given)."""
    text = raw.strip()
    if not text:
        return ParsedQA(None, None, "empty output")
    pair = _from_json(text)
    if pair is None:
        qm = _Q.search(text)
        if not qm:
            return ParsedQA(None, None, "no 'Question:' found")
        am = _A.search(text, qm.end())
        if not am:
            return ParsedQA(_clean(text[qm.end():]) or None, None, "no 'Answer:' after the question")
        question = text[qm.end(): am.start()]
        answer = text[am.end():].strip().splitlines()[0] if text[am.end():].strip() else ""
        pair = (question, answer)
    question = _clean(" ".join(pair[0].split()))
    answer = _clean(_clean(pair[1]).rstrip(".").strip())
    if not question:
        return ParsedQA(None, answer or None, "empty question")
    if not answer:
        return ParsedQA(question, None, "empty answer")
    n_words = len(answer.split())
    if max_answer_words is not None and n_words > max_answer_words:
        return ParsedQA(question, answer, f"answer too long ({n_words} words > {max_answer_words})")
    return ParsedQA(question, answer, None)
