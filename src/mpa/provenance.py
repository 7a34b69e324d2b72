"""Which code made a result: the one place that asks git (MLflow tags, pipeline version names)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def git_revision(cwd: str | Path | None = None, length: int = 12) -> tuple[str, bool] | None:
    """``(commit, dirty)`` of the git work tree at ``cwd`` (``length`` hex digits; 40 = full), or ``None``
    outside git or without a git binary. ``dirty``: tracked files differ from the commit."""
    try:
        sha = subprocess.run(["git", "rev-parse", f"--short={length}", "HEAD"], cwd=cwd, capture_output=True,
                             text=True, check=True, timeout=10).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                                capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (sha, bool(status)) if sha else None


def code_revision() -> str | None:
    """The commit of the installed ``mpa`` code: ``$MPA_GIT_REVISION`` (set in images, which have no
    ``.git``), else the checkout the package runs from, else ``None``."""
    rev = os.environ.get("MPA_GIT_REVISION")
    if rev:
        return rev
    found = git_revision(PACKAGE_DIR, length=40)
    return found[0] if found else None
