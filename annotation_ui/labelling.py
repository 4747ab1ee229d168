"""Pure functions behind the annotation page: what a save records, how unsure the model is, progress and agreement.

    detail = label_detail(vocabulary, positives={"sea"}, unknown={"fog"}, suggested={"sea", "boat"},
                          previous=None, by="ann", now="2026-12-01T10:00:00Z")
    margin = uncertainty(answer["scores"], thresholds)       # small = the model is unsure: label it first
    stats = progress(labelled, vocabulary, total)      # (total, labelled) = store.labelled_summaries()

A reviewed label is ``{"value": bool, "source": "person" | "suggestion", "by": name, "at": time}``: source
``suggestion`` means a person accepted the model's suggestion as it was; ``person`` means the person set the
value (a label the model missed, a suggestion rejected, a negative). A label absent from the detail was not
reviewed and stays unknown in the export.
"""
from __future__ import annotations

import math

from tagger.labels import label_names

DEFAULT_NAMES = frozenset(label_names())  # the only vocabulary before a save recorded each label it showed

SOURCES = ("person", "suggestion")


def label_detail(vocabulary: list[str], *, positives: set[str], unknown: set[str], suggested: set[str],
                 previous: dict | None, by: str, now: str) -> dict:
    """Per reviewed label: value, who set it and when. A label whose value a person saves unchanged keeps its
    first ``by``/``at`` (re-saving does not rewrite history)."""
    previous = previous or {}
    detail = {}
    for name in vocabulary:
        if name in unknown:
            continue
        value = name in positives
        old = previous.get(name)
        if old is not None and old.get("value") == value:
            detail[name] = old
            continue
        source = "suggestion" if value and name in suggested else "person"
        detail[name] = {"value": value, "source": source, "by": by, "at": now}
    return detail


def reviewed(record: dict, vocabulary: list[str]) -> dict[str, bool]:
    """label -> value for the labels a person reviewed on a labelled photo (empty when not labelled). A photo
    labelled before per-label detail was recorded counts every label of the default vocabulary as reviewed (its
    save judged all checkboxes shown, and those were all there was); a label added since is unknown there."""
    if record.get("labelled_at") is None or record.get("labels") is None:
        return {}
    detail = record.get("label_detail")
    if detail is None:
        positives = set(record["labels"])
        return {name: name in positives for name in vocabulary if name in DEFAULT_NAMES}
    return {name: bool(d["value"]) for name, d in detail.items() if name in vocabulary}


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def uncertainty(scores: dict[str, float], thresholds: dict[str, float | None]) -> float | None:
    """The smallest distance, in logits, between a label's score and its threshold: 0 means the model could go
    either way on some label (uncertainty sampling: such photos teach the next model most). Labels that are never
    a tag (no threshold) do not count; ``None`` when none has a threshold."""
    return margin_of(thresholds)(scores)


def margin_of(thresholds: dict[str, float | None]):
    """``uncertainty`` with ``thresholds`` fixed, their logits computed once: ``margin(scores)``, for many photos."""
    cuts = [(name, _logit(t)) for name, t in thresholds.items() if t is not None]

    def margin(scores: dict[str, float]) -> float | None:
        margins = [abs(_logit(scores[name]) - cut) for name, cut in cuts if name in scores]
        return min(margins) if margins else None
    return margin


def progress(labelled: list[dict], vocabulary: list[str], total: int) -> dict:
    """Labelled / total, positives per label, and how often people kept the model's suggestions, per label, from
    the labelled photos' summaries and the number of photos in the store.

    Agreement is measured on saved photos whose save recorded the suggestion the person saw: ``accepted``
    (suggested and kept), ``rejected`` (suggested, removed), ``added`` (not suggested, set by the person),
    ``agreed_negative`` (not suggested, left off); ``agreement`` = (accepted + agreed_negative) / reviewed.
    """
    per_label = {name: {"positives": 0, "reviewed": 0, "accepted": 0, "rejected": 0, "added": 0,
                        "agreed_negative": 0} for name in vocabulary}
    compared = 0
    for r in labelled:
        values = reviewed(r, vocabulary)
        suggested = set(r["suggested"]["tags"]) if r.get("suggested") else None
        compared += suggested is not None
        for name, value in values.items():
            row = per_label[name]
            row["reviewed"] += 1
            row["positives"] += value
            if suggested is None:
                continue
            key = ("accepted" if value else "rejected") if name in suggested else \
                ("added" if value else "agreed_negative")
            row[key] += 1
    for row in per_label.values():
        judged = row["accepted"] + row["rejected"] + row["added"] + row["agreed_negative"]
        row["agreement"] = round((row["accepted"] + row["agreed_negative"]) / judged, 4) if judged else None
    totals = {k: sum(row[k] for row in per_label.values()) for k in ("accepted", "rejected", "added")}
    return {"total": total, "labelled": len(labelled),
            "compared_with_suggestions": compared,
            "suggestion_precision": round(totals["accepted"] / (totals["accepted"] + totals["rejected"]), 4)
            if totals["accepted"] + totals["rejected"] else None,
            "suggestion_recall": round(totals["accepted"] / (totals["accepted"] + totals["added"]), 4)
            if totals["accepted"] + totals["added"] else None,
            "per_label": per_label}
