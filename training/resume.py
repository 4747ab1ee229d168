"""Read a checkpoint for ``--resume`` or evaluation: ours (self-describing) or the original tool's.

Both are read with ``torch.load(weights_only=True)``: a file that needs anything but tensors and plain values
is refused, and nothing in it runs.
"""
from __future__ import annotations

from pathlib import Path

import torch

from tagger.labels import label_names, load_labels
from tagger.meta import make_meta
from tagger.presets import default_preprocessing
from training.distributed import print0
from training.errors import UsageError
from training.legacy import LegacyError, convert_original_checkpoint, is_original_checkpoint, load_original_weights
from training.model import build_model, model_from_meta


def read_checkpoint(path: str | Path) -> dict:
    """The raw dict in ``path``; raises ``LegacyError`` saying why it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise LegacyError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises several kinds; all mean "not loadable safely"
        raise LegacyError(f"{path}: cannot be loaded with weights_only=True (only tensors and plain values are "
                          f"accepted; nothing was run): {str(exc).splitlines()[0][:300]}") from None
    if not isinstance(obj, dict):
        raise LegacyError(f"{path}: holds a {type(obj).__name__}, not a checkpoint dict")
    if "model" in obj and "meta" in obj:
        return obj
    if is_original_checkpoint(obj):
        return obj
    raise LegacyError(f"{path}: neither a tagger checkpoint ('model' + 'meta') nor an original one "
                      f"('state_dict'); its keys: {sorted(obj)[:8]}")


def describe(obj: dict, path) -> str:
    if is_original_checkpoint(obj):
        return (f"{path}: original-format checkpoint (arch {obj.get('arch', 'resnet18')}, epoch "
                f"{obj.get('epoch', '?')}, best_score {obj.get('best_score', '?')}, "
                f"{len(obj['state_dict'])} tensors)")
    meta = obj["meta"]
    return (f"{path}: tagger checkpoint ({meta['arch']}, {len(meta['labels'])} labels, version {meta['version']}, "
            f"epoch {obj.get('epoch', 0)})")


def load_for_inference(path: str | Path, labels_file: str | Path | None = None):
    """``(model in eval mode, meta, note)`` for any checkpoint; an original one gets a meta of defaults."""
    obj = read_checkpoint(path)
    note = describe(obj, path)
    if is_original_checkpoint(obj):
        labels = load_labels(labels_file)
        state, info = convert_original_checkpoint(obj, len(labels), path)
        model = build_model("resnet18", len(labels))
        load_original_weights(model, state, path)
        meta = make_meta(arch="resnet18", labels=labels, thresholds=[0.5] * len(labels),
                         preprocessing=default_preprocessing("resnet18"), version=f"original-epoch{info['epoch']}")
        return model.eval(), meta, note + "; thresholds 0.5 (the original tool's)"
    return model_from_meta(obj["meta"], obj["model"]), obj["meta"], note


def load_resume(args, labels) -> tuple[dict | None, str | None, dict | None]:
    """The --resume checkpoint as ``{"model": state, ...}``, its arch and its preprocessing (``None`` for an
    original checkpoint, which uses its arch's default); original ones converted."""
    if not args.resume:
        return None, None, None
    obj = read_checkpoint(args.resume)
    print0(f"resume: {describe(obj, args.resume)}")
    if is_original_checkpoint(obj):
        state, info = convert_original_checkpoint(obj, len(labels), args.resume)
        return {"original": True, "model": state, "epoch": info["epoch"]}, "resnet18", None
    meta = obj["meta"]
    if [lab["name"] for lab in meta["labels"]] != label_names(labels):
        raise UsageError(f"{args.resume} was trained on another label list; pass --labels with its vocabulary")
    return obj, meta["arch"], meta["preprocessing"]
