"""Small helpers for images inside Hugging Face datasets, shared by image sources and benchmark loaders."""

from __future__ import annotations

from typing import Any

from mpa.data.images import ImageSourceError


def image_column(ds: Any) -> str:
    """The image column of a Hugging Face dataset: the first ``Image`` feature, else ``image``."""
    features = getattr(ds, "features", {}) or {}
    for name, feat in features.items():
        if type(feat).__name__ == "Image":
            return name
    if "image" in ds.column_names:
        return "image"
    raise ImageSourceError(f"cannot tell the image column among {ds.column_names}; name it: hf:<id>:<split>:<column>")


def png_bytes(img: Any) -> bytes:
    """A dataset image (PIL, or ``{bytes}`` / ``{path}``) as PNG bytes, RGB (through the one decoder)."""
    import io

    from mpa import storage
    from mpa.data.images import MAX_IMAGE_BYTES, decode_image

    if isinstance(img, dict) and img.get("bytes"):
        img = decode_image(img["bytes"])
    elif isinstance(img, dict) and img.get("path"):
        img = decode_image(storage.read_bytes(img["path"], max_bytes=MAX_IMAGE_BYTES), img["path"])
    else:  # a PIL image the datasets library decoded: re-encode losslessly, then decode like any file
        raw = io.BytesIO()
        img.save(raw, format="PNG")
        img = decode_image(raw.getvalue())
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
