"""Task registry: the PA prompt, the short-answer instruction and the official metric per task.

A task tells the teacher what kind of question to write (paper §3.1, task-specific prompts)
and how to score answers. Prompts are ours, written from the paper's guidelines; bump
``prompt_version`` whenever a prompt's text changes (caches key on it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ANSWER_INSTRUCTION = "Answer the question using a single word or phrase."

_FORMAT = (
    "Reply in exactly this format and nothing else:\n"
    "Question: <your question>\n"
    "Answer: <the answer>"
)


@dataclass(frozen=True)
class Task:
    name: str
    pa_prompt: str
    metric: str  # "vqa" | "anls" | "relaxed" | "exact"
    prompt_version: str = "1"
    answer_instruction: str = ANSWER_INSTRUCTION
    max_answer_words: int = 5
    description: str = ""

    def answer_prompt(self, question: str) -> str:
        """The prompt both teacher and student answer in PI and in evaluation."""
        return f"{question.strip()}\n{self.answer_instruction}"


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


register_task(Task("textvqa", _SCENE_TEXT, "vqa", description="TextVQA: reading scene text"))
register_task(Task("stvqa", _SCENE_TEXT, "anls", description="ST-VQA: scene-text VQA, scored by ANLS"))
register_task(Task("chartqa", _CHART, "relaxed", description="ChartQA: charts, relaxed accuracy"))
register_task(
    Task("okvqa", _OKVQA, "vqa", max_answer_words=3, description="OK-VQA: outside-knowledge VQA")
)

# The toy world's task (``mpa demo``): single-word answers about toy charts and signs.
_TOYVQA = (
    "Write one question about this image and its answer.\n"
    "Reply in exactly this format and nothing else:\n"
    "Question: <your question> Answer: <the answer>"
)
TOYVQA = register_task(
    Task("toyvqa", _TOYVQA, "vqa", max_answer_words=3,
         description="toy world: bar charts and coloured signs with exact ground truth")
)


def task_names() -> list[str]:
    return sorted([*_REGISTRY, "custom"])


def get_task(name: str, prompt_file: str | Path | None = None, metric: str = "vqa") -> Task:
    """Look a task up by name; ``custom`` reads its PA prompt from ``prompt_file``."""
    if name == "custom":
        if prompt_file is None:
            raise ValueError("task 'custom' needs a prompt file: set task.prompt_file in the config")
        path = Path(prompt_file)
        if not path.is_file():
            raise FileNotFoundError(f"custom task prompt file not found: {path}")
        text = path.read_text(encoding="utf-8").strip()
        if not text:
            raise ValueError(f"custom task prompt file is empty: {path}")
        import hashlib

        version = hashlib.sha256(text.encode()).hexdigest()[:12]
        return Task("custom", text, metric, prompt_version=version, description=f"custom prompt {path}")
    if name not in _REGISTRY:
        raise ValueError(f"unknown task {name!r}; choose one of: {', '.join(task_names())}")
    return _REGISTRY[name]
