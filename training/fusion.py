"""Detector evidence fused with the classifier's logits, per label (the thing labels the detector knows).

    z = fuse(classifier_logits, detector_scores, meta["detector"]["fusion"])     # (N, L) fused logits

For label ``l``: ``z_l = a_l * classifier_logit_l + b_l * logit(detector_l) + c_l``. The weights ``a`` and ``b``
are shared by the detector's labels (too few positives per label to fit them one by one), ``c_l`` is each
label's own; a label the detector lacks, or one left to the classifier, keeps ``a = 1, b = c = 0``. Fitted by
``fit_fusion`` on out-of-fold classifier logits; whether the fused score or the detector's alone ranks better is
measured on the photos the detector never saw (``training.prior_recipe``; see ``training.detector``).
"""
from __future__ import annotations

import torch

#: Detector scores are clamped to [EPS, 1 - EPS] before their logit (a class never found scores ~1e-4 anyway).
EPS = 1e-6


def detector_columns(scores) -> list[int]:
    """The label columns the detector speaks for (its scores are NaN in the others)."""
    scores = torch.as_tensor(scores)
    return [j for j in range(scores.shape[1]) if not bool(scores[:, j].isnan().any())]


def identity_fusion(num_labels: int) -> dict:
    return {"a": [1.0] * num_labels, "b": [0.0] * num_labels, "c": [0.0] * num_labels}


def detector_logits(scores: torch.Tensor) -> torch.Tensor:
    """``logit`` of detector scores; NaN (labels the detector lacks) becomes 0."""
    scores = torch.as_tensor(scores, dtype=torch.float32)
    return torch.where(scores.isnan(), torch.zeros_like(scores), torch.logit(scores.clamp(EPS, 1 - EPS)))


def fuse(logits: torch.Tensor, scores: torch.Tensor, fusion: dict) -> torch.Tensor:
    """Fused logits ``a * logits + b * logit(scores) + c`` (see the module docstring)."""
    a, b, c = (torch.tensor(fusion[k], dtype=torch.float32) for k in ("a", "b", "c"))
    return a * logits.float() + b * detector_logits(scores) + c


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
    from training.head import _masked_bce, _minimize
    from training.metrics import average_precision

    n_labels = logits.shape[1]
    fusion = identity_fusion(n_labels)
    cols = detector_columns(scores)
    source = ["none"] * n_labels
    if not cols or len(logits) == 0:
        return fusion, source
    x, d = logits[:, cols].float(), detector_logits(torch.as_tensor(scores)[:, cols])
    y, k = targets[:, cols].float(), known[:, cols].float()

    def loss(ab, c):
        return (_masked_bce(ab[0] * x + ab[1] * d + c, y, k) + reg * ((c - c.mean()) ** 2).sum()
                + l2 * (ab ** 2).sum())

    if detector_only:
        ab = torch.tensor([0.0, 1.0])
        (c,) = _minimize(lambda c: loss(ab, c), torch.zeros(len(cols)))
    else:
        ab, c = _minimize(loss, torch.tensor([0.5, 0.5]), torch.zeros(len(cols)))
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
