"""A parse function for the EXIF parser processes that hangs on a marked photo, as a crafted file can make exifread
spin (``ExifParsers(parse="tests.slow_exif:parse")``, the gateway's ``EXIF_PARSE``); every other photo is parsed
for real."""
import io
import time

from PIL import Image

from tagger.exif import parse_exif

MARK = b"hang-the-exif-parser"


def parse(data: bytes) -> dict:
    if MARK in data:
        time.sleep(3600)
    return parse_exif(data)


def hanging_jpeg() -> bytes:
    """A real, small JPEG whose comment segment (before the image data) holds the mark."""
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (90, 120, 200)).save(out, "JPEG", comment=MARK)
    return out.getvalue()
