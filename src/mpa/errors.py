"""The one base class of mpa's user-facing errors.

An :class:`MpaError` is an error the user can act on (bad input, a refused output directory, a
dependency that is down): its message is one line that names what failed (a file and line, an
endpoint, a setting) and what to do. The command line prints it as ``error: <message>`` and exits
with code 2; it never shows a traceback for one. Library modules subclass it (often together with
``ValueError`` or ``RuntimeError``, so existing ``except`` clauses keep working).
"""

from __future__ import annotations


class MpaError(Exception):
    """A one-line user error (see the module docstring)."""


def one_line(text: str, limit: int = 300) -> str:
    """``text`` squeezed onto one line (whitespace runs become one space) and cut to ``limit`` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
