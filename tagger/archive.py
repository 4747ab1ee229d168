"""Reading a model archive (``.mar``): the one reader, torch-free (the archive is written by ``training.archive``).

    a = read_archive("model_store/tagger-1.1.mar")
    a.version, a.model_name            # from TorchServe's MAR-INF/MANIFEST.json
    a.meta["labels"], a.meta["thresholds"]
    a.read("model.pt")                 # any member's bytes
    archive_of("model_store", "1.1")   # the archive holding a version (reads cached while files are unchanged)
"""
from __future__ import annotations

import json
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tagger.meta import validate_meta

# The packages an archive carries whole, for its handler (``training.archive`` packs them; the architecture test keeps
# them from importing anything else of the project): the handler, the served model and this ground floor.
PAYLOAD_PACKAGES = ("handler", "model", "tagger")
MANIFEST = "MAR-INF/MANIFEST.json"
META = "meta.json"
CODE_HASH = "code.sha256"  # SHA-256 of the code and settings packed (training.archive.code_hash)


class ArchiveError(ValueError):
    """Not a readable tagger archive; the message says what is wrong and how to rebuild it."""


@dataclass(frozen=True)
class Archive:
    path: Path
    model_name: str
    version: str
    meta: dict
    code_hash: str | None  # None for an archive from before it was recorded

    def read(self, member: str) -> bytes:
        with zipfile.ZipFile(self.path) as z:
            return z.read(member)


def read_archive(path: str | Path) -> Archive:
    """The manifest, metadata and code hash of the archive at ``path``.

    Raises:
        ArchiveError: missing, not a zip, no manifest or metadata, or metadata that does not validate.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as z:
            manifest = json.loads(z.read(MANIFEST))
            meta = validate_meta(json.loads(z.read(META)))
            names = set(z.namelist())
            code_hash = z.read(CODE_HASH).decode().strip() if CODE_HASH in names else None
        model = manifest["model"]
        return Archive(path, str(model["modelName"]), str(model["modelVersion"]), meta, code_hash)
    except (OSError, KeyError, ValueError, TypeError, zipfile.BadZipFile) as exc:
        raise ArchiveError(f"{path} is not a valid tagger archive ({type(exc).__name__}: {exc}); rebuild it "
                           "with `make archive`") from None


_lock = threading.Lock()
_read: dict[tuple[str, int, int], Archive | None] = {}  # (path, mtime, size) -> what read_archive gave


def cached_archive(path: str | Path) -> Archive | None:
    """``read_archive(path)``, remembered while the file is unchanged; ``None`` for a missing or bad archive."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError:
        return None
    key = (str(path), st.st_mtime_ns, st.st_size)
    with _lock:
        if key in _read:
            return _read[key]
    try:
        found = read_archive(path)
    except ArchiveError:
        found = None
    with _lock:
        _read[key] = found
    return found


def archive_of(model_store: str | Path, version: str, model_name: str = "tagger") -> Path | None:
    """The archive in ``model_store`` that holds ``version`` of ``model_name`` (``None`` when there is none)."""
    for path in sorted(Path(model_store).glob(f"{model_name}*.mar")):
        found = cached_archive(path)
        if found is not None and found.version == version:
            return path
    return None
