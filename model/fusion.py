"""Detector evidence fused with the classifier's logits, per label (the thing labels the detector knows).

    z = fuse(classifier_logits, detector_scores, meta["detector"]["fusion"])     # (N, L) fused logits

For label ``l``: ``z_l = a_l * classifier_logit_l + b_l * logit(detector_l) + c_l``. The weights ``a`` and ``b``
are shared by the detector's labels (too few positives per label to fit them one by one), ``c_l`` is each
label's own; a label the detector lacks, or one left to the classifier, keeps ``a = 1, b = c = 0``. Fitted by
``training.fusion_cv`` on out-of-fold classifier logits; whether the fused score or the detector's alone ranks
better is measured on the photos the detector never saw (see ``model.detector``).
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
