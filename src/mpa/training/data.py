"""PL's data: the parity samples as a torch Dataset, and the answer-only collator.

Both run in the DataLoader's worker processes (``train.dataloader_workers``), so images are read and
decoded, and the processor tokenizes and resizes them, while the model trains on the previous batch.
The labels are the family adapter's (:meth:`mpa.vlm.adapters.Adapter.encode_for_training`): prompt and
padding -100, the answer and its end-of-turn marker learned (paper Eq. 3).
"""

from __future__ import annotations

from typing import Any

import torch

from mpa.data.images import load_image
from mpa.tasks import Task
from mpa.vlm.adapters import adapter_for


class ParityDataset(torch.utils.data.Dataset):
    """(image, question, answer) rows; an item is the decoded image with the task's answer prompt."""

    def __init__(self, rows: list[dict[str, Any]], task: Task) -> None:
        self.rows = rows
        self.task = task

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = self.rows[i]
        return {"image": load_image(row["image"]).image, "prompt": self.task.train_prompt(row["question"]),
                "answer": row["answer"]}


class AnswerOnlyCollator:
    """A batch of :class:`ParityDataset` items → model inputs with answer-only ``labels``."""

    def __init__(self, processor: Any) -> None:
        self.processor = processor
        self.adapter = adapter_for(processor)

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return self.adapter.encode_for_training(
            self.processor, [it["image"] for it in items], [it["prompt"] for it in items],
            [it["answer"] for it in items],
        )
