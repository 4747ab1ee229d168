"""The label vocabulary the annotation page offers: the served model version's own labels and thresholds.

    model = served_model(Path("model_store"), "1.1")   # {"version", "labels": [{id, name, isthing, threshold}], ...}

The labels come from the ``meta.json`` inside the archive of that version in the model store, so a model trained
with its own ``--labels`` gets its own checkboxes. When no version is known (TorchServe down) or no archive holds
it, the default list (``tagger/labels.json``) is offered with thresholds of 0.5.
"""
from __future__ import annotations

from pathlib import Path

from tagger.archive import archive_of, cached_archive
from tagger.labels import load_labels


def served_model(model_store: Path, version: str | None, model_name: str = "tagger") -> dict:
    """What the page needs of the model serving ``version``: its labels with thresholds, and where they came from."""
    path = archive_of(model_store, version, model_name) if version is not None else None
    if path is not None:
        meta = cached_archive(path).meta
        labels = [{**{k: lab[k] for k in ("id", "name", "isthing", "supercategory") if k in lab},
                   "isthing": lab.get("isthing", 0), "threshold": round(float(t), 4)}
                  for lab, t in zip(meta["labels"], meta["thresholds"])]
        return {"version": version, "labels": labels, "source": f"archive {path.name}"}

    return {"version": version, "source": "default list (no archive of the served version found)" if version
            else "default list (the model server is not answering)",
            "labels": [{**lab, "threshold": 0.5} for lab in load_labels()]}


def next_version(served: str, model_store: Path, model_name: str = "tagger") -> str:
    """The version a deploy from the page gets: the served ``major.minor`` with the next free minor number
    (``1.0`` -> ``1.1``, skipping versions already archived), or ``served.1`` for another scheme."""
    parts = served.split(".")
    if len(parts) == 2 and all(p.isdigit() for p in parts):
        major, minor = int(parts[0]), int(parts[1]) + 1
        make = lambda i: f"{major}.{minor + i}"  # noqa: E731
    else:
        make = lambda i: f"{served}.{i + 1}"  # noqa: E731
    taken = {found.version for found in map(cached_archive, Path(model_store).glob(f"{model_name}*.mar")) if found}
    i = 0
    while make(i) in taken or (Path(model_store) / f"{model_name}-{make(i)}.mar").exists():
        i += 1
    return make(i)
