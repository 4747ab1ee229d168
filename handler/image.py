"""Bytes -> RGB image, with the checks every entry point shares (the handler and the gateway's upload).

    >>> from handler.image import decode_image, ImageError
    >>> image = decode_image(open("photo.jpg", "rb").read())   # EXIF orientation applied, RGB

Only Pillow (plus pillow-heif for HEIC/HEIF): importing this module does not import torch.
"""
from __future__ import annotations

import io
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

try:  # HEIC/HEIF photos (iPhones); optional so a bare Pillow install still decodes JPEG/PNG/TIFF/WebP
    import pillow_heif

    pillow_heif.register_heif_opener()
except ImportError:  # pragma: no cover - depends on the environment
    pass

#: Largest image accepted, in pixels (a 50-megapixel camera frame fits; decompression bombs do not).
DEFAULT_MAX_PIXELS = 64_000_000
#: Largest encoded file accepted, in bytes.
DEFAULT_MAX_BYTES = 40 * 1024 * 1024


class ImageError(ValueError):
    """The bytes are not a usable image; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> Image.Image:
    """Decode ``data`` to an RGB image with its EXIF orientation applied.

    Raises:
        ImageError: empty input (400), too many bytes or pixels (413), not a decodable image (415),
            a truncated or corrupt image (400).
    """
    if not data:
        raise ImageError("empty body: send the image file's bytes")
    if len(data) > max_bytes:
        raise ImageError(f"image is {len(data)} bytes; the limit is {max_bytes}", status=413)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise ImageError(f"image is {width}x{height} pixels; the limit is {max_pixels} pixels", status=413)
            image.load()
            image = ImageOps.exif_transpose(image)
            return image.convert("RGB")
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError("not an image Pillow can read (send a JPEG, PNG, HEIC, TIFF or WebP file)",
                         status=415) from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageError(f"corrupt or truncated image: {exc}") from None


def image_format(data: bytes) -> str | None:
    """Pillow's name for the encoded format of ``data`` (``"JPEG"``, ``"PNG"``, ``"HEIF"``, ...), or None."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.format
    except (OSError, ValueError):
        return None
