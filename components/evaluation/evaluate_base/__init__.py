"""The ``evaluate_base`` component (see README.md)."""

from .component import evaluate_base

__all__ = ["evaluate_base"]
