"""Live training metrics: PL's loss, learning rate and throughput reach the MLflow run *while* it trains.

The API, for any training loop (today's PL loop in :mod:`mpa.stages.level`, a transformers
``TrainerCallback.on_log``, a Kubeflow TrainJob worker)::

    live = LiveMetrics.from_env(is_main=rank == 0)   # None: no run to log to, or not rank 0
    for step in ...:                                  # after each optimizer step
        if live:
            live.log(step, {"loss": loss, "lr": lr, "samples_per_s": samples / seconds})
    if live:
        live.close()                                  # flush the last points

``log(step, metrics)`` records each value as ``train/<name>`` at ``step`` with the wall-clock time of the
call (real timestamps: a chart shows when each step happened) and sends what it holds every
``every`` steps in one batch. Steps the run already holds (a resumed PL re-trains from its last save)
are not sent twice. Logging never stops training: the first failure (server down, bad credentials)
is logged once as a warning and live logging switches off; the run's end-of-stage logging still
records the whole ``train_log.jsonl``.

Who logs where: the runner (``mpa run``) opens the MLflow run and hands it to PL through the
environment (:func:`live_env`: ``MPA_LIVE_TRACKING_URI``, ``MPA_LIVE_RUN_ID``, ``MPA_LIVE_EVERY``), so every
process PL starts inherits it; only rank 0 logs (``is_main``), with one ``train/loss`` per optimizer
step — the global-batch loss — for 1 or N processes alike.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)

ENV_URI, ENV_RUN, ENV_EVERY = "MPA_LIVE_TRACKING_URI", "MPA_LIVE_RUN_ID", "MPA_LIVE_EVERY"
PREFIX = "train/"


class LiveMetrics:
    """Send ``train/<name>`` metrics of an MLflow run every ``every`` steps (see the module docstring)."""

    def __init__(self, tracking_uri: str, run_id: str, every: int = 10, prefix: str = PREFIX) -> None:
        if every < 1:
            raise ValueError(f"every must be at least 1 step, got {every}")
        self.uri, self.run_id, self.every, self.prefix = tracking_uri, run_id, every, prefix
        self._client: Any = None
        self._pending: list[Any] = []
        self._last_sent: int | None = None  # highest step the run already holds (None: not asked yet)
        self.off = False

    @classmethod
    def from_env(cls, is_main: bool = True) -> LiveMetrics | None:
        """The logger the runner handed over through the environment; None if there is none or not rank 0."""
        uri, run_id = os.environ.get(ENV_URI), os.environ.get(ENV_RUN)
        if not (is_main and uri and run_id):
            return None
        try:
            every = max(1, int(os.environ.get(ENV_EVERY, "10")))
        except ValueError:
            log.warning("%s=%r is not a number of steps; sending every 10 steps", ENV_EVERY, os.environ[ENV_EVERY])
            every = 10
        return cls(uri, run_id, every=every)

    @property
    def client(self) -> Any:
        if self._client is None:
            from mpa.tracking.server import client, quiet_mlflow

            quiet_mlflow()
            self._client = client(self.uri)
        return self._client

    def log(self, step: int, metrics: dict[str, float]) -> None:
        """Record ``metrics`` at optimizer step ``step`` (1-based, increasing); send every ``every`` steps."""
        if self.off:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._pending.extend(Metric(self.prefix + k, float(v), now, int(step)) for k, v in metrics.items()
                             if v is not None)
        if step % self.every == 0:
            self.flush()

    def flush(self) -> None:
        """Send what is held now (one batch request per 1000 points)."""
        if self.off or not self._pending:
            return
        pending, self._pending = self._pending, []
        try:
            if self._last_sent is None:
                held = self.client.get_metric_history(self.run_id, pending[0].key)
                self._last_sent = max((m.step for m in held), default=0)
            fresh = [m for m in pending if m.step > self._last_sent]
            for i in range(0, len(fresh), 1000):
                self.client.log_batch(self.run_id, metrics=fresh[i:i + 1000])
        except Exception as exc:  # noqa: BLE001 - live metrics are a view; training goes on without them
            self.off = True
            log.warning("live training metrics to MLflow switched off (%s); the run logs train_log.jsonl at the "
                        "end of PL", str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)

    def close(self) -> None:
        self.flush()


@contextlib.contextmanager
def live_env(tracking_uri: str | None, run_id: str | None, every: int) -> Iterator[None]:
    """Hand an MLflow run to the PL started inside this block (and to every process it starts)."""
    if not (tracking_uri and run_id and every > 0):
        yield
        return
    saved = {k: os.environ.get(k) for k in (ENV_URI, ENV_RUN, ENV_EVERY)}
    os.environ.update({ENV_URI: tracking_uri, ENV_RUN: run_id, ENV_EVERY: str(every)})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
