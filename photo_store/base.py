"""What both store backends share, written once: ``SqlStore``, the one interface, with the photos (put, get, history,
EXIF) here and the rest in a module each: pages and tag search (``listing.py``), labels (``labels.py``), the trash
(``trash.py``), cached predictions (``predictions.py``), API tokens (``tokens.py``), the vocabulary
(``vocabulary.py``); the record and the errors in ``records.py``.

A backend (``sqlite.SQLiteStore``, ``postgres.PostgresStore``) says only how to get a connection, how to hold
the write lock of one ``id_name`` (a transaction) and how to hold the lock of one photo file (across processes
and, on PostgreSQL, across machines). Queries use ``?`` placeholders; a backend may rewrite them.

Photo files are content-addressed, ``images/ab/<sha256>.<ext>`` under the photo folder, and written atomically
(temporary name, fsync, rename, folder fsync): two replicas writing the same photo write the same bytes to the same
name, and a reader sees the whole file or none. A file is removed only when no photo, history or trash row holds
it, under its lock, so emptying the trash never takes the file of an upload of the same bytes running beside it.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path

from photo_store.labels import LabelStore
from photo_store.listing import ListingStore
from photo_store.predictions import PredictionStore
from photo_store.records import (
    RECORD,
    TABLES,
    Conflict,
    content_file,
    decode_record,
)
from photo_store.tokens import TokenStore
from photo_store.trash import TrashStore
from photo_store.vocabulary import VocabularyStore
from tagger.meta import atomic_write, utc_now


class SqlStore(LabelStore, ListingStore, TrashStore, PredictionStore, TokenStore, VocabularyStore):
    backend = "sql"

    def __init__(self, photo_dir: str | Path):
        self.root = Path(photo_dir)
        self.images = self.root / "images"
        self.images.mkdir(parents=True, exist_ok=True)

    # ---- what a backend provides
    def _connect(self) -> AbstractContextManager:
        """A connection (rows readable as mappings), autocommitting outside ``_write``."""
        raise NotImplementedError

    def _write(self, db, id_name: str) -> AbstractContextManager:
        """A transaction holding the write lock of ``id_name`` until it commits (or rolls back on an exception)."""
        raise NotImplementedError

    def _file_lock(self, db, sha: str) -> AbstractContextManager:
        """Exclusive, across processes (and replicas), for the file with this SHA-256, until the block ends."""
        raise NotImplementedError

    def _sql(self, query: str) -> str:
        return query

    def _unique_violation(self, exc: BaseException) -> bool:
        """Whether ``exc`` is the database refusing a row whose unique key another row holds."""
        raise NotImplementedError

    def _rows(self, db, query: str, params=()) -> list:
        return db.execute(self._sql(query), params).fetchall()

    def _one(self, db, query: str, params=()):
        return db.execute(self._sql(query), params).fetchone()

    def _run(self, db, query: str, params=()) -> int:
        return db.execute(self._sql(query), params).rowcount

    # ---- files
    def _lock_order(self, shas) -> list[str]:
        """The files' locks to take, each once, always in the same order (so two deletes never wait in a circle)."""
        return sorted(set(shas))

    def _file_locks(self, db, shas) -> ExitStack:
        stack = ExitStack()
        for sha in self._lock_order(shas):
            stack.enter_context(self._file_lock(db, sha))
        return stack

    def _held_elsewhere(self, db, file: str, sha: str) -> bool:
        """Whether a photo, history or trash row still names ``file`` (looked up by its SHA-256, indexed)."""
        return self._one(db, "SELECT 1 FROM photos WHERE sha256 = ? AND file = ? UNION ALL SELECT 1 FROM history"
                             " WHERE sha256 = ? AND file = ? UNION ALL SELECT 1 FROM trash_records WHERE sha256 = ?"
                             " AND file = ? LIMIT 1", (sha, file, sha, file, sha, file)) is not None

    def _inventory(self, db) -> tuple[dict[str, int], set[tuple[str, str]]]:
        """Rows per table and every ``(file, sha256)`` a photo, history or trash row names, on connection ``db``."""
        counts = {t: self._one(db, f"SELECT count(*) AS n FROM {t}")["n"] for t in TABLES}
        files = {(r["file"], r["sha256"]) for r in self._rows(
            db, "SELECT file, sha256 FROM photos UNION SELECT file, sha256 FROM history UNION SELECT file, sha256"
                " FROM trash_records")}
        return counts, files

    def inventory(self) -> tuple[dict[str, int], set[tuple[str, str]]]:
        """``(rows per table, {(file, sha256)})`` now (a restore's check)."""
        with self._connect() as db:
            return self._inventory(db)

    def schema_revision(self) -> str | None:
        with self._connect() as db:
            row = self._one(db, "SELECT version_num FROM alembic_version")
        return row["version_num"] if row else None

    def _sha_held(self, db, sha: str) -> bool:
        """Whether any photo, history or trash row holds these bytes (their predictions and renderings stay)."""
        return self._one(db, "SELECT 1 FROM photos WHERE sha256 = ? UNION ALL SELECT 1 FROM history WHERE sha256 = ?"
                             " UNION ALL SELECT 1 FROM trash_records WHERE sha256 = ? LIMIT 1",
                         (sha, sha, sha)) is not None

    # ---- the store
    def put(self, id_name: str, data: bytes, *, exif: dict | Callable[[], dict], fmt: str | None = None,
            width: int | None = None, height: int | None = None, if_absent: bool = False,
            verify: Callable[[], None] | None = None, sha256: str | None = None) -> dict:
        """Store ``data`` under ``id_name``; returns the record with ``status`` and ``replaced``.

        The same bytes again: nothing changes, labels kept (``status: "unchanged"``). Other bytes: the new photo
        replaces the old one as the original service did (``replaced: True``), and the old file with its labels
        moves to the ``history`` table, never erased. ``if_absent``: raise ``Conflict`` instead of replacing
        (of two uploads racing for a new ``id_name``, one is stored and the other gets ``Conflict``).
        ``verify``: called before anything is decided (after the file is written and fsynced, so a check running
        elsewhere overlaps that write); whatever it raises propagates and nothing is stored. ``exif`` may be a
        zero-argument callable (the parse running elsewhere), asked once the file is written. ``sha256``: the
        caller's hex digest of ``data`` when it has one already (computed otherwise).
        """
        sha = sha256 or hashlib.sha256(data).hexdigest()
        current = self.get(id_name)
        if current is not None and (current["sha256"] == sha or if_absent):
            if verify is not None:
                verify()
            if current["sha256"] == sha:
                return {**current, "status": "unchanged", "replaced": False}
            raise Conflict(f"a photo is already stored under id_name {id_name!r}; send if_absent=0 to replace it "
                           "(the old one is kept in the history)")
        rel = content_file(sha, fmt)
        path = self.root / rel
        with self._connect() as db, self._file_lock(db, sha):
            created = not path.is_file()  # an existing one was renamed in whole and fsynced by whoever wrote it
            if created:
                atomic_write(path, lambda f: f.write(data))
            try:
                if verify is not None:
                    verify()
                if callable(exif):
                    exif = exif()
                with self._write(db, id_name):
                    old = self._one(db, "SELECT * FROM photos WHERE id_name = ?", (id_name,))
                    if old is not None and old["sha256"] == sha:  # the same bytes, stored beside us meanwhile
                        return {**decode_record(old), "status": "unchanged", "replaced": False}
                    if old is not None and if_absent:
                        raise Conflict(f"a photo is already stored under id_name {id_name!r}")
                    now = utc_now(micro=True)
                    if old is not None:
                        self._run(db, f"INSERT INTO history (id_name, {', '.join(RECORD)}, replaced_at)"
                                      f" SELECT id_name, {', '.join(RECORD)}, ? FROM photos WHERE id_name = ?",
                                  (now, id_name))
                    self._run(db, "INSERT INTO photos (id_name, file, sha256, bytes, format, width, height, exif,"
                                  " uploaded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id_name) DO UPDATE"
                                  " SET file=excluded.file, sha256=excluded.sha256, bytes=excluded.bytes,"
                                  " format=excluded.format, width=excluded.width, height=excluded.height,"
                                  " exif=excluded.exif, uploaded_at=excluded.uploaded_at, labels=NULL,"
                                  " labelled_at=NULL, label_detail=NULL, suggested=NULL",
                              (id_name, rel, sha, len(data), fmt, width, height, json.dumps(exif), now))
                    row = self._one(db, "SELECT * FROM photos WHERE id_name = ?", (id_name,))  # as committed
            except BaseException:
                if created and not self._held_elsewhere(db, rel, sha):
                    path.unlink(missing_ok=True)
                raise
        return {**decode_record(row), "status": "stored", "replaced": old is not None}

    def get(self, id_name: str) -> dict | None:
        with self._connect() as db:
            row = self._one(db, "SELECT * FROM photos WHERE id_name = ?", (id_name,))
        return decode_record(row) if row else None

    def history(self, id_name: str) -> list[dict]:
        """Earlier photos stored under ``id_name``, newest first, with the labels they had."""
        with self._connect() as db:
            rows = self._rows(db, "SELECT * FROM history WHERE id_name = ? ORDER BY replaced_at DESC", (id_name,))
        return [decode_record(r) for r in rows]

    def list(self, *, limit: int = 500, offset: int = 0) -> list[dict]:
        with self._connect() as db:
            rows = self._rows(db, "SELECT * FROM photos ORDER BY uploaded_at DESC, id_name DESC LIMIT ? OFFSET ?",
                              (limit, offset))
        return [decode_record(r) for r in rows]

    def set_exif(self, id_name: str, sha256: str, exif: dict) -> bool:
        """Store EXIF parsed again for the photo ``id_name`` holds, only while it still holds the bytes ``sha256``
        (a photo replaced meanwhile keeps its own); False when it does not."""
        with self._connect() as db:
            with self._write(db, id_name):
                n = self._run(db, "UPDATE photos SET exif = ? WHERE id_name = ? AND sha256 = ?",
                              (json.dumps(exif), id_name, sha256))
        return n == 1

    def unread_exif(self) -> list[dict]:
        """Photos whose EXIF could not be read when stored (its parse overran or its parser died)."""
        with self._connect() as db:
            rows = self._rows(db, "SELECT * FROM photos WHERE exif LIKE ? ORDER BY uploaded_at", ('%"unread":%',))
        return [r for r in map(decode_record, rows) if r["exif"].get("unread")]

    # ---- what one backend does across machines; nothing to do for a store on one machine (SQLite)
    def job_running_elsewhere(self) -> bool:
        """Whether a job (retrain, deploy) runs on another replica now."""
        return False

    def close(self) -> None:
        """Release what the store holds open (a connection pool)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def check(self) -> None:
        """Raise unless the database answers and the photo folder is writable (for /readyz)."""
        with self._connect() as db:
            self._rows(db, "SELECT 1 FROM photos LIMIT 1")
        if not os.access(self.images, os.W_OK):
            raise OSError(f"{self.images} is not writable")

    def read_image(self, record: dict) -> bytes:
        return (self.root / record["file"]).read_bytes()

    def image_path(self, record: dict) -> Path:
        return self.root / record["file"]
