"""The ``register`` component (see README.md)."""

from .component import register

__all__ = ["register"]
