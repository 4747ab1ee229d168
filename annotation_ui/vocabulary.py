"""The label vocabulary the annotation page offers: the served model version's own labels and thresholds.

    model = served_model(Path("model_store"), "1.1")   # {"version", "labels": [{id, name, isthing, threshold}], ...}
    model["labels"][0]["policies"]["precise"]          # {"threshold", "precision", "recall"} (out-of-fold estimates)

The labels come from the ``meta.json`` inside the archive of that version in the model store, so a model trained
with its own ``--labels`` gets its own checkboxes. When no version is known (TorchServe down) or no archive holds
it, the default list (``tagger/labels.json``) is offered with thresholds of 0.5.
"""
from __future__ import annotations

from pathlib import Path

from tagger.archive import archive_of, cached_archive
from tagger.labels import FIRST_ADDED_ID, key, load_labels
from tagger.tags import POLICIES, policy_thresholds, served_policy


def served_model(model_store: Path, version: str | None, model_name: str = "tagger") -> dict:
    """What the page needs of the model serving ``version``: its labels with thresholds, and where they came from."""
    path = archive_of(model_store, version, model_name) if version is not None else None
    if path is not None:
        meta = cached_archive(path).meta
        policies = policy_records(meta)
        served = policy_thresholds(meta, served_policy(meta))
        labels = [{**{k: lab[k] for k in ("id", "name", "isthing", "supercategory") if k in lab},
                   "isthing": lab.get("isthing", 0), "threshold": _rounded(t),
                   "policies": {p: records[j] for p, records in policies.items()}}
                  for j, (lab, t) in enumerate(zip(meta["labels"], served))]
        return {"version": version, "labels": labels, "source": f"archive {path.name}",
                "tag_policy": served_policy(meta), "policies": list(policies)}

    return {"version": version, "source": "default list (no archive of the served version found)" if version
            else "default list (the model server is not answering)", "tag_policy": None, "policies": [],
            "labels": [{**lab, "threshold": 0.5, "policies": {}} for lab in load_labels()]}


def _rounded(t) -> float | None:
    return None if t is None else round(float(t), 4)


def policy_records(meta: dict) -> dict[str, list[dict]]:
    """Per policy the model carries, per label: its threshold (``None``: scored, never a tag) and the out-of-fold
    precision and recall expected there (``None`` where not measured: a model made before policies)."""
    out = {}
    for policy in POLICIES:
        thresholds = policy_thresholds(meta, policy)
        if thresholds is None:
            continue
        entry = (meta.get("policies") or {}).get(policy, {})
        precision = entry.get("precision") or [None] * len(thresholds)
        recall = entry.get("recall") or [None] * len(thresholds)
        out[policy] = [{"threshold": _rounded(t), "precision": p, "recall": r}
                       for t, p, r in zip(thresholds, precision, recall)]
    return out


def next_version(served: str, model_store: Path, model_name: str = "tagger") -> str:
    """The version a deploy from the page gets: the served ``major.minor`` with the next free minor number
    (``1.0`` -> ``1.1``, skipping versions already archived), or ``served.1`` for another scheme."""
    parts = served.split(".")
    if len(parts) == 2 and all(p.isdigit() for p in parts):
        major, minor = int(parts[0]), int(parts[1]) + 1
        def make(i):
            return f"{major}.{minor + i}"
    else:
        def make(i):
            return f"{served}.{i + 1}"
    taken = {found.version for found in map(cached_archive, Path(model_store).glob(f"{model_name}*.mar")) if found}
    i = 0
    while make(i) in taken or (Path(model_store) / f"{model_name}-{make(i)}.mar").exists():
        i += 1
    return make(i)


# ---- the vocabulary of the next model: the served labels and the ones people added, less the retired

LABEL_FIELDS = ("id", "name", "isthing", "supercategory", "synonyms", "kind", "detector_class", "imagenet")


def next_vocabulary(model: dict, rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """``(labels, retired)``: the labels the page offers and the next model is trained with (the served model's,
    then those people added, each once, in the order they came), and the retired ones (what people saved for them
    stays in the store and the export).

    Each record carries the label file's fields (``LABEL_FIELDS``) and ``served``, ``added`` (with who and when),
    the served threshold and policies, and ``retired_at`` for the retired."""
    by_key = {key(r["name"]): r for r in rows}
    labels, retired, seen = [], [], set()
    for lab in model["labels"]:
        row = by_key.get(key(lab["name"]))
        record = {**lab, "kind": lab.get("kind") or ("object" if lab.get("isthing") else "scene"), "served": True,
                  "added": bool(row and not row["served"]), "added_by": row and row["added_by"],
                  "added_at": row and row["added_at"]}
        seen.add(key(lab["name"]))
        (retired if row and row["retired_at"] else labels).append(
            {**record, "retired_at": row["retired_at"]} if row and row["retired_at"] else record)
    for row in rows:
        if key(row["name"]) in seen:
            continue
        record = {"id": FIRST_ADDED_ID + row["id"], "name": row["name"], "isthing": int(row["kind"] == "object"),
                  "kind": row["kind"], "served": False, "added": True, "added_by": row["added_by"],
                  "added_at": row["added_at"], "threshold": None, "policies": {},
                  **({"synonyms": row["synonyms"]} if row["synonyms"] else {}),
                  **({"detector_class": row["detector_class"]} if row["detector_class"] else {}),
                  **({"imagenet": row["imagenet"]} if row["imagenet"] else {})}
        (retired if row["retired_at"] else labels).append(
            {**record, "retired_at": row["retired_at"]} if row["retired_at"] else record)
    return labels, retired


def label_file_records(labels: list[dict]) -> list[dict]:
    """The records a labels file holds (``tagger.labels``): what the training tool reads for the next model."""
    return [{k: lab[k] for k in LABEL_FIELDS if lab.get(k) not in (None, [], "")} for lab in labels]
