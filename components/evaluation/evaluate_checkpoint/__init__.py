"""The ``evaluate_checkpoint`` component (see README.md)."""

from .component import evaluate_checkpoint

__all__ = ["evaluate_checkpoint"]
