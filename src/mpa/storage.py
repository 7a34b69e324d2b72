"""Local paths and ``s3://`` URIs behind one small API (boto3 for S3).

Every function takes a local path or an ``s3://bucket/key`` URI and does the same thing on both.
S3 settings come from the standard environment (``AWS_ENDPOINT_URL`` or
``MLFLOW_S3_ENDPOINT_URL``, ``AWS_DEFAULT_REGION``/``AWS_REGION``, ``AWS_ACCESS_KEY_ID``/
``AWS_SECRET_ACCESS_KEY``/``AWS_PROFILE``, ``AWS_MAX_ATTEMPTS``), overridden by
:func:`configure` (the run config's ``storage`` section).

Robustness:

- retries with exponential backoff and jitter on throttling (``SlowDown``, 429) and 5xx, and on
  dropped connections (botocore's *standard* retry mode, ``max_attempts`` per call, default 3);
- bounded waits: a connect timeout (5 s) and a read timeout (10 s) per attempt, so an endpoint that
  is down, or accepts connections and never answers, fails one call within ~35 s with a
  :class:`StorageUnavailable` naming it (and the run resumes once it is back);
- uploads go through the transfer manager (multipart above ``multipart_threshold_mb``) and are
  verified: size and ETag (plain MD5, or the multipart MD5-of-MD5s) against the local file; every
  object carries its sha256 in metadata, which downloads check;
- failures become :class:`StorageError` subclasses whose message names the URI, the endpoint and
  what to do: :class:`BucketNotFound`, :class:`ObjectNotFound` (also a ``FileNotFoundError``),
  :class:`AccessDenied` (wrong key or secret, or no permission), :class:`StorageUnavailable`
  (the object server cannot be reached).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from mpa.errors import MpaError
from mpa.redact import redact_text

T = TypeVar("T")
MB = 1024 * 1024
SHA_META = "sha256"


# ----------------------------------------------------------------------------- errors
class StorageError(MpaError, ValueError):
    """An object-store operation that failed; the message names the URI and what to do."""


class BucketNotFound(StorageError, FileNotFoundError):
    """The bucket does not exist."""


class ObjectNotFound(StorageError, FileNotFoundError):
    """No object (or no objects under a prefix) at the URI."""


class AccessDenied(StorageError):
    """Wrong access key / secret, or the credentials may not do this."""


class StorageUnavailable(StorageError):
    """The object server cannot be reached (down, wrong endpoint, network)."""


class VerificationError(StorageError):
    """A transferred file does not match its source (size, ETag or sha256)."""


class UnsafePath(StorageError):
    """A path built from outside data (an object key, a record) that would leave its root directory."""


def safe_join(root: str | os.PathLike, rel: str, *, what: str = "path") -> Path:
    """``root / rel``, or :class:`UnsafePath` when ``rel`` would land outside ``root``.

    The one check for every local path built from data that comes from outside (object keys under a
    downloaded prefix, names in records): absolute names, ``..`` parts, and symlinks inside ``root``
    that point out of it are all refused. ``what`` names the source in the error (e.g. the key).
    """
    base = Path(root)
    text = str(rel)
    parts = text.replace("\\", "/").split("/")
    if not text or text.startswith(("/", "\\")) or Path(text).is_absolute() or ".." in parts \
            or "\x00" in text:
        raise UnsafePath(f"refusing {what}: {text!r} would land outside {base} (absolute or '..' "
                         "parts); remove or rename it at the source")
    dest = base / text
    resolved_base = base.resolve()
    if not dest.resolve().is_relative_to(resolved_base):  # a symlink inside root that points out of it
        raise UnsafePath(f"refusing {what}: {text!r} resolves outside {base} (through a symlink); remove the link")
    return dest


# ----------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class S3Settings:
    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    max_attempts: int | None = None
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 10.0
    multipart_threshold_mb: int = 64
    multipart_chunk_mb: int = 16
    max_concurrency: int = 4
    verify: bool = True


_settings = S3Settings()
_clients: dict[tuple, Any] = {}
_lock = threading.Lock()


def configure(settings: S3Settings | None = None, **overrides: Any) -> S3Settings:
    """Set the process-wide S3 settings (``None`` values fall back to the environment)."""
    global _settings
    base = settings or S3Settings()
    _settings = replace(base, **overrides) if overrides else base
    return _settings


def settings() -> S3Settings:
    return _settings


def endpoint_url() -> str | None:
    return _settings.endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("MLFLOW_S3_ENDPOINT_URL") \
        or None


def _where() -> str:
    return redact_text(endpoint_url() or "AWS S3 (no AWS_ENDPOINT_URL set)")


DEFAULT_ATTEMPTS = 3


def _attempts() -> int:
    env = os.environ.get("AWS_MAX_ATTEMPTS")
    return _settings.max_attempts or (int(env) if env and env.isdigit() else DEFAULT_ATTEMPTS)


def s3_client() -> Any:
    """A boto3 S3 client for the current settings (cached; boto3 clients are thread-safe)."""
    s = _settings
    ep = endpoint_url()
    attempts = _attempts()
    region = s.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    key = (ep, region, s.profile, s.access_key_id, s.secret_access_key, attempts, s.connect_timeout_s,
           s.read_timeout_s, os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY"))
    with _lock:
        client = _clients.get(key)
        if client is None:
            import boto3
            from botocore.config import Config

            session = boto3.session.Session(profile_name=s.profile) if s.profile else boto3.session.Session()
            client = session.client(
                "s3",
                endpoint_url=ep,
                region_name=region,
                aws_access_key_id=s.access_key_id,
                aws_secret_access_key=s.secret_access_key,
                config=Config(
                    # total attempts, the first included (botocore's "max_attempts" would be retries: one more)
                    retries={"total_max_attempts": attempts, "mode": "standard"},
                    connect_timeout=s.connect_timeout_s,
                    read_timeout=s.read_timeout_s,
                    s3={"addressing_style": "path"} if ep else None,
                ),
            )
            _clients[key] = client
    return client


def reset_clients() -> None:
    """Forget cached clients (after the environment's credentials or endpoint change)."""
    with _lock:
        _clients.clear()


# ----------------------------------------------------------------------------- URIs
def is_s3(uri: str | os.PathLike) -> bool:
    return str(uri).startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    if not is_s3(uri):
        raise ValueError(f"not an s3:// URI: {uri}")
    bucket, _, key = str(uri)[len("s3://"):].partition("/")
    if not bucket:
        raise ValueError(f"s3 URI has no bucket: {uri}")
    return bucket, key


def join(base: str | os.PathLike, *parts: str) -> str:
    """Join path parts onto a local path or an s3 URI."""
    if is_s3(base):
        out = str(base).rstrip("/")
        for p in parts:
            out += "/" + str(p).strip("/")
        return out
    return str(Path(base, *parts))


def parent(uri: str | os.PathLike) -> str:
    """The folder a local path or an s3 URI is in."""
    p = str(uri)
    if is_s3(p):
        return p.rstrip("/").rsplit("/", 1)[0]
    return str(Path(p).parent)


# ----------------------------------------------------------------------------- error translation
_DENIED = {"AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId", "InvalidToken", "ExpiredToken",
           "AllAccessDisabled", "AccountProblem", "403", "Forbidden"}
_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}


def translate(exc: BaseException, uri: str, action: str) -> BaseException:
    """Turn a botocore error into a :class:`StorageError` naming ``uri`` and what to do."""
    from boto3.exceptions import RetriesExceededError
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        IncompleteReadError,
        NoCredentialsError,
        ReadTimeoutError,
        ResponseStreamingError,
    )

    where = _where()
    resume = "then re-run the same command — finished work is kept and the run resumes"
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, RetriesExceededError) and exc.last_exception is not None:
        return translate(exc.last_exception, uri, action)  # the transfer manager's own download retries
    if isinstance(exc, NoCredentialsError):
        return AccessDenied(f"cannot {action} {uri}: no S3 credentials found; set AWS_ACCESS_KEY_ID and "
                            "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or storage.* in the config)")
    if isinstance(exc, ReadTimeoutError):
        return StorageUnavailable(
            f"cannot {action} {uri}: the object server at {where} accepted the connection but did not answer "
            f"within {_settings.read_timeout_s:g} s ({_attempts()} attempts); check that it is healthy (or raise "
            f"storage.read_timeout_s), {resume}")
    if isinstance(exc, EndpointConnectionError | ConnectTimeoutError | ConnectionClosedError):
        return StorageUnavailable(
            f"cannot {action} {uri}: the object server at {where} is unreachable ({exc}); start it or fix "
            f"AWS_ENDPOINT_URL, {resume}")
    if isinstance(exc, ResponseStreamingError | IncompleteReadError):
        return StorageUnavailable(f"cannot {action} {uri}: the connection to the object server at {where} broke "
                                  f"mid-transfer ({exc}); {resume}")
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        bucket = split_s3(uri)[0] if is_s3(uri) else "?"
        if code == "NoSuchBucket":
            return BucketNotFound(f"cannot {action} {uri}: bucket '{bucket}' does not exist at {where}; "
                                  "create it or fix the URI")
        if code in _NOT_FOUND or status == 404:
            return ObjectNotFound(f"cannot {action} {uri}: no such object at {where}")
        if code in ("SignatureDoesNotMatch", "InvalidAccessKeyId"):
            return AccessDenied(f"cannot {action} {uri}: the object server at {where} rejected the credentials "
                                f"({code}: wrong AWS_ACCESS_KEY_ID or AWS_SECRET_ACCESS_KEY)")
        if code in _DENIED or status == 403:
            return AccessDenied(f"cannot {action} {uri}: access denied at {where} ({code or status}); check the "
                                "credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY) and their permissions "
                                f"on bucket '{bucket}'")
        if code in ("SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded") or (
                isinstance(status, int) and (status == 429 or status >= 500)):
            return StorageUnavailable(f"cannot {action} {uri}: the object server at {where} kept failing "
                                      f"({code or status}) after retries with backoff; try again later")
        return StorageError(f"cannot {action} {uri} at {where}: {code} {err.get('Message', '')}".strip())
    if isinstance(exc, BotoCoreError):
        return StorageError(f"cannot {action} {uri} at {where}: {exc}")
    return exc


def _guard(uri: str, action: str, fn: Callable[[], T]) -> T:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return fn()
    except (ClientError, BotoCoreError) as exc:
        raise translate(exc, uri, action) from exc
    except Exception as exc:  # the transfer manager wraps errors of its worker threads
        cause = exc.__cause__ or exc.__context__
        from boto3.exceptions import RetriesExceededError, S3UploadFailedError

        if isinstance(exc, RetriesExceededError):
            raise translate(exc, uri, action) from exc
        if isinstance(exc, S3UploadFailedError) and isinstance(cause, ClientError | BotoCoreError):
            raise translate(cause, uri, action) from exc
        if isinstance(exc, S3UploadFailedError):
            msg = str(exc)
            if "SignatureDoesNotMatch" in msg or "InvalidAccessKeyId" in msg or "AccessDenied" in msg:
                raise AccessDenied(f"cannot {action} {uri}: access denied at {_where()} ({msg}); check "
                                   "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY") from exc
            if "NoSuchBucket" in msg:
                raise BucketNotFound(f"cannot {action} {uri}: bucket '{split_s3(uri)[0]}' does not exist at "
                                     f"{_where()}") from exc
            raise StorageError(f"cannot {action} {uri} at {_where()}: {msg}") from exc
        raise


# ----------------------------------------------------------------------------- reading / listing
def folder_prefix(key: str) -> str:
    """An S3 key prefix as a folder: ``imgs`` lists ``imgs/…`` only, never its siblings ``imgs_test/…`` or
    ``imgs-heldout.png`` (S3 prefixes match any string start; a path ends at a ``/``, like a local folder)."""
    return key.rstrip("/") + "/" if key.strip("/") else ""


def list_s3(prefix_uri: str, suffixes: tuple[str, ...] | None = None, page_size: int = 1000) -> list[str]:
    """Every object URI under an s3 folder (all pages, recursive; :func:`folder_prefix`), optionally only
    names ending in ``suffixes``."""
    bucket, key = split_s3(prefix_uri)
    prefix = folder_prefix(key)
    client = s3_client()

    def run() -> list[str]:
        uris: list[str] = []
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": page_size})
        for page in pages:
            for obj in page.get("Contents", []):
                if suffixes is None or obj["Key"].lower().endswith(suffixes):
                    uris.append(f"s3://{bucket}/{obj['Key']}")
        return uris

    return _guard(prefix_uri, "list", run)


def _list_objects(prefix_uri: str) -> Iterator[dict]:
    bucket, key = split_s3(prefix_uri)
    prefix = folder_prefix(key)
    client = s3_client()

    def run() -> list[dict]:
        out = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            out.extend(page.get("Contents", []))
        return out

    yield from _guard(prefix_uri, "list", run)


def list_files(uri: str | os.PathLike, suffixes: tuple[str, ...] | None = None) -> list[str]:
    """Sorted files under a local directory (recursive) or an s3 prefix."""
    if is_s3(uri):
        return sorted(list_s3(str(uri), suffixes))
    root = Path(uri)
    if not root.is_dir():
        raise FileNotFoundError(f"directory not found: {uri}")
    return sorted(str(p) for p in root.rglob("*")
                  if p.is_file() and (suffixes is None or p.name.lower().endswith(suffixes)))


def exists(uri: str | os.PathLike) -> bool:
    if not is_s3(uri):
        return Path(uri).exists()
    try:
        head(str(uri))
        return True
    except ObjectNotFound:
        return False


def head(uri: str) -> dict:
    bucket, key = split_s3(uri)
    return _guard(uri, "read", lambda: s3_client().head_object(Bucket=bucket, Key=key))


class TooLarge(StorageError):
    """A file or object larger than the caller's cap (read nothing of it)."""


def read_bytes(uri: str | os.PathLike, max_bytes: int | None = None) -> bytes:
    """Bytes of a local file or an s3 object; FileNotFoundError naming it when it does not exist.

    With ``max_bytes``, a larger file is refused with :class:`TooLarge` before any of it is read.
    """

    def too_large(size: int) -> TooLarge:
        return TooLarge(f"{uri} is {size / MB:.1f} MB, above the {max_bytes / MB:g} MB limit")

    if is_s3(uri):
        bucket, key = split_s3(str(uri))

        def get() -> bytes:
            resp = s3_client().get_object(Bucket=bucket, Key=key)
            size = int(resp.get("ContentLength") or 0)
            if max_bytes is not None and size > max_bytes:
                resp["Body"].close()
                raise too_large(size)
            return resp["Body"].read()

        return _guard(str(uri), "read", get)
    if not Path(uri).is_file():
        raise FileNotFoundError(f"file not found: {uri}")
    with open(uri, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if max_bytes is not None and size > max_bytes:
            raise too_large(size)
        data = fh.read() if max_bytes is None else fh.read(max_bytes + 1)
    if max_bytes is not None and len(data) > max_bytes:  # it grew while being read
        raise too_large(len(data))
    return data


def read_text(uri: str | os.PathLike) -> str:
    return read_bytes(uri).decode("utf-8")


def write_bytes(uri: str | os.PathLike, data: bytes) -> None:
    """Write a whole file (local: atomic rename; s3: one PUT with the sha256 in metadata)."""
    if is_s3(uri):
        bucket, key = split_s3(str(uri))
        meta = {SHA_META: hashlib.sha256(data).hexdigest()}
        _guard(str(uri), "write", lambda: s3_client().put_object(Bucket=bucket, Key=key, Body=data, Metadata=meta))
        return
    from mpa.safeio import write_atomic

    write_atomic(uri, data)


def check_bucket(uri: str, write: bool = False) -> None:
    """Fail early with a clear error when the bucket is missing or the credentials are wrong."""
    bucket, key = split_s3(uri)
    client = s3_client()
    _guard(uri, "access", lambda: client.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1))
    if write:
        probe = f"{key.rstrip('/')}/.mpa-write-probe".lstrip("/")
        _guard(uri, "write to", lambda: client.put_object(Bucket=bucket, Key=probe, Body=b""))
        _guard(uri, "write to", lambda: client.delete_object(Bucket=bucket, Key=probe))


# ----------------------------------------------------------------------------- hashing / verification
def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(MB), b""):
            h.update(block)
    return h.hexdigest()


def expected_etag(path: str | os.PathLike, threshold: int, chunk: int) -> str:
    """The ETag S3 gives a file uploaded by the transfer manager with these multipart settings."""
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        if size < threshold:
            return hashlib.md5(fh.read(), usedforsecurity=False).hexdigest()
        digests = [hashlib.md5(block, usedforsecurity=False).digest() for block in iter(lambda: fh.read(chunk), b"")]
    return f"{hashlib.md5(b''.join(digests), usedforsecurity=False).hexdigest()}-{len(digests)}"


def _transfer_config() -> Any:
    from boto3.s3.transfer import TransferConfig

    s = _settings
    # num_download_attempts: the transfer manager re-reads a broken download stream on top of botocore's
    # retries; one extra try keeps a dead endpoint's failure within the time bound
    return TransferConfig(multipart_threshold=s.multipart_threshold_mb * MB,
                          multipart_chunksize=s.multipart_chunk_mb * MB,
                          max_concurrency=s.max_concurrency, use_threads=s.max_concurrency > 1,
                          num_download_attempts=2)


# ----------------------------------------------------------------------------- files
def upload_file(local: str | os.PathLike, uri: str, sha256: str | None = None) -> dict:
    """Upload one file (multipart when large) and verify it; return ``{size, sha256, etag}``."""
    bucket, key = split_s3(uri)
    s = _settings
    size = os.path.getsize(local)
    sha = sha256 or file_sha256(local)
    client = s3_client()
    _guard(uri, "upload to", lambda: client.upload_file(
        str(local), bucket, key, ExtraArgs={"Metadata": {SHA_META: sha}}, Config=_transfer_config()))
    info = {"size": size, "sha256": sha, "etag": ""}
    if s.verify:
        meta = head(uri)
        etag = str(meta.get("ETag", "")).strip('"')
        info["etag"] = etag
        if meta.get("ContentLength") != size:
            raise VerificationError(f"upload of {local} to {uri} is incomplete: {meta.get('ContentLength')} of "
                                    f"{size} bytes on the server; re-run to upload it again")
        want = expected_etag(local, s.multipart_threshold_mb * MB, s.multipart_chunk_mb * MB)
        # only plain-MD5 style ETags are comparable (SSE-KMS and some servers use other schemes)
        if _md5_style(etag) and etag != want:
            raise VerificationError(f"upload of {local} to {uri} is corrupt: ETag {etag} != expected {want}; "
                                    "re-run to upload it again")
    return info


def _md5_style(etag: str) -> bool:
    head_, _, parts = etag.partition("-")
    return len(head_) == 32 and all(c in "0123456789abcdef" for c in head_) and (not parts or parts.isdigit())


def download_file(uri: str, local: str | os.PathLike) -> Path:
    """Download one object to ``local`` atomically; check size and the sha256 it was uploaded with."""
    bucket, key = split_s3(uri)
    local = Path(local)
    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = local.with_name(local.name + ".part")
    client = s3_client()
    _guard(uri, "download", lambda: client.download_file(bucket, key, str(tmp), Config=_transfer_config()))
    if _settings.verify:
        meta = head(uri)
        want = (meta.get("Metadata") or {}).get(SHA_META)
        if tmp.stat().st_size != meta.get("ContentLength") or (want and file_sha256(tmp) != want):
            tmp.unlink(missing_ok=True)
            raise VerificationError(f"download of {uri} does not match the stored object (size or sha256); "
                                    "re-run to download it again")
    os.replace(tmp, local)
    return local


def copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copy one file between any two of: local path, s3 URI."""
    if is_s3(src) and is_s3(dst):
        write_bytes(dst, read_bytes(src))
    elif is_s3(src):
        download_file(str(src), dst)
    elif is_s3(dst):
        upload_file(src, str(dst))
    else:
        Path(dst).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)


# ----------------------------------------------------------------------------- directories
SYNC_STATE = ".mpa-sync.json"


def upload_dir(local_dir: str | os.PathLike, prefix_uri: str, *, skip: Callable[[str], bool] | None = None,
               state_file: str | os.PathLike | None = None) -> int:
    """Upload every file under ``local_dir`` to ``prefix_uri`` (same relative keys); return how many.

    With ``state_file``, files whose size, mtime and sha256 are unchanged since their last verified
    upload are skipped, so repeated syncs of a growing run directory only send what changed.
    """
    root = Path(local_dir)
    state: dict[str, Any] = {}
    if state_file and Path(state_file).is_file():
        state = json.loads(Path(state_file).read_text())
    sent = 0
    try:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            rel = path.relative_to(root).as_posix()
            if rel.endswith((".tmp", ".part", ".lock")) or rel == SYNC_STATE or (skip and skip(rel)):
                continue
            st = path.stat()
            prev = state.get(rel)
            if prev and prev["size"] == st.st_size and prev["mtime"] == st.st_mtime_ns:
                continue
            sha = file_sha256(path)
            if prev and prev["size"] == st.st_size and prev["sha256"] == sha:
                state[rel] = {**prev, "mtime": st.st_mtime_ns}
                continue
            upload_file(path, join(prefix_uri, rel), sha256=sha)
            state[rel] = {"size": st.st_size, "mtime": st.st_mtime_ns, "sha256": sha}
            sent += 1
    finally:
        if state_file:
            write_bytes(state_file, json.dumps(state, indent=0).encode())
    return sent


def download_dir(prefix_uri: str, local_dir: str | os.PathLike, *, overwrite: bool = False) -> int:
    """Download every object under ``prefix_uri`` into ``local_dir``; return how many were fetched.

    Files already present locally are kept unless ``overwrite`` (a local working copy of a run may be
    ahead of its last sync; downloads are atomic, so an existing file is never a torn download).
    """
    prefix_uri = prefix_uri.rstrip("/") + "/"
    bucket, prefix = split_s3(prefix_uri)
    root = Path(local_dir)
    plan = []  # every key is checked before anything is written
    for obj in _list_objects(prefix_uri):
        rel = obj["Key"][len(prefix):]
        if not rel or rel.endswith("/"):
            continue
        plan.append((obj["Key"], safe_join(root, rel, what=f"object key s3://{bucket}/{obj['Key']}")))
    n = 0
    for key, dest in plan:
        if not overwrite and dest.is_file():
            continue
        download_file(f"s3://{bucket}/{key}", dest)
        n += 1
    return n


def copy_dir(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copy a directory tree between any two of: local path, s3 prefix."""
    if is_s3(src) and is_s3(dst):
        for uri in list_s3(str(src).rstrip("/") + "/"):
            write_bytes(join(dst, uri[len(str(src).rstrip("/")) + 1:]), read_bytes(uri))
    elif is_s3(src):
        if download_dir(str(src), dst) == 0 and not Path(dst).is_dir():
            raise ObjectNotFound(f"nothing under {src} at {_where()}")
    elif is_s3(dst):
        upload_dir(src, str(dst))
    else:
        shutil.copytree(src, dst, dirs_exist_ok=True)


def cache_dir() -> Path:
    return Path(os.environ.get("MPA_CACHE", Path.home() / ".cache" / "mpa"))


def download_prefix_cached(prefix_uri: str) -> Path:
    """Download every object under an s3 prefix into the local cache, once (verified); return the directory."""
    prefix_uri = prefix_uri.rstrip("/") + "/"
    digest = hashlib.sha256(f"{endpoint_url()}|{prefix_uri}".encode()).hexdigest()[:16]
    target = cache_dir() / "s3" / digest
    marker = target / ".complete"
    if marker.exists():
        return target
    partial = target.with_name(target.name + ".partial")
    if download_dir(prefix_uri, partial) == 0 and not any(partial.rglob("*")):
        raise ObjectNotFound(f"nothing under {prefix_uri} at {_where()}: check the URI")
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    marker.touch()
    return target
