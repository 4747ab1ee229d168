"""Self-describing checkpoints, written atomically (the metadata record they carry: ``tagger.meta``).

A checkpoint is a plain dict of tensors and JSON-able values, loadable with ``torch.load(weights_only=True)``:
``{"model": state_dict, "meta": {...}, "epoch": int, "optimizer": ..., "scheduler": ...}``.
"""
from __future__ import annotations

import json
from pathlib import Path

from tagger.meta import atomic_write, save_json, validate_meta


def save_checkpoint(path: str | Path, checkpoint: dict) -> None:
    """``torch.save`` to a temporary file beside ``path``, then replace it (a crash never leaves half a file)."""
    validate_meta(checkpoint["meta"])
    import torch  # imported here: the gateway uses the JSON helpers above without loading torch

    atomic_write(path, lambda f: torch.save(checkpoint, f))


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint written by ``save_checkpoint`` (``weights_only=True``: no pickled code runs)."""
    import torch

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
