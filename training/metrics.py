"""Multi-label metrics: average precision per label, mAP, and per-label thresholds.

All functions take ``scores`` and ``targets`` of shape (N, L) and an optional boolean ``known`` mask of the same
shape; unknown entries are ignored.
"""
from __future__ import annotations

import torch

# The summary's figures, in the order every report prints them (the CLI, metrics.json, the annotation page).
METRIC_NAMES = ("mAP", "CP", "CR", "CF1", "OP", "OR", "OF1")
AT_THRESHOLDS = METRIC_NAMES[1:]  # the ones that depend on the thresholds


def average_precision(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """AP of one label: mean precision at the rank of each positive (ties broken pessimistically).

    Returns ``nan`` when there is no positive (AP is undefined then; ``mean_average_precision`` skips it).
    """
    scores = torch.as_tensor(scores, dtype=torch.float64).flatten()
    targets = torch.as_tensor(targets).flatten().bool()
    n_pos = int(targets.sum())
    if n_pos == 0:
        return float("nan")
    # Sort by score descending; among equal scores put negatives first (pessimistic, so ties earn nothing).
    order = torch.tensor(sorted(range(len(scores)), key=lambda i: (-float(scores[i]), bool(targets[i]))),
                         dtype=torch.long)
    hits = targets[order].double()
    precision_at_k = torch.cumsum(hits, 0) / torch.arange(1, len(hits) + 1, dtype=torch.float64)
    return float((precision_at_k * hits).sum() / n_pos)


def per_label_ap(scores: torch.Tensor, targets: torch.Tensor, known: torch.Tensor | None = None) -> list[float]:
    """AP for each label over its known entries (``nan`` for labels with no known positive)."""
    if known is None:
        known = torch.ones_like(targets, dtype=torch.bool)
    return [average_precision(scores[known[:, j], j], targets[known[:, j], j]) for j in range(targets.shape[1])]


def mean_average_precision(scores: torch.Tensor, targets: torch.Tensor, known: torch.Tensor | None = None) -> float:
    """Mean of per-label AP over labels that have at least one known positive (``nan`` if none has)."""
    aps = [a for a in per_label_ap(scores, targets, known) if a == a]
    return sum(aps) / len(aps) if aps else float("nan")


def best_f1_thresholds(probs: torch.Tensor, targets: torch.Tensor, known: torch.Tensor | None = None, *,
                       default: float = 0.5, min_threshold: float = 0.05) -> list[float]:
    """Per-label probability threshold maximising F1 on the known entries.

    A label with no known positive keeps ``default``. Thresholds sit midway between neighbouring scores so a
    small shift in a score does not flip a decision, and never go below ``min_threshold``.
    """
    if known is None:
        known = torch.ones_like(targets, dtype=torch.bool)
    out = []
    for j in range(targets.shape[1]):
        p, t = probs[known[:, j], j].double(), targets[known[:, j], j].bool()
        n_pos = int(t.sum())
        if n_pos == 0:
            out.append(default)
            continue
        # every distinct score, highest first, with how many predictions and true positives a threshold there keeps
        values, inverse = torch.unique(p, return_inverse=True)  # ascending
        values = values.flip(0)
        inverse = len(values) - 1 - inverse
        kept = torch.zeros(len(values), dtype=torch.float64).index_add_(0, inverse, torch.ones_like(p)).cumsum(0)
        hits = torch.zeros(len(values), dtype=torch.float64).index_add_(0, inverse, t.double()).cumsum(0)
        f1 = 2 * hits / (kept + n_pos)
        k = int(torch.argmax(f1))  # the first maximum: the highest threshold among equally good ones
        lower = float(values[k + 1]) if k + 1 < len(values) else 0.0
        out.append(max(min_threshold, round((float(values[k]) + lower) / 2, 4)))
    return out


def _safe_div(a: float, b: float) -> float:
    return a / b if b else 0.0


def decision_metrics(probs: torch.Tensor, targets: torch.Tensor, thresholds, known: torch.Tensor | None = None
                     ) -> dict:
    """CP, CR, CF1 (per-label precision and recall, averaged) and OP, OR, OF1 (over all decisions).

    A label is predicted when its probability reaches its threshold (never when it is ``None``). Only known
    entries count. The per-label
    averages run over labels with at least one known positive (the labels mAP averages over); such a label that
    is never predicted has precision 0 (nothing it said was right), never a division by zero.
    """
    if known is None:
        known = torch.ones_like(targets, dtype=torch.bool)
    known = known.bool()
    limits = torch.tensor([float("inf") if t is None else float(t) for t in thresholds], dtype=probs.dtype)
    pred = (probs >= limits) & known
    truth = targets.bool() & known
    tp = (pred & truth).sum(0).double()
    n_pred, n_pos = pred.sum(0).double(), truth.sum(0).double()
    has_pos = n_pos > 0
    precision = [_safe_div(float(tp[j]), float(n_pred[j])) for j in range(len(tp)) if has_pos[j]]
    recall = [_safe_div(float(tp[j]), float(n_pos[j])) for j in range(len(tp)) if has_pos[j]]
    cp = sum(precision) / len(precision) if precision else float("nan")
    cr = sum(recall) / len(recall) if recall else float("nan")
    op = _safe_div(float(tp.sum()), float(n_pred.sum()))
    orec = _safe_div(float(tp.sum()), float(n_pos.sum()))
    return {"CP": cp, "CR": cr, "CF1": _safe_div(2 * cp * cr, cp + cr) if precision else float("nan"),
            "OP": op, "OR": orec, "OF1": _safe_div(2 * op * orec, op + orec)}


def summarize(probs: torch.Tensor, targets: torch.Tensor, known: torch.Tensor | None, thresholds,
              label_names: list[str], *, decimals: int = 4) -> dict:
    """Everything a run reports: mAP, CP/CR/CF1/OP/OR/OF1 at ``thresholds``, per-label AP and positives.

    Labels without a known positive are reported as ``None`` ("not applicable") and left out of every average.
    """
    if known is None:
        known = torch.ones_like(targets, dtype=torch.bool)
    aps = per_label_ap(probs, targets, known)
    out = {"mAP": mean_average_precision(probs, targets, known),
           **decision_metrics(probs, targets, thresholds, known)}
    out = {k: (None if v != v else round(v, decimals)) for k, v in out.items()}
    out["per_label_ap"] = {n: (None if a != a else round(a, decimals)) for n, a in zip(label_names, aps)}
    out["positives"] = {n: int(p) for n, p in zip(label_names, (targets.bool() & known.bool()).sum(0).tolist())}
    out["n_images"] = int(len(targets))
    out["labels_not_applicable"] = [n for n, a in zip(label_names, aps) if a != a]
    return out


def calibrate_thresholds(probs: torch.Tensor, targets: torch.Tensor, known: torch.Tensor | None = None, *,
                         min_positives: int = 3, min_threshold: float = 0.05) -> tuple[list[float], list[str]]:
    """Per-label thresholds chosen on validation predictions, with a fallback for rare labels.

    A label with at least ``min_positives`` known positives gets its F1-best threshold, if that threshold keeps
    one true positive (an F1-best threshold below ``min_threshold`` is raised to it and may keep none). Any other
    label falls back to the F1-best threshold of all decisions pooled, which sits on this model's own score scale
    (a fixed 0.5 can lie above every score a rarely-seen label ever reaches), lowered where needed so that the
    label still fires on about as many photos as its known frequency. Returns ``(thresholds, source)`` where
    ``source[label_index]`` is ``"f1"``, ``"pooled"`` or ``"frequency"``.
    """
    if known is None:
        known = torch.ones_like(targets, dtype=torch.bool)
    known = known.bool()
    own = best_f1_thresholds(probs, targets, known, min_threshold=min_threshold)
    pooled = best_f1_thresholds(probs.reshape(-1, 1), targets.reshape(-1, 1), known.reshape(-1, 1),
                                min_threshold=min_threshold)[0]
    out, source = [], []
    for j, t in enumerate(own):
        p, y = probs[known[:, j], j], targets[known[:, j], j].bool()
        if int(y.sum()) >= min_positives and bool(((p >= t) & y).any()):
            out.append(t)
            source.append("f1")
            continue
        k = max(1, round(float(y.float().mean()) * len(p))) if len(p) else 0
        frequency = float(torch.sort(p, descending=True).values[k - 1]) if k else pooled
        if frequency < pooled:
            out.append(max(min_threshold, round(frequency, 4)))
            source.append("frequency")
        else:
            out.append(pooled)
            source.append("pooled")
    return out, source
