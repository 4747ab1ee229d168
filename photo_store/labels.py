"""A person's labels on a photo: set, undone."""
from __future__ import annotations

import json

from photo_store.records import StalePhoto
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
