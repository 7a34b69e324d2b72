"""Run logging: one MLflow run per pipeline run (params, stage metrics, artifacts, the parity set as a
dataset input), resumed from ``<run dir>/mlflow_run.json``; a child run per later round."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mpa import storage
from mpa.config import match_rule_for
from mpa.provenance import code_revision
from mpa.redact import is_secret_key, redact, redact_text
from mpa.tracking.registry import (
    CHECKPOINT_TAG,
    RegisteredVersion,
    default_model_name,
    delete_version_quietly,
    existing_version,
    lineage_tags,
    promote,
    register_version,
    safe_tags,
)
from mpa.tracking.server import TrackingError, check_reachable, client, quiet_mlflow, resolve_uri

if TYPE_CHECKING:
    from mpa.config import RunConfig

log = logging.getLogger(__name__)

STATE_FILE = "mlflow_run.json"


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


def _metric_key(text: str) -> str:
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in text)


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
        quiet_mlflow()
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
            if shown_uri != self.uri and shown_uri.startswith("http"):  # MLflow's own line would show credentials
                print(f"View run at: {shown_uri.rstrip('/')}/#/experiments/{exp_id}/runs/{run_id}", flush=True)
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
            # steps PL already sent live (mpa.tracking.live) are not sent again
            held = {m.step for m in self.client.get_metric_history(self.run_id, "train/loss")}
            for r in read_jsonl(train_log):
                if int(r["step"]) in held:
                    continue
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
        digest = checkpoint_digest(checkpoint, source)
        # a rerun, or a second writer, finds the version of this checkpoint (and uploads nothing again)
        existed = existing_version(self.client, name, digest)
        if existed is not None:
            source = str(existed.source)
        elif source is None and tc.log_checkpoint:
            if not self.done("checkpoint"):
                self.client.log_artifacts(self.run_id, str(checkpoint), "checkpoint")
                self.mark("checkpoint")
            source = f"{self.client.get_run(self.run_id).info.artifact_uri.rstrip('/')}/checkpoint"
        elif source is None:
            source = storage.join(self.out, "level", "checkpoint") if storage.is_s3(self.out) \
                else str(checkpoint.resolve())
        tags = lineage_tags(self.cfg, summary, self.run_id) | {CHECKPOINT_TAG: digest}
        mv = existed or register_version(self.client, name, source, self.run_id, tags,
                                         description=f"MPA-aligned {self.cfg.student.model} on {self.cfg.task.name}")
        out = RegisteredVersion(name=name, version=str(mv.version), source=str(mv.source))
        try:
            self.client.set_tag(self.run_id, "mpa.registered_model", f"{name}/{mv.version}")
            if tc.promote:
                decision = promote(self.client, name, out.version, margin=tc.promotion_margin)
                out.alias, out.reason = decision.alias, decision.reason
                self.client.set_tag(self.run_id, "mpa.promotion", decision.alias)
        except BaseException:
            if existed is None:  # no half-registered version of ours stays behind
                delete_version_quietly(self.client, name, out.version)
            raise
        self.state["registered"] = out.__dict__
        self._save_state()
        return out


def checkpoint_digest(checkpoint: Path, source: str | None) -> str:
    """What identifies the registered checkpoint: its files' digest (a local checkpoint), else its URI's."""
    from mpa.records import path_digest

    if source is None and checkpoint.is_dir():
        return path_digest(checkpoint)
    return "uri-" + hashlib.sha256(str(source).encode()).hexdigest()


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


def _score_columns(result: dict) -> dict[str, float]:
    """An evaluation result's score columns by metric name: the official one and ``contains``."""
    cols = {}
    if result.get("official_metric") and result.get("official") is not None:
        cols[str(result["official_metric"])] = float(result["official"])
    if result.get("contains") is not None:
        cols["contains"] = float(result["contains"])
    return cols
