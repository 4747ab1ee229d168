"""Backups of a photo store and their restore: records, labels, history, trash, tokens, vocabulary, cached
predictions and every photo file, consistent while the service keeps answering.

    make backup BACKUP=/mnt/usb/tagger-2026-12-07      # python -m serving backup DIR
    make restore BACKUP=/mnt/usb/tagger-2026-12-07     # services stopped; into an empty data folder

A backup folder holds the database (``photos.db``: SQLite's online backup API; ``photos.dump``: ``pg_dump``, one
snapshot), the photo files it names (``images/``, content-addressed, each checked against its SHA-256 as it is
copied) and ``manifest.json`` (backend, schema revision, row counts, every file with its SHA-256). The database is
copied first, then the files: a file is never erased while a backup runs (``erase_lock``), and files written after
the copy are simply not in it. A restore copies both back, then verifies the row counts and every file's SHA-256.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from photo_store.postgres import pg_tool
from photo_store.records import erase_lock
from tagger.meta import atomic_write, utc_now

FORMAT = 1


class BackupError(RuntimeError):
    """A backup or restore that cannot go on; the message says what to do."""


def _sha256_copy(src: Path, dst: Path) -> str:
    dst.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    tmp = dst.with_name(dst.name + ".tmp")
    with open(src, "rb") as f, open(tmp, "wb") as out:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    tmp.replace(dst)
    return digest.hexdigest()


def backup(store, out: Path) -> dict:
    """Write a backup of ``store`` into the new or empty folder ``out``; returns its manifest."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise BackupError(f"{out} is not empty: name a new folder for the backup")
    out.mkdir(parents=True, exist_ok=True)
    out.chmod(0o700)  # tokens' hashes, sessions, every GPS position
    with erase_lock(store.root, shared=True):  # no file the copy names is erased before it is copied
        dumped = store.dump(out)
        files = {}
        for rel, sha in sorted(dumped["files"]):
            got = _sha256_copy(store.root / rel, out / rel)
            if got != sha:
                raise BackupError(f"{rel} holds bytes with SHA-256 {got}, not {sha}: the stored file is damaged; "
                                  "restore it from an older backup")
            files[rel] = sha
    manifest = {"format": FORMAT, "backend": store.backend, "database": dumped["database"],
                "schema": store.schema_revision(), "created_at": utc_now(), "counts": dumped["counts"],
                "files": files}
    atomic_write(out / "manifest.json", lambda f: f.write(json.dumps(manifest, indent=1).encode()))
    return manifest


def read_manifest(folder: Path) -> dict:
    try:
        manifest = json.loads((Path(folder) / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise BackupError(f"{folder} is not a backup (no readable manifest.json: {exc}); name the folder make "
                          "backup wrote") from None
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{folder} is a backup of format {manifest.get('format')!r}; this code reads {FORMAT}")
    return manifest


def restore(folder: Path, data_dir: Path, *, database_url: str = "", photo_dir: Path | None = None) -> dict:
    """Restore the backup in ``folder`` into the empty data folder ``data_dir`` (and, for a PostgreSQL backup,
    the empty database ``database_url``), then verify it; returns ``{"counts": ..., "files": n}``."""
    from photo_store import open_store  # photo_store/__init__ imports this module's neighbours

    folder, data_dir = Path(folder), Path(data_dir)
    photo_dir = Path(photo_dir or data_dir)
    manifest = read_manifest(folder)
    postgres = manifest["backend"] == "postgresql"
    if postgres != bool(database_url):
        raise BackupError("a PostgreSQL backup restores into an empty database: give DATABASE_URL" if postgres else
                          "a SQLite backup restores into the data folder: leave DATABASE_URL empty")
    if (data_dir / "photos.db").exists() or (photo_dir / "images").exists() and any((photo_dir / "images").iterdir()):
        raise BackupError(f"{data_dir} already holds a store: restore into an empty data folder (move this one "
                          "aside first)")
    data_dir.mkdir(parents=True, exist_ok=True)
    for rel, sha in manifest["files"].items():
        if _sha256_copy(folder / rel, photo_dir / rel) != sha:
            raise BackupError(f"{folder / rel} does not hold the bytes the backup recorded (SHA-256 {sha}): the "
                              "backup is damaged")
    if postgres:
        pg_tool("pg_restore", "--no-owner", "--no-privileges", "--exit-on-error", "--dbname", database_url,
                str(folder / manifest["database"]))
    else:
        shutil.copyfile(folder / manifest["database"], data_dir / "photos.db")
        os.chmod(data_dir / "photos.db", 0o600)
    store = open_store(data_dir, database_url, photo_dir=photo_dir)  # brings an older schema up to date
    try:
        counts, files = store.inventory()
        if counts != manifest["counts"]:
            raise BackupError(f"restored rows {counts} differ from the backup's {manifest['counts']}")
        for rel, sha in sorted(files):
            with open(photo_dir / rel, "rb") as f:
                if hashlib.file_digest(f, "sha256").hexdigest() != sha:
                    raise BackupError(f"{rel} does not match its record after the restore")
    finally:
        store.close()
    return {"counts": counts, "files": len(manifest["files"])}
