"""The ``merge`` component (see README.md)."""

from .component import merge

__all__ = ["merge"]
