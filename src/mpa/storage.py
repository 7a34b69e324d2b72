"""Local paths and ``s3://`` URIs behind one small API (boto3 for S3).

Endpoint, region and credentials come from the standard AWS environment variables
(``AWS_ENDPOINT_URL``/``MLFLOW_S3_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any


def is_s3(uri: str | os.PathLike) -> bool:
    return str(uri).startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    if not is_s3(uri):
        raise ValueError(f"not an s3:// URI: {uri}")
    bucket, _, key = uri[len("s3://"):].partition("/")
    if not bucket:
        raise ValueError(f"s3 URI has no bucket: {uri}")
    return bucket, key


def s3_client() -> Any:
    import boto3
    from botocore.config import Config

    endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("MLFLOW_S3_ENDPOINT_URL")
    return boto3.client(
        "s3",
        endpoint_url=endpoint or None,
        config=Config(retries={"max_attempts": 8, "mode": "adaptive"}),
    )


def list_s3(prefix_uri: str) -> list[str]:
    """Every object URI under an s3 prefix (paginated)."""
    bucket, prefix = split_s3(prefix_uri)
    client = s3_client()
    uris: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            uris.append(f"s3://{bucket}/{obj['Key']}")
    return uris


def read_bytes(uri: str | os.PathLike) -> bytes:
    if is_s3(uri):
        bucket, key = split_s3(str(uri))
        return s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
    return Path(uri).read_bytes()


def cache_dir() -> Path:
    return Path(os.environ.get("MPA_CACHE", Path.home() / ".cache" / "mpa"))


def download_prefix_cached(prefix_uri: str) -> Path:
    """Download every object under an s3 prefix into the local cache, once; return the directory."""
    prefix_uri = prefix_uri.rstrip("/") + "/"
    digest = hashlib.sha256(prefix_uri.encode()).hexdigest()[:16]
    target = cache_dir() / "s3" / digest
    marker = target / ".complete"
    if marker.exists():
        return target
    bucket, prefix = split_s3(prefix_uri)
    client = s3_client()
    found = False
    for uri in list_s3(prefix_uri):
        key = split_s3(uri)[1]
        dest = target / key[len(prefix):]
        dest.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(bucket, key, str(dest))
        found = True
    if not found:
        raise FileNotFoundError(f"nothing under {prefix_uri}")
    marker.touch()
    return target
