"""What the fuzzers feed: the upload path's decoding and EXIF parsing, given any bytes a client can send.

    >>> from fuzz.targets import one_input
    >>> one_input(open("tests/fuzz_findings/png-declares-900-megapixels-2026-12-01.bin", "rb").read())  # no error

A finding is any exception other than ``tagger.image.ImageError`` from the decoder, or any exception at all from
``tagger.exif.parse_exif``. ``fuzz.decode_exif`` runs it under atheris (which instruments these modules for
coverage); ``tests/test_fuzz.py`` replays kept findings through it uninstrumented.
"""
from __future__ import annotations

from tagger.exif import parse_exif
from tagger.image import ImageError, decode_image, open_image

MAX_PIXELS = 4_000_000  # smaller than the service's limit, so each input stays fast; the limit logic is the same


def one_input(data: bytes) -> None:
    try:
        open_image(data, max_pixels=MAX_PIXELS)
        decode_image(data, max_pixels=MAX_PIXELS, min_side=64)
    except ImageError:
        pass
    parse_exif(data)
