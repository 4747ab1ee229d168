"""atheris harness over the upload path's decoding and EXIF parsing: any bytes a client can send.

    .venv/bin/python -m fuzz.decode_exif -max_total_time=300 var/fuzz/corpus fuzz/seeds    # make fuzz
    .venv/bin/python -m fuzz.decode_exif var/fuzz/crash-<sha1>                              # replay one finding

A finding is any exception other than ``tagger.image.ImageError`` from the decoder, any exception at all from
``gateway.exif.parse_exif``, an input that runs longer than ``-timeout`` seconds, or memory over ``-rss_limit_mb``.
Each one found is fixed and its input kept in ``tests/fuzz_findings/``, which ``tests/test_fuzz.py`` replays. Seeds: ``python -m fuzz.seeds DIR``
(the sample photos, the EXIF files and the hostile corpus of ``tests/hostile.py``).
"""
from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    import exifread  # noqa: F401 - instrumented for coverage feedback

    from gateway.exif import parse_exif
    from tagger.image import ImageError, decode_image, open_image

MAX_PIXELS = 4_000_000  # smaller than the service's limit, so each input stays fast; the limit logic is the same


def one_input(data: bytes) -> None:
    try:
        open_image(data, max_pixels=MAX_PIXELS)
        decode_image(data, max_pixels=MAX_PIXELS, min_side=64)
    except ImageError:
        pass
    parse_exif(data)


def main(argv: list[str]) -> None:
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
