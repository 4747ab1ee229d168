"""Bytes -> RGB image, with the checks every entry point shares (the handler, the gateway's upload, training).

    >>> from tagger.image import decode_image, ImageError
    >>> image = decode_image(open("photo.jpg", "rb").read())                # full size, EXIF orientation applied
    >>> image = decode_image(open("photo.jpg", "rb").read(), min_side=256)  # shorter side >= 256, decoded fast
    >>> FORMATS, EXTENSIONS, MEDIA_TYPES                                   # the one list of accepted formats

``min_side`` lets the JPEG decoder scale down while decoding (DCT scaling by 1/2, 1/4 or 1/8, Pillow's
``draft``) to the smallest size whose shorter side still covers ``min_side``, so a 12-megapixel phone photo is
never decoded at full size when the model resizes it to 256 anyway. Other formats are decoded at full size and
then reduced by an integer box filter to the same bound. The model's own resize and crop follow.

Only Pillow (plus pillow-heif for HEIC/HEIF): importing this module does not import torch.
"""
from __future__ import annotations

import io
import warnings
from contextlib import contextmanager

from PIL import Image, ImageOps, UnidentifiedImageError

try:  # HEIC/HEIF photos (iPhones); optional so a bare Pillow install still decodes JPEG/PNG/TIFF/WebP
    import pillow_heif

    pillow_heif.register_heif_opener()
except ImportError:  # pragma: no cover - depends on the environment
    pass

#: The photo formats accepted anywhere, and only these: the decoders (Pillow is told to try no other), the API's
#: spec, the annotation page, the store's file names, the photo library, training's data check and the fuzzers all
#: read this table. Pillow's format name -> (file extensions, media types); MPO is how Pillow names the JPEGs many
#: phones and cameras write (a JPEG with a second picture inside).
FORMATS = {
    "JPEG": ((".jpg", ".jpeg"), ("image/jpeg",)),
    "MPO": ((".jpg", ".jpeg"), ("image/jpeg",)),
    "PNG": ((".png",), ("image/png",)),
    "TIFF": ((".tif", ".tiff"), ("image/tiff",)),
    "WEBP": ((".webp",), ("image/webp",)),
    "HEIF": ((".heic", ".heif"), ("image/heic", "image/heif")),
}
PILLOW_FORMATS = tuple(f for f in FORMATS if f != "MPO")  # Pillow opens an MPO through its JPEG plugin
EXTENSIONS = frozenset(ext for exts, _ in FORMATS.values() for ext in exts)
MEDIA_TYPES = tuple(dict.fromkeys(m for _, media in FORMATS.values() for m in media))
FORMAT_NAMES = "JPEG, PNG, HEIC/HEIF, TIFF or WebP"  # as a person names them
#: What TorchServe's handler decodes: the photo formats, plus the binary PPM of pixels the gateway already decoded
#: (``decoded_bytes``). Only the gateway, holding TorchServe's inference key, sends the handler anything.
HANDLER_FORMATS = PILLOW_FORMATS + ("PPM",)


def file_extension(fmt: str | None) -> str:
    """The extension a file of Pillow format ``fmt`` is stored under (``.bin`` for none of ``FORMATS``)."""
    return FORMATS[fmt][0][0] if fmt in FORMATS else ".bin"


def media_type(fmt: str | None) -> str:
    """The media type a file of Pillow format ``fmt`` is served with (a GIF a store took before the one list of
    formats still shows on the page)."""
    return FORMATS[fmt][1][0] if fmt in FORMATS else Image.MIME.get(fmt or "", "application/octet-stream")


def open_file(path):
    """``PIL.Image.open`` of a file, trying only ``FORMATS`` (anything else raises ``UnidentifiedImageError``)."""
    return Image.open(path, formats=PILLOW_FORMATS)


#: Largest image accepted, in pixels (a 50-megapixel camera frame fits; decompression bombs do not).
DEFAULT_MAX_PIXELS = 64_000_000
#: Largest encoded file accepted, in bytes.
DEFAULT_MAX_BYTES = 40 * 1024 * 1024
#: Changes whenever decoding can give other pixels (feature caches key on it).
DECODER_VERSION = "2-draft-min-side"


class ImageError(ValueError):
    """The bytes are not a usable image; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def open_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int = DEFAULT_MAX_BYTES,
               formats: tuple[str, ...] = PILLOW_FORMATS):
    """Read only the header of ``data``: an unloaded ``PIL.Image`` after the size checks.

    Raises:
        ImageError: as ``decode_image``.
    """
    if not data:
        raise ImageError("empty body: send the image file's bytes")
    if len(data) > max_bytes:
        raise ImageError(f"image is {len(data)} bytes; the limit is {max_bytes}", status=413)
    with _decoder_errors(max_pixels):
        image = Image.open(io.BytesIO(data), formats=formats)
    width, height = image.size
    if width * height > max_pixels:
        raise ImageError(f"image is {width}x{height} pixels; the limit is {max_pixels} pixels", status=413)
    return image


def oriented_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) as displayed: swapped when the EXIF orientation turns the photo by 90 degrees."""
    try:
        orientation = image.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - unreadable EXIF means no rotation
        orientation = 1
    w, h = image.size
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int = DEFAULT_MAX_BYTES,
                 min_side: int | None = None, formats: tuple[str, ...] = PILLOW_FORMATS) -> Image.Image:
    """Decode ``data`` to an RGB image with its EXIF orientation applied.

    With ``min_side``, the image comes back reduced (never below ``min_side`` on its shorter side, never
    enlarged); without it, at full size.

    Raises:
        ImageError: empty input (400), too many bytes or pixels (413), not a decodable image (415),
            a truncated or corrupt image (400).
    """
    image = open_image(data, max_pixels=max_pixels, max_bytes=max_bytes, formats=formats)
    with _decoder_errors(max_pixels):
        width, height = image.size
        if min_side is not None and image.format == "JPEG":
            scale = min_side / min(width, height)
            if scale < 1:  # draft picks the smallest DCT scale whose size is still >= the requested one
                image.draft("RGB", (max(1, int(width * scale + 0.999)), max(1, int(height * scale + 0.999))))
        image.load()
        if min_side is not None:
            factor = min(image.size) // min_side
            if factor >= 2:
                image = image.reduce(factor)
        image = ImageOps.exif_transpose(image)
        return image.convert("RGB")


def shrinks(size: tuple[int, int], min_side: int) -> bool:
    """True when ``decode_image(min_side=min_side)`` of a photo of ``size`` gives it back reduced."""
    return min(size) >= 2 * min_side


def decoded_bytes(image: Image.Image) -> bytes:
    """An image ``decode_image`` returned, as a binary PPM: decoding these bytes again with the same ``min_side``
    gives exactly these pixels (nothing is left to reduce or to turn), at a fraction of the first decode's cost.
    The gateway sends a large photo's pixels so to TorchServe, which then does not decode it a second time."""
    width, height = image.size
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    return f"P6\n{width} {height}\n255\n".encode() + rgb.tobytes()


@contextmanager
def _decoder_errors(max_pixels: int):
    """Pillow's warnings silenced and its failures on client bytes turned into ``ImageError`` (never a 500)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"not a photo in a format this service reads (send a {FORMAT_NAMES} file)",
                         status=415) from None
    except Image.DecompressionBombError:  # Pillow's own limit, met in the header or while decoding
        raise ImageError(f"the image has more pixels than Pillow allows; the limit is {max_pixels} pixels",
                         status=413) from None
    except MemoryError:
        raise ImageError("the image needs more memory to decode than the service allows", status=413) from None
    except Exception as exc:  # noqa: BLE001 - decoders raise OSError, SyntaxError, struct.error, ... on bad files
        raise ImageError(f"corrupt or truncated image: {exc}") from None

