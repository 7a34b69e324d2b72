"""The MLflow model registry: register an aligned student as a model version tagged with its lineage, and
promote it by aliases (``champion`` only if it beats the base student and the current champion by the
promotion margin, else ``challenger``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mpa.config import match_rule_for
from mpa.provenance import code_revision
from mpa.redact import is_secret_key, redact_text
from mpa.tracking.server import TrackingError

if TYPE_CHECKING:
    from mpa.config import RunConfig

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"


def safe_tags(tags: dict[str, str]) -> dict[str, str]:
    """Tags fit to log: secret keys left out, secrets inside values redacted."""
    return {k: redact_text(str(v)) for k, v in tags.items() if not is_secret_key(k)}


@dataclass
class RegisteredVersion:
    name: str
    version: str
    source: str
    alias: str | None = None
    reason: str | None = None


def default_model_name(cfg: RunConfig) -> str:
    base = cfg.student.model.rstrip("/").rsplit("/", 1)[-1] or "student"
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in base)
    return f"mpa-{cfg.task.name}-{safe}"


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


#: The version tag that makes registering idempotent: the digest of the checkpoint a version holds.
CHECKPOINT_TAG = "mpa.checkpoint_digest"


def quote_filter_value(value: str) -> str:
    """``value`` as a string literal of an MLflow search filter, never an injection.

    MLflow's filter grammar has no escape character: a literal is quoted with ``'`` or ``"`` and may not
    contain that quote. The quote the value does not contain is chosen; a value holding both is refused.
    """
    value = str(value)
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise TrackingError(f"{value!r} holds both ' and \": MLflow's search filters cannot express it; "
                        "use a registered model name without one of the two quotes")


def versions_filter(name: str, **tags: str) -> str:
    """``name = <name>`` (and ``tags.`<key>` = <value>`` for each tag), safely quoted."""
    clauses = [f"name = {quote_filter_value(name)}"]
    clauses += [f"tags.`{k}` = {quote_filter_value(v)}" for k, v in tags.items()]
    return " AND ".join(clauses)


def versions_of(c: Any, name: str, **tags: str) -> list[Any]:
    """Every version of registered model ``name`` (with the given tag values), all pages."""
    out, token = [], None
    while True:
        page = c.search_model_versions(versions_filter(name, **tags), max_results=1000, page_token=token)
        out.extend(page)
        token = getattr(page, "token", None)
        if not token:
            return out


def existing_version(c: Any, name: str, checkpoint_digest: str) -> Any | None:
    """The READY version of ``name`` that holds this checkpoint (the oldest if writers raced), else None."""
    same = [v for v in versions_of(c, name, **{CHECKPOINT_TAG: checkpoint_digest})
            if str(getattr(v, "status", "READY")) == "READY"]
    return min(same, key=lambda v: int(v.version)) if same else None


def register_version(c: Any, name: str, source: str, run_id: str | None, tags: dict[str, str],
                     description: str | None = None) -> Any:
    """Create the registered model if needed and a version; never leave a broken version behind.

    Idempotent per checkpoint when ``tags`` carry :data:`CHECKPOINT_TAG` (set at creation, in the same
    call): a rerun — also one killed right after the version was created — or a second writer gets the
    existing version, not another one. Two writers racing past the search both create; each then keeps
    the oldest version of the checkpoint and deletes its own if it is not that one.
    """
    from mlflow.exceptions import MlflowException

    digest = tags.get(CHECKPOINT_TAG)
    if digest:
        found = existing_version(c, name, digest)
        if found is not None:
            log.info("checkpoint %s… is already registered as %s/%s", digest[:12], name, found.version)
            return found
    try:
        c.create_registered_model(name, description="MPA-aligned students (see version tags for lineage)")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    mv = c.create_model_version(name, source=source, run_id=run_id, tags=tags, description=description)
    if str(getattr(mv, "status", "READY")) != "READY":
        delete_version_quietly(c, name, mv.version)
        raise TrackingError(f"model version {name}/{mv.version} did not become READY ({mv.status}: "
                            f"{mv.status_message}); it was deleted")
    if digest:
        first = existing_version(c, name, digest)
        if first is not None and str(first.version) != str(mv.version):  # another writer was first
            delete_version_quietly(c, name, mv.version)
            return first
    return mv


def delete_version_quietly(c: Any, name: str, version: str) -> None:
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
        versions = versions_of(c, name)
        if not versions:
            raise TrackingError(f"registered model {name!r} has no versions: run `mpa run` or `mpa register` first")
        version = str(max(int(v.version) for v in versions))
    try:
        mv = c.get_model_version(name, version)
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            raise
        have = sorted(int(v.version) for v in versions_of(c, name))
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
