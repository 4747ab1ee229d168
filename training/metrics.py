"""Multi-label metrics: average precision per label, mAP, and per-label thresholds.

All functions take ``scores`` and ``targets`` of shape (N, L) and an optional boolean ``known`` mask of the same
shape; unknown entries are ignored.
"""
from __future__ import annotations

import torch


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
        if int(t.sum()) == 0:
            out.append(default)
            continue
        values = torch.sort(torch.unique(p), descending=True).values
        best, best_thr = -1.0, default
        for k, v in enumerate(values):
            pred = p >= v
            tp = int((pred & t).sum())
            f1 = 2 * tp / (int(pred.sum()) + int(t.sum()))
            if f1 > best:
                lower = float(values[k + 1]) if k + 1 < len(values) else 0.0
                best, best_thr = f1, (float(v) + lower) / 2
        out.append(max(min_threshold, round(best_thr, 4)))
    return out
