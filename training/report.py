"""What a run reports beside its metrics: the result CSV (every photo's scores and tags) and the one-line summary.

    write_result_csv("var/result.csv", paths, probs, names, thresholds)
    print(format_summary(summarize(probs, targets, known, thresholds, names)))
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import torch

from tagger.meta import atomic_write
from tagger.tags import tags_above
from training.metrics import METRIC_NAMES


def write_result_csv(path: str | Path, image_paths, probs: torch.Tensor, names: list[str], thresholds) -> None:
    """One row per image: its path, every label's score, and the predicted tags (``;``-separated, best first)."""
    def write(f):
        text = io.StringIO()
        w = csv.writer(text)
        w.writerow(["image", *names, "tags"])
        for p, row in zip(image_paths, probs):
            tags = tags_above(row.tolist(), names, thresholds)
            w.writerow([str(p), *[f"{float(v):.4f}" for v in row], ";".join(tags)])
        f.write(text.getvalue().encode())

    atomic_write(path, write)


def format_summary(s: dict, *, not_applicable: bool = True) -> str:
    def fmt(v):
        return "n/a" if v is None else f"{v:.3f}"
    head = " ".join(f"{k} {fmt(s[k])}" for k in METRIC_NAMES)
    na = (s.get("labels_not_applicable") or []) if not_applicable else []
    return head + (f"  (not applicable, no known positive: {', '.join(na)})" if na else "")
