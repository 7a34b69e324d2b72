"""Task registry: the PA prompt, the answer prompt, the official metric and the PI match rule per task.

A task tells the teacher what kind of question to write (paper §3.1, task-specific prompts),
how teacher and student are asked to answer, and how answers are scored and matched. Two
prompt sets exist (``task.prompts``):

- ``ours`` (the default): prompts written for mpa from the paper's guidelines, asking for a
  strict ``Question: … / Answer: …`` reply that parses reliably;
- ``paper``: the MPA authors' own PA prompts and answer prompt, kept verbatim with their
  citation in ``mpa/prompts/paper.yaml`` (for reproducing the paper's tables).

Bump ``prompt_version`` whenever a prompt's text changes (caches key on it and on the text).
"""

from __future__ import annotations

import hashlib
import string
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

ANSWER_INSTRUCTION = "Answer the question using a single word or phrase."
ANSWER_TEMPLATE = "{question}\n{instruction}"
PROMPT_SETS: tuple[str, ...] = ("ours", "paper")
PROMPTS_DIR = Path(__file__).parent / "prompts"

_FORMAT = (
    "Reply in exactly this format and nothing else:\n"
    "Question: <your question>\n"
    "Answer: <the answer>"
)


@dataclass(frozen=True)
class Task:
    name: str
    pa_prompt: str
    metric: str  # "vqa" | "anls" | "relaxed" | "exact" | "contains"
    prompt_version: str = "1"
    answer_instruction: str = ANSWER_INSTRUCTION
    max_answer_words: int = 5  # the limit of annotate.max_answer_words: task (the filter is off by default)
    description: str = ""
    match_rule: str | None = None  # PI's E(.) when identify.match is unset; None: the metric's rule
    answer_template: str = ANSWER_TEMPLATE  # how the question and the instruction are joined
    prompts: str = "ours"  # the prompt set this task's texts come from
    train_template: str | None = None  # PL's prompt ({question}); None: the answer prompt (train.prompt)

    def answer_prompt(self, question: str) -> str:
        """The prompt both teacher and student answer in PI and in evaluation."""
        return self.answer_template.format(question=question.strip(), instruction=self.answer_instruction)

    def train_prompt(self, question: str) -> str:
        """The prompt PL trains the student on: the answer prompt, or (``train.prompt: question``, the MPA
        authors' ``<image>\\n{question}``) the bare question — the chat format puts the image before it."""
        if self.train_template is None:
            return self.answer_prompt(question)
        return self.train_template.format(question=question.strip())

    @property
    def default_match_rule(self) -> str:
        """The PI match rule this task uses unless ``identify.match`` names another."""
        return self.match_rule or self.metric


_SCENE_TEXT = (
    "You are creating visual question answering data about the text that appears in this image.\n"
    "Look carefully at the scene text (signs, labels, brands, numbers, printed or handwritten words) "
    "and write ONE question that can only be answered by reading and reasoning over that text. "
    "The answer must be visible in the image and must be a single word, a short phrase, a number or "
    "yes/no.\n" + _FORMAT
)

_CHART = (
    "You are creating question answering data about this chart.\n"
    "Write ONE question about the chart, choosing one of these kinds: a direct lookup of a value or "
    "label; a comparison between items; a trend or pattern across the data; an inference that "
    "combines several values. The answer must follow from the chart alone and be a single word, "
    "a number, a short phrase or yes/no.\n" + _FORMAT
)

_OKVQA = (
    "You are creating visual question answering data that needs outside knowledge.\n"
    "Write ONE question about this image that cannot be answered from the pixels alone but needs "
    "world knowledge, choosing one of: objects and scenes; commonsense; culture and history; "
    "science and facts; everyday life. The answer must be a single word.\n" + _FORMAT
)

_REGISTRY: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    _REGISTRY[task.name] = task
    return task


register_task(Task("textvqa", _SCENE_TEXT, "vqa", match_rule="vqa", description="TextVQA: reading scene text"))
register_task(Task("stvqa", _SCENE_TEXT, "anls", match_rule="anls",
                   description="ST-VQA: scene-text VQA, scored by ANLS"))
register_task(Task("chartqa", _CHART, "relaxed", match_rule="relaxed",
                   description="ChartQA: charts, relaxed accuracy"))
register_task(Task("okvqa", _OKVQA, "vqa", match_rule="vqa", max_answer_words=3,
                   description="OK-VQA: outside-knowledge VQA"))

# PathVQA (paper Table 7, a domain shift to pathology images): mpa's prompt, written from the paper's
# description of the benchmark (yes/no and open questions about pathology images); the paper prints none.
_PATHVQA = (
    "You are creating visual question answering data about this pathology image (a microscopy slide, "
    "a gross specimen or a medical illustration).\n"
    "Write ONE question a pathologist could answer from the image alone, choosing one of: the tissue or "
    "organ shown; the finding or lesion; a feature such as the colour, shape or location of a structure; "
    "or a yes/no question about whether a finding is present. The answer must be yes, no, or a single "
    "word or short phrase.\n" + _FORMAT
)
register_task(Task("pathvqa", _PATHVQA, "vqa", match_rule="vqa",
                   description="PathVQA: pathology images, yes/no and open questions (paper Table 7)"))

# The toy world's task (``mpa demo``): single-word answers about toy charts and signs.
_TOYVQA = (
    "Write one question about this image and its answer.\n"
    "Reply in exactly this format and nothing else:\n"
    "Question: <your question> Answer: <the answer>"
)
TOYVQA = register_task(
    Task("toyvqa", _TOYVQA, "vqa", match_rule="vqa", max_answer_words=3,
         description="toy world: bar charts and coloured signs with exact ground truth")
)


def task_names() -> list[str]:
    return sorted([*_REGISTRY, "custom"])


# --- prompt sets ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PromptSet:
    """A prompt set read from ``mpa/prompts/<name>.yaml``: PA prompts per task and one answer prompt."""

    name: str
    version: str
    citation: str
    source: str
    answer_instruction: str
    answer_template: str
    pa_prompts: dict[str, str]


def _check_template(template: str, where: str) -> None:
    fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    if fields != {"question", "instruction"}:
        raise ValueError(f"{where}: answer_template must use exactly {{question}} and {{instruction}}, "
                         f"found {sorted(fields)}")


@cache
def load_prompt_set(name: str) -> PromptSet:
    """Read a prompt-set data file (``paper``: the MPA authors' prompts, with their citation)."""
    import yaml

    if name not in PROMPT_SETS or name == "ours":
        raise ValueError(f"no prompt-set file for {name!r}; file-backed sets: "
                         f"{', '.join(p for p in PROMPT_SETS if p != 'ours')}")
    path = PROMPTS_DIR / f"{name}.yaml"
    data: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    template = data.get("answer_template", ANSWER_TEMPLATE)
    _check_template(template, str(path))
    pa = {task: str(entry["pa_prompt"]).strip() for task, entry in data["tasks"].items()}
    return PromptSet(name=name, version=str(data["version"]), citation=str(data["citation"]).strip(),
                     source=str(data.get("source", "")).strip(),
                     answer_instruction=str(data["answer_instruction"]).strip(),
                     answer_template=template, pa_prompts=pa)


def tasks_with_prompts(prompts: str) -> list[str]:
    """The task names a prompt set has PA prompts for (``ours``: every built-in task)."""
    if prompts == "ours":
        return sorted(_REGISTRY)
    return sorted(load_prompt_set(prompts).pa_prompts)


def _with_prompt_set(task: Task, prompts: str, *, keep_pa_prompt: bool = False) -> Task:
    if prompts == "ours":
        return task
    if prompts not in PROMPT_SETS:
        raise ValueError(f"unknown prompt set {prompts!r}; choose one of: {', '.join(PROMPT_SETS)}")
    ps = load_prompt_set(prompts)
    if not keep_pa_prompt and task.name not in ps.pa_prompts:
        raise ValueError(f"the {prompts!r} prompt set has no PA prompt for task {task.name!r} "
                         f"(it has: {', '.join(sorted(ps.pa_prompts))}); use task.prompts: ours")
    pa = task.pa_prompt if keep_pa_prompt else ps.pa_prompts[task.name]
    return replace(task, pa_prompt=pa, answer_instruction=ps.answer_instruction,
                   answer_template=ps.answer_template, prompts=prompts,
                   prompt_version=f"{task.prompt_version}+{prompts}-{ps.version}")


def get_task(name: str, prompt_file: str | Path | None = None, metric: str = "vqa", prompts: str = "ours") -> Task:
    """Look a task up by name; ``custom`` reads its PA prompt from ``prompt_file``.

    ``prompts`` picks the prompt set: ``ours`` (default) or ``paper`` (the MPA authors' prompts;
    for ``custom`` only the answer prompt changes, the PA prompt stays the file's).
    """
    if name == "custom":
        if prompt_file is None:
            raise ValueError("task 'custom' needs a prompt file: set task.prompt_file in the config")
        path = Path(prompt_file)
        if not path.is_file():
            raise FileNotFoundError(f"custom task prompt file not found: {path}")
        text = path.read_text(encoding="utf-8").strip()
        if not text:
            raise ValueError(f"custom task prompt file is empty: {path}")
        version = hashlib.sha256(text.encode()).hexdigest()[:12]
        task = Task("custom", text, metric, prompt_version=version, description=f"custom prompt {path}")
        return _with_prompt_set(task, prompts, keep_pa_prompt=True)
    if name not in _REGISTRY:
        raise ValueError(f"unknown task {name!r}; choose one of: {', '.join(task_names())}")
    return _with_prompt_set(_REGISTRY[name], prompts)


# --- what a run config resolves to (mpa.config.task_for / match_rule_for call these) -------------


def resolve_match_rule(task: Task, configured: str | None) -> str:
    """PI's match rule: ``identify.match`` when set, else the task's own rule."""
    return configured or task.default_match_rule


def max_answer_words_for(task: Task, configured: int | str | None) -> int | None:
    """PA's answer-length filter: ``annotate.max_answer_words`` words, ``"task"``: the task's limit, None: off."""
    if configured == "task":
        return task.max_answer_words
    return int(configured) if configured is not None else None


def describe_prompts(prompts: str = "ours") -> dict[str, dict[str, str]]:
    """Task name → ``{"pa_prompt", "answer_prompt"}`` for one prompt set (``mpa tasks --json``).

    ``answer_prompt`` shows the template with a ``{question}`` placeholder.
    """
    out = {}
    for name in tasks_with_prompts(prompts):
        task = get_task(name, prompts=prompts)
        out[name] = {"pa_prompt": task.pa_prompt,
                     "answer_prompt": task.answer_template.replace("{instruction}", task.answer_instruction)}
    return out
