"""The ``identify`` component (see README.md)."""

from .component import identify

__all__ = ["identify"]
