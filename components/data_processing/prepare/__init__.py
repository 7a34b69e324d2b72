"""The ``prepare`` component (see README.md)."""

from .component import prepare

__all__ = ["prepare"]
