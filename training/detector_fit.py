"""The detector's part of training: its scores of a dataset's photos as label columns, which of those photos it
saw in its own training, and the SGD recipe's fusion of its best checkpoint (the prior recipe fuses inside its
cross-validation: ``training.prior_recipe.choose_fusion``).

    detections, seen, stats = detector_inputs(spec, dataset, names, cache_dir)    # (N, L) scores, (N,) bool
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from tagger import REPO
from tagger.meta import save_json
from training.checkpoint import save_checkpoint
from training.detector import detector_spec, label_scores, load_minival_ids, seen_by_detector
from training.features import cached_detections
from training.metrics import calibrate_thresholds, summarize

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


def fuse_best_checkpoint(args, labels, names, val, probs: torch.Tensor, out: Path, log=print) -> dict:
    """The SGD recipe with a detector: the best epoch's validation logits fused with the detector's scores
    (``prior_recipe.choose_fusion``, out of fold over the validation photos), thresholds calibrated again on the
    fused scores, and ``best.pt`` / ``meta.json`` rewritten with the detector. Returns what ``best`` changes."""
    from training import prior_recipe  # here, not at the top: prior_recipe imports this module

    spec = detector_spec(labels, args.detector, tiles=args.detector_tiles)
    detections, seen, _ = detector_inputs(spec, val, names, args.cache_dir)
    vt, vk = val.targets()
    logits = torch.logit(probs.clamp(1e-7, 1 - 1e-7))
    mode, fusion, source, fused = prior_recipe.choose_fusion([logits], detections, vt, vk, seen,
                                                             folds=min(5, len(val)))
    fused_probs = fused[mode][0].sigmoid()
    thresholds, _ = calibrate_thresholds(fused_probs, vt, vk, min_positives=args.min_positives)
    summary = summarize(fused_probs, vt, vk, thresholds, names)
    summary["classifier_only"] = summarize(probs, vt, vk, [0.5] * len(names), names)["mAP"]
    ckpt = torch.load(out / "best.pt", map_location="cpu", weights_only=True)
    meta = {**ckpt["meta"], "detector": {**spec, "fusion": fusion}, "thresholds": [float(t) for t in thresholds],
            "recipe": ckpt["meta"]["recipe"] + f" + {spec['name']} detector ({mode} fusion, fitted on the "
                                               "validation photos out of fold)"}
    meta["metrics"] = {**meta["metrics"], "validation": summary, "fusion": mode,
                       "fusion_source": {n: s for n, s in zip(names, source) if s != "none"}}
    save_checkpoint(out / "best.pt", {**ckpt, "meta": meta})
    save_json(out / "meta.json", meta)
    log(f"detector {spec['name']}: {mode} fusion; validation mAP {summary['mAP']:.3f} (classifier alone "
        f"{summary['classifier_only']:.3f})")
    return {"probs": fused_probs, "summary": summary, "thresholds": thresholds}
