"""A person's labels on a photo, and the summaries the annotation page sorts and counts."""
from __future__ import annotations

import json

from photo_store.records import StalePhoto, decode_record
from tagger.meta import utc_now


class LabelStore:
    """Part of ``SqlStore`` (``photo_store/base.py``): its queries run on the backend's connections and locks."""

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
