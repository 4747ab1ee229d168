"""What the original transfer-learning tool left behind: its ``newdata/`` folders and its checkpoints.

    python -m training.import_legacy newdata/ --out newdata.json       # -> a COCO-format file
    python -m training --data newdata --ann newdata.json ...           # trains on it as on any COCO file

``newdata/`` holds ``images/NAME.jpg``, ``labels/NAME.pkl`` (a list of label names, or a 0/1 vector in
``select.pkl`` order) and ``select.pkl`` (the label list). Pickles are read by ``safe_unpickle``, which admits
only plain lists, tuples, dicts, strings, numbers, booleans and None: nothing in a pickle ever runs.

An original checkpoint is ``{"state_dict": ..., "epoch": int, "best_score": float, "arch"?: str}``, a ResNet18
whose ``fc`` has one output per label in the original order (keys possibly prefixed ``module.``);
``convert_original_checkpoint`` maps it onto a ``Tagger``.
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path

import torch

from tagger.image import EXTENSIONS

IMAGE_SUFFIXES = EXTENSIONS  # the formats the service reads (tagger.image)
_PLAIN = (list, tuple, dict, str, bytes, int, float, bool, type(None))


class LegacyError(ValueError):
    """A legacy file that cannot be used; the message names the file and what is wrong."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"it asks for {module}.{name}; only plain lists, tuples, dicts, strings, "
                                     "numbers, booleans and None are accepted")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("it uses persistent ids; only plain values are accepted")


def _check_plain(value, depth: int = 0, seen: set[int] | None = None):
    """Raise unless ``value`` is plain data; each container is checked once, however often a pickle refers to it
    (shared nested lists would otherwise take exponential time)."""
    if depth > 50:
        raise pickle.UnpicklingError("it nests deeper than 50 levels")
    if not isinstance(value, _PLAIN):
        raise pickle.UnpicklingError(f"it holds a {type(value).__name__}; only plain values are accepted")
    if isinstance(value, (list, tuple, dict)):
        seen = set() if seen is None else seen
        if id(value) in seen:  # the whole value is alive while checked, so an id is never reused meanwhile
            return
        seen.add(id(value))
        for v in (value if not isinstance(value, dict) else [x for kv in value.items() for x in kv]):
            _check_plain(v, depth + 1, seen)


def safe_unpickle(path: str | Path, *, max_bytes: int = 16 << 20):
    """Load a pickle of plain values only; anything else (a class, a function, ``os.system``) is refused.

    Raises:
        LegacyError: naming ``path`` and why it was refused. Nothing in the file has run.
    """
    path = Path(path)
    data = path.read_bytes()
    if len(data) > max_bytes:
        raise LegacyError(f"{path}: refused: {len(data)} bytes is more than a label file needs ({max_bytes})")
    try:
        value = _RestrictedUnpickler(io.BytesIO(data)).load()
        _check_plain(value)
    except (pickle.UnpicklingError, EOFError, ValueError, IndexError, KeyError, TypeError, MemoryError) as exc:
        raise LegacyError(f"{path}: refused: {exc}") from None
    return value


def _image_labels(raw, select: list[str], path: Path) -> list[str]:
    """A label pickle's content as label names: a list of names, or a 0/1 vector in ``select`` order."""
    if isinstance(raw, (list, tuple)) and all(isinstance(v, str) for v in raw):
        unknown = [v for v in raw if v not in select]
        if unknown:
            raise LegacyError(f"{path}: labels not in select.pkl: {unknown}")
        return list(dict.fromkeys(raw))
    if isinstance(raw, (list, tuple)) and all(isinstance(v, (int, float, bool)) for v in raw):
        if len(raw) != len(select):
            raise LegacyError(f"{path}: a 0/1 vector of length {len(raw)}, but select.pkl has {len(select)} labels")
        if any(float(v) not in (0.0, 1.0) for v in raw):
            raise LegacyError(f"{path}: a label vector must hold only 0 and 1")
        return [name for name, v in zip(select, raw) if float(v) == 1.0]
    raise LegacyError(f"{path}: expected a list of label names or a 0/1 vector, found {type(raw).__name__}")


def import_newdata(newdata: str | Path, vocabulary: list[dict]) -> tuple[dict, dict]:
    """Convert a ``newdata/`` folder into a COCO-format dict; returns ``(coco, report)``.

    ``file_name`` entries are relative to ``newdata`` (train with ``--data NEWDATA``). Every label of
    ``select.pkl`` becomes a category (vocabulary names keep their COCO-Stuff id, others get ids from 1000 on and
    are ignored by training); a photo's labels not listed in its pickle are negatives, as the original tool
    trained them; vocabulary labels outside ``select.pkl`` stay unknown. Photos without a label pickle are left
    out and counted.
    """
    root = Path(newdata)
    select_file = root / "select.pkl"
    if not select_file.is_file():
        raise LegacyError(f"{root}: no select.pkl (the label list); is this an original newdata/ folder?")
    select = safe_unpickle(select_file)
    if not isinstance(select, (list, tuple)) or not select or not all(isinstance(s, str) for s in select):
        raise LegacyError(f"{select_file}: expected a non-empty list of label names")
    select = list(dict.fromkeys(select))
    by_name = {lab["name"]: lab for lab in vocabulary}
    categories, cat_id = [], {}
    extra = 1000
    for name in select:
        if name in by_name:
            cid = by_name[name]["id"]
        else:
            cid, extra = extra, extra + 1
        cat_id[name] = cid
        categories.append({"id": cid, "name": name, "supercategory": "legacy",
                           "isthing": by_name.get(name, {}).get("isthing", 0)})
    images, annotations, unlabelled = [], [], []
    image_dir = root / "images"
    if not image_dir.is_dir():
        raise LegacyError(f"{root}: no images/ folder")
    for img in sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        pkl = root / "labels" / f"{img.stem}.pkl"
        if not pkl.is_file():
            unlabelled.append(img.name)
            continue
        names = _image_labels(safe_unpickle(pkl), select, pkl)
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": f"images/{img.name}", "legacy_labels": str(pkl.relative_to(root))})
        for name in names:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": cat_id[name],
                                "iscrowd": 0})
    if not images:
        raise LegacyError(f"{root}: no image in images/ has a labels/NAME.pkl")
    coco = {"info": {"description": f"imported from the original tool's {root.name}/ by training.import_legacy"},
            "categories": categories, "images": images, "annotations": annotations}
    report = {"images": len(images), "annotations": len(annotations), "unlabelled": unlabelled,
              "labels_outside_vocabulary": [n for n in select if n not in by_name]}
    return coco, report


def is_original_checkpoint(obj) -> bool:
    return isinstance(obj, dict) and "state_dict" in obj and "model" not in obj


def convert_original_checkpoint(obj: dict, num_labels: int, path: str | Path = "checkpoint") -> tuple[dict, dict]:
    """Map an original checkpoint's ResNet18 state onto ``Tagger`` names; returns ``(state_dict, info)``.

    The backbone's 1000-way ImageNet classifier is not in such a file (its ``fc`` is the label head), so those
    two tensors are absent from the result; load it with ``strict=False`` and check ``missing`` is exactly them.

    Raises:
        LegacyError: the file holds another architecture or another number of labels.
    """
    arch = str(obj.get("arch", "resnet18")).lower()
    if "resnet18" not in arch:
        raise LegacyError(f"{path}: an original checkpoint of arch {obj.get('arch')!r}; only ResNet18 ones "
                          "are understood")
    sd = obj["state_dict"]
    if not isinstance(sd, dict):
        raise LegacyError(f"{path}: 'state_dict' is not a dict of tensors")
    out = {}
    for key, value in sd.items():
        for prefix in ("module.", "model."):
            if key.startswith(prefix):
                key = key[len(prefix):]
        if key.startswith("fc."):
            out["head." + key[3:]] = value
        else:
            out["backbone." + key] = value
    fc = out.get("head.weight")
    if fc is None or fc.ndim != 2:
        raise LegacyError(f"{path}: no 'fc.weight' found: not a ResNet18 tagger of the original tool "
                          f"(first keys: {list(sd)[:4]})")
    if fc.shape[0] != num_labels:
        raise LegacyError(f"{path}: its fc has {fc.shape[0]} outputs but the vocabulary has {num_labels} "
                          "labels; pass --labels with the original label list")
    info = {"format": "original", "arch": "resnet18", "epoch": int(obj.get("epoch", 0)),
            "best_score": float(obj["best_score"]) if obj.get("best_score") is not None else None}
    return out, info


def load_original_weights(model: torch.nn.Module, state: dict, path: str | Path = "checkpoint") -> None:
    """Load a converted original state into ``model``; only the backbone's ImageNet classifier may be absent."""
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("backbone.fc.")]
    if missing or result.unexpected_keys:
        raise LegacyError(f"{path}: does not fit a ResNet18 tagger: missing {missing[:5]}, "
                          f"unexpected {result.unexpected_keys[:5]}")
