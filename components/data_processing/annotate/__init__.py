"""The ``annotate`` component (see README.md)."""

from .component import annotate

__all__ = ["annotate"]
