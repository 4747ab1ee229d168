"""Evaluate a checkpoint (ours, or the original tool's) on a COCO-format dataset.

    python -m training.evaluate --checkpoint checkpoints/default/best.pt \\
        --data samples/coco_subset --ann samples/coco_subset/annotations.json --result var/result.csv

Prints and writes (``--out``, default beside the checkpoint: ``eval-<ann name>.json``) mAP, CP, CR, CF1, OP, OR,
OF1 at the checkpoint's thresholds, and per-label AP, of what the handler would answer (the detector fused in
when the model has one); labels without a known positive are reported as not applicable (``null``), never as 0
and never inside an average.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from model.fusion import fuse
from tagger.labels import label_names, words_of
from tagger.layout import DEFAULT as DEFAULT_DATA
from tagger.meta import save_json
from tagger.presets import eval_transform
from training.checkpoint import load_for_inference
from training.datasets import DatasetError, LabelledImages, pair_sources
from training.detections import label_detections
from training.legacy import LegacyError
from training.metrics import summarize
from training.report import format_summary, write_result_csv

DEFAULT_CACHE = DEFAULT_DATA.cache


@torch.no_grad()
def predict_logits(forward, dataset, *, batch_size: int = 32, workers: int = 0, device="cpu") -> torch.Tensor:
    """Logits of ``forward`` over every item of ``dataset`` (inputs, _, _), (N, L)."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    out = [forward(x.to(device)).float().cpu() for x, _, _ in loader]
    return torch.cat(out)


def model_probs(model, meta: dict, dataset, *, batch_size: int = 32, workers: int = 0,
                cache_dir: str | Path | None = None) -> torch.Tensor:
    """What the served model answers for every photo of ``dataset``: the classifier's logits, fused with the
    detector's scores when ``meta`` has one (as the handler does), as probabilities (N, L)."""
    logits = predict_logits(model, dataset, batch_size=batch_size, workers=workers)
    if meta.get("detector"):
        names = label_names(meta["labels"])
        scores, _ = label_detections(meta["detector"], dataset, names, cache_dir or DEFAULT_CACHE)
        logits = fuse(logits, scores, meta["detector"]["fusion"])
    return logits.sigmoid()


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="a checkpoint of ours or of the original tool")
    p.add_argument("--data", action="append", default=None, help="image root(s) (default: the --ann file's folder)")
    p.add_argument("--ann", action="append", required=True, help="COCO-format annotation file(s), repeatable")
    p.add_argument("--labels", default=None,
                   help="label vocabulary JSON for an original checkpoint (default: tagger/labels.json)")
    p.add_argument("--result", default=None, help="CSV with every image's scores and tags (default: none)")
    p.add_argument("--out", default=None, help="metrics JSON (default: eval-<ann stem>.json beside the checkpoint)")
    p.add_argument("-b", "--batch-size", type=int, default=32, help="batch size (default: 32)")
    p.add_argument("-j", "--workers", type=int, default=0, help="data loading workers (default: 0)")
    p.add_argument("--cache-dir", default=str(DEFAULT_CACHE), help="detector score cache (default: var/cache)")
    return p


def main(args: argparse.Namespace) -> dict:
    model, meta, note = load_for_inference(args.checkpoint, args.labels)
    print(note)
    names = label_names(meta["labels"])
    roots = args.data or [str(Path(args.ann[0]).parent)]
    dataset, report = LabelledImages.from_coco(pair_sources(roots, args.ann), names,
                                               transform=eval_transform(meta["preprocessing"]),
                                               min_side=meta["preprocessing"]["resize"], words=words_of(meta["labels"]),
                                               need_positive=False)  # labels without a positive: not applicable
    if report["skipped"]:
        print(f"skipped {len(report['skipped'])} images that do not decode: "
              + "; ".join(f"{s['path']} ({s['reason']})" for s in report["skipped"][:10]))
    probs = model_probs(model, meta, dataset, batch_size=args.batch_size, workers=args.workers,
                        cache_dir=getattr(args, "cache_dir", None))
    targets, known = dataset.targets()
    summary = summarize(probs, targets, known, meta["thresholds"], names)
    summary["checkpoint"] = str(args.checkpoint)
    summary["dataset"] = report
    print(f"{len(dataset)} images: {format_summary(summary)}")
    out = args.out or Path(args.checkpoint).with_name(f"eval-{Path(args.ann[0]).stem}.json")
    save_json(out, summary)
    print(f"wrote {out}")
    if args.result:
        write_result_csv(args.result, dataset.paths, probs, names, meta["thresholds"])
        print(f"wrote {args.result}")
    return summary


if __name__ == "__main__":
    try:
        main(get_args_parser().parse_args())
    except (DatasetError, LegacyError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
