"""The vocabulary the next model is trained with, as far as people changed it: the labels they added (name,
synonyms, kind, evidence, who and when) and the ones they retired, served labels included.

    store.add_label("dog", synonyms=["puppy"], kind="object", evidence={...}, by="ann")   # Conflict when taken
    store.retire_label("dog", by="ann")          # out of the next model; what people saved for it stays
    store.vocabulary_rows()                      # every row, retired ones too

A name or synonym belongs to one label only, case-insensitively: the ``vocabulary_words`` table holds each one
(casefolded) as its primary key, so of two people adding "Dog" at once, on one machine or on two replicas, one gets
``Conflict``. A retired label keeps its words: adding its name again brings it back.
"""
from __future__ import annotations

import json

from tagger.labels import key
from tagger.meta import utc_now

COLUMNS = ("id", "name", "synonyms", "kind", "detector_class", "imagenet", "evidence", "served", "added_by",
           "added_at", "retired_at", "retired_by")


class LabelTaken(Exception):
    """A name or synonym that names another label already (answered 409)."""

    def __init__(self, word: str, owner: str):
        super().__init__(f"{word!r} already names the label {owner!r} (names and synonyms are unique, "
                         "case-insensitively)")
        self.word, self.owner = word, owner


def _row(r) -> dict:
    row = {k: r[k] for k in COLUMNS}
    row["synonyms"] = json.loads(row["synonyms"] or "[]")
    row["imagenet"] = json.loads(row["imagenet"]) if row["imagenet"] else None
    row["evidence"] = json.loads(row["evidence"] or "{}")
    row["served"] = bool(row["served"])
    return row


class VocabularyStore:
    """Mixed into ``SqlStore``: the queries run on either backend (``_unique_violation`` says which error is one)."""

    def vocabulary_rows(self) -> list[dict]:
        """Every label people added or retired, oldest first."""
        with self._connect() as db:
            return [_row(r) for r in self._rows(db, f"SELECT {', '.join(COLUMNS)} FROM vocabulary ORDER BY id")]

    def _owner(self, db, word: str) -> dict | None:
        r = self._one(db, f"SELECT {', '.join('v.' + c for c in COLUMNS)} FROM vocabulary_words w JOIN vocabulary v"
                          " ON v.id = w.label_id WHERE w.word = ?", (key(word),))
        return _row(r) if r else None

    def add_label(self, name: str, *, synonyms: list[str], kind: str, evidence: dict, by: str,
                  detector_class: str | None = None, imagenet: list[str] | None = None,
                  served: bool = False) -> tuple[dict, bool]:
        """Add ``name`` (or bring it back when it is a retired label of that name); returns ``(row, created)``.

        Raises:
            LabelTaken: the name or a synonym names another label, or a label that is not retired.
        """
        words = [name, *synonyms]
        now = utc_now()
        with self._connect() as db:
            with self._write(db, "vocabulary"):
                owner = self._owner(db, name)
                if owner is not None and (owner["retired_at"] is None or key(owner["name"]) != key(name)):
                    raise LabelTaken(name, owner["name"])
                for word in synonyms:
                    other = self._owner(db, word)
                    if other is not None and (owner is None or other["id"] != owner["id"]):
                        raise LabelTaken(word, other["name"])
                values = (name, json.dumps(synonyms), kind, detector_class, json.dumps(imagenet) if imagenet else None,
                          json.dumps(evidence), int(served), by, now)
                if owner is not None:  # a retired label of this name comes back, with what it is given now
                    self._run(db, "UPDATE vocabulary SET name = ?, synonyms = ?, kind = ?, detector_class = ?,"
                                  " imagenet = ?, evidence = ?, served = ?, added_by = ?, added_at = ?,"
                                  " retired_at = NULL, retired_by = NULL WHERE id = ?", (*values, owner["id"]))
                    self._run(db, "DELETE FROM vocabulary_words WHERE label_id = ?", (owner["id"],))
                    label_id = owner["id"]
                else:
                    self._run(db, "INSERT INTO vocabulary (name, synonyms, kind, detector_class, imagenet, evidence,"
                                  " served, added_by, added_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", values)
                    label_id = self._one(db, "SELECT id FROM vocabulary WHERE name = ? AND added_at = ? ORDER BY id"
                                             " DESC LIMIT 1", (name, now))["id"]
                try:
                    for word in dict.fromkeys(key(w) for w in words):
                        self._run(db, "INSERT INTO vocabulary_words (word, label_id) VALUES (?, ?)", (word, label_id))
                except Exception as exc:
                    if self._unique_violation(exc):  # taken by a label added beside us, on another replica
                        raise LabelTaken(name, "another one added at the same time") from None
                    raise
                row = _row(self._one(db, f"SELECT {', '.join(COLUMNS)} FROM vocabulary WHERE id = ?", (label_id,)))
        return row, owner is None

    def retire_label(self, name: str, *, by: str, served: dict | None = None) -> dict | None:
        """Retire the added label ``name``, or record the retirement of the served label ``served`` (its record);
        ``None`` when it is neither, or retired already."""
        now = utc_now()
        with self._connect() as db:
            with self._write(db, "vocabulary"):
                owner = self._owner(db, name)
                if owner is not None:
                    if owner["retired_at"] is not None or key(owner["name"]) != key(name):
                        return None
                    self._run(db, "UPDATE vocabulary SET retired_at = ?, retired_by = ? WHERE id = ?",
                              (now, by, owner["id"]))
                    return {**owner, "retired_at": now, "retired_by": by}
                if served is None:
                    return None
                self._run(db, "INSERT INTO vocabulary (name, synonyms, kind, detector_class, imagenet, evidence,"
                              " served, added_by, added_at, retired_at, retired_by)"
                              " VALUES (?, ?, ?, NULL, NULL, ?, 1, ?, ?, ?, ?)",
                          (served["name"], json.dumps(served.get("synonyms", [])),
                           "object" if served.get("isthing") else "scene", json.dumps({}), "served", now, now, by))
                label_id = self._one(db, "SELECT id FROM vocabulary WHERE name = ? AND retired_at = ? ORDER BY id DESC"
                                         " LIMIT 1", (served["name"], now))["id"]
                for word in dict.fromkeys(key(w) for w in (served["name"], *served.get("synonyms", []))):
                    self._run(db, "INSERT INTO vocabulary_words (word, label_id) VALUES (?, ?)", (word, label_id))
                return _row(self._one(db, f"SELECT {', '.join(COLUMNS)} FROM vocabulary WHERE id = ?", (label_id,)))
