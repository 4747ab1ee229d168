"""From scores to tags, the one rule: a label is a tag when its probability reaches its own threshold; tags are
listed best first. The handler answers with it and evaluation writes its result CSV with it.

    tags_above([0.91, 0.10, 0.55], ["sea", "car", "boat"], [0.5, 0.5, 0.6])   # ["sea"]
"""
from __future__ import annotations

from collections.abc import Sequence


def tags_above(probs: Sequence[float], names: Sequence[str], thresholds: Sequence[float]) -> list[str]:
    """The names whose probability is at least their threshold, highest probability first (ties: label order)."""
    if not len(probs) == len(names) == len(thresholds):
        raise ValueError(f"{len(probs)} scores, {len(names)} labels and {len(thresholds)} thresholds")
    order = sorted(range(len(names)), key=lambda j: -float(probs[j]))
    return [names[j] for j in order if float(probs[j]) >= float(thresholds[j])]
