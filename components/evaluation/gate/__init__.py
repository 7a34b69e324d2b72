"""The ``gate`` component (see README.md)."""

from .component import gate

__all__ = ["gate"]
