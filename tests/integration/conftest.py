"""Integration tests: real SeaweedFS (S3) and MLflow servers on 127.0.0.1, started by the fixtures."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from servers import (  # noqa: E402, F401
    fresh_object_server,
    no_servers_env,
    object_server,
    report,
    s3_env,
    servers_env,
    tracking_server,
)


def pytest_terminal_summary(terminalreporter):
    report(terminalreporter)
