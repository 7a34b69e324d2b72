"""The answer-only loss (paper Eq. 3), summed over a micro-batch's answer tokens; torch only."""

from __future__ import annotations

import inspect

import torch


def accepts_logits_to_keep(model: torch.nn.Module) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return "logits_to_keep" in inspect.signature(type(base).forward).parameters
    except (TypeError, ValueError):
        return False


def answer_loss_sum(model: torch.nn.Module, batch: dict[str, torch.Tensor], keep_logits: bool) -> torch.Tensor:
    """Cross-entropy summed over the answer tokens of a micro-batch (fp32).

    With ``keep_logits`` the model computes logits only at the positions that predict an answer
    token (``logits_to_keep`` with the positions), not over the whole prompt and image.
    """
    batch = dict(batch)
    labels = batch.pop("labels")
    targets = labels[:, 1:]
    if keep_logits:
        positions = (targets != -100).any(dim=0).nonzero().squeeze(1)
        logits = model(**batch, logits_to_keep=positions).logits
        targets = targets[:, positions]
    else:
        logits = model(**batch).logits[:, :-1]
    return torch.nn.functional.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100, reduction="sum"
    )


def answer_tokens(labels: torch.Tensor) -> int:
    """Tokens the loss is taken over (labels predicted from the previous position)."""
    return int((labels[:, 1:] != -100).sum())
