"""A synthetic VQA world with exact ground truth: scenes, rendering, question templates, oracle.

Images are 84×84 RGB: a 3×3 grid of 28×28 cells, so a stock Qwen2-VL with 14-px patches and a
2×2 merge sees exactly one visual token per cell (processor ``min_pixels = max_pixels = 84*84``).

Two families mirror the paper's benchmarks:

* ``chart`` (ChartQA-like): bars of distinct colours with heights 1–5, one bar per occupied cell.
* ``text`` (TextVQA-like): coloured "signs", each carrying one big black glyph that spells a
  "word" (a tiny alphabet of six shapes, one per word). Questions are keyed by colour or content,
  never by position (position-keyed questions did not learn in the feasibility studies).

A :class:`Scene` is JSON-serialisable and is the ground truth. :func:`oracle_answer` parses any
well-formed template question (also one a teacher generated) and answers it from the scene, or
returns ``None`` when the question is not a template question or cannot be answered.
"""

from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass, field

from PIL import Image, ImageDraw

SIZE = 84
CELL = 28
GRID = 3
N_CELLS = GRID * GRID

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (40, 70, 230),
    "yellow": (240, 210, 20),
    "purple": (150, 40, 190),
    "orange": (250, 130, 0),
}
COLOUR_NAMES = list(COLOURS)
WORDS = ["stop", "exit", "open", "sale", "taxi", "cafe"]
MAX_VALUE = 5
NUMBER_WORDS = {
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
}

FAMILIES = ("chart", "text")


@dataclass
class Item:
    cell: int  # 0..8, row-major
    colour: str
    value: int | None = None  # bar height (chart)
    word: str | None = None  # glyph word (text)


@dataclass
class Scene:
    family: str  # "chart" | "text"
    items: list[Item] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"family": self.family, "items": [asdict(i) for i in self.items]}

    @classmethod
    def from_dict(cls, d: dict) -> Scene:
        return cls(family=d["family"], items=[Item(**i) for i in d["items"]])

    def by_colour(self, colour: str) -> Item | None:
        return next((i for i in self.items if i.colour == colour), None)

    def by_word(self, word: str) -> Item | None:
        hits = [i for i in self.items if i.word == word]
        return hits[0] if len(hits) == 1 else None


# ----------------------------------------------------------------------------- sampling


def sample_scene(rng: random.Random, family: str | None = None, min_items: int = 2, max_items: int = 6) -> Scene:
    """A random scene. Charts have a unique tallest and a unique shortest bar."""
    family = family or rng.choice(FAMILIES)
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose one of {FAMILIES}")
    n = rng.randint(min_items, max_items)
    cells = sorted(rng.sample(range(N_CELLS), n))
    colours = rng.sample(COLOUR_NAMES, n)
    if family == "chart":
        while True:
            values = [rng.randint(1, MAX_VALUE) for _ in range(n)]
            if values.count(max(values)) == 1 and values.count(min(values)) == 1:
                break
        items = [Item(c, col, value=v) for c, col, v in zip(cells, colours, values, strict=True)]
    else:
        words = rng.sample(WORDS, n)
        items = [Item(c, col, word=w) for c, col, w in zip(cells, colours, words, strict=True)]
    return Scene(family, items)


# ----------------------------------------------------------------------------- rendering


def _draw_glyph(d: ImageDraw.ImageDraw, word: str, x0: int, y0: int) -> None:
    """One big black glyph per word, inside the 28×28 cell at (x0, y0)."""
    k = (0, 0, 0)
    lf, t, r, b = x0 + 5, y0 + 5, x0 + 22, y0 + 22  # 18×18 glyph box
    cx, cy = x0 + 13, y0 + 13
    if word == "stop":  # ring
        d.ellipse([lf, t, r, b], outline=k, width=4)
    elif word == "exit":  # X
        d.line([lf, t, r, b], fill=k, width=4)
        d.line([lf, b, r, t], fill=k, width=4)
    elif word == "open":  # plus
        d.rectangle([cx - 2, t, cx + 2, b], fill=k)
        d.rectangle([lf, cy - 2, r, cy + 2], fill=k)
    elif word == "sale":  # filled triangle
        d.polygon([(cx, t), (r, b), (lf, b)], fill=k)
    elif word == "taxi":  # three horizontal stripes
        for yy in (t, cy - 2, b - 4):
            d.rectangle([lf, yy, r, yy + 4], fill=k)
    elif word == "cafe":  # hollow square
        d.rectangle([lf, t, r, b], outline=k, width=4)
    else:
        raise ValueError(f"no glyph for word {word!r}")


def render(scene: Scene) -> Image.Image:
    """Render a scene to an 84×84 RGB image (deterministic: same scene, same pixels)."""
    img = Image.new("RGB", (SIZE, SIZE), (255, 255, 255))
    d = ImageDraw.Draw(img)
    for it in scene.items:
        x0, y0 = (it.cell % GRID) * CELL, (it.cell // GRID) * CELL
        rgb = COLOURS[it.colour]
        if scene.family == "chart":
            h = 5 * int(it.value or 0)  # 5..25 px
            d.rectangle([x0 + 7, y0 + 27 - h, x0 + 20, y0 + 27], fill=rgb)
            d.line([x0 + 2, y0 + 27, x0 + 25, y0 + 27], fill=(0, 0, 0), width=1)  # baseline
        else:
            d.rectangle([x0 + 1, y0 + 1, x0 + 26, y0 + 26], fill=rgb)
            _draw_glyph(d, str(it.word), x0, y0)
    return img


# ----------------------------------------------------------------------------- questions

# qtype -> (family, template). ``{colour}`` / ``{word}`` are filled from the scene.
TEMPLATES: dict[str, tuple[str, str]] = {
    "chart_value": ("chart", "What is the value of the {colour} bar?"),
    "chart_max": ("chart", "Which bar is the tallest?"),
    "chart_min": ("chart", "Which bar is the shortest?"),
    "chart_count": ("chart", "How many bars are there?"),
    "text_word": ("text", "What word is on the {colour} sign?"),
    "text_colour": ("text", "What colour is the sign that says {word}?"),
    "text_count": ("text", "How many signs are there?"),
}
QTYPES = list(TEMPLATES)
QTYPES_BY_FAMILY = {f: [q for q, (fam, _) in TEMPLATES.items() if fam == f] for f in FAMILIES}

_C = "|".join(COLOUR_NAMES)
_W = "|".join(WORDS)
_PATTERNS: list[tuple[str, re.Pattern]] = [
    ("chart_value", re.compile(rf"^what is the value of the ({_C}) bar$")),
    ("chart_max", re.compile(r"^which bar is the (tallest|highest|largest)$")),
    ("chart_min", re.compile(r"^which bar is the (shortest|lowest|smallest)$")),
    ("chart_count", re.compile(r"^how many bars are there$")),
    ("text_word", re.compile(rf"^what word is on the ({_C}) sign$")),
    ("text_colour", re.compile(rf"^what colou?r is the sign that says ({_W})$")),
    ("text_count", re.compile(r"^how many signs are there$")),
]


def _norm_question(q: str) -> str:
    q = q.strip().lower()
    q = re.sub(r"\s+", " ", q)
    return q.rstrip(" ?.!").strip()


def parse_question(question: str) -> tuple[str, str | None] | None:
    """``(qtype, argument)`` of a template question, or ``None`` if it is not one."""
    q = _norm_question(question)
    for qtype, pat in _PATTERNS:
        m = pat.match(q)
        if m:
            arg = m.group(1) if qtype in ("chart_value", "text_word", "text_colour") else None
            return qtype, arg
    return None


def question_type(question: str) -> str | None:
    p = parse_question(question)
    return p[0] if p else None


def oracle_answer(scene: Scene, question: str) -> str | None:
    """The true answer to a template question about ``scene``; ``None`` if unparseable/unanswerable."""
    parsed = parse_question(question)
    if parsed is None:
        return None
    qtype, arg = parsed
    if TEMPLATES[qtype][0] != scene.family:
        return None  # e.g. asking about bars in a scene of signs
    if qtype == "chart_value":
        it = scene.by_colour(str(arg))
        return str(it.value) if it else None
    if qtype in ("chart_max", "chart_min"):
        vals = [i.value for i in scene.items]
        if not vals:
            return None
        target = max(vals) if qtype == "chart_max" else min(vals)
        hits = [i for i in scene.items if i.value == target]
        return hits[0].colour if len(hits) == 1 else None
    if qtype in ("chart_count", "text_count"):
        return str(len(scene.items))
    if qtype == "text_word":
        it = scene.by_colour(str(arg))
        return it.word if it else None
    if qtype == "text_colour":
        it = scene.by_word(str(arg))
        return it.colour if it else None
    return None  # pragma: no cover


def make_question(scene: Scene, qtype: str, rng: random.Random) -> str:
    """A well-formed, answerable question of ``qtype`` about ``scene``."""
    family, template = TEMPLATES[qtype]
    if family != scene.family:
        raise ValueError(f"question type {qtype} does not apply to a {scene.family} scene")
    it = rng.choice(scene.items)
    return template.format(colour=it.colour, word=it.word)


UNANSWERABLE = "none"  # what the teacher learns to say about things that are not in the image


def make_unanswerable_question(scene: Scene, rng: random.Random) -> str | None:
    """A well-formed template question about something absent from ``scene`` (oracle: ``None``).

    The teacher learns to answer these with :data:`UNANSWERABLE`, so when its own sampled
    pseudo-annotation asks about an absent item, its greedy answer disagrees and PI drops it.
    """
    options: list[str] = []
    if scene.family == "chart":
        absent = [c for c in COLOUR_NAMES if scene.by_colour(c) is None]
        options += [TEMPLATES["chart_value"][1].format(colour=c) for c in absent]
    else:
        absent = [c for c in COLOUR_NAMES if scene.by_colour(c) is None]
        options += [TEMPLATES["text_word"][1].format(colour=c) for c in absent]
        present = {i.word for i in scene.items}
        options += [TEMPLATES["text_colour"][1].format(word=w) for w in WORDS if w not in present]
    return rng.choice(options) if options else None


# Filler words a garbled question may pick up (seen in the tiny teacher's hot-temperature samples:
# "< many signs are there?", "format word is on the red sign?", "Which bar is the?").
_NOISE_WORDS = [
    "<",
    ":",
    "the",
    "that",
    "is",
    "in",
    "image",
    "format",
    "your",
    "else",
    "nothing",
    "which",
    "what",
    "many",
    "word",
    "colour",
    "value",
    "answer",
    "question",
    *COLOUR_NAMES,
    *WORDS,
    "1",
    "3",
    "5",
]


def make_garbled_question(scene: Scene, rng: random.Random) -> str:
    """A template question with one word replaced, dropped or repeated, or asked of the other family,
    that the oracle cannot answer (``oracle_answer`` is ``None``); the teacher learns to say
    :data:`UNANSWERABLE` to these, so PI drops its garbled pseudo-annotations."""
    while True:
        if rng.random() < 0.25:  # a well-formed question about the other family ("which bar…" of signs)
            other = next(f for f in FAMILIES if f != scene.family)
            q = rng.choice([t for t, (fam, _) in TEMPLATES.items() if fam == other])
            q = TEMPLATES[q][1].format(colour=rng.choice(COLOUR_NAMES), word=rng.choice(WORDS))
        else:
            qtype = rng.choice(QTYPES_BY_FAMILY[scene.family])
            words = make_question(scene, qtype, rng).rstrip("?").split()
            i = rng.randrange(len(words))
            op = rng.choice(("replace", "drop", "repeat"))
            if op == "replace":
                words[i] = rng.choice(_NOISE_WORDS)
            elif op == "drop" and len(words) > 2:
                del words[i]
            else:
                words[i:i] = [words[i]] * rng.randint(1, 2)
            q = " ".join(words) + "?"
        if oracle_answer(scene, q) is None:
            return q


def normalize_answer(ans: str) -> str:
    """Lower-case, strip punctuation, number words → digits, drop articles (single-word answers)."""
    a = ans.strip().lower()
    a = re.sub(r"[^\w\s]", " ", a)
    toks = [NUMBER_WORDS.get(t, t) for t in a.split() if t not in ("a", "an", "the")]
    a = " ".join(toks)
    return "colour" if a == "color" else a


def all_questions() -> list[str]:
    """Every concrete template question (for tokenizer corpora and tests)."""
    out = []
    for _qtype, (_fam, t) in TEMPLATES.items():
        if "{colour}" in t:
            out += [t.format(colour=c) for c in COLOUR_NAMES]
        elif "{word}" in t:
            out += [t.format(word=w) for w in WORDS]
        else:
            out.append(t)
    return out
