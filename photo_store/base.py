"""What both store backends share: the photo record, the rules of put / delete, and the queries, written once.

A backend (``sqlite.SQLiteStore``, ``postgres.PostgresStore``) says only how to get a connection, how to hold
the write lock of one ``id_name`` (a transaction) and how to hold the lock of one photo file (across processes
and, on PostgreSQL, across machines). Queries use ``?`` placeholders; a backend may rewrite them.

Photo files are content-addressed, ``images/ab/<sha256>.<ext>`` under the photo folder, and written atomically
(temporary name, fsync, rename, folder fsync): two replicas writing the same photo write the same bytes to the same
name, and a reader sees the whole file or none. A file is removed only when no photo and no history row holds it,
under its lock, so a delete never takes the file of an upload of the same bytes running beside it.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path

from photo_store.tokens import TokenStore
from photo_store.vocabulary import VocabularyStore
from tagger.image import file_extension
from tagger.layout import DataDir
from tagger.meta import atomic_write, utc_now

# The photo record's columns (the migrations in photo_store/migrations/versions define the tables).
MAX_ID_NAME = 256  # characters in an id_name (the gateway refuses longer ones; the photo library truncates)
RECORD = ("file", "sha256", "bytes", "format", "width", "height", "exif", "labels", "uploaded_at", "labelled_at",
          "label_detail", "suggested")
JSON_FIELDS = ("exif", "labels", "label_detail", "suggested")
TABLES = ("photos", "history", "predictions", "tokens", "sessions", "vocabulary", "vocabulary_words", "trash",
          "trash_records")  # every table of the schema: what a backup counts


class Conflict(Exception):
    """An upload with ``if_absent`` found a photo under its ``id_name`` (answered 409)."""


class StalePhoto(Exception):
    """Labels saved for bytes other than those stored under the id_name now (answered 409 with both hashes)."""

    def __init__(self, id_name: str, shown: str, stored: str):
        super().__init__(f"{id_name!r} was replaced since it was shown (shown {shown}, stored now {stored}): look at "
                         "the new photo and label it again")
        self.shown, self.stored = shown, stored


class StoreUnavailable(Exception):
    """The database does not answer now (restarting, unreachable): nothing was stored; retry (answered 503)."""


@contextmanager
def erase_lock(photo_dir: Path, *, shared: bool):
    """Held shared by a backup while it copies files, exclusively while photo files are erased (emptying the
    trash): a backup never misses a file its database copy names."""
    path = Path(photo_dir) / "images" / ".erase.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield


def content_file(sha: str, fmt: str | None) -> str:
    """Where the bytes with this SHA-256 live, relative to the photo folder."""
    return f"images/{sha[:2]}/{sha}{file_extension(fmt)}"


def decode_record(row) -> dict:
    record = dict(row)
    for key in JSON_FIELDS:
        if key in record:
            record[key] = json.loads(record[key]) if record[key] else None
    return record


class SqlStore(TokenStore, VocabularyStore):
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

    def set_labels(self, id_name: str, labels: list[str], *, detail: dict | None = None,
                   suggested: dict | None = None, sha256: str | None = None) -> bool:
        """Record a person's labels for ``id_name`` (the photo now counts as labelled); False when there is no
        such photo. ``detail``: per reviewed label ``{"value", "source", "by", "at"}`` (labels absent from it
        were not reviewed: unknown); ``suggested``: the model's suggestion the person saw (version, tags).
        ``sha256``: the bytes the person saw; under the id's write lock, a photo stored there since with other
        bytes is not labelled (``StalePhoto``): its labels would land on a picture nobody looked at.

        Raises:
            StalePhoto: ``sha256`` is given and the stored photo's differs.
        """
        with self._connect() as db:
            with self._write(db, id_name):
                row = self._one(db, "SELECT sha256 FROM photos WHERE id_name = ?", (id_name,))
                if row is None:
                    return False
                if sha256 is not None and row["sha256"] != sha256:
                    raise StalePhoto(id_name, sha256, row["sha256"])
                self._run(db, "UPDATE photos SET labels = ?, labelled_at = ?, label_detail = ?, suggested = ?"
                              " WHERE id_name = ?",
                          (json.dumps(sorted(set(labels))), utc_now(micro=True),
                           json.dumps(detail) if detail else None, json.dumps(suggested) if suggested else None,
                           id_name))
        return True

    def clear_labels(self, id_name: str) -> bool:
        """Make ``id_name`` unlabelled again (the annotation page's undo of a first save)."""
        with self._connect() as db:
            n = self._run(db, "UPDATE photos SET labels = NULL, labelled_at = NULL, label_detail = NULL,"
                              " suggested = NULL WHERE id_name = ?", (id_name,))
        return n == 1

    def summaries(self, model_version: str | None) -> list[dict]:
        """Every photo's id, labels and upload order with the cached answer of ``model_version`` (or None), newest
        first: what the annotation page sorts, filters and counts (one query, no image bytes)."""
        with self._connect() as db:
            rows = self._rows(
                db, "SELECT p.id_name, p.sha256, p.labels, p.label_detail, p.suggested, p.uploaded_at,"
                    " p.labelled_at, r.answer FROM photos p LEFT JOIN predictions r ON r.sha256 = p.sha256"
                    " AND r.model_version = ? ORDER BY p.uploaded_at DESC, p.id_name DESC", (model_version or "",))
        out = []
        for r in rows:
            rec = decode_record({k: r[k] for k in ("id_name", "sha256", "uploaded_at", "labelled_at", "labels",
                                                   "label_detail", "suggested")})
            rec["answer"] = json.loads(r["answer"]) if r["answer"] else None
            out.append(rec)
        return out

    def page(self, *, after: tuple[str, str] | None, limit: int) -> list[dict]:
        """Photos newest first, from just after ``after`` = (uploaded_at, id_name), each with ``predictions``
        (model version -> answer) attached."""
        with self._connect() as db:
            if after is None:
                rows = self._rows(db, "SELECT * FROM photos ORDER BY uploaded_at DESC, id_name DESC LIMIT ?",
                                  (limit,))
            else:
                rows = self._rows(db, "SELECT * FROM photos WHERE (uploaded_at, id_name) < (?, ?)"
                                      " ORDER BY uploaded_at DESC, id_name DESC LIMIT ?", (*after, limit))
            records = [decode_record(r) for r in rows]
            for rec in records:
                rec["predictions"] = {p["model_version"]: json.loads(p["answer"]) for p in self._rows(
                    db, "SELECT model_version, answer FROM predictions WHERE sha256 = ?", (rec["sha256"],))}
        return records

    def delete(self, id_name: str) -> dict | None:
        """Move a photo and its earlier versions (history) to the trash; returns the trash entry (``trash_id``,
        ``id_name``, ``deleted_at``), None when there is no such photo. Files, labels and cached predictions stay
        until the trash is emptied (``empty_trash``); ``restore`` puts it all back."""
        with self._connect() as db:
            with self._write(db, id_name):
                if self._one(db, "SELECT 1 FROM photos WHERE id_name = ?", (id_name,)) is None:
                    return None
                now = utc_now(micro=True)
                trash_id = self._one(db, "INSERT INTO trash (id_name, deleted_at) VALUES (?, ?) RETURNING id",
                                     (id_name, now))["id"]
                columns = ", ".join(RECORD)
                self._run(db, f"INSERT INTO trash_records (trash_id, id_name, {columns}, replaced_at) SELECT ?,"
                              f" id_name, {columns}, NULL FROM photos WHERE id_name = ?", (trash_id, id_name))
                self._run(db, f"INSERT INTO trash_records (trash_id, id_name, {columns}, replaced_at) SELECT ?,"
                              f" id_name, {columns}, replaced_at FROM history WHERE id_name = ?", (trash_id, id_name))
                self._run(db, "DELETE FROM photos WHERE id_name = ?", (id_name,))
                self._run(db, "DELETE FROM history WHERE id_name = ?", (id_name,))
        return {"trash_id": trash_id, "id_name": id_name, "deleted_at": now}

    def trash(self) -> list[dict]:
        """What the trash holds, newest first: ``trash_id``, ``id_name``, ``deleted_at``, the photo's ``sha256``,
        ``bytes`` and ``labels``, and how many earlier versions came with it."""
        with self._connect() as db:
            rows = self._rows(db, "SELECT t.id AS trash_id, t.id_name, t.deleted_at, r.sha256, r.bytes, r.labels,"
                                  " (SELECT count(*) FROM trash_records h WHERE h.trash_id = t.id AND h.replaced_at"
                                  " IS NOT NULL) AS versions FROM trash t JOIN trash_records r ON r.trash_id = t.id"
                                  " AND r.replaced_at IS NULL ORDER BY t.deleted_at DESC, t.id DESC")
        return [{**dict(r), "labels": json.loads(r["labels"]) if r["labels"] else None} for r in rows]

    def restore(self, trash_id: int) -> dict | None:
        """Put a trashed photo and its earlier versions back under their id_name; None when there is no such
        entry. ``Conflict`` when a photo is stored under that id_name now."""
        with self._connect() as db:
            entry = self._one(db, "SELECT id_name FROM trash WHERE id = ?", (trash_id,))
            if entry is None:
                return None
            id_name = entry["id_name"]
            with self._write(db, id_name):
                if self._one(db, "SELECT 1 FROM trash WHERE id = ?", (trash_id,)) is None:
                    return None  # restored or emptied meanwhile
                if self._one(db, "SELECT 1 FROM photos WHERE id_name = ?", (id_name,)) is not None:
                    raise Conflict(f"a photo is stored under id_name {id_name!r} now; delete it (or upload the "
                                   "trashed one under another name) first")
                columns = ", ".join(RECORD)
                self._run(db, f"INSERT INTO photos (id_name, {columns}) SELECT id_name, {columns} FROM"
                              " trash_records WHERE trash_id = ? AND replaced_at IS NULL", (trash_id,))
                self._run(db, f"INSERT INTO history (id_name, {columns}, replaced_at) SELECT id_name, {columns},"
                              " replaced_at FROM trash_records WHERE trash_id = ? AND replaced_at IS NOT NULL",
                          (trash_id,))
                self._run(db, "DELETE FROM trash_records WHERE trash_id = ?", (trash_id,))
                self._run(db, "DELETE FROM trash WHERE id = ?", (trash_id,))
                row = self._one(db, "SELECT * FROM photos WHERE id_name = ?", (id_name,))
        return decode_record(row)

    def empty_trash(self, *, before: str | None = None) -> int:
        """Erase the trash entries deleted before ``before`` (an ISO time; None: all of them): their rows, then
        each file, cached prediction, thumbnail and view no other row holds. Returns how many were erased."""
        with self._connect() as db:
            ids = [r["id"] for r in (self._rows(db, "SELECT id FROM trash") if before is None else
                                     self._rows(db, "SELECT id FROM trash WHERE deleted_at < ?", (before,)))]
        erased = 0
        for trash_id in ids:
            with self._connect() as db:
                files = {(r["file"], r["sha256"]) for r in self._rows(
                    db, "SELECT file, sha256 FROM trash_records WHERE trash_id = ?", (trash_id,))}
                shas = {sha for _, sha in files}
                with self._file_locks(db, shas):  # an upload of the same bytes waits until we are done
                    with self._write(db, f"trash:{trash_id}"):
                        self._run(db, "DELETE FROM trash_records WHERE trash_id = ?", (trash_id,))
                        if self._run(db, "DELETE FROM trash WHERE id = ?", (trash_id,)) == 0:
                            continue  # restored meanwhile
                        for sha in shas:
                            self._run(db, "DELETE FROM predictions WHERE sha256 = ? AND NOT EXISTS (SELECT 1 FROM"
                                          " photos WHERE sha256 = ?) AND NOT EXISTS (SELECT 1 FROM history WHERE"
                                          " sha256 = ?) AND NOT EXISTS (SELECT 1 FROM trash_records WHERE sha256 = ?)",
                                      (sha, sha, sha, sha))
                    # committed; still under the files' locks: a crash leaves an orphan file, never a record
                    # without its file; and never while a backup copies files
                    with erase_lock(self.root, shared=False):
                        for f, sha in files:
                            if not self._held_elsewhere(db, f, sha):
                                (self.root / f).unlink(missing_ok=True)
                    for sha in shas:
                        if not self._sha_held(db, sha):
                            self._remove_renderings(sha)
                erased += 1
        return erased

    def _remove_renderings(self, sha: str) -> None:
        """The thumbnails and view-size copies made of these bytes (``<data>/thumbs/<size>/``), which no photo
        shows any more."""
        thumbs = DataDir(self.root).thumbs
        for size in thumbs.glob("*") if thumbs.is_dir() else ():
            (size / sha[:2] / f"{sha}.jpg").unlink(missing_ok=True)

    def check(self) -> None:
        """Raise unless the database answers and the photo folder is writable (for /readyz)."""
        with self._connect() as db:
            self._rows(db, "SELECT 1 FROM photos LIMIT 1")
        if not os.access(self.images, os.W_OK):
            raise OSError(f"{self.images} is not writable")

    def cached_prediction(self, sha256: str, model_version: str) -> dict | None:
        """The answer computed for these image bytes by this model version, if any."""
        with self._connect() as db:
            row = self._one(db, "SELECT answer FROM predictions WHERE sha256 = ? AND model_version = ?",
                            (sha256, model_version))
        return json.loads(row["answer"]) if row else None

    def save_prediction(self, sha256: str, model_version: str, answer: dict) -> None:
        with self._connect() as db:
            self._run(db, "INSERT INTO predictions (sha256, model_version, answer, created_at) VALUES (?, ?, ?, ?)"
                          " ON CONFLICT (sha256, model_version) DO UPDATE SET answer = excluded.answer,"
                          " created_at = excluded.created_at",
                      (sha256, model_version, json.dumps(answer), utc_now(micro=True)))

    def read_image(self, record: dict) -> bytes:
        return (self.root / record["file"]).read_bytes()

    def image_path(self, record: dict) -> Path:
        return self.root / record["file"]
