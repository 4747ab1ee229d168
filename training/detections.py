"""The detector's part of training: its graph (built once, ``model.detector_graph``), its scores of a dataset's
photos, cached per photo, as label columns, and which of those photos it saw in its own training (its scores there
are flattered).

    spec = with_graph(detector_spec(labels), "var/cache")                          # records the graph's SHA-256
    raw, stats = cached_detections(spec, dataset, "var/cache")                      # (N, 80): every COCO object
    detections, seen, stats = detector_inputs(spec, dataset, names, cache_dir)      # (N, L) scores, (N,) bool
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import torch

from model.detector import (
    DETECT_VERSION,
    detect,
    digest,
    label_scores,
    load_detector,
    load_minival_ids,
    seen_by_detector,
)
from model.detector_graph import build_graph
from tagger import REPO
from tagger.image import DECODER_VERSION, decode_image
from tagger.layout import DEFAULT as DEFAULT_DATA
from training.features import cached_rows, image_key

# The photos the detector's int8 heads are calibrated on: the first 64 bundled samples, the same for every model.
CALIBRATION_FOLDER = REPO / "samples/coco_more/images"
CALIBRATION_PHOTOS = 64


def calibration_photos() -> list[Path]:
    return sorted(CALIBRATION_FOLDER.glob("*.jpg"))[:CALIBRATION_PHOTOS]


def detector_graph(spec: dict, cache_dir: str | Path) -> Path:
    """The detector's ONNX graph for ``spec``, built into ``cache_dir`` when missing."""
    return build_graph(spec, cache_dir, calibration_photos())


def with_graph(spec: dict, cache_dir: str | Path) -> dict:
    """``spec`` with its graph's SHA-256 (``onnx_sha256``): what a model records, an archive packs and a worker
    checks."""
    return {**spec, "onnx_sha256": digest(detector_graph(spec, cache_dir), "sha256")}


def detections_path(spec: dict, min_side: int | None, cache_dir: str | Path) -> Path:
    record = {"graph": spec["graph_sha1"], "onnx": spec.get("onnx_sha256"), "tiles": bool(spec.get("tiles")),
              "classes": spec["classes"], "input": spec["input"], "min_side": min_side, "decoder": DECODER_VERSION,
              "detect": DETECT_VERSION}
    key = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:20]
    return Path(cache_dir) / f"detections-{key}.pt"


def cached_detections(spec: dict, dataset, cache_dir: str | Path, *, batch_size: int = 8,
                      progress: bool = False) -> tuple[torch.Tensor, dict]:
    """The detector's scores ``(N, C)`` (columns: ``spec["classes"]`` in order) of every photo of ``dataset``,
    decoded as the handler decodes them (``dataset.min_side``); cached per photo like ``cached_features``."""
    spec = spec if spec.get("onnx_sha256") else with_graph(spec, cache_dir)

    def compute(missing):
        detector = load_detector(spec, detector_graph(spec, cache_dir), threads=torch.get_num_threads())
        batches = range(0, len(missing), batch_size)
        if progress:
            from tqdm import tqdm

            batches = tqdm(batches, desc="detector", unit="batch", leave=False)
        out = []
        for start in batches:
            images = [decode_image(dataset.image_path(i).read_bytes(), min_side=dataset.min_side,
                                   max_pixels=10**9, max_bytes=1 << 31) for i in missing[start:start + batch_size]]
            out.append(torch.from_numpy(detect(detector, images)))
        return torch.cat(out)

    keys = [image_key(dataset.image_path(i)) for i in range(len(dataset))]
    return cached_rows(detections_path(spec, dataset.min_side, cache_dir), keys, compute, "scores",
                       len(spec["classes"]))


# COCO photos the detector never saw in its own training (Google's minival): the fusion is judged on those.
MINIVAL_IDS = REPO / "samples/mscoco_minival_ids.txt"


def label_detections(spec: dict, dataset, names: list[str], cache_dir) -> tuple[torch.Tensor, dict]:
    """The detector's scores of ``dataset``'s photos as ``(N, L)`` label columns (NaN: no detector class)."""
    raw, stats = cached_detections(spec, dataset, cache_dir, progress=True)
    return torch.from_numpy(label_scores(raw.numpy(), list(spec["classes"]), names, spec.get("label_objects"))), stats


def detector_inputs(spec: dict, dataset, names: list[str], cache_dir) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """``(detections (N, L), seen (N,), stats)``: the scores and which photos the detector trained on."""
    t = time.perf_counter()
    detections, stats = label_detections(spec, dataset, names, cache_dir)
    minival = load_minival_ids(MINIVAL_IDS)
    seen = torch.tensor([seen_by_detector(r, minival) for r in dataset.records], dtype=torch.bool)
    return detections, seen, {**stats, "seconds": round(time.perf_counter() - t, 1)}


DEFAULT_CACHE = DEFAULT_DATA.cache


def model_detector(meta: dict, cache_dir: str | Path = DEFAULT_CACHE, *, threads: int = 1):
    """The detector a checkpoint's metadata records, from the graph in ``cache_dir`` (built when missing, its
    SHA-256 checked): what its archive will carry, for scoring a checkpoint in-process. ``None`` without one."""
    if not meta.get("detector"):
        return None
    spec = meta["detector"]
    return load_detector(spec, detector_graph(spec, cache_dir), threads=threads)
