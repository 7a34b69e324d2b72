"""Official VQA-style metrics (VQA accuracy, ANLS, ChartQA relaxed accuracy, exact match) and the
MPA authors' substring rule ``contains``.

Every scoring function returns a float in ``[0, 1]``; the PI match rules (:func:`match`) return a bool.

Answer normalisation (:func:`normalize_answer`)
-----------------------------------------------
We reproduce the *EvalAI answer processor* exactly as used by the TextVQA/VQA evaluators in
MMF/Pythia (``pythia/tasks/processors.py::EvalAIAnswerProcessor``), LLaVA's ``m4c_evaluator`` and
lmms-eval's TextVQA/OK-VQA tasks, i.e. the processor behind the numbers VLM papers report:

1. ``word_tokenize``: lowercase; delete every ``,`` and ``?``; ``'s`` -> `` 's``; strip.
2. ``\\n``/``\\t`` -> space; strip.
3. ``processPunctuation``: for each of ``; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? !``: if that char
   is adjacent to a space anywhere in the text (``p + " "`` or ``" " + p``), or the text contains a
   digit-comma-digit pattern, every occurrence is *removed*; otherwise every occurrence is
   *replaced by a space*.  (Because step 1 already deleted commas, the digit-comma test can never
   fire in this processor; it is kept for fidelity.)  Then the period regex is applied (below).
4. ``processDigitArticle``: split on whitespace; number words ``none``/``zero``..``ten`` -> digits
   (``none`` -> ``0`` is in the official map); drop the articles ``a``/``an``/``the``; map
   apostrophe-less contractions with the official contractions table (``dont`` -> ``don't``, ...);
   join with single spaces.

**Period-regex decision.**  The official evaluator strips periods with
``re.compile(r"(?!<=\\d)(\\.)(?!\\d)")``.  The intended look-behind was ``(?<!\\d)``, but as written
``(?!<=\\d)`` is a *negative look-ahead* for the literal text ``<=`` + digit, which is always true
at a ``.``, so the regex really means ``\\.(?!\\d)``: **every period not followed by a digit is
deleted, whatever precedes it**.  We follow the official evaluator's *actual* behaviour, typo
included, because that is what every reported TextVQA/OK-VQA score was computed with:
``"3."`` -> ``"3"`` (the intended regex would keep ``"3."``), ``"a.b"`` -> ``"ab"``,
``"1.5"`` -> ``"1.5"`` (decimal points between digits are kept), ``".5"`` -> ``".5"``.  The
official call is ``PERIOD_STRIP.sub("", text, re.UNICODE)``, which passes ``re.UNICODE`` (== 32)
as the *count* argument, so at most 32 periods are removed; we replicate that too.

VQA accuracy (:func:`vqa_accuracy`)
-----------------------------------
Prediction *and* every GT answer go through the full :func:`normalize_answer`, unconditionally.
This is the MMF/LLaVA ``TextVQAAccuracyEvaluator`` and lmms-eval behaviour.  (The original
``vqaEval.py`` only runs punctuation/digit processing when the GT answers disagree and never runs
step 1; since its GT files are pre-normalised, the two agree in practice.)  Then, for ``n`` GT
answers, ``acc_i = min(1, #(other n-1 answers equal to the prediction) / 3)`` and the score is the
mean over ``i``; for ``n == 1`` the score is plain normalised exact match.

ANLS (:func:`anls`)
-------------------
Strings are compared after ``" ".join(s.strip().lower().split())`` (lowercase, trimmed, internal
whitespace collapsed, as the ST-VQA/DocVQA evaluator does).  ``NL = lev(a, b) / max(len(a), len(b))``
on the *normalised* strings (0 when both are empty); per-GT score is ``1 - NL`` if ``NL < threshold``
else 0 (the ANLS paper definition: NL exactly 0.5 scores 0), maximised over GT answers.

ChartQA relaxed accuracy (:func:`relaxed_accuracy`)
---------------------------------------------------
Both strings are stripped; a value parses as a number after removing surrounding ``$`` and a
trailing ``%`` and thousand-separator commas (``1,234.5``); non-finite values do not count as
numbers.  ``"45%"`` parses as 45 (the pix2struct script divides by 100 instead; stripping is the
more forgiving choice when only one side carries the sign).  If both parse, correct iff
``|pred - target| <= tolerance * |target|`` (with a 1e-9 relative slack so that an exact 5% error
written in decimal, e.g. 1.05 vs 1.0, counts despite binary rounding); target 0 needs pred == 0.
Otherwise case-insensitive exact string match.

The authors' substring rule (:func:`contains_accuracy`, metric and PI rule ``contains``)
-----------------------------------------------------------------------------------------
The MPA authors' released code (vl2g/MPA, arXiv 2509.16633) scores every benchmark, and judges
E(.) in PI, with one rule, reproduced here for comparison with the paper's tables:
the ground truth is the *most frequent* answer (``Counter(answers).most_common(1)`` on the raw
strings: ties go to the answer listed first); both strings are lower-cased, all whitespace is
removed, then every non-word character (regex ``\\W``, Unicode-aware: letters, digits and ``_``
survive) is removed; the prediction is correct iff the processed answer is a *substring* of the
processed prediction. Consequences worth knowing: a verbose prediction ("The brand is Nokia.")
counts as correct; ``"1"`` is found inside ``"10"``; an answer made only of punctuation processes
to ``""`` and matches every prediction (as in the authors' code).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

__all__ = [
    "MATCH_RULES",
    "METRICS",
    "anls",
    "contains",
    "contains_accuracy",
    "contains_normalize",
    "exact_match",
    "levenshtein",
    "most_frequent_answer",
    "match",
    "normalize_answer",
    "relaxed_accuracy",
    "score_sample",
    "vqa_accuracy",
]

# ---------------------------------------------------------------------------------------------
# EvalAI answer processor tables (official values)
# ---------------------------------------------------------------------------------------------

CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've",
    "hasnt": "hasn't", "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've",
    "hes": "he's", "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've",
    "I'dve": "I'd've", "Im": "I'm", "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've",
    "it'dve": "it'd've", "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't",
    "mustve": "must've", "neednt": "needn't", "notve": "not've", "oclock": "o'clock",
    "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at",
    "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's",
    "shouldve": "should've", "shouldnt": "shouldn't", "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd", "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've", "somebodyll": "somebody'll", "somebodys": "somebody's",
    "someoned": "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd",
    "somethingd've": "something'd've", "something'dve": "something'd've", "somethingll": "something'll",
    "thats": "that's", "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've",
    "werent": "weren't", "whatll": "what'll", "whatre": "what're", "whats": "what's",
    "whatve": "what've", "whens": "when's", "whered": "where'd", "wheres": "where's",
    "whereve": "where've", "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've",
    "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're",
    "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've",
    "y'all'dve": "y'all'd've", "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've",
    "youll": "you'll", "youre": "you're", "youve": "you've",
}  # fmt: skip

NUMBER_MAP: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip

ARTICLES: frozenset[str] = frozenset({"a", "an", "the"})

PUNCTUATIONS: tuple[str, ...] = (
    ";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!",
)  # fmt: skip

# The official regex, look-behind typo included (see module docstring): effectively r"\.(?!\d)".
PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_PERIOD_STRIP_COUNT = int(re.UNICODE)  # the official code passes re.UNICODE (32) as ``count``
COMMA_STRIP = re.compile(r"(?<=\d)(\,)+(?=\d)")


def _process_punctuation(text: str) -> str:
    out = text
    has_digit_comma = COMMA_STRIP.search(text) is not None
    for p in PUNCTUATIONS:
        if (p + " " in text or " " + p in text) or has_digit_comma:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return PERIOD_STRIP.sub("", out, count=_PERIOD_STRIP_COUNT)


def _process_digit_article(text: str) -> str:
    words = [NUMBER_MAP.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in ARTICLES]
    return " ".join(CONTRACTIONS.get(w, w) for w in words)


def normalize_answer(s: str) -> str:
    """EvalAI answer processor (MMF/lmms-eval); see the module docstring for every step."""
    s = str(s).lower()
    s = s.replace(",", "").replace("?", "").replace("'s", " 's").strip()
    s = s.replace("\n", " ").replace("\t", " ").strip()
    s = _process_punctuation(s)
    return _process_digit_article(s)


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------


def _require_answers(gt_answers: Sequence[str], fn: str) -> list[str]:
    if isinstance(gt_answers, str):
        raise TypeError(f"{fn}: gt_answers must be a list of strings, not a single string")
    answers = [str(a) for a in gt_answers]
    if not answers:
        raise ValueError(f"{fn}: gt_answers is empty")
    return answers


def vqa_accuracy(prediction: str, gt_answers: list[str]) -> float:
    """Official VQA accuracy: mean over leave-one-out subsets of ``min(1, #matches / 3)``."""
    answers = [normalize_answer(a) for a in _require_answers(gt_answers, "vqa_accuracy")]
    pred = normalize_answer(prediction)
    if len(answers) == 1:
        return 1.0 if pred == answers[0] else 0.0
    total_matches = sum(1 for a in answers if a == pred)
    accs = []
    for a in answers:
        others_matching = total_matches - (1 if a == pred else 0)
        accs.append(min(1.0, others_matching / 3.0))
    return sum(accs) / len(accs)


def levenshtein(a: str, b: str) -> int:
    """Plain edit distance (insert/delete/substitute, unit costs)."""
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return len(a)
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def _anls_norm(s: str) -> str:
    return " ".join(str(s).strip().lower().split())


def anls(prediction: str, gt_answers: list[str], threshold: float = 0.5) -> float:
    """Average Normalized Levenshtein Similarity for one question (max over GT answers)."""
    pred = _anls_norm(prediction)
    best = 0.0
    for gt in _require_answers(gt_answers, "anls"):
        ref = _anls_norm(gt)
        length = max(len(ref), len(pred))
        nl = 0.0 if length == 0 else levenshtein(ref, pred) / length
        score = 1.0 - nl if nl < threshold else 0.0
        best = max(best, score)
    return best


_THOUSANDS = re.compile(r"[+-]?\d{1,3}(,\d{3})+(\.\d*)?")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def _to_float(text: str) -> float | None:
    s = text.strip()
    if s.endswith("%"):
        s = s[:-1].strip()
    sign = ""
    if s[:1] in ("+", "-") and s[1:2] == "$":
        sign, s = s[0], s[2:]
    elif s.startswith("$"):
        s = s[1:]
    s = sign + s.strip()
    if _THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    if not _NUMBER.fullmatch(s):
        return None
    value = float(s)
    return value if math.isfinite(value) else None


def relaxed_accuracy(prediction: str, target: str, tolerance: float = 0.05) -> float:
    """ChartQA relaxed accuracy: numbers within ``tolerance`` relative error, else case-insensitive EM."""
    pred_s, target_s = str(prediction).strip(), str(target).strip()
    pred_f, target_f = _to_float(pred_s), _to_float(target_s)
    if pred_f is not None and target_f is not None:
        if target_f == 0.0:
            return 1.0 if pred_f == 0.0 else 0.0
        ok = abs(pred_f - target_f) <= abs(target_f) * (tolerance + 1e-9)
        return 1.0 if ok else 0.0
    return 1.0 if pred_s.lower() == target_s.lower() else 0.0


def exact_match(prediction: str, target: str) -> float:
    """1.0 iff the stripped strings are identical (case-sensitive)."""
    return 1.0 if str(prediction).strip() == str(target).strip() else 0.0


_NON_WORD = re.compile(r"\W+")
_WHITESPACE = re.compile(r"\s+")


def contains_normalize(text: str | None) -> str:
    """The authors' preprocessing: lower-case, drop whitespace, then drop every ``\\W`` character."""
    if text is None:
        return ""
    return _NON_WORD.sub("", _WHITESPACE.sub("", str(text).lower()))


def contains(prediction: str, reference: str) -> bool:
    """Is the processed ``reference`` a substring of the processed ``prediction``?"""
    return contains_normalize(reference) in contains_normalize(prediction)


def most_frequent_answer(gt_answers: Sequence[str]) -> str:
    """The most frequent ground-truth answer (raw strings; ties: the one listed first)."""
    answers = _require_answers(gt_answers, "most_frequent_answer")
    return Counter(answers).most_common(1)[0][0]


def contains_accuracy(prediction: str, gt_answers: list[str]) -> float:
    """The authors' benchmark rule: 1.0 iff the most frequent GT answer is contained in the prediction."""
    return 1.0 if contains(prediction, most_frequent_answer(gt_answers)) else 0.0


# ---------------------------------------------------------------------------------------------
# PI match rules and per-sample dispatch
# ---------------------------------------------------------------------------------------------

MATCH_RULES: tuple[str, ...] = ("exact", "vqa", "relaxed", "anls", "contains")
METRICS: tuple[str, ...] = ("vqa", "anls", "relaxed", "exact", "contains")


def match(
    rule: str,
    prediction: str,
    reference: str,
    *,
    anls_threshold: float = 0.5,
    tolerance: float = 0.05,
) -> bool:
    """Does ``prediction`` agree with ``reference`` under a PI match rule?

    - ``exact``: stripped strings equal (case-sensitive).
    - ``vqa`` (the default rule elsewhere): ``normalize_answer`` of both equal.
    - ``relaxed``: ``relaxed_accuracy(prediction, reference, tolerance) == 1``.
    - ``anls``: ``anls(prediction, [reference], anls_threshold) > 0``, i.e. the normalised
      Levenshtein distance is strictly below ``anls_threshold``.
    - ``contains`` (the authors' rule): the processed ``reference`` is a substring of the
      processed ``prediction`` (:func:`contains`).
    """
    if rule == "exact":
        return exact_match(prediction, reference) == 1.0
    if rule == "vqa":
        return normalize_answer(prediction) == normalize_answer(reference)
    if rule == "relaxed":
        return relaxed_accuracy(prediction, reference, tolerance) == 1.0
    if rule == "anls":
        return anls(prediction, [reference], anls_threshold) > 0.0
    if rule == "contains":
        return contains(prediction, reference)
    raise ValueError(f"unknown match rule {rule!r}; valid rules: {', '.join(MATCH_RULES)}")


def score_sample(metric: str, prediction: str, answers: list[str]) -> float:
    """Score one prediction with a benchmark metric: ``vqa``, ``anls``, ``relaxed``, ``exact`` or ``contains``.

    ``relaxed`` compares against ``answers[0]`` (ChartQA has a single label); ``exact`` is the
    maximum exact match over all answers; ``contains`` is the authors' rule against the most
    frequent answer (:func:`contains_accuracy`).
    """
    if metric == "vqa":
        return vqa_accuracy(prediction, answers)
    if metric == "anls":
        return anls(prediction, answers)
    if metric == "relaxed":
        return relaxed_accuracy(prediction, _require_answers(answers, "score_sample")[0])
    if metric == "exact":
        return max(exact_match(prediction, a) for a in _require_answers(answers, "score_sample"))
    if metric == "contains":
        return contains_accuracy(prediction, answers)
    raise ValueError(f"unknown metric {metric!r}; valid metrics: {', '.join(METRICS)}")
