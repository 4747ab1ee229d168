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
import time
from collections.abc import Callable, Iterator

from photo_store.records import decode_record

FEW = 2000  # at most this many photos with a tag: start from the tag's rows; more: walk the photos in order

# The photos with a tag, per status: those a person labelled so, and the unlabelled ones the prediction tags so.
_LABELLED = "SELECT l.id_name FROM label_tags l WHERE l.tag = ?"
_PREDICTED = ("SELECT q.id_name FROM prediction_tags t JOIN photos q ON q.sha256 = t.sha256 WHERE t.model_version = ?"
              " AND t.policy = ? AND t.tag = ? AND q.labels IS NULL")
# Asked of each photo while walking newest first. "LIMIT 1 OFFSET 0" keeps PostgreSQL from hashing every row of
# the tag first (it turns a plain EXISTS into a hashed subplan: 80 ms at 100,000 photos, against 1.4 ms probing).
_HAS = ("((p.labels IS NOT NULL AND EXISTS (SELECT 1 FROM label_tags l WHERE l.tag = ? AND l.id_name = p.id_name"
        " LIMIT 1 OFFSET 0)) OR (p.labels IS NULL AND EXISTS (SELECT 1 FROM prediction_tags t WHERE"
        " t.model_version = ? AND t.policy = ? AND t.tag = ? AND t.sha256 = p.sha256 LIMIT 1 OFFSET 0)))")
_STATUS = {"all": "", "labelled": " AND p.labelled_at IS NOT NULL", "unlabelled": " AND p.labelled_at IS NULL"}
_NEWEST_FIRST = " ORDER BY p.uploaded_at DESC, p.id_name DESC"
_LEAST_SURE_FIRST = " ORDER BY (g.margin IS NULL), g.margin, p.uploaded_at DESC, p.id_name DESC"
_MARGIN = " LEFT JOIN prediction_margins g ON g.model_version = ? AND g.policy = ? AND g.sha256 = p.sha256"


def _matches(status: str, tag: str, model_version: str, policy: str) -> tuple[str, tuple]:
    """``(SELECT id_name of the photos with tag, its arguments)`` for ``status``."""
    labelled, predicted = (_LABELLED, (tag,)), (_PREDICTED, (model_version, policy, tag))
    parts = {"all": [labelled, predicted], "labelled": [labelled], "unlabelled": [predicted]}[status]
    return " UNION ALL ".join(q for q, _ in parts), tuple(a for _, args in parts for a in args)


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
                ids = self._ids(db, "photos p", "1 = 1" + order, (*args, limit))
            else:
                matches, match = _matches("all", tag, model_version or "", policy)
                if self._few(db, tag, model_version or "", policy):
                    ids = self._ids(db, f"({matches}) m JOIN photos p ON p.id_name = m.id_name", "1 = 1" + order,
                                    (*match, *args, limit))
                else:
                    ids = self._ids(db, "photos p", _HAS + order, (tag, model_version or "", policy, tag, *args,
                                                                    limit))
            return self._records(db, ids, model_version)

    def grid(self, model_version: str | None, *, status: str = "all", tag: str | None = None, policy: str = "*",
             uncertain: str | None = None, offset: int = 0, limit: int = 100) -> tuple[int, list[dict]]:
        """``(how many photos match, the records from offset)`` for the annotation page: ``status`` all | labelled
        | unlabelled, ``tag`` as in ``page``; newest first, or with ``uncertain`` (a policy) those whose margin
        under it (``cache_margins``) is smallest first, photos without one last. Records carry ``answer`` as in
        ``page``."""
        version = model_version or ""
        where = "1 = 1" + _STATUS[status]
        with self._connect() as db:
            if tag is None:  # (the photos that match, the condition on them, their arguments)
                total = self._one(db, f"SELECT count(*) AS n FROM photos p WHERE {where}")["n"]
                source, cond, args = "photos p", where, ()
            else:
                matches, match = _matches(status, tag, version, policy)
                total = self._count(db, matches, match)
                if total <= FEW:
                    source, cond, args = f"({matches}) m JOIN photos p ON p.id_name = m.id_name", "1 = 1", match
                else:
                    source, cond, args = "photos p", f"{where} AND {_HAS}", (tag, version, policy, tag)
            if uncertain is None:
                ids = self._ids(db, source, cond + _NEWEST_FIRST + " LIMIT ? OFFSET ?", (*args, limit, offset))
            elif source != "photos p":  # a few photos: sorted whole
                ids = self._ids(db, source + _MARGIN, cond + _LEAST_SURE_FIRST + " LIMIT ? OFFSET ?",
                                (*args, version, uncertain, limit, offset))
            else:
                ids = self._least_sure(db, cond, args, version, uncertain, offset, limit)
            return total, self._records(db, ids, model_version)

    def _least_sure(self, db, cond: str, args: tuple, version: str, policy: str, offset: int, limit: int):
        """The photos meeting ``cond`` with a margin, smallest first, read in the margins' index order (no sort of
        every photo), then those without one, newest first: ``_LEAST_SURE_FIRST`` over the whole store."""
        ranked = ("FROM prediction_margins g CROSS JOIN photos p WHERE g.model_version = ? AND g.policy = ?"
                  f" AND g.margin IS NOT NULL AND p.sha256 = g.sha256 AND {cond}")  # CROSS: SQLite walks g first
        ids = [r["id_name"] for r in self._rows(
            db, f"SELECT p.id_name {ranked} ORDER BY g.margin, p.uploaded_at DESC, p.id_name DESC LIMIT ? OFFSET ?",
            (version, policy, *args, limit, offset))]
        if len(ids) == limit:
            return ids
        before = self._one(db, f"SELECT count(*) AS n {ranked}", (version, policy, *args))["n"]
        unranked = (" AND NOT EXISTS (SELECT 1 FROM prediction_margins g WHERE g.model_version = ? AND g.policy = ?"
                    " AND g.sha256 = p.sha256 AND g.margin IS NOT NULL LIMIT 1 OFFSET 0)")
        return ids + self._ids(db, "photos p", cond + unranked + _NEWEST_FIRST + " LIMIT ? OFFSET ?",
                               (*args, version, policy, limit - len(ids), max(0, offset - before)))

    def cache_margins(self, model_version: str, policy: str, margin: Callable[[dict], float | None], *,
                      batch: int = 2000, seconds: float | None = None) -> tuple[int, bool]:
        """Compute ``margin(answer)`` for each cached prediction of ``model_version`` that has none under
        ``policy`` yet (what ``grid(uncertain=policy)`` sorts by; None: no label has a threshold), ``batch`` at a
        time, for at most about ``seconds``; returns ``(how many, whether none is left)``. Once done, a call costs
        only the predictions made since."""
        done, deadline, after = 0, None if seconds is None else time.monotonic() + seconds, ""
        while True:
            with self._connect() as db:
                rows = self._rows(db, "SELECT r.sha256, r.answer FROM predictions r WHERE r.model_version = ? AND"
                                      " r.sha256 > ? AND NOT EXISTS (SELECT 1 FROM prediction_margins g WHERE"
                                      " g.model_version = r.model_version AND g.policy = ? AND g.sha256 = r.sha256)"
                                      " ORDER BY r.sha256 LIMIT ?", (model_version, after, policy, batch))
            if not rows or deadline is not None and done and time.monotonic() > deadline:
                if done >= 1000:  # the planner's statistics: a table grown this much plans differently
                    with self._connect() as db:
                        db.execute("ANALYZE prediction_margins")
                return done, not rows
            values = [(model_version, policy, r["sha256"], margin(json.loads(r["answer"]))) for r in rows]
            with self._connect() as db, self._write(db, f"margins:{model_version}:{policy}"):
                db.cursor().executemany(self._sql("INSERT INTO prediction_margins (model_version, policy, sha256,"
                                                  " margin) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING"), values)
            done, after = done + len(values), rows[-1]["sha256"]

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

    def _count(self, db, matches: str, args: tuple) -> int:
        """How many rows ``matches`` selects."""
        return self._one(db, f"SELECT count(*) AS n FROM ({matches}) m", args)["n"]

    def _few(self, db, tag: str, model_version: str, policy: str) -> bool:
        """Whether at most ``FEW`` index rows name ``tag`` (an upper bound on the photos with it: a prediction's
        photos may be labelled or gone), read from the indexes alone and never past ``FEW + 1``."""
        n = self._one(db, "SELECT count(*) AS n FROM (SELECT 1 FROM label_tags WHERE tag = ? LIMIT ?) a",
                      (tag, FEW + 1))["n"]
        return n + self._one(db, "SELECT count(*) AS n FROM (SELECT 1 FROM prediction_tags WHERE model_version = ?"
                                 " AND policy = ? AND tag = ? LIMIT ?) b", (model_version, policy, tag, FEW + 1 - n)
                             )["n"] <= FEW

    def _ids(self, db, source: str, where: str, args: tuple) -> list[str]:
        """The id_names of ``SELECT p.id_name FROM source WHERE where`` (only keys: a sort carries no records)."""
        return [r["id_name"] for r in self._rows(db, f"SELECT p.id_name FROM {source} WHERE {where}", args)]

    def _records(self, db, ids: list[str], model_version: str | None) -> list[dict]:
        """The records of ``ids``, in that order, each with the cached answer of ``model_version`` (or None);
        a photo deleted since its id was read is left out."""
        if not ids:
            return []
        rows = self._rows(db, "SELECT p.*, r.answer AS answer FROM photos p LEFT JOIN predictions r"
                              " ON r.sha256 = p.sha256 AND r.model_version = ?"
                              f" WHERE p.id_name IN ({', '.join('?' * len(ids))})", (model_version or "", *ids))
        found = {}
        for row in rows:
            row = dict(row)
            answer = row.pop("answer")
            found[row["id_name"]] = {**decode_record(row), "answer": json.loads(answer) if answer else None}
        return [found[i] for i in ids if i in found]
