"""The detector met with the classifier, fitted and judged out of fold: the fusion's weights (``fit_fusion``),
each photo's fused logits from a fusion fitted without it (``fuse_out_of_fold``), the choice between the fitted
blend and the detector's score alone (``choose_fusion``), and the thing labels' report on the photos the
detector saw and never saw (``detector_report``). What the handler applies is ``model.fusion.fuse``.

    mode, fusion, source, fused = choose_fusion(cv_logits, detections, targets, known, seen, folds=5)
"""
from __future__ import annotations

import torch

from model.fusion import detector_columns, detector_logits, fuse, identity_fusion
from training.folds import fold_indices
from training.head import masked_loss, minimize
from training.metrics import average_precision, per_label_ap


def fit_fusion(logits: torch.Tensor, scores: torch.Tensor, targets: torch.Tensor, known: torch.Tensor, *,
               detector_only: bool = False, reg: float = 0.1, l2: float = 1e-3,
               min_positives: int = 10) -> tuple[dict, list[str]]:
    """Fit shared ``a, b`` and per-label ``c`` by masked logistic regression on the rows given
    (``detector_only``: ``a = 0, b = 1``, only the biases fitted).

    Biases are pulled towards their mean (``reg``), so a label with few positives gets a bias like the others'.
    A label whose classifier ranks its rows better than the fused score (average precision, with at least
    ``min_positives`` positives among them) is left to the classifier. Returns ``(fusion, per-label source)``
    with source ``"fused"``, ``"classifier"`` or ``"none"`` (no detector class).
    """
    n_labels = logits.shape[1]
    fusion = identity_fusion(n_labels)
    cols = detector_columns(scores)
    source = ["none"] * n_labels
    if not cols or len(logits) == 0:
        return fusion, source
    x, d = logits[:, cols].float(), detector_logits(torch.as_tensor(scores)[:, cols])
    y, k = targets[:, cols].float(), known[:, cols].float()

    def loss(ab, c):
        return (masked_loss(ab[0] * x + ab[1] * d + c, y, k) + reg * ((c - c.mean()) ** 2).sum()
                + l2 * (ab ** 2).sum())

    if detector_only:
        ab = torch.tensor([0.0, 1.0])
        (c,) = minimize(lambda c: loss(ab, c), torch.zeros(len(cols)))
    else:
        ab, c = minimize(loss, torch.tensor([0.5, 0.5]), torch.zeros(len(cols)))
    fused = ab[0] * x + ab[1] * d + c
    for i, j in enumerate(cols):
        mask = k[:, i].bool()
        positives = int(y[mask, i].sum())
        if positives >= min_positives and average_precision(x[mask, i], y[mask, i]) > \
                average_precision(fused[mask, i], y[mask, i]):
            source[j] = "classifier"
            continue
        fusion["a"][j], fusion["b"][j], fusion["c"][j] = float(ab[0]), float(ab[1]), float(c[i])
        source[j] = "fused"
    return fusion, source


#: How the detector meets the classifier: the fitted fusion, or the detector's score alone (see ``fit``).
FUSIONS = ("fitted", "detector")


def fuse_out_of_fold(cv_logits: list[torch.Tensor], detections: torch.Tensor, targets, known, *, folds: int,
                     detector_only: bool = False) -> list[torch.Tensor]:
    """Each photo's fused logits from a fusion fitted without it: per repeat and fold, ``fit_fusion`` on the
    other folds' out-of-fold logits, applied to the fold's."""
    out = []
    for r, oof in enumerate(cv_logits):
        fused = oof.clone()
        for train, test in fold_indices(len(oof), folds, r):
            fusion, _ = fit_fusion(oof[train], detections[train], targets[train], known[train],
                                   detector_only=detector_only)
            fused[test] = fuse(oof[test], detections[test], fusion)
        out.append(fused)
    return out


def group_map(scores: torch.Tensor, targets, known, cols: list[int], rows=None) -> float | None:
    rows = torch.ones(len(scores), dtype=torch.bool) if rows is None else rows
    if not cols or not bool(rows.any()):
        return None
    aps = [a for a in per_label_ap(scores[rows][:, cols], targets[rows][:, cols], known[rows][:, cols]) if a == a]
    return round(sum(aps) / len(aps), 4) if aps else None


def detector_report(cv: dict, detections, targets, known, names, seen, source: list[str], mode: str) -> dict:
    """Thing labels' CV AP (fused, classifier alone, detector alone) on photos the detector saw in its own
    training and on those it never saw, reported apart: the seen ones flatter it."""
    cols = detector_columns(detections)
    stuff = [j for j in range(len(names)) if j not in cols]
    det = torch.where(detections.isnan(), torch.zeros_like(detections), detections)
    def mean(xs):
        return None if any(x is None for x in xs) else round(sum(xs) / len(xs), 4)
    report = {"thing_labels": [names[j] for j in cols], "photos_unseen_by_detector": int((~seen).sum()),
              "photos_seen_by_detector": int(seen.sum()), "fusion_source": {names[j]: source[j] for j in cols},
              "fusion": mode, "fusion_chosen_on": "photos the detector never saw" if bool((~seen).any())
              else "all photos"}
    for part, rows in (("unseen", ~seen), ("seen", seen), ("all", None)):
        report[f"thing_map_{part}"] = {
            "served": mean([group_map(s, targets, known, cols, rows) for s in cv["blend"]]),
            **{f"{k}_fusion": mean([group_map(s, targets, known, cols, rows) for s in cv[k]])
               for k in FUSIONS},
            "classifier": mean([group_map(s, targets, known, cols, rows) for s in cv["classifier_only"]]),
            "detector": group_map(det, targets, known, cols, rows)}
    report["stuff_map"] = mean([group_map(s, targets, known, stuff) for s in cv["blend"]])
    return report


def choose_fusion(cv_logits: list[torch.Tensor], detections, targets, known, seen, *, folds: int):
    """The fitted fusion or the detector's score alone, whichever ranks the thing labels better out of fold on
    the photos the detector never saw (all photos when there is none), then fitted on every row.

    Returns ``(mode, fusion, per-label source, {mode: out-of-fold fused logits per repeat})``.
    """
    judge = ~seen if bool((~seen).any()) else torch.ones_like(seen)
    cols = detector_columns(detections)
    fused = {m: fuse_out_of_fold(cv_logits, detections, targets, known, folds=folds, detector_only=m == "detector")
             for m in FUSIONS}
    score = {m: sum(group_map(s, targets, known, cols, judge) or 0 for s in fused[m]) for m in FUSIONS}
    mode = max(FUSIONS, key=lambda m: score[m])  # ties: the fitted fusion (listed first)
    repeats = len(cv_logits)
    fusion, source = fit_fusion(torch.cat(cv_logits), detections.repeat(repeats, 1), targets.repeat(repeats, 1),
                                known.repeat(repeats, 1), detector_only=mode == "detector")
    return mode, fusion, source, fused
