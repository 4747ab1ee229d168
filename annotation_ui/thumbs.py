"""Thumbnails and view-size copies of stored photos: JPEG, EXIF orientation applied, made once per photo content.

    path = cached_jpeg(store, record, "thumb")   # <data>/thumbs/thumb/3f/3f6c...jpg, made on first request

Made with the one decoder (``tagger.image.decode_image``, reduced while decoding), so any format the
service accepts (HEIC included) gets a JPEG every browser shows. Files are keyed by the photo's SHA-256 and written
atomically; a replaced photo gets new ones.
"""
from __future__ import annotations

import io
from pathlib import Path

from tagger.image import decode_image, open_image, oriented_size
from tagger.layout import DataDir
from tagger.meta import atomic_write

SIZES = {"thumb": 256, "view": 1024}  # longest side in pixels


def render_jpeg(data: bytes, longest: int) -> bytes:
    width, height = oriented_size(open_image(data))
    short_target = max(1, round(longest * min(width, height) / max(width, height)))
    image = decode_image(data, min_side=min(short_target, min(width, height)))
    image.thumbnail((longest, longest))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=82, optimize=True)
    return out.getvalue()


def cached_jpeg(store, record: dict, size: str) -> Path:
    """The cached JPEG of ``record`` at ``size`` (``thumb`` or ``view``), rendered when missing."""
    sha = record["sha256"]
    path = DataDir(store.root).thumbs / size / sha[:2] / f"{sha}.jpg"
    if path.is_file():
        return path
    data = render_jpeg(store.read_image(record), SIZES[size])
    atomic_write(path, lambda f: f.write(data), durable=False)  # a cache: rebuilt when lost
    return path
