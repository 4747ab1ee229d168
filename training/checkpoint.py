"""Self-describing checkpoints, written atomically (the metadata record they carry: ``tagger.meta``), and read
back for evaluation or serving, ours or the original tool's.

A checkpoint is a plain dict of tensors and JSON-able values, loadable with ``torch.load(weights_only=True)``:
``{"model": state_dict, "meta": {...}, "epoch": int, "optimizer": ..., "scheduler": ...}``. A file that needs
anything but tensors and plain values is refused, and nothing in it runs.

    save_checkpoint("checkpoints/run/best.pt", ckpt)
    net, meta, note = load_for_inference("checkpoints/run/best.pt")     # or an original-format checkpoint
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from model.network import build_model, model_from_meta
from tagger.labels import load_labels
from tagger.meta import atomic_write, make_meta, save_json, validate_meta
from tagger.presets import default_preprocessing
from training.legacy import LegacyError, convert_original_checkpoint, is_original_checkpoint, load_original_weights


def save_checkpoint(path: str | Path, checkpoint: dict) -> None:
    """``torch.save`` to a temporary file beside ``path``, then replace it (a crash never leaves half a file)."""
    validate_meta(checkpoint["meta"])
    atomic_write(path, lambda f: torch.save(checkpoint, f))


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint written by ``save_checkpoint`` (``weights_only=True``: no pickled code runs)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or "model" not in ckpt or "meta" not in ckpt:
        raise ValueError(f"{path} is not a tagger checkpoint (expected a dict with 'model' and 'meta')")
    validate_meta(ckpt["meta"])
    return ckpt


class CheckpointSaver:
    """What a training run writes under ``out`` (timm's CheckpointSaver is the model): ``last.pt`` every epoch,
    ``best.pt`` and ``meta.json`` when the epoch is the best so far, ``metrics.json`` whenever it changed.

        saver = CheckpointSaver(Path("checkpoints/run"))
        saver.save(ckpt, is_best=True)
        saver.metrics({"recipe": "sgd", "epochs": history, ...})
    """

    def __init__(self, out: str | Path):
        self.out = Path(out)
        self._written = None

    def save(self, checkpoint: dict, *, is_best: bool) -> None:
        save_checkpoint(self.out / "last.pt", checkpoint)
        if is_best:
            save_checkpoint(self.out / "best.pt", checkpoint)
            save_json(self.out / "meta.json", checkpoint["meta"])

    def metrics(self, record: dict) -> None:
        snapshot = json.dumps(record, sort_keys=True, default=str)
        if snapshot != self._written:
            save_json(self.out / "metrics.json", record)
            self._written = snapshot

    def best_meta(self) -> dict | None:
        """The metadata of ``best.pt`` from an earlier run into the same folder (``None`` when there is none)."""
        path = self.out / "best.pt"
        return load_checkpoint(path)["meta"] if path.is_file() else None


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
