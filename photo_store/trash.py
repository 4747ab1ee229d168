"""The trash: a deleted photo (with its earlier versions, labels, files, thumbnails and cached predictions) is
kept until the trash is emptied; a restore puts it all back under its id_name."""
from __future__ import annotations

import json

from photo_store.records import RECORD, Conflict, decode_record, erase_lock
from tagger.layout import DataDir
from tagger.meta import utc_now


class TrashStore:
    """Part of ``SqlStore`` (``photo_store/base.py``): its queries run on the backend's connections and locks."""

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
                            if not self._sha_held(db, sha):  # no photo, earlier version or trashed one shows them
                                self._run(db, "DELETE FROM predictions WHERE sha256 = ?", (sha,))
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
