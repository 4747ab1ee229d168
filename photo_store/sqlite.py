"""The photo store: one data directory holding ``photos.db`` (SQLite, WAL) and ``images/``.

    store = PhotoStore("var")
    record = store.put("holiday-1", jpeg_bytes, exif={...}, width=640, height=480)
    store.get("holiday-1")["file"]          # images/3f/6c1e...jpg, a name the service chose
    store.read_image(record)                # the bytes

Durability: an upload is acknowledged only after its file has been written to a temporary name, fsynced, renamed
into place and its directory fsynced, and after the SQLite transaction that records it has committed with
``synchronous=FULL``. A crash at any point before that leaves at most an orphan file, never a record without a file.
Callers' ``id_name`` values are stored as data only, never used in a path. A replaced photo is never erased: its
file and labels move to the ``history`` table.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sqlite3
import uuid
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

from tagger.layout import DataDir
from tagger.meta import atomic_write, utc_now

# The photo record's columns, in one place: the photos table, and the history table that keeps replaced ones.
COLUMNS = (("file", "TEXT NOT NULL"), ("sha256", "TEXT NOT NULL"), ("bytes", "INTEGER NOT NULL"), ("format", "TEXT"),
           ("width", "INTEGER"), ("height", "INTEGER"), ("exif", "TEXT NOT NULL"), ("labels", "TEXT"),
           ("uploaded_at", "TEXT NOT NULL"), ("labelled_at", "TEXT"), ("label_detail", "TEXT"), ("suggested", "TEXT"))
TABLES = {"photos": (("id_name", "TEXT PRIMARY KEY"), *COLUMNS),
          "history": (("id_name", "TEXT NOT NULL"), *COLUMNS, ("replaced_at", "TEXT NOT NULL"))}
SCHEMA = "".join(f"CREATE TABLE IF NOT EXISTS {table} ({', '.join(f'{n} {t}' for n, t in cols)});\n"
                 for table, cols in TABLES.items()) + """
CREATE INDEX IF NOT EXISTS history_id_name ON history (id_name);
CREATE TABLE IF NOT EXISTS predictions (
    sha256         TEXT NOT NULL,
    model_version  TEXT NOT NULL,
    answer         TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    PRIMARY KEY (sha256, model_version)
);
"""

_EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "TIFF": ".tif", "WEBP": ".webp", "HEIF": ".heic", "GIF": ".gif",
               "BMP": ".bmp", "MPO": ".jpg", "AVIF": ".avif"}


class Conflict(Exception):
    """An upload with ``if_absent`` found a photo under its ``id_name`` (answered 409)."""


class PhotoStore:
    def __init__(self, data_dir: str | Path):
        layout = DataDir(data_dir)
        self.root, self.images, self.db_path = layout.root, layout.images, layout.db
        self.images.mkdir(parents=True, exist_ok=True)
        # gunicorn boots its workers at once, and SQLite answers "database is locked" at once (busy_timeout or
        # not) to a second process switching a new file to WAL; a worker failing to boot halts gunicorn: one at a time
        with open(layout.schema_lock, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._migrate()

    def _migrate(self) -> None:
        with closing(self._connect()) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)
            for table, columns in TABLES.items():  # a store from before a column was added gets it (nullable)
                have = {r["name"] for r in db.execute(f"PRAGMA table_info({table})")}
                for name, kind in columns:
                    if name not in have:
                        db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA busy_timeout=30000")
        return db

    def _write_file(self, data: bytes, fmt: str | None) -> str:
        name = uuid.uuid4().hex
        rel = Path("images") / name[:2] / (name + _EXTENSIONS.get(fmt or "", ".bin"))
        path = self.root / rel
        atomic_write(path, lambda f: f.write(data))  # fsynced, then renamed, then its folder fsynced
        return rel.as_posix()

    def put(self, id_name: str, data: bytes, *, exif: dict | Callable[[], dict], fmt: str | None = None,
            width: int | None = None, height: int | None = None, if_absent: bool = False,
            verify: Callable[[], None] | None = None, sha256: str | None = None) -> dict:
        """Store ``data`` under ``id_name``; returns the record with ``status`` and ``replaced``.

        The same bytes again: nothing changes, labels kept (``status: "unchanged"``). Other bytes: the new photo
        replaces the old one as the original service did (``replaced: True``), and the old file with its labels
        moves to the ``history`` table, never erased. ``if_absent``: raise ``Conflict`` instead of replacing.
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
        rel = self._write_file(data, fmt)
        try:
            if verify is not None:
                verify()
            if callable(exif):
                exif = exif()
        except BaseException:
            (self.root / rel).unlink(missing_ok=True)
            raise
        with closing(self._connect()) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                old = db.execute("SELECT file, sha256 FROM photos WHERE id_name = ?", (id_name,)).fetchone()
                if old is not None and if_absent:
                    raise Conflict(f"a photo is already stored under id_name {id_name!r}")
                if old is not None:
                    db.execute(
                        "INSERT INTO history (id_name, file, sha256, bytes, format, width, height, exif, labels,"
                        " uploaded_at, labelled_at, label_detail, suggested, replaced_at) SELECT id_name, file, sha256,"
                        " bytes,"
                        " format, width, height, exif, labels, uploaded_at, labelled_at, label_detail, suggested, ?"
                        " FROM photos WHERE id_name = ?",
                        (utc_now(micro=True), id_name))
                db.execute(
                    "INSERT INTO photos (id_name, file, sha256, bytes, format, width, height, exif, uploaded_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT(id_name) DO UPDATE SET file=excluded.file, sha256=excluded.sha256,"
                    " bytes=excluded.bytes, format=excluded.format, width=excluded.width, height=excluded.height,"
                    " exif=excluded.exif, uploaded_at=excluded.uploaded_at, labels=NULL, labelled_at=NULL,"
                    " label_detail=NULL, suggested=NULL",
                    (id_name, rel, sha, len(data), fmt, width, height, json.dumps(exif), utc_now(micro=True)))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                (self.root / rel).unlink(missing_ok=True)
                raise
        record = self.get(id_name)
        record["status"] = "stored"
        record["replaced"] = old is not None
        return record

    def history(self, id_name: str) -> list[dict]:
        """Earlier photos stored under ``id_name``, newest first, with the labels they had."""
        with closing(self._connect()) as db:
            rows = db.execute("SELECT * FROM history WHERE id_name = ? ORDER BY replaced_at DESC",
                              (id_name,)).fetchall()
        return [self._record(r) for r in rows]

    @staticmethod
    def _record(row: sqlite3.Row) -> dict:
        record = dict(row)
        record["exif"] = json.loads(record["exif"])
        record["labels"] = json.loads(record["labels"]) if record["labels"] else None
        for key in ("label_detail", "suggested"):
            record[key] = json.loads(record[key]) if record.get(key) else None
        return record

    def get(self, id_name: str) -> dict | None:
        with closing(self._connect()) as db:
            row = db.execute("SELECT * FROM photos WHERE id_name = ?", (id_name,)).fetchone()
        return self._record(row) if row else None

    def list(self, *, limit: int = 500, offset: int = 0) -> list[dict]:
        with closing(self._connect()) as db:
            rows = db.execute("SELECT * FROM photos ORDER BY uploaded_at DESC LIMIT ? OFFSET ?",
                              (limit, offset)).fetchall()
        return [self._record(r) for r in rows]

    def set_labels(self, id_name: str, labels: list[str], *, detail: dict | None = None,
                   suggested: dict | None = None) -> bool:
        """Record a person's labels for ``id_name`` (the photo now counts as labelled); False when there is no
        such photo. ``detail``: per reviewed label ``{"value", "source", "by", "at"}`` (labels absent from it
        were not reviewed: unknown); ``suggested``: the model's suggestion the person saw (version, tags)."""
        with closing(self._connect()) as db:
            cur = db.execute("UPDATE photos SET labels = ?, labelled_at = ?, label_detail = ?, suggested = ?"
                             " WHERE id_name = ?",
                             (json.dumps(sorted(set(labels))), utc_now(micro=True), json.dumps(detail) if detail else None,
                              json.dumps(suggested) if suggested else None, id_name))
        return cur.rowcount == 1

    def clear_labels(self, id_name: str) -> bool:
        """Make ``id_name`` unlabelled again (the annotation page's undo of a first save)."""
        with closing(self._connect()) as db:
            cur = db.execute("UPDATE photos SET labels = NULL, labelled_at = NULL, label_detail = NULL,"
                             " suggested = NULL WHERE id_name = ?", (id_name,))
        return cur.rowcount == 1

    def summaries(self, model_version: str | None) -> list[dict]:
        """Every photo's id, labels and upload order with the cached answer of ``model_version`` (or None), newest
        first: what the annotation page sorts, filters and counts (one query, no image bytes)."""
        with closing(self._connect()) as db:
            rows = db.execute(
                "SELECT p.id_name, p.sha256, p.labels, p.label_detail, p.suggested, p.uploaded_at, p.labelled_at,"
                " r.answer FROM photos p LEFT JOIN predictions r ON r.sha256 = p.sha256 AND r.model_version = ?"
                " ORDER BY p.uploaded_at DESC, p.id_name DESC", (model_version or "",)).fetchall()
        out = []
        for r in rows:
            out.append({"id_name": r["id_name"], "sha256": r["sha256"], "uploaded_at": r["uploaded_at"],
                        "labelled_at": r["labelled_at"],
                        "labels": json.loads(r["labels"]) if r["labels"] else None,
                        "label_detail": json.loads(r["label_detail"]) if r["label_detail"] else None,
                        "suggested": json.loads(r["suggested"]) if r["suggested"] else None,
                        "answer": json.loads(r["answer"]) if r["answer"] else None})
        return out

    def page(self, *, after: tuple[str, str] | None, limit: int) -> list[dict]:
        """Photos newest first, from just after ``after`` = (uploaded_at, id_name), each with ``predictions``
        (model version -> answer) attached."""
        with closing(self._connect()) as db:
            if after is None:
                rows = db.execute("SELECT * FROM photos ORDER BY uploaded_at DESC, id_name DESC LIMIT ?",
                                  (limit,)).fetchall()
            else:
                rows = db.execute("SELECT * FROM photos WHERE (uploaded_at, id_name) < (?, ?)"
                                  " ORDER BY uploaded_at DESC, id_name DESC LIMIT ?", (*after, limit)).fetchall()
            records = [self._record(r) for r in rows]
            for rec in records:
                rec["predictions"] = {p["model_version"]: json.loads(p["answer"]) for p in db.execute(
                    "SELECT model_version, answer FROM predictions WHERE sha256 = ?", (rec["sha256"],))}
        return records

    def delete(self, id_name: str) -> bool:
        """Remove a photo, its earlier versions (history), their files and their cached predictions (those no
        other photo shares); False when there is no such photo."""
        with closing(self._connect()) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute("SELECT file, sha256 FROM photos WHERE id_name = ?", (id_name,)).fetchone()
                if row is None:
                    db.execute("ROLLBACK")
                    return False
                old = db.execute("SELECT file, sha256 FROM history WHERE id_name = ?", (id_name,)).fetchall()
                db.execute("DELETE FROM photos WHERE id_name = ?", (id_name,))
                db.execute("DELETE FROM history WHERE id_name = ?", (id_name,))
                for sha in {row["sha256"], *(o["sha256"] for o in old)}:
                    db.execute("DELETE FROM predictions WHERE sha256 = ? AND NOT EXISTS (SELECT 1 FROM photos"
                               " WHERE sha256 = ?) AND NOT EXISTS (SELECT 1 FROM history WHERE sha256 = ?)",
                               (sha, sha, sha))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        for f in [row["file"], *(o["file"] for o in old)]:  # after the commit: a crash leaves an orphan, never a
            (self.root / f).unlink(missing_ok=True)         # record without its file
        return True

    def check(self) -> None:
        """Raise unless the database answers and the image directory is writable (for /readyz)."""
        with closing(self._connect()) as db:
            db.execute("SELECT 1 FROM photos LIMIT 1").fetchall()
        if not os.access(self.images, os.W_OK):
            raise OSError(f"{self.images} is not writable")

    def cached_prediction(self, sha256: str, model_version: str) -> dict | None:
        """The answer computed for these image bytes by this model version, if any."""
        with closing(self._connect()) as db:
            row = db.execute("SELECT answer FROM predictions WHERE sha256 = ? AND model_version = ?",
                             (sha256, model_version)).fetchone()
        return json.loads(row["answer"]) if row else None

    def save_prediction(self, sha256: str, model_version: str, answer: dict) -> None:
        with closing(self._connect()) as db:
            db.execute("INSERT OR REPLACE INTO predictions (sha256, model_version, answer, created_at)"
                       " VALUES (?, ?, ?, ?)", (sha256, model_version, json.dumps(answer), utc_now(micro=True)))

    def read_image(self, record: dict) -> bytes:
        return (self.root / record["file"]).read_bytes()

    def image_path(self, record: dict) -> Path:
        return self.root / record["file"]
