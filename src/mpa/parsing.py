"""Parse a teacher's pseudo-annotation into (question, answer), or say why not.

Accepted shapes: ``Question: … Answer: …`` on one line or several — including the paper's
one-line ``Question: Q, Answer: A`` — in any case; ``Q:``/``A:`` (an ``A:`` counts as the answer label
only after a ``Q:`` label and when no ``Answer:`` label follows, so "What does Plan A: stand for?" stays
whole); markdown bold, headings, list bullets (``-``, ``*``, ``•``) or numbering around the labels;
quotes around the values; and a JSON object with ``question`` and ``answer`` keys, bare or in a fenced code block.

The question and the answer come out as the teacher wrote them. Only the format around them is
removed: the labels and their decoration, the separator between the question and the ``Answer:``
label (``,`` ``;`` ``|`` or a dash: the one-line form's comma is not part of the question),
quotes that enclose a whole value, runs of whitespace inside the question (collapsed to one
space), and a sentence-final period after the answer (``Brown.`` → ``Brown``; an abbreviation's
period stays: ``U.S.``, ``Washington D.C.``; ``strip_period=False`` keeps it, as the MPA authors' parser
did). The answer is the rest of the line after its label.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

_LABEL_LEAD = r"[\*_#>\-•\s]*"  # bullets, markdown and whitespace before a label
_LABEL_TAIL = r"\s*\d*\s*[\*_]*\s*[:：][\*_]*\s*"  # "Question 1**:** " up to the value
_NOT_IN_WORD = r"(?<![^\W_])"  # the label is not the end of a longer word ("Coca:" holds no "a:" label)
_Q = re.compile(rf"{_LABEL_LEAD}{_NOT_IN_WORD}(question|q){_LABEL_TAIL}", re.IGNORECASE)
_ANSWER = re.compile(rf"{_LABEL_LEAD}{_NOT_IN_WORD}answer{_LABEL_TAIL}", re.IGNORECASE)
_A = re.compile(rf"{_LABEL_LEAD}{_NOT_IN_WORD}a{_LABEL_TAIL}", re.IGNORECASE)
_LINE_START_A = re.compile(rf"(?:^|\n)[\*_#>\-•\t ]*{_NOT_IN_WORD}a{_LABEL_TAIL}", re.IGNORECASE)
_AFTER_QMARK_A = re.compile(rf"\?[\s,;|\-–—]*{_NOT_IN_WORD}a{_LABEL_TAIL}", re.IGNORECASE)
_JSON = re.compile(r"\{.*\}", re.DOTALL)
_QUOTES = "\"'`“”‘’"
_SEPARATOR = re.compile(r"[\s,;|\-–—]+$")  # what may stand between a question and the Answer label
_ABBREVIATION_END = re.compile(r"(?:^|[\s(])(?:\w\.){2,}$")  # "U.S.", "D.C.", "a.m."


@dataclass(frozen=True)
class ParsedQA:
    question: str | None
    answer: str | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None


def _unquote(s: str) -> str:
    s = s.strip().strip("*_").strip()  # markdown emphasis around a whole value
    if len(s) >= 2 and s[0] in _QUOTES and s[-1] in _QUOTES:
        s = s[1:-1].strip()
    return s


def _clean_question(s: str) -> str:
    return _unquote(_SEPARATOR.sub("", " ".join(s.split())))


def _clean_answer(s: str, strip_period: bool = True) -> str:
    s = _unquote(s)
    if strip_period and s.endswith(".") and not _ABBREVIATION_END.search(s):
        s = s[:-1].rstrip()
    return _unquote(s)


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


def _answer_label(text: str, q_end: int, short_question_label: bool) -> re.Match[str] | None:
    """The answer label after the question: ``Answer:`` whenever there is one; ``A:`` only after a ``Q:``
    label ("What does Plan A: stand for?" keeps its ``A:``), preferring one that starts a line, then one
    right after the question's ``?``, then the first."""
    m = _ANSWER.search(text, q_end)
    if m or not short_question_label:
        return m
    for pattern in (_LINE_START_A, _AFTER_QMARK_A):
        m = pattern.search(text, q_end)
        if m:
            return m
    return _A.search(text, q_end)


def parse_qa(raw: str, max_answer_words: int | None = None, *, strip_period: bool = True) -> ParsedQA:
    """Parse one teacher output; ``max_answer_words`` rejects long answers (not kept, reason given);
    ``strip_period=False`` keeps a sentence-final period of the answer (the answer exactly as written)."""
    text = raw.strip()
    if not text:
        return ParsedQA(None, None, "empty output")
    pair = _from_json(text)
    if pair is not None:
        question, answer = " ".join(pair[0].split()), _clean_answer(pair[1], strip_period)
    else:
        qm = _Q.search(text)
        if not qm:
            return ParsedQA(None, None, "no 'Question:' found")
        am = _answer_label(text, qm.end(), short_question_label=qm.group(1).lower() == "q")
        if not am:
            return ParsedQA(_clean_question(text[qm.end():]) or None, None, "no 'Answer:' after the question")
        rest = text[am.end():].strip()
        start = am.start() + (1 if am.group(0).startswith(("?", "\n")) else 0)  # the "?" belongs to the question
        question = _clean_question(text[qm.end(): start])
        answer = _clean_answer(rest.splitlines()[0], strip_period) if rest else ""
    if not question:
        return ParsedQA(None, answer or None, "empty question")
    if not answer:
        return ParsedQA(question, None, "empty answer")
    n_words = len(answer.split())
    if max_answer_words is not None and n_words > max_answer_words:
        return ParsedQA(question, answer, f"answer too long ({n_words} words > {max_answer_words})")
    return ParsedQA(question, answer, None)
