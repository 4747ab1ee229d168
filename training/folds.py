"""Cross-validation folds, fixed by seed: every recipe and benchmark that compares variants cuts the same folds.

    for train, test in fold_indices(len(photos), folds=5, repeat=0): ...
"""
from __future__ import annotations

import torch


def fold_indices(n: int, folds: int, repeat: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(train, test) index pairs of one repeat: a permutation seeded by ``repeat``, cut into ``folds``."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(repeat))
    out = []
    for f in range(folds):
        test = perm[f::folds]
        out.append((perm[torch.isin(perm, test, invert=True)], test))
    return out
