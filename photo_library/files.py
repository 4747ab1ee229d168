"""Which files of a folder are photos, where their sidecars go, and the name each photo has in the store.

    for photo in photos_in(Path("~/Pictures").expanduser()):
        sidecar_path(photo, "ext")        # IMG_1.JPG -> IMG_1.JPG.xmp (darktable, digiKam); "stem": IMG_1.xmp
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from photo_store.records import MAX_ID_NAME
from tagger.image import EXTENSIONS

#: Photo formats the gateway accepts (by extension, case-insensitive; tagger.image's list); other files are ignored.
PHOTO_EXTENSIONS = EXTENSIONS
SIDECAR_NAMES = ("ext", "stem")


def photos_in(root: Path) -> list[Path]:
    """Every photo under ``root``, recursively, in a stable order; hidden folders and files are skipped."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and Path(name).suffix.lower() in PHOTO_EXTENSIONS:
                found.append(Path(folder) / name)
    return found


def sidecar_path(photo: Path, naming: str = "ext") -> Path:
    """``NAME.EXT.xmp`` (darktable and digiKam's convention) or, with ``naming="stem"``, ``NAME.xmp``
    (Lightroom's)."""
    if naming not in SIDECAR_NAMES:
        raise ValueError(f"sidecar naming {naming!r}: choose ext (NAME.EXT.xmp) or stem (NAME.xmp)")
    return photo.with_name(photo.name + ".xmp") if naming == "ext" else photo.with_suffix(".xmp")


def id_name(root: Path, photo: Path) -> str:
    """The photo's name in the gateway's store: the folder's name and the path inside it (``Pictures/2024/a.jpg``);
    a hash of that path where it is too long or holds characters an ``id_name`` may not."""
    name = f"{root.name or 'photos'}/{photo.relative_to(root).as_posix()}"
    if len(name) <= MAX_ID_NAME and name.isprintable():
        return name
    return f"{root.name[:64]}/sha256-{hashlib.sha256(name.encode('utf-8', 'surrogateescape')).hexdigest()}"


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
