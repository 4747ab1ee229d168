"""atheris harness over the upload path's decoding and EXIF parsing: any bytes a client can send.

    .venv/bin/python -m fuzz.decode_exif -max_total_time=300 var/fuzz/corpus fuzz/seeds    # make fuzz
    .venv/bin/python -m fuzz.decode_exif var/fuzz/crash-<sha1>                              # replay one finding

A finding is what ``fuzz.targets.one_input`` raises (any exception other than ``tagger.image.ImageError`` from the
decoder, any exception at all from ``tagger.exif.parse_exif``), an input that runs longer than ``-timeout``
seconds, or memory over ``-rss_limit_mb``. Each one found is fixed and its input kept in ``tests/fuzz_findings/``,
which ``tests/test_fuzz.py`` replays. Seeds: ``python -m fuzz.seeds DIR`` (the sample photos, the EXIF files and
the hostile corpus of ``tests/hostile.py``).
"""
from __future__ import annotations

import sys

import atheris

# Coverage feedback from the code under test only: the parser, the decoder, Pillow's and pillow-heif's Python side.
with atheris.instrument_imports(include=["exifread", "tagger.exif", "tagger.image", "PIL", "pillow_heif",
                                         "fuzz.targets"]):
    from fuzz.targets import one_input


def main(argv: list[str]) -> None:
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
