"""The ``toyvqa`` task: single-word answers about toy charts and signs, scored by VQA accuracy."""

from __future__ import annotations

from mpa.tasks import Task, register_task

PA_PROMPT = (
    "Write one question about this image and its answer.\n"
    "Reply in exactly this format and nothing else:\n"
    "Question: <your question> Answer: <the answer>"
)

TOYVQA = register_task(
    Task(
        "toyvqa",
        pa_prompt=PA_PROMPT,
        metric="vqa",
        max_answer_words=3,
        description="toy world: bar charts and coloured signs with exact ground truth",
    )
)
