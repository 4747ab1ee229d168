"""Self-describing checkpoints and the model metadata record, written atomically.

A checkpoint is a plain dict of tensors and JSON-able values, loadable with ``torch.load(weights_only=True)``:
``{"model": state_dict, "meta": {...}, "epoch": int, "optimizer": ..., "scheduler": ...}``.

``meta`` is the record that travels from training into the ``.mar`` and the handler::

    {"format": 1, "arch": "efficientnet_lite0", "imagenet_prior": true,
     "labels": [{"id": 155, "name": "sea", ...}, ...],       # output order
     "thresholds": [0.42, ...],                              # one per label, on sigmoid probabilities
     "preprocessing": {"resize": 256, "crop": 224, "squash": true, "interpolation": "bicubic", "mean": [...], ...},
     "detector": {"name": "ssd_mobilenet_v2_coco_2018_03_29", "graph_sha1": "...", "classes": {"person": 1, ...},
                  "fusion": {"a": [...], "b": [...], "c": [...]}, ...},     # or null: a classifier-only model
     "version": "1.0", "metrics": {...}, "created": "2026-12-01T00:00:00Z"}
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import tempfile
from pathlib import Path


META_FORMAT = 1
REQUIRED_META = ("arch", "labels", "thresholds", "preprocessing", "version")


def make_meta(*, arch: str, labels: list[dict], thresholds: list[float], preprocessing: dict, version: str,
              metrics: dict | None = None, imagenet_prior: bool = False, **extra) -> dict:
    """Build and validate a metadata record (see module docstring)."""
    meta = {"format": META_FORMAT, "arch": arch, "imagenet_prior": imagenet_prior, "labels": labels,
            "thresholds": [float(t) for t in thresholds], "preprocessing": preprocessing, "version": str(version),
            "metrics": metrics or {}, "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            **extra}
    validate_meta(meta)
    return meta


def validate_meta(meta: dict) -> dict:
    """Raise ``ValueError`` naming what is wrong with a metadata record; return it unchanged when valid."""
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise ValueError(f"model metadata lacks {', '.join(missing)}")
    if len(meta["thresholds"]) != len(meta["labels"]):
        raise ValueError(f"{len(meta['thresholds'])} thresholds for {len(meta['labels'])} labels")
    for key in ("resize", "crop", "interpolation", "mean", "std"):
        if key not in meta["preprocessing"]:
            raise ValueError(f"model metadata preprocessing lacks {key!r}")
    detector = meta.get("detector")
    if detector is not None:
        for key in ("name", "graph_sha1", "classes", "input", "fusion"):
            if key not in detector:
                raise ValueError(f"model metadata detector lacks {key!r}")
        if any(len(detector["fusion"].get(k, ())) != len(meta["labels"]) for k in ("a", "b", "c")):
            raise ValueError("model metadata detector fusion needs a, b and c for every label")
    return meta


def atomic_write(path: str | Path, write) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_json(path: str | Path, obj) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    atomic_write(path, lambda f: f.write((json.dumps(obj, indent=1) + "\n").encode()))


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
