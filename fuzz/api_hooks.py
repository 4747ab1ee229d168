"""schemathesis hooks for ``make fuzz-api``: the spec's file part is a photo (``encoding.contentType``), so photos
are generated for it, real JPEG, PNG, WebP, GIF, TIFF and BMP files of random size and colour.

    SCHEMATHESIS_HOOKS=fuzz.api_hooks schemathesis run http://127.0.0.1:7777/openapi.json --checks all
"""
from __future__ import annotations

import io

import schemathesis
from hypothesis import strategies as st
from PIL import Image

FORMATS = (("image/jpeg", "JPEG"), ("image/png", "PNG"), ("image/webp", "WEBP"), ("image/gif", "GIF"),
           ("image/tiff", "TIFF"), ("image/bmp", "BMP"))


@st.composite
def photo(draw, fmt: str) -> bytes:
    """A real photo file in ``fmt`` (1-48 pixels a side, one random colour)."""
    size = (draw(st.integers(1, 48)), draw(st.integers(1, 48)))
    image = Image.new("RGB", size, tuple(draw(st.integers(0, 255)) for _ in range(3)))
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def register() -> None:
    for media_type, fmt in FORMATS:
        schemathesis.openapi.media_type(media_type, photo(fmt))


register()
