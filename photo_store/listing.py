"""Pages of photos, newest first, optionally only those with a tag: what ``/photos`` and the annotation page's grid
ask, answered by index at any store size (the tag index is ``label_tags`` and ``prediction_tags``, kept by triggers:
``migrations/versions/0005_tag_index.py``).

    store.page(after=None, limit=50, model_version="1.0")                       # records with their "answer"
    store.page(after=cursor, limit=50, model_version="1.0", tag="sea", policy="precise")
    store.grid("1.0", status="unlabelled", tag="sea", policy="*", offset=0, limit=100)   # (total, records)
    store.cache_margins("1.0", "precise", margin_of_answer)        # then the least sure first:
    store.grid("1.0", uncertain="precise", offset=0, limit=100)
    store.labelled_records()                                       # every labelled one, in batches

A photo has a tag when a person labelled it so (its labels), or, when no person labelled it, when the cached
prediction of ``model_version`` makes it under ``policy`` (a key of the answer's ``policy_tags``, or ``*``: the
tags it answered). A tag on few photos is found from the index and sorted; one on many by walking the photos
newest first and asking the index of each (both stop after ``limit`` rows).
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterator

from photo_store.records import decode_record

FEW = 2000  # at most this many photos with a tag: start from the tag's rows; more: walk the photos in order

_MATCHES = ("SELECT l.id_name FROM label_tags l WHERE l.tag = ? UNION ALL SELECT q.id_name FROM prediction_tags t"
            " JOIN photos q ON q.sha256 = t.sha256 WHERE t.model_version = ? AND t.policy = ? AND t.tag = ?"
            " AND q.labels IS NULL")
_HAS = ("((p.labels IS NOT NULL AND EXISTS (SELECT 1 FROM label_tags l WHERE l.tag = ? AND l.id_name = p.id_name))"
        " OR (p.labels IS NULL AND EXISTS (SELECT 1 FROM prediction_tags t WHERE t.model_version = ?"
        " AND t.policy = ? AND t.tag = ? AND t.sha256 = p.sha256)))")
_FROM_MATCHES = f"({_MATCHES}) m JOIN photos p ON p.id_name = m.id_name"
_STATUS = {"all": "", "labelled": " AND p.labelled_at IS NOT NULL", "unlabelled": " AND p.labelled_at IS NULL"}
_NEWEST_FIRST = " ORDER BY p.uploaded_at DESC, p.id_name DESC"


class ListingStore:
    """Part of ``SqlStore`` (``photo_store/base.py``): its queries run on the backend's connections."""

    def page(self, *, after: tuple[str, str] | None, limit: int, model_version: str | None,
             tag: str | None = None, policy: str = "*") -> list[dict]:
        """Up to ``limit`` photos newest first, from just after ``after`` = (uploaded_at, id_name), with ``tag``
        when given; each record carries ``answer``, the cached prediction of ``model_version`` (or None)."""
        cursor, args = ("", ()) if after is None else (" AND (p.uploaded_at, p.id_name) < (?, ?)", tuple(after))
        order = cursor + _NEWEST_FIRST + " LIMIT ?"
        with self._connect() as db:
            if tag is None:
                return self._answered(db, "photos p", "1 = 1" + order, model_version, (), (*args, limit))
            match = (tag, model_version or "", policy, tag)
            if self._few(db, tag, model_version, policy):
                return self._answered(db, _FROM_MATCHES, "1 = 1" + order, model_version, match, (*args, limit))
            return self._answered(db, "photos p", _HAS + order, model_version, (), (*match, *args, limit))

    def grid(self, model_version: str | None, *, status: str = "all", tag: str | None = None, policy: str = "*",
             uncertain: str | None = None, offset: int = 0, limit: int = 100) -> tuple[int, list[dict]]:
        """``(how many photos match, the records from offset)`` for the annotation page: ``status`` all | labelled
        | unlabelled, ``tag`` as in ``page``; newest first, or with ``uncertain`` (a policy) those whose cached
        margin under it is smallest first, photos without one
        last (``cache_margins`` first). Records carry ``answer`` as in ``page``."""
        where = "1 = 1" + _STATUS[status]
        order = _NEWEST_FIRST if uncertain is None else (" ORDER BY (g.margin IS NULL), g.margin,"
                                                         " p.uploaded_at DESC, p.id_name DESC")
        margins, margin_args = ("", ()) if uncertain is None else (
            " LEFT JOIN prediction_margins g ON g.model_version = ? AND g.policy = ? AND g.sha256 = p.sha256",
            (model_version or "", uncertain))
        with self._connect() as db:
            if tag is None:
                total = self._one(db, f"SELECT count(*) AS n FROM photos p WHERE {where}")["n"]
                rows = self._answered(db, "photos p" + margins, where + order + " LIMIT ? OFFSET ?", model_version,
                                      margin_args, (limit, offset))
            else:
                match = (tag, model_version or "", policy, tag)
                total = self._one(db, f"SELECT count(*) AS n FROM {_FROM_MATCHES} WHERE {where}", match)["n"]
                if total <= FEW:
                    rows = self._answered(db, _FROM_MATCHES + margins, where + order + " LIMIT ? OFFSET ?",
                                          model_version, (*match, *margin_args), (limit, offset))
                else:
                    rows = self._answered(db, "photos p" + margins, f"{where} AND {_HAS}" + order + " LIMIT ? OFFSET ?",
                                          model_version, margin_args, (*match, limit, offset))
        return total, rows

    def cache_margins(self, model_version: str, policy: str, margin: Callable[[dict], float | None], *,
                      batch: int = 2000) -> int:
        """Compute ``margin(answer)`` for each cached prediction of ``model_version`` that has none under
        ``policy`` yet (what ``grid(uncertain=policy)`` sorts by; None: no label has a threshold), ``batch`` at a
        time; returns how many. Once done, a call costs only the predictions made since."""
        done = 0
        while True:
            with self._connect() as db:
                rows = self._rows(db, "SELECT r.sha256, r.answer FROM predictions r WHERE r.model_version = ? AND"
                                      " NOT EXISTS (SELECT 1 FROM prediction_margins g WHERE g.model_version ="
                                      " r.model_version AND g.policy = ? AND g.sha256 = r.sha256) LIMIT ?",
                                  (model_version, policy, batch))
            if not rows:
                return done
            values = [(model_version, policy, r["sha256"], margin(json.loads(r["answer"]))) for r in rows]
            with self._connect() as db, self._write(db, f"margins:{model_version}:{policy}"):
                db.cursor().executemany(self._sql("INSERT INTO prediction_margins (model_version, policy, sha256,"
                                                  " margin) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING"), values)
            done += len(values)

    def labelled_records(self, *, batch: int = 500) -> Iterator[dict]:
        """Every labelled photo's record, newest first, read ``batch`` at a time (what the export writes)."""
        after = None
        while True:
            cursor, args = ("", ()) if after is None else (" AND (uploaded_at, id_name) < (?, ?)", after)
            with self._connect() as db:
                rows = [decode_record(r) for r in self._rows(
                    db, f"SELECT * FROM photos WHERE labelled_at IS NOT NULL{cursor}"
                        " ORDER BY uploaded_at DESC, id_name DESC LIMIT ?", (*args, batch))]
            yield from rows
            if len(rows) < batch:
                return
            after = (rows[-1]["uploaded_at"], rows[-1]["id_name"])

    def labelled_summaries(self) -> tuple[int, list[dict]]:
        """``(photos in the store, the labelled ones' labels, detail and suggestion)``: what progress counts."""
        with self._connect() as db:
            total = self._one(db, "SELECT count(*) AS n FROM photos")["n"]
            rows = self._rows(db, "SELECT id_name, labels, label_detail, suggested, labelled_at FROM photos"
                                  " WHERE labelled_at IS NOT NULL")
        return total, [decode_record(r) for r in rows]

    def _few(self, db, tag: str, model_version: str | None, policy: str) -> bool:
        """Whether at most ``FEW`` photos have ``tag`` (counted from the index, never past ``FEW + 1``)."""
        n = self._one(db, f"SELECT count(*) AS n FROM (SELECT 1 FROM ({_MATCHES}) m LIMIT ?) c",
                      (tag, model_version or "", policy, tag, FEW + 1))["n"]
        return n <= FEW

    def _answered(self, db, source: str, where: str, model_version: str | None, before: tuple, after: tuple):
        """Records of ``SELECT p.* FROM source WHERE where``, each with the cached answer of ``model_version``
        (``before``: the arguments inside ``source``; ``after``: those of ``where``)."""
        rows = self._rows(db, f"SELECT p.*, r.answer AS answer FROM {source} LEFT JOIN predictions r"
                              f" ON r.sha256 = p.sha256 AND r.model_version = ? WHERE {where}",
                          (*before, model_version or "", *after))
        records = []
        for row in rows:
            row = dict(row)
            answer = row.pop("answer")
            rec = decode_record(row)
            rec["answer"] = json.loads(answer) if answer else None
            records.append(rec)
        return records
