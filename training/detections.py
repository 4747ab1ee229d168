"""The detector's part of training: its scores of a dataset's photos, cached per photo, as label columns, and which
of those photos it saw in its own training (its scores there are flattered).

    raw, stats = cached_detections(spec, dataset, "var/cache")                      # (N, C): spec's classes
    detections, seen, stats = detector_inputs(spec, dataset, names, cache_dir)      # (N, L) scores, (N,) bool
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import torch

from model.detector import DETECT_VERSION, detect, label_scores, load_detector, load_minival_ids, seen_by_detector
from tagger import REPO
from tagger.image import DECODER_VERSION, decode_image
from training.features import cached_rows, image_key

def detections_path(spec: dict, min_side: int | None, cache_dir: str | Path) -> Path:
    record = {"graph": spec["graph_sha1"], "tiles": bool(spec.get("tiles")), "classes": spec["classes"],
              "input": spec["input"], "min_side": min_side, "decoder": DECODER_VERSION, "detect": DETECT_VERSION}
    key = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:20]
    return Path(cache_dir) / f"detections-{key}.pt"


def cached_detections(spec: dict, dataset, cache_dir: str | Path, *, batch_size: int = 8,
                      progress: bool = False) -> tuple[torch.Tensor, dict]:
    """The detector's scores ``(N, C)`` (columns: ``spec["classes"]`` in order) of every photo of ``dataset``,
    decoded as the handler decodes them (``dataset.min_side``); cached per photo like ``cached_features``."""
    def compute(missing):
        detector = load_detector(spec, threads=torch.get_num_threads())
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
    return torch.from_numpy(label_scores(raw.numpy(), list(spec["classes"]), names)), stats


def detector_inputs(spec: dict, dataset, names: list[str], cache_dir) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """``(detections (N, L), seen (N,), stats)``: the scores and which photos the detector trained on."""
    t = time.perf_counter()
    detections, stats = label_detections(spec, dataset, names, cache_dir)
    minival = load_minival_ids(MINIVAL_IDS)
    seen = torch.tensor([seen_by_detector(r, minival) for r in dataset.records], dtype=torch.bool)
    return detections, seen, {**stats, "seconds": round(time.perf_counter() - t, 1)}
