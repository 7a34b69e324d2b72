"""Unlabeled image sources: a local directory (recursive) or an ``s3://`` prefix."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from mpa import storage

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


class ImageSourceError(ValueError):
    """An image source that cannot be used (missing, empty, wrong kind)."""


class UnreadableImage(ValueError):
    """One image that cannot be decoded; stages skip and count it."""


@dataclass
class LoadedImage:
    uri: str
    sha256: str
    image: Image.Image


def list_image_files(source: str, max_images: int | None = None) -> list[str]:
    """Sorted image paths/URIs under a directory or an ``s3://`` prefix (files with an image suffix only).

    Any image source, labeled datasets included: :func:`mpa.data.sources.list_images`.
    """
    if storage.is_s3(source):
        uris = [u for u in storage.list_s3(source) if u.lower().endswith(IMAGE_SUFFIXES)]
    else:
        root = Path(source).expanduser()
        if not root.exists():
            raise ImageSourceError(f"image source not found: {source}")
        if root.is_file():
            raise ImageSourceError(f"image source must be a directory or s3:// prefix, got a file: {source}")
        uris = [str(p) for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    uris.sort()
    if not uris:
        raise ImageSourceError(
            f"no images under {source} (looked for {', '.join(IMAGE_SUFFIXES)}); "
            "point data.images at a folder of images"
        )
    return uris[:max_images] if max_images else uris


def load_image(uri: str) -> LoadedImage:
    """Read, hash and decode one image as RGB; raise :class:`UnreadableImage` if it cannot be decoded."""
    try:
        data = storage.read_bytes(uri)
    except FileNotFoundError as exc:
        raise UnreadableImage(f"image file vanished: {uri}") from exc
    sha = hashlib.sha256(data).hexdigest()
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
        img = img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise UnreadableImage(f"not a readable image: {uri} ({exc})") from exc
    return LoadedImage(uri=uri, sha256=sha, image=img)


def file_sha256(uri: str) -> str:
    return hashlib.sha256(storage.read_bytes(uri)).hexdigest()
