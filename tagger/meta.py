"""The model metadata record every part reads, and atomic writes: torch-free, so the gateway and the annotation
page use it without loading torch.

    meta = make_meta(arch="efficientnet_lite0", labels=load_labels(), thresholds=[0.5] * 34,
                     preprocessing=default_preprocessing("efficientnet_lite0"), version="1.0")
    save_json("checkpoints/run/meta.json", meta)       # temp file + fsync + rename

The record travels from training into the ``.mar`` and the handler::

    {"format": 1, "arch": "efficientnet_lite0", "imagenet_prior": true,
     "labels": [{"id": 155, "name": "sea", ...}, ...],       # output order
     "thresholds": [0.42, ...],                              # one per label, on sigmoid probabilities (null: no tag)
     "tag_policy": "precise", "policies": {"precise": {"thresholds": [...], "precision": [...], "recall": [...]},
                                           "balanced": {...}, "complete": {...}},   # training.policies
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


def utc_now(*, micro: bool = False, hours: float = 0) -> str:
    """The time now (or ``hours`` from now) in UTC as ISO 8601 with a Z (``2026-12-03T14:41:24Z``; ``micro``: with
    microseconds)."""
    at = _dt.datetime.now(_dt.timezone.utc) + _dt.timedelta(hours=hours)
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ")


META_FORMAT = 1
REQUIRED_META = ("arch", "labels", "thresholds", "preprocessing", "version")


def make_meta(*, arch: str, labels: list[dict], thresholds: list[float], preprocessing: dict, version: str,
              metrics: dict | None = None, imagenet_prior: bool = False, **extra) -> dict:
    """Build and validate a metadata record (see module docstring)."""
    meta = {"format": META_FORMAT, "arch": arch, "imagenet_prior": imagenet_prior, "labels": labels,
            "thresholds": [None if t is None else float(t) for t in thresholds], "preprocessing": preprocessing,
            "version": str(version),
            "metrics": metrics or {}, "created": utc_now(),
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
    for policy, entry in (meta.get("policies") or {}).items():
        if len(entry.get("thresholds", ())) != len(meta["labels"]):
            raise ValueError(f"model metadata policy {policy!r} needs a threshold for every label (null: no tag)")
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


def atomic_write(path: str | Path, write, *, durable: bool = True) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it over ``path``: a reader sees the old
    file or the new one, never half of one. ``durable``: fsync the file before the rename and the folder after it, so
    the new file survives a power cut too (a cache that is rebuilt when lost can skip that)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def save_json(path: str | Path, obj) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    atomic_write(path, lambda f: f.write((json.dumps(obj, indent=1) + "\n").encode()))
