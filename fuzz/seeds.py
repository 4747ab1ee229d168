"""Write the fuzzing seeds: ``python -m fuzz.seeds var/fuzz/seeds`` (``make fuzz`` does).

The seeds are the bundled EXIF camera files, a few sample photos, and every image of the hostile corpus
(``tests/hostile.py``), so the fuzzer starts from real camera EXIF and from the attacks already known.
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from tagger import REPO
from tagger.image import EXTENSIONS
from tests.hostile import image_cases, small_heic, small_png


def write_seeds(out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    blobs = [p.read_bytes() for p in sorted((REPO / "samples/exif").iterdir()) if p.suffix.lower() in EXTENSIONS]
    blobs += [p.read_bytes() for p in sorted((REPO / "samples/coco_subset/images").iterdir())[:3]]
    blobs += [data for data, _ in image_cases().values() if len(data) < 1_000_000]
    blobs += [small_png(), small_heic()]
    for data in blobs:
        (out / hashlib.sha1(data).hexdigest()).write_bytes(data)
    return len(blobs)


if __name__ == "__main__":
    print(f"wrote {write_seeds(Path(sys.argv[1]))} seeds to {sys.argv[1]}")
