"""Unlabeled image sources: a local directory (recursive) or an ``s3://`` prefix."""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from mpa import storage

log = logging.getLogger(__name__)

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
        uris = _utf8_names(uris)
    uris.sort()
    if not uris:
        raise ImageSourceError(
            f"no images under {source} (looked for {', '.join(IMAGE_SUFFIXES)}); "
            "point data.images at a folder of images"
        )
    return uris[:max_images] if max_images else uris


#: the decoder's caps: a larger file, or more pixels, is refused (one line) before it is decoded
MAX_IMAGE_BYTES = 256 << 20
MAX_IMAGE_PIXELS = 64_000_000  # e.g. 8000x8000; a VLM sees at most a few megapixels after resizing


def decode_image(data: bytes, uri: str = "<bytes>", *, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """The one image decoder: bytes to the RGB picture a person would see.

    - EXIF orientation is applied (a phone photo stored sideways is turned upright);
    - transparency (RGBA, LA, PA, a palette or grey image with a transparent colour) is composited on
      white, as a viewer shows it — converting straight to RGB would drop alpha and paint dark text on a
      transparent chart black on black;
    - 16-bit (and 32-bit integer / float) grey images are scaled to 8 bits instead of clipped to white;
    - more than ``max_pixels`` pixels is refused from the header, before any pixel is decoded.

    Raises :class:`UnreadableImage` (one line naming ``uri``). Plain 8-bit RGB images come out unchanged.
    """
    from PIL import ImageOps

    try:
        img = Image.open(io.BytesIO(data))
        w, h = img.size
        if w * h > max_pixels:
            raise UnreadableImage(f"image too large: {uri} is {w}x{h} = {w * h / 1e6:.1f} megapixels, above the "
                                  f"{max_pixels / 1e6:g} megapixel limit; downscale it")
        img.load()
        img = ImageOps.exif_transpose(img) or img
        return _to_rgb(img)
    except UnreadableImage:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise UnreadableImage(f"not a readable image: {uri} ({exc})") from exc


def _to_rgb(img: Image.Image) -> Image.Image:
    import numpy as np

    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(img).astype(np.float64)
        if mode == "F" and arr.size and np.nanmax(arr) <= 1.0:
            arr = arr * 255.0  # a float image in [0, 1]
        elif mode.startswith("I;16") or (arr.size and arr.max() > 255):
            arr = arr / 257.0  # 0..65535 -> 0..255
        grey = np.clip(np.nan_to_num(arr), 0, 255).round().astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if not has_alpha:
        return img.convert("RGB")
    rgba = img.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _utf8_names(paths: list[str]) -> list[str]:
    """The paths whose names are UTF-8; the others are skipped with a log line.

    Records are JSON text: a file name with bytes that are not UTF-8 (Python shows them as surrogates) cannot
    be written into one, and used to abort every PA run at its first record.
    """
    kept = []
    for p in paths:
        try:
            p.encode("utf-8")
        except UnicodeEncodeError:
            shown = p.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            log.warning("skipping image %s: its file name is not UTF-8 (rename it to include it)", shown)
            continue
        kept.append(p)
    return kept


def load_image(uri: str) -> LoadedImage:
    """Read (at most :data:`MAX_IMAGE_BYTES`), hash and decode (:func:`decode_image`) one image.

    Raises :class:`UnreadableImage` if it cannot be used.
    """
    try:
        data = storage.read_bytes(uri, max_bytes=MAX_IMAGE_BYTES)
    except FileNotFoundError as exc:
        raise UnreadableImage(f"image file vanished: {uri}") from exc
    except storage.TooLarge as exc:
        raise UnreadableImage(f"image too large: {exc}; downscale it") from None
    sha = hashlib.sha256(data).hexdigest()
    return LoadedImage(uri=uri, sha256=sha, image=decode_image(data, uri))


def file_sha256(uri: str) -> str:
    return hashlib.sha256(storage.read_bytes(uri)).hexdigest()
