"""What is a secret, and how it is hidden: one decider and one redaction, used for every output.

- :func:`is_secret_key` decides whether a setting's name (``api_key``, ``storage.secret_access_key``,
  an option ``bearer``) names a secret. The run tracker (MLflow params, tags), the files a run
  writes (``config.yaml``, ``summary.json``) and the KFP parameter check all ask it.
- :func:`redact` hides secrets in any value: in mappings, the values of secret keys; in text,
  user-info and secret query values in URLs (``https://user:pw@host/?sig=…``), ``Authorization``
  headers and bearer tokens, OpenAI-style ``sk-…`` keys, AWS access key ids, ``key=value`` /
  ``"key": "value"`` pairs with a secret key, and every value registered with :func:`register_secret`
  (the API key a backend read from its environment variable, the storage credentials).

The run directory may be a shared bucket and MLflow is read by many people: anything written there,
logged, or shown in an error goes through :func:`redact` first.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

REDACTED = "***"

# words that make a key a secret wherever they appear in it (``client_secret``, ``db_password``)
SECRET_WORDS = frozenset({
    "secret", "secrets", "password", "passwd", "pass", "pwd", "passphrase", "token", "apikey", "credential",
    "credentials", "private", "bearer", "auth", "authorization", "sas", "sig", "signature", "cookie",
    "key",  # *_key, api_key, my_key, access_key_id: a key's value is a secret unless it names an env var
})
# suffixes that name *where* a secret is (an environment variable), not the secret itself
NAME_OF_SECRET_SUFFIXES = ("_env", "_env_var")
# trailing words that qualify a secret without changing what it is (``access_key_id``, ``auth_header``)
QUALIFIER_WORDS = frozenset({"id", "value", "header", "headers", "str", "string", "data", "b64", "base64"})


def _words(key: str) -> list[str]:
    key = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", key)  # camelCase -> camel_Case
    return [w for w in re.split(r"[^a-z0-9]+", key.lower()) if w]


def is_secret_key(key: str) -> bool:
    """Whether a setting's name names a secret; dotted paths are secret if any part is.

    ``api_key``, ``my_key``, ``token``, ``auth_token``, ``password``, ``pwd``, ``sas``, ``bearer``,
    ``client_secret``, ``storage.secret_access_key``, ``X-Amz-Signature`` are (the secret word ends the
    name, before qualifiers such as ``_id``); ``SignatureDoesNotMatch``, ``max_new_tokens``,
    ``api_key_env`` (the *name* of the variable holding the key), ``passes`` and rates such as
    ``vision_gflop_per_image_token`` are not.
    """
    for part in str(key).split("."):
        p = part.lower().replace("-", "_")
        if p.endswith(NAME_OF_SECRET_SUFFIXES):
            continue
        words = _words(part)
        if "per" in words:  # a rate or unit (vision_gflop_per_image_token), not a credential
            continue
        while len(words) > 1 and words[-1] in QUALIFIER_WORDS:
            words.pop()
        # the name ends in what it holds: ``client_secret``, ``X-Amz-Signature`` are secrets; an error code
        # such as ``SignatureDoesNotMatch`` (in "SignatureDoesNotMatch: wrong key") or ``token_count`` is not
        if words and words[-1] in SECRET_WORDS:
            return True
    return False


# ----------------------------------------------------------------------------- known secret values
_known: set[str] = set()
_known_lock = threading.Lock()
MIN_SECRET_LEN = 6  # shorter values would redact ordinary words


def register_secret(value: str | None) -> None:
    """Remember a secret value (read from the environment or a SecretStr) so no output shows it."""
    if value and len(value) >= MIN_SECRET_LEN:
        with _known_lock:
            _known.add(value)


def registered_secrets() -> frozenset[str]:
    with _known_lock:
        return frozenset(_known)


# ----------------------------------------------------------------------------- text
_KEY = r"[A-Za-z_][\w.-]*"
_URL_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<info>[^\s/@?#'\"<>]+)@")
_AUTH_HEADER = re.compile(r"(?i)(?P<name>\b(?:proxy-)?authorization\b[\"']?\s*[:=]\s*[\"']?)(?P<value>[^\"'\r\n,}]+)")
_BEARER = re.compile(r"(?i)\b(?P<scheme>bearer)\s+(?P<value>[A-Za-z0-9._~+/=-]{8,})")
_SK = re.compile(r"\bsk-[A-Za-z0-9_-]{8,}")
_AWS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")
# key=value (queries, env-style text) and "key": "value" / key: value (JSON, YAML, reprs)
_PAIR = re.compile(
    r"(?P<key>" + _KEY + r")(?P<q1>[\"']?)(?P<sep>\s*[:=]\s*)(?P<q2>[\"']?)(?!//)(?P<value>[^\s\"'&,;}#\]]+)"
)


def _redact_pairs(text: str) -> str:
    """Hide the values of ``key=value`` / ``"key": "value"`` pairs whose key is a secret.

    A pair with an ordinary key is not skipped whole: its value is scanned again, so the secret
    query parameter inside ``endpoint_url: https://host/?sig=…`` is found.
    """
    out, pos = [], 0
    while True:
        m = _PAIR.search(text, pos)
        if m is None:
            out.append(text[pos:])
            return "".join(out)
        if is_secret_key(m.group("key")) and m.group("value") != REDACTED:
            out.append(text[pos:m.start("value")] + REDACTED)
            pos = m.end("value")
        else:
            out.append(text[pos:m.start("value")])
            pos = m.start("value")


def redact_text(text: str) -> str:
    """``text`` with every recognisable secret replaced by ``***``."""
    if not text:
        return text
    for value in sorted(registered_secrets(), key=len, reverse=True):
        if value in text:
            text = text.replace(value, REDACTED)
    text = _URL_USERINFO.sub(lambda m: f"{m.group('scheme')}{REDACTED}@", text)
    text = _AUTH_HEADER.sub(lambda m: f"{m.group('name')}{REDACTED}", text)
    text = _BEARER.sub(lambda m: f"{m.group('scheme')} {REDACTED}", text)
    text = _SK.sub("sk-" + REDACTED, text)
    text = _AWS_KEY_ID.sub(REDACTED, text)
    return _redact_pairs(text)


# ----------------------------------------------------------------------------- structures
def redact(value: Any, key: str | None = None) -> Any:
    """A copy of ``value`` (mapping, list, text, scalar) with secrets hidden.

    In a mapping, the value of a secret key becomes ``***`` (kept, so a reader sees it was set);
    text anywhere is passed through :func:`redact_text`.
    """
    if key is not None and is_secret_key(key) and value not in (None, "", {}, []) and not isinstance(value, bool):
        return REDACTED
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


class RedactingFilter(logging.Filter):
    """A logging filter that redacts every record's message (install on handlers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record: leave it to the handler
            return True
        clean = redact_text(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Redact every message the handlers of ``logger`` (default: the root logger) emit."""
    target = logger or logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
