"""What the pod's non-root user (uid 10001, as in our images) can do with the volumes the spec mounts: an
emptyDir (world-writable, what /scratch is now) takes PL's work directory; a fresh root-owned volume (what a
generic ephemeral volume or a new PVC is: ``root:root 0755``) does not, so /scratch is no longer one, and the
model cache on such a volume is skipped with one warning instead of failing the step. Run as uid 10001 for
real (``setpriv``), not with a patched ``os.access``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

UID = 10001
SETPRIV = shutil.which("setpriv")

pytestmark = pytest.mark.skipif(os.getuid() != 0 or SETPRIV is None,
                                reason="needs root and setpriv to run a step as the pod's uid 10001")

CODE = """
import json, logging, os, sys
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
from mpa.orchestrate.kubeflow import steps
out = {"cache": steps.use_model_cache(), "hf_home": os.environ.get("HF_HOME")}
try:
    out["scratch"] = str(steps.scratch_dir("mpa-level-"))
except PermissionError as exc:
    out["scratch_error"] = str(exc)
print(json.dumps(out))
"""


def _as_pod_user(cache: Path, scratch: Path) -> tuple[dict, str]:
    env = {**os.environ, "MPA_MODEL_CACHE": str(cache), "MPA_SCRATCH": str(scratch), "HOME": "/tmp"}
    env.pop("HF_HOME", None)
    env.pop("MPA_CACHE", None)
    proc = subprocess.run([SETPRIV, f"--reuid={UID}", f"--regid={UID}", "--clear-groups", sys.executable, "-c", CODE],
                          capture_output=True, text=True, env=env, timeout=120, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


@pytest.fixture
def node_dir():
    """A directory the pod's user can reach (pytest's own tmp_path sits below a 0700 directory)."""
    d = Path(tempfile.mkdtemp(prefix="mpa-pod-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _dirs(root: Path, mode: int) -> tuple[Path, Path]:
    cache, scratch = root / "cache", root / "scratch"
    for d in (cache, scratch):
        d.mkdir()
        d.chmod(mode)  # root-owned: 0755 like a fresh volume, 0777 like an emptyDir
    return cache, scratch


def test_an_empty_dir_is_writable_and_the_cache_is_used(node_dir):
    cache, scratch = _dirs(node_dir, 0o777)
    out, log = _as_pod_user(cache, scratch)
    assert out["cache"] == str(cache) and out["hf_home"] == str(cache / "huggingface")
    assert Path(out["scratch"]).parent == scratch and "WARNING" not in log


def test_a_root_owned_volume_is_refused_for_scratch_and_skipped_with_one_line_for_the_cache(node_dir):
    cache, scratch = _dirs(node_dir, 0o755)
    out, log = _as_pod_user(cache, scratch)
    assert out["cache"] is None and out["hf_home"] is None  # models go to the pod's own disk instead
    warnings = [line for line in log.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1 and f"model cache {cache} is not writable by uid {UID}" in warnings[0]
    assert f"MPA_SCRATCH={scratch} is not writable by uid {UID}" in out["scratch_error"]
