"""MLflow tracking, registry and promotion for MPA runs.

One MLflow run per pipeline run, with **stage-prefixed keys** (no nested runs):

- tags: ``mpa.task``, ``mpa.teacher``, ``mpa.student``, ``mpa.match_rule``, ``mpa.out``,
  ``mlflow.source.git.commit`` / ``mpa.git_revision``, ``kfp.run_id`` (on Kubeflow);
- params: the whole resolved config, flattened (``train.learning_rate``); secrets never;
- metrics: the parity-set size at every filter (``n_images``, ``n_parsed``,
  ``n_teacher_consistent``, ``n_student_wrong``, ``k_parity``, ``k_over_n``), per benchmark
  ``eval/<benchmark>/<metric>_before|_after|_delta``, ``train/loss`` and ``train/lr`` by step,
  ``time/<stage>_s`` and ``throughput/<stage>_<unit>_per_s``;
- artifacts: the parity set as the run's dataset input (context ``training``), a table of
  parity samples with thumbnails (``tables/parity_samples.json``), ``pi/audit.jsonl``,
  ``charts/before_after.png``, ``summary.json``, ``config.yaml`` and the aligned checkpoint
  (``checkpoint/``, the source of the registered model version).

The run id is kept in ``<run dir>/mlflow_run.json``, so a resumed pipeline run continues the same
MLflow run. With no tracking URI (config or ``MLFLOW_TRACKING_URI``) the store is embedded: a sqlite
file and an artifact folder under ``<run dir>/mlflow/``.

Promotion uses registry **aliases**: ``champion`` moves to a new version only if its primary score
beats the base student's and the current champion's by ``promotion_margin`` points; otherwise
the version gets ``challenger`` and a ``mpa.promotion_reason`` tag.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mpa import storage
from mpa.config import match_rule_for
from mpa.errors import MpaError, one_line
from mpa.provenance import code_revision
from mpa.redact import is_secret_key, redact, redact_text

if TYPE_CHECKING:
    from mpa.config import RunConfig

log = logging.getLogger(__name__)

STATE_FILE = "mlflow_run.json"
CHAMPION, CHALLENGER = "champion", "challenger"


class TrackingError(MpaError, ValueError):
    """A tracking or registry operation that cannot be done; the message says why and what to do."""


class TrackingUnavailable(TrackingError):
    """The MLflow tracking server cannot be reached."""


# ----------------------------------------------------------------------------- URIs and clients
def embedded_uri(run_dir: str | Path) -> str:
    return f"sqlite:///{Path(run_dir).resolve() / 'mlflow' / 'mlflow.db'}"


def resolve_uri(configured: str | None, run_dir: str | Path) -> tuple[str, bool]:
    """The tracking URI to use and whether it is the embedded store."""
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri, False
    (Path(run_dir) / "mlflow").mkdir(parents=True, exist_ok=True)
    return embedded_uri(run_dir), True


def check_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast, naming ``uri``, when an HTTP tracking server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    import requests

    try:
        requests.get(uri.rstrip("/") + "/health", timeout=timeout_s)
    except requests.RequestException as exc:
        raise TrackingUnavailable(
            f"MLflow tracking server {redact_text(uri)} is unreachable ({type(exc).__name__}); start it "
            "(scripts/services.sh up), fix MLFLOW_TRACKING_URI / tracking.uri, or unset both to track in "
            "the embedded store inside the run directory") from exc


# Bounded waits on the tracking server (a user's own MLFLOW_HTTP_REQUEST_* variables win): with MLflow's
# defaults (7 retries, backoff factor 2, 120 s timeout) a killed server took 493 s to fail a run. Now a
# server that is down fails a call in seconds, one that accepts and never answers within ~3 x 15 s.
HTTP_LIMITS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
               "MLFLOW_HTTP_REQUEST_TIMEOUT": "15"}
# Artifact transfers (a checkpoint the server proxies to the object store) may take long to be answered.
ARTIFACT_TIMEOUT_S = "300"
ARTIFACT_CALLS = frozenset({"log_artifact", "log_artifacts", "log_table", "log_image", "log_inputs",
                            "download_artifacts"})
_OWN_TIMEOUT: list[bool] = []  # whether MLFLOW_HTTP_REQUEST_TIMEOUT is ours (set by bound_http_waits)


def bound_http_waits() -> None:
    """Give MLflow's HTTP client bounded retries and timeouts unless the environment sets its own."""
    if not _OWN_TIMEOUT:
        _OWN_TIMEOUT.append("MLFLOW_HTTP_REQUEST_TIMEOUT" not in os.environ)
    for key, value in HTTP_LIMITS.items():
        os.environ.setdefault(key, value)


NO_ANSWER, REFUSED = "no answer in time", "connection refused or dropped"


def unreachable_cause(exc: BaseException) -> str | None:
    """Why a failed MLflow call means the server (or the store behind it) is down; None for other errors."""
    import requests

    if isinstance(exc, requests.exceptions.Timeout):
        return NO_ANSWER
    if isinstance(exc, requests.exceptions.ConnectionError):
        return REFUSED
    text = str(getattr(exc, "message", exc))
    if "API request to" not in text or "failed with" not in text:
        return None
    if "timeout" in text.lower() or "timed out" in text.lower():
        return NO_ANSWER
    if "too many" in text and "error responses" in text:
        return "it kept answering with server errors (is the artifact store behind it down?)"
    if "refused" in text.lower() or "Max retries exceeded" in text or "Connection aborted" in text:
        return REFUSED
    return one_line(text, 160)


class GuardedClient:
    """An ``MlflowClient`` whose failures from an unreachable server become one :class:`TrackingUnavailable`.

    After the first such failure every further call fails at once (a run that is failing does not wait
    for the server once more to mark itself failed). Artifact transfers get a longer read timeout.
    """

    def __init__(self, inner: Any, uri: str) -> None:
        self._inner = inner
        self._uri = uri
        self._down: str | None = None

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name.startswith("_") or not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            if self._down is not None:
                raise TrackingUnavailable(self._down)
            longer = name in ARTIFACT_CALLS and _OWN_TIMEOUT == [True]
            if longer:
                os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = ARTIFACT_TIMEOUT_S
            try:
                return attr(*args, **kwargs)
            except Exception as exc:
                cause = unreachable_cause(exc)
                if cause is None:
                    raise
                msg = (f"MLflow tracking server {self._uri} is unreachable or failing ({cause}); start it "
                       "(and the store behind it) or fix tracking.uri / MLFLOW_TRACKING_URI, then re-run the same "
                       "command — finished stages are kept and the run resumes in the same MLflow run")
                if cause in (NO_ANSWER, REFUSED):  # the server itself is gone: later calls fail at once
                    self._down = msg
                raise TrackingUnavailable(msg) from exc
            finally:
                if longer:
                    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = HTTP_LIMITS["MLFLOW_HTTP_REQUEST_TIMEOUT"]

        return call


def client(uri: str) -> Any:
    """An MLflow client for ``uri`` with bounded waits (:func:`bound_http_waits`, :class:`GuardedClient`)."""
    from mlflow import MlflowClient

    bound_http_waits()
    return GuardedClient(MlflowClient(tracking_uri=uri, registry_uri=uri), uri)


def _quiet_mlflow() -> None:
    for name in ("mlflow", "alembic", "mlflow.store.db.utils"):
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


# ----------------------------------------------------------------------------- params and tags
def flatten_params(data: dict, prefix: str = "") -> dict[str, str]:
    """Flatten a config dump to ``a.b.c -> str``: secret keys left out, secrets inside values redacted."""
    out: dict[str, str] = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if is_secret_key(str(key)):
            continue
        if isinstance(value, dict) and value:
            out.update(flatten_params(value, full + "."))
        else:
            text = json.dumps(redact(value)) if isinstance(value, list | dict) else redact_text(str(value))
            out[full[:250]] = text[:6000]
    return out


def safe_tags(tags: dict[str, str]) -> dict[str, str]:
    """Tags fit to log: secret keys left out, secrets inside values redacted."""
    return {k: redact_text(str(v)) for k, v in tags.items() if not is_secret_key(k)}


def default_model_name(cfg: RunConfig) -> str:
    base = cfg.student.model.rstrip("/").rsplit("/", 1)[-1] or "student"
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in base)
    return f"mpa-{cfg.task.name}-{safe}"


def _metric_key(text: str) -> str:
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in text)


# ----------------------------------------------------------------------------- the run tracker
@dataclass
class RegisteredVersion:
    name: str
    version: str
    source: str
    alias: str | None = None
    reason: str | None = None


class Tracker:
    """Track one pipeline run in MLflow (the runner calls it after every stage)."""

    def __init__(self, cfg: RunConfig, run_dir: str | Path, out: str) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.out = out
        self.uri, self.embedded = resolve_uri(cfg.tracking.uri, run_dir)
        self.run_id: str | None = None
        self.state: dict[str, Any] = {}
        self._client: Any = None

    # -- lifecycle
    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = client(self.uri)
        return self._client

    def start(self) -> str:
        """Create (or, on resume, reopen) the MLflow run; fail fast if the server is unreachable."""
        check_reachable(self.uri)
        try:
            import mlflow  # noqa: F401
        except ModuleNotFoundError as exc:
            raise TrackingError("MLflow is not installed: pip install 'mpa[tracking]', or set "
                                "tracking.enabled=false") from exc
        _quiet_mlflow()
        state_path = self.run_dir / STATE_FILE
        if state_path.is_file():
            self.state = json.loads(state_path.read_text())
        c = self.client
        exp_id = self._experiment_id()
        shown_uri = redact_text(self.uri)  # the state file lies in the run directory: no credentials in it
        run_id = self.state.get("run_id") if self.state.get("tracking_uri") == shown_uri else None
        if run_id:
            try:
                c.get_run(run_id)
                c.update_run(run_id, status="RUNNING")
            except Exception as exc:  # noqa: BLE001 - deleted run or another store: start a new one
                log.warning("cannot resume MLflow run %s (%s); starting a new one", run_id, exc)
                run_id = None
        if not run_id:
            self.state = {"tracking_uri": shown_uri, "logged": []}
            run = c.create_run(exp_id, run_name=self.cfg.tracking.run_name or Path(self.out.rstrip("/")).name,
                               tags=self._tags())
            run_id = run.info.run_id
            self.state["run_id"] = run_id
            self._log_params()
        self.run_id = run_id
        self._save_state()
        return run_id

    def _experiment_id(self) -> str:
        c, name = self.client, self.cfg.tracking.experiment
        exp = c.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        location = (self.run_dir / "mlflow" / "artifacts").resolve().as_uri() if self.embedded else None
        try:
            return c.create_experiment(name, artifact_location=location)
        except Exception:  # noqa: BLE001 - created concurrently by another run
            exp = c.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    def _tags(self) -> dict[str, str]:
        cfg = self.cfg
        tags = {"mpa.task": cfg.task.name, "mpa.teacher": cfg.teacher.model, "mpa.student": cfg.student.model,
                "mpa.match_rule": match_rule_for(cfg), "mpa.preset": cfg.preset, "mpa.out": self.out,
                **cfg.tracking.tags}
        rev = code_revision()
        if rev:
            tags["mlflow.source.git.commit"] = rev
            tags["mpa.git_revision"] = rev
        kfp = cfg.tracking.kfp_run_id or os.environ.get("KFP_RUN_ID")
        if kfp:
            tags["kfp.run_id"] = kfp
        return safe_tags(tags)

    def _log_params(self) -> None:
        from mlflow.entities import Param

        params = flatten_params(self.cfg.model_dump(mode="json"))
        items = [Param(k, v) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id or self.state["run_id"], params=items[i:i + 100])

    def _save_state(self) -> None:
        storage.write_bytes(self.run_dir / STATE_FILE, json.dumps(self.state, indent=1).encode())

    def finish(self, status: str = "FINISHED") -> None:
        if self.run_id:
            self.client.set_terminated(self.run_id, status=status)

    def done(self, key: str) -> bool:
        return key in self.state.get("logged", [])

    def mark(self, key: str) -> None:
        self.state.setdefault("logged", []).append(key)
        self._save_state()

    # -- metrics
    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(_metric_key(k), float(v), now, step) for k, v in metrics.items() if v is not None]
        for i in range(0, len(items), 500):
            self.client.log_batch(self.run_id, metrics=items[i:i + 500])

    def log_round(self, rec: dict) -> None:
        """One round of iterative MPA (round ≥ 2): a child run ``round-<r>`` of this run with its K, loss
        and scores, and the same numbers on this run by step ``r`` (``rounds/k_parity``, ``rounds/score``)."""
        key = f"round-{rec['round']}"
        if self.done(key):
            return
        metrics = {"rounds/k_parity": rec["k_parity"], "rounds/n_teacher_consistent": rec["n_teacher_consistent"]}
        if "last_loss" in rec:
            metrics["rounds/last_loss"] = rec["last_loss"]
        ev = rec.get("eval")
        if ev is not None:
            metrics["rounds/score"] = ev["score"]
            metrics.update({f"rounds/score_{t}": v for t, v in (ev.get("by_type") or {}).items()})
        self.log_metrics(metrics, step=rec["round"])
        child = self.client.create_run(
            self._experiment_id(), run_name=f"round-{rec['round']}",
            tags={"mlflow.parentRunId": self.run_id, "mpa.round": str(rec["round"])} | self._tags())
        child_id = child.info.run_id
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(_metric_key(k.removeprefix("rounds/")), float(v), now, 0) for k, v in metrics.items()]
        self.client.log_batch(child_id, metrics=items)
        if rec.get("stopped"):
            self.client.set_tag(child_id, "mpa.stopped", rec["stopped"])
        self.client.set_terminated(child_id, status="FINISHED")
        self.state.setdefault("rounds", {})[str(rec["round"])] = child_id
        self.mark(key)

    def log_annotate(self, pa: dict, seconds: float) -> None:
        if self.done("annotate"):
            return
        done = pa["n_images"] - pa.get("n_resumed", 0)
        self.log_metrics({"n_images": pa["n_images"], "annotate/n_parsed": pa["n_parsed"],
                          "annotate/n_attempts": pa["n_attempts"], "annotate/n_unreadable": pa["n_unreadable"],
                          "annotate/n_duplicates": pa["n_duplicates"], "time/annotate_s": seconds,
                          "throughput/annotate_images_per_s": done / seconds if seconds > 0 else None})
        self.mark("annotate")

    def log_identify(self, pi: dict, seconds: float, run_dir: Path) -> None:
        if self.done("identify"):
            return
        n_answers = pi["n_parsed"] + pi["student_calls"]
        self.log_metrics({k: pi[k] for k in ("n_images", "n_parsed", "n_teacher_consistent", "n_student_wrong",
                                             "k_parity", "k_over_n")}
                         | {"identify/n_annotations": pi["n_annotations"],
                            "identify/student_calls": pi["student_calls"],
                            "identify/student_calls_saved": pi["student_calls_saved"],
                            "time/identify_s": seconds,
                            "throughput/identify_samples_per_s": n_answers / seconds if seconds > 0 else None})
        self.client.set_tag(self.run_id, "mpa.k_parity", str(pi["k_parity"]))
        audit = run_dir / "pi" / "audit.jsonl"
        if audit.is_file():
            self.client.log_artifact(self.run_id, str(audit), "pi")
            counts = run_dir / "pi" / "counts.json"
            if counts.is_file():
                self.client.log_artifact(self.run_id, str(counts), "pi")
        parity = run_dir / "pi" / "parity.jsonl"
        if parity.is_file():
            self._log_parity(parity)
        self.mark("identify")

    def _log_parity(self, parity: Path) -> None:
        """The parity set as the run's training dataset input, and a table with thumbnails."""
        import mlflow.data
        import pandas as pd
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        from mpa.records import read_jsonl

        rows = list(read_jsonl(parity))
        cols = ["image", "image_sha256", "question", "answer", "teacher_answer", "student_answer"]
        df = pd.DataFrame([{c: r.get(c) for c in cols} for r in rows], columns=cols)
        source = storage.join(self.out, "pi", "parity.jsonl") if storage.is_s3(self.out) \
            else str(parity.resolve())
        digest = hashlib.sha256(parity.read_bytes()).hexdigest()[:8]
        with warnings.catch_warnings():  # a local path is both a "local" and a "local artifact" source
            warnings.simplefilter("ignore", UserWarning)
            ds = mlflow.data.from_pandas(df, source=source, targets="answer", name="parity-set", digest=digest)
        self.client.log_inputs(self.run_id, datasets=[
            DatasetInput(ds._to_mlflow_entity(), tags=[InputTag(MLFLOW_DATASET_CONTEXT, "training")])])
        n = self.cfg.tracking.table_rows
        if n and rows:
            from mpa.data.images import UnreadableImage, load_image

            thumbs = []
            for r in rows[:n]:
                try:
                    img = load_image(r["image"]).image
                    img.thumbnail((self.cfg.tracking.thumbnail_px, self.cfg.tracking.thumbnail_px))
                except (UnreadableImage, FileNotFoundError):
                    from PIL import Image

                    img = Image.new("RGB", (8, 8), "gray")
                thumbs.append(img)
            table = df.head(n).copy()
            table.insert(0, "thumbnail", thumbs)
            with warnings.catch_warnings():  # pandas 3 deprecation inside MLflow's log_table
                warnings.simplefilter("ignore")
                self.client.log_table(self.run_id, data=table, artifact_file="tables/parity_samples.json")

    def log_eval(self, label: str, result: dict, seconds: float) -> None:
        """``eval/<bench>/<metric>_<label>``: the headline score, its splits, and both score columns."""
        key = f"eval_{label}"
        if self.done(key):
            return
        bench, metric = result["benchmark"], result["metric"]
        m = {f"eval/{bench}/{metric}_{label}": result["score"], f"time/eval_{label}_s": seconds,
             f"throughput/eval_{label}_samples_per_s": result["n"] / seconds if seconds > 0 else None}
        for split, value in (result.get("by_split") or {}).items():
            m[f"eval/{bench}/{metric}_{split}_{label}"] = value
        for name, value in _score_columns(result).items():  # the official score and `contains`, side by side
            m[f"eval/{bench}/{name}_{label}"] = value
        self.log_metrics(m)
        self.mark(key)

    def log_delta(self, before: dict, after: dict) -> None:
        bench, metric = after["benchmark"], after["metric"]
        m = {f"eval/{bench}/{metric}_delta": after["score"] - before["score"]}
        for split, value in (after.get("by_split") or {}).items():
            m[f"eval/{bench}/{metric}_{split}_delta"] = value - (before.get("by_split") or {}).get(split, 0.0)
        cols_before = _score_columns(before)
        for name, value in _score_columns(after).items():
            if name in cols_before:
                m[f"eval/{bench}/{name}_delta"] = value - cols_before[name]
        self.log_metrics(m)
        self._log_chart(bench, metric, before, after)

    def _log_chart(self, bench: str, metric: str, before: dict, after: dict) -> None:
        self.client.log_image(self.run_id, before_after_chart(f"{bench} ({metric})", before["score"],
                                                              after["score"]), "charts/before_after.png")

    def log_level(self, pl: dict, seconds: float, run_dir: Path) -> None:
        if self.done("level"):
            return
        from mlflow.entities import Metric

        from mpa.records import read_jsonl

        train_log = run_dir / "level" / "train_log.jsonl"
        if train_log.is_file():
            now = int(time.time() * 1000)
            items = []
            for r in read_jsonl(train_log):
                items.append(Metric("train/loss", float(r["loss"]), now, int(r["step"])))
                if "lr" in r:
                    items.append(Metric("train/lr", float(r["lr"]), now, int(r["step"])))
            for i in range(0, len(items), 500):
                self.client.log_batch(self.run_id, metrics=items[i:i + 500])
            self.client.log_artifact(self.run_id, str(train_log), "level")
        self.log_metrics({"train/n_samples": pl["n_samples"], "train/steps": pl["steps"],
                          "train/first_loss": pl["first_loss"], "train/last_loss": pl["last_loss"],
                          "time/level_s": seconds, "throughput/train_samples_per_s": pl["samples_per_s"]})
        self.mark("level")

    def log_files(self, run_dir: Path, names: list[str]) -> None:
        for name in names:
            p = run_dir / name
            if p.is_file():
                self.client.log_artifact(self.run_id, str(p))

    # -- registry
    def register(self, summary: dict, checkpoint: Path, source: str | None = None) -> RegisteredVersion:
        """Log the checkpoint as run artifacts and register it; promote by aliases if configured.
        ``source``: the checkpoint is already stored at that URI; register it as it is."""
        tc = self.cfg.tracking
        name = tc.registered_model or default_model_name(self.cfg)
        reg = self.state.get("registered")
        if reg and reg.get("name") == name:
            return RegisteredVersion(**reg)
        if source is None and tc.log_checkpoint:
            if not self.done("checkpoint"):
                self.client.log_artifacts(self.run_id, str(checkpoint), "checkpoint")
                self.mark("checkpoint")
            source = f"{self.client.get_run(self.run_id).info.artifact_uri.rstrip('/')}/checkpoint"
        elif source is None:
            source = storage.join(self.out, "level", "checkpoint") if storage.is_s3(self.out) \
                else str(checkpoint.resolve())
        tags = lineage_tags(self.cfg, summary, self.run_id)
        mv = register_version(self.client, name, source, self.run_id, tags,
                              description=f"MPA-aligned {self.cfg.student.model} on {self.cfg.task.name}")
        out = RegisteredVersion(name=name, version=str(mv.version), source=source)
        try:
            self.client.set_tag(self.run_id, "mpa.registered_model", f"{name}/{mv.version}")
            if tc.promote:
                decision = promote(self.client, name, out.version, margin=tc.promotion_margin)
                out.alias, out.reason = decision.alias, decision.reason
                self.client.set_tag(self.run_id, "mpa.promotion", decision.alias)
        except BaseException:
            _safe_delete(self.client, name, out.version)  # no half-registered version stays behind
            raise
        self.state["registered"] = out.__dict__
        self._save_state()
        return out


def before_after_chart(title: str, before: float, after: float) -> Any:
    """A small bar chart (PIL only, no plotting library needed)."""
    from PIL import Image, ImageDraw

    w, h, pad = 360, 240, 30
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    d.text((pad, 8), title, fill="black")
    top = max(before, after, 1.0)
    base_y = h - pad
    for i, (label, value, color) in enumerate((("before", before, "#8c8c8c"), ("after", after, "#2b7bb9"))):
        x0 = pad + 40 + i * 140
        y0 = base_y - int((h - 2 * pad - 20) * value / top)
        d.rectangle([x0, y0, x0 + 80, base_y], fill=color)
        d.text((x0, base_y + 4), label, fill="black")
        d.text((x0, y0 - 14), f"{value:.2f}", fill="black")
    d.line([pad, base_y, w - pad, base_y], fill="black")
    return img


def lineage_tags(cfg: RunConfig, summary: dict, run_id: str | None) -> dict[str, str]:
    tags = {"mpa.teacher": cfg.teacher.model, "mpa.base_student": cfg.student.model, "mpa.task": cfg.task.name,
            "mpa.match_rule": match_rule_for(cfg), "mpa.out": str(summary.get("out", cfg.out))}
    if run_id:
        tags["mpa.pipeline_run"] = run_id
    if "identify" in summary:
        tags["mpa.k_parity"] = str(summary["identify"]["k_parity"])
    if "eval_after" in summary:
        ev_b, ev_a = summary["eval_before"], summary["eval_after"]
        tags.update({"mpa.benchmark": ev_a["benchmark"], "mpa.metric": ev_a["metric"],
                     "mpa.score": f"{ev_a['score']:.6f}", "mpa.base_score": f"{ev_b['score']:.6f}"})
    rev = code_revision()
    if rev:
        tags["mpa.git_revision"] = rev
    return safe_tags(tags)


def register_version(c: Any, name: str, source: str, run_id: str | None, tags: dict[str, str],
                     description: str | None = None) -> Any:
    """Create the registered model if needed and a new version; never leave a broken version behind."""
    from mlflow.exceptions import MlflowException

    try:
        c.create_registered_model(name, description="MPA-aligned students (see version tags for lineage)")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    mv = c.create_model_version(name, source=source, run_id=run_id, tags=tags, description=description)
    if str(getattr(mv, "status", "READY")) != "READY":
        _safe_delete(c, name, mv.version)
        raise TrackingError(f"model version {name}/{mv.version} did not become READY ({mv.status}: "
                            f"{mv.status_message}); it was deleted")
    return mv


def _safe_delete(c: Any, name: str, version: str) -> None:
    try:
        c.delete_model_version(name, version)
    except Exception as exc:  # noqa: BLE001 - best effort cleanup; the original error matters
        log.warning("could not delete model version %s/%s: %s", name, version, exc)


# ----------------------------------------------------------------------------- promotion
@dataclass
class Decision:
    alias: str
    reason: str
    score: float | None
    base_score: float | None
    champion_version: str | None
    champion_score: float | None


def _score(tags: dict, key: str = "mpa.score") -> float | None:
    try:
        return float(tags[key])
    except (KeyError, TypeError, ValueError):
        return None


def decide(score: float | None, base: float | None, champion: float | None, margin: float,
           champion_version: str | None = None) -> tuple[str, str]:
    """The alias a new version earns and why (pure function: the rule in one place)."""
    if score is None:
        return CHALLENGER, "no benchmark score (evaluate.benchmark not set): cannot compare"
    if base is not None and not score > base + margin:
        return CHALLENGER, f"score {score:.2f} does not beat the base student {base:.2f} by margin {margin:g}"
    if champion is not None and not score > champion + margin:
        return CHALLENGER, (f"score {score:.2f} does not beat champion v{champion_version} {champion:.2f} "
                            f"by margin {margin:g}")
    why = f"score {score:.2f} beats the base student {base:.2f}" if base is not None else f"score {score:.2f}"
    if champion is not None:
        why += f" and champion v{champion_version} {champion:.2f}"
    return CHAMPION, why + f" by more than {margin:g}"


def promote(c: Any, name: str, version: str | None = None, margin: float = 0.0) -> Decision:
    """Give ``version`` (default: the newest) the ``champion`` or ``challenger`` alias; tag the reason."""
    from mlflow.exceptions import MlflowException

    if version in (None, "latest"):
        versions = c.search_model_versions(f"name = '{name}'")
        if not versions:
            raise TrackingError(f"registered model {name!r} has no versions: run `mpa run` or `mpa register` first")
        version = str(max(int(v.version) for v in versions))
    try:
        mv = c.get_model_version(name, version)
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            raise
        have = sorted(int(v.version) for v in c.search_model_versions(f"name = '{name}'"))
        if not have:
            raise TrackingError(f"registered model {name!r} does not exist or has no versions: check --name, or "
                                "run `mpa run` / `mpa register` first") from None
        raise TrackingError(f"registered model {name!r} has no version {version!r} (its versions: "
                            f"{', '.join(map(str, have))}); pass one of them, or --version latest") from None
    try:
        champ = c.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        champ = None
    if champ is not None and str(champ.version) == str(version):
        return Decision(CHAMPION, "already champion", _score(mv.tags), _score(mv.tags, "mpa.base_score"),
                        str(champ.version), _score(champ.tags))
    champ_score = _score(champ.tags) if champ is not None else None
    if champ is not None and champ.tags.get("mpa.benchmark") != mv.tags.get("mpa.benchmark"):
        alias = CHALLENGER
        reason = (f"champion v{champ.version} was scored on {champ.tags.get('mpa.benchmark')!r}, this version on "
                  f"{mv.tags.get('mpa.benchmark')!r}: not comparable")
    else:
        alias, reason = decide(_score(mv.tags), _score(mv.tags, "mpa.base_score"), champ_score, margin,
                               str(champ.version) if champ is not None else None)
    c.set_registered_model_alias(name, alias, version)
    c.set_model_version_tag(name, version, "mpa.promotion", alias)
    c.set_model_version_tag(name, version, "mpa.promotion_reason", reason)
    return Decision(alias, reason, _score(mv.tags), _score(mv.tags, "mpa.base_score"),
                    str(champ.version) if champ is not None else None, champ_score)


# ----------------------------------------------------------------------------- loading registered models
def is_model_uri(ref: str) -> bool:
    return str(ref).startswith(("models:/", "runs:/", "mlflow-artifacts:/"))


def download_model(ref: str, tracking_uri: str | None = None, dst: str | Path | None = None) -> Path:
    """Download a ``models:/<name>@<alias>`` (or ``/<version>``) checkpoint to a local directory."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        check_reachable(uri)
    _quiet_mlflow()
    bound_http_waits()
    if dst is None:
        dst = storage.cache_dir() / "mlflow-models" / hashlib.sha256(f"{uri}|{ref}".encode()).hexdigest()[:16]
    dst = Path(dst)
    if dst.exists():
        import shutil

        shutil.rmtree(dst)  # aliases move: always fetch what the alias points at now
    dst.mkdir(parents=True)
    try:
        source = ref
        if ref.startswith("models:/"):  # resolve here: MLflow's own resolver ignores tracking_uri for the registry
            name, _, which = ref[len("models:/"):].rstrip("/").partition("@")
            c = client(uri) if uri else __import__("mlflow").MlflowClient()
            if which:
                mv = c.get_model_version_by_alias(name, which)
            else:
                name, _, version = name.partition("/")
                if not version:
                    raise TrackingError(f"{ref}: give models:/<name>@<alias> or models:/<name>/<version>")
                mv = c.get_model_version(name, version)
            source = mv.source
        path = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(dst), tracking_uri=uri))
    except MlflowException as exc:
        cause = unreachable_cause(exc)
        if cause is not None:
            raise TrackingUnavailable(f"cannot load {ref}: MLflow tracking server {uri} is unreachable or failing "
                                      f"({cause}); start it or fix tracking.uri, then re-run") from exc
        raise TrackingError(f"cannot load {ref} from {uri or 'the default MLflow store'}: "
                            f"{one_line(exc.message)}") from exc
    if not (path / "config.json").is_file():
        nested = [p.parent for p in path.rglob("config.json")]
        if len(nested) == 1:
            return nested[0]
        raise TrackingError(f"{ref} is not a Hugging Face checkpoint (no config.json in it)")
    return path


def _score_columns(result: dict) -> dict[str, float]:
    """An evaluation result's score columns by metric name: the official one and ``contains``."""
    cols = {}
    if result.get("official_metric") and result.get("official") is not None:
        cols[str(result["official_metric"])] = float(result["official"])
    if result.get("contains") is not None:
        cols["contains"] = float(result["contains"])
    return cols
