"""The label vocabulary: ``labels.json`` beside this file is the one list of labels, in model output order.

Everything else (dataset matching, the model head size, the handler, the gateway, the annotation page) reads the
list from here or from the metadata record a model carries, which is copied from here at training time.
"""
from __future__ import annotations

import json
from pathlib import Path

DEFAULT_LABELS_FILE = Path(__file__).with_name("labels.json")


def load_labels(path: str | Path | None = None) -> list[dict]:
    """Label records ``{"id": coco_stuff_id, "name": str, "isthing": 0|1}`` in output order.

    Raises:
        ValueError: the file has duplicate names or no labels.
    """
    data = json.loads(Path(path or DEFAULT_LABELS_FILE).read_text())
    labels = data["labels"] if isinstance(data, dict) else data
    names = [lab["name"] for lab in labels]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"{path}: label list is empty or has duplicate names")
    return labels


def label_names(labels: list[dict] | None = None) -> list[str]:
    """Names in output order (of ``labels``, or of the default vocabulary)."""
    return [lab["name"] for lab in (labels if labels is not None else load_labels())]
