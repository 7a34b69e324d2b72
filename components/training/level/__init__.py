"""The ``level`` component (see README.md)."""

from .component import level

__all__ = ["level"]
