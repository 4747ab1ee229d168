"""The training tool's run: labels, data, model and resume resolved from the flags, then the chosen recipe.

    python -m training --help          # the flags (training.cli), the original tool's and ours
    main(parse_args([...]))            # what the command line runs, for code that has its flags already

The recipes: ``training.sgd_recipe`` (the original tool's, the default) and ``training.prior_recipe`` (the default
model's). Outputs under ``--output``: ``last.pt``, ``best.pt``, ``meta.json``, ``metrics.json``, ``args.json``,
``plots/``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from model.network import PACKAGED, build_model
from tagger.labels import label_names, load_labels
from tagger.meta import save_json
from tagger.presets import default_preprocessing
from training import distributed as D
from training import prior_recipe, sgd_recipe
from training.datasets import load_datasets, print_report
from training.errors import UsageError
from training.legacy import load_original_weights
from training.resume import load_resume


def resolve_pretrained(args, arch: str) -> dict:
    """``build_model`` keyword arguments for ``--pretrained``."""
    if args.pretrained == "none":
        return {"pretrained": False}
    if args.pretrained == "package":
        if arch not in PACKAGED:
            raise UsageError(f"{arch} has no packaged ImageNet weights: pass --pretrained PATH (a local "
                             "torchvision state_dict) or --pretrained none; nothing is downloaded")
        return {"pretrained": True}
    path = Path(args.pretrained)
    if not path.is_file():
        raise UsageError(f"--pretrained {args.pretrained}: no such file (use 'package', 'none' or a local path)")
    return {"pretrained": True, "weights_path": path}


def build(arch: str, labels: list[dict], args, *, imagenet_prior: bool, pretrained: bool):
    kwargs = resolve_pretrained(args, arch) if pretrained else {"pretrained": False}
    torch.manual_seed(args.seed)
    return build_model(arch, len(labels), imagenet_prior=imagenet_prior, **kwargs)


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
        train, val, report = load_datasets(args, labels)
        if rank_info.is_main:
            print_report(report)
            out.mkdir(parents=True, exist_ok=True)
            save_json(out / "args.json", vars(args))
        model = build(args.arch, labels, args, imagenet_prior=args.recipe == "prior", pretrained=resume is None)
        if resume is not None and resume.get("original"):
            load_original_weights(model, resume["model"], args.resume)
        elif resume is not None:
            model.load_state_dict(resume["model"], strict=True)
        pre = resume_pre or {**default_preprocessing(args.arch), "squash": args.resize_mode == "squash"}
        if args.recipe == "prior":
            if not rank_info.is_main:
                return {}
            return prior_recipe.run(args, model, labels, names, train, val, report, out, pre)
        return sgd_recipe.run(args, model, labels, names, train, val, report, out, rank_info, resume, pre)
    finally:
        D.shutdown()
