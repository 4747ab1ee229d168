"""The embedded backend (the default): ``photos.db`` (SQLite, WAL) in the data folder, files in its ``images/``.

    store = PhotoStore("var")
    record = store.put("holiday-1", jpeg_bytes, exif={...}, width=640, height=480)
    store.get("holiday-1")["file"]          # images/3f/3f6c1e...jpg: the content's SHA-256, never the id_name
    store.read_image(record)                # the bytes

Durability: an upload is acknowledged only after its file has been written to a temporary name, fsynced, renamed
into place and its directory fsynced, and after the SQLite transaction that records it has committed with
``synchronous=FULL``. A crash at any point before that leaves at most an orphan file, never a record without a file.
Callers' ``id_name`` values are stored as data only, never used in a path. A replaced photo is never erased: its
file and labels move to the ``history`` table. Writers of one database take turns (``BEGIN IMMEDIATE``); a photo
file's lock is one of 64 ``flock``-ed files in ``run/locks/`` (held by an open file, so threads exclude each other
too).
"""
from __future__ import annotations

import fcntl
import os
import sqlite3
from contextlib import closing, contextmanager
from pathlib import Path

from photo_store.base import SqlStore
from photo_store.migrate import check_known, head, upgrade
from photo_store.records import Conflict
from tagger.layout import DataDir

__all__ = ["Conflict", "PhotoStore", "SQLiteStore"]
STRIPES = 64


class SQLiteStore(SqlStore):
    backend = "sqlite"

    def __init__(self, data_dir: str | Path, *, photo_dir: str | Path | None = None):
        layout = DataDir(data_dir)
        super().__init__(photo_dir or layout.root)
        self.data_dir, self.db_path, self.lock_dir = layout.root, layout.db, layout.locks
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        # gunicorn boots its workers at once, and SQLite answers "database is locked" at once (busy_timeout or
        # not) to a second process switching a new file to WAL; a worker failing to boot halts gunicorn: one at a time
        with open(layout.schema_lock, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._migrate()

    def _migrate(self) -> None:
        """Open (or create, readable by its owner only) the database; migrate it, after a snapshot of the file
        beside it (``photos.db.before-<revision>``) when it holds an older schema."""
        # Created readable by its owner only (its -wal and -shm files take its mode). An existing file is only
        # chmodded: opening and closing another descriptor of it would drop this process's SQLite locks on it.
        if not self.db_path.exists():
            try:
                os.close(os.open(self.db_path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
            except FileExistsError:  # made by another opener just now
                pass
        os.chmod(self.db_path, 0o600)  # a store made before holds tokens' hashes and every GPS position too
        with closing(self._open()) as db:
            db.execute("PRAGMA journal_mode=WAL")
            try:
                at = db.execute("SELECT version_num FROM alembic_version").fetchone()
            except sqlite3.OperationalError:  # new, or made before migrations
                at = None
            made = at is not None or db.execute("SELECT 1 FROM sqlite_master WHERE name = 'photos'").fetchone()
            if made and (at is None or at[0] != head()):
                check_known(at[0] if at else None, str(self.db_path))
                snapshot = self.db_path.with_name(f"{self.db_path.name}.before-{head()}")
                with closing(sqlite3.connect(snapshot)) as copy:
                    db.backup(copy)  # SQLite's online backup: a consistent copy
                os.chmod(snapshot, 0o600)
        if at is None or at[0] != head():
            upgrade(f"sqlite:///{self.db_path.resolve()}", str(self.db_path))

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA busy_timeout=30000")
        return db

    def dump(self, out_dir: Path) -> dict:
        """A consistent copy of the database in ``out_dir`` (SQLite's online backup API: writers go on meanwhile),
        with the row counts and files read from the copy. Returns ``{"database": file name, "counts": ...,
        "files": {(file, sha256)}}``."""
        copy_path = Path(out_dir) / "photos.db"
        with closing(self._open()) as db, closing(sqlite3.connect(copy_path)) as copy:
            db.backup(copy)
        os.chmod(copy_path, 0o600)
        with closing(sqlite3.connect(copy_path)) as copy:
            copy.row_factory = sqlite3.Row
            counts, files = self._inventory(copy)
        return {"database": "photos.db", "counts": counts, "files": files}

    @contextmanager
    def _connect(self):
        with closing(self._open()) as db:
            yield db

    @contextmanager
    def _write(self, db, id_name: str):
        db.execute("BEGIN IMMEDIATE")  # one writer at a time per database: id_names included
        try:
            yield
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _unique_violation(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.IntegrityError)

    @staticmethod
    def _stripe(sha: str) -> int:
        return int(sha[:4], 16) % STRIPES

    @contextmanager
    def _file_lock(self, db, sha: str):
        # flock on a file of our own opening: threads exclude each other too, and no false deadlock is reported
        # between processes (POSIX record locks do, per process). O_CLOEXEC: a process started while it is held (an
        # EXIF parser, a training job) does not inherit it.
        fd = os.open(self.lock_dir / f"file-{self._stripe(sha):02d}", os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _lock_order(self, shas) -> list[str]:
        # several files may share a stripe: each stripe once (locking it twice would wait on ourselves)
        by_stripe = {self._stripe(s): s for s in shas}
        return [by_stripe[k] for k in sorted(by_stripe)]


PhotoStore = SQLiteStore  # the name the gateway, the exports and the tests have always used
