"""In-image tests: the CPU image that `make image-cpu` builds, run with podman as the KFP launcher
would run it. `make test` builds (or refreshes) the image first; CI installs podman through
scripts/images.sh setup. Run alone: `make image-cpu && pytest -m images tests/images`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from kfp_launch import CPU_IMAGE, SOURCE_LABEL, source_digest  # noqa: E402
from servers import object_server, report, tracking_server  # noqa: E402, F401


def _unavailable(reason: str):
    """Locally a missing tool or image skips with the fix; in CI (CI set) it fails: CI must run these."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must run the in-image tests: make test installs podman and builds the image)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def cpu_image() -> str:
    """The built CPU image, checked to be built from this checkout's pyproject.toml, README.md and src/."""
    if shutil.which("podman") is None:
        _unavailable("podman not installed: run `bash scripts/images.sh setup` (as root)")
    if subprocess.run(["podman", "image", "exists", CPU_IMAGE]).returncode != 0:
        _unavailable(f"{CPU_IMAGE} not built: run `make image-cpu`")
    out = subprocess.run(["podman", "image", "inspect", CPU_IMAGE], capture_output=True, text=True, check=True)
    labels = json.loads(out.stdout)[0].get("Labels") or {}
    if labels.get(SOURCE_LABEL) != source_digest():
        _unavailable(f"{CPU_IMAGE} was built from other sources than this checkout: run `make image-cpu`")
    return CPU_IMAGE


def pytest_collection_modifyitems(items):
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.images)


def pytest_terminal_summary(terminalreporter):
    report(terminalreporter)
