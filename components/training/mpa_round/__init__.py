"""The ``mpa_round`` component (see README.md)."""

from .component import mpa_round

__all__ = ["mpa_round"]
