"""Read a checkpoint for ``--resume`` or evaluation: ours (self-describing) or the original tool's.

Both are read with ``torch.load(weights_only=True)``: a file that needs anything but tensors and plain values
is refused, and nothing in it runs.
"""
from __future__ import annotations

from pathlib import Path

import torch

from training.legacy import LegacyError, convert_original_checkpoint, is_original_checkpoint, load_original_weights


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
    from training.checkpoint import make_meta
    from training.labels import load_labels
    from training.model import build_model
    from training.presets import default_preprocessing

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
    meta = obj["meta"]
    model = build_model(meta["arch"], len(meta["labels"]), imagenet_prior=meta.get("imagenet_prior", False))
    model.load_state_dict(obj["model"], strict=True)
    return model.eval(), meta, note
