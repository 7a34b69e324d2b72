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
    """A dataset image (PIL, or ``{bytes}`` / ``{path}``) as PNG bytes, RGB."""
    import io

    from PIL import Image

    if isinstance(img, dict) and img.get("bytes"):
        img = Image.open(io.BytesIO(img["bytes"]))
    elif isinstance(img, dict) and img.get("path"):
        img = Image.open(img["path"])
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="PNG")
    return buf.getvalue()
