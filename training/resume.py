"""``--resume``: the checkpoint to continue from, ours (model, optimizer, scheduler, epoch) or the original tool's
(its ResNet18 weights), read as ``training.checkpoint.read_checkpoint`` reads any checkpoint.
"""
from __future__ import annotations

from tagger.labels import label_names
from training.checkpoint import describe, read_checkpoint
from training.distributed import print0
from training.errors import UsageError
from training.legacy import convert_original_checkpoint, is_original_checkpoint


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
    if label_names(meta["labels"]) != label_names(labels):
        raise UsageError(f"{args.resume} was trained on another label list; pass --labels with its vocabulary")
    return obj, meta["arch"], meta["preprocessing"]
