"""The original tool's recipe (``--recipe sgd``, the default): SGD with momentum for ``--epochs``, the learning rate
x0.1 at each ``--epoch_step``, pretrained layers at ``lr*lrp``; with ``--lrp 0`` the backbone is frozen and the
epochs run on cached features. Validation every epoch picks ``best.pt`` by mAP, with per-label thresholds.
"""
from __future__ import annotations

import copy
import time
from pathlib import Path

import torch

from tagger.meta import make_meta, save_json
from training import distributed as D
from training.checkpoint import CheckpointSaver
from training.detector_fit import fuse_best_checkpoint
from training.engine import FeatureSet, GlobalBatches, Head, evaluate, lr_factor, set_preset, train_one_epoch
from training.metrics import METRIC_NAMES, calibrate_thresholds, summarize


def build_optimizer(args, model) -> torch.optim.SGD:
    """SGD over the head at ``lr`` and the unfrozen backbone at ``lr * lrp`` (``base_lr`` kept per group for the
    schedule); the backbone's ImageNet classifier is not part of this recipe's output and stays frozen."""
    model.backbone.get_classifier().requires_grad_(False)
    if args.lrp == 0:
        model.backbone.requires_grad_(False)
    backbone_params = [p for p in model.backbone.parameters() if p.requires_grad]
    groups = [{"params": list(model.head.parameters()), "lr": args.lr, "base_lr": args.lr}]
    if backbone_params:
        groups.append({"params": backbone_params, "lr": args.lr * args.lrp, "base_lr": args.lr * args.lrp})
    return torch.optim.SGD(groups, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)


def resume_state(args, resume: dict | None, optimizer) -> tuple[int, float | None, list[dict]]:
    """``(start_epoch, best_score, history)`` from a ``--resume`` checkpoint (the optimizer state loaded into
    ``optimizer``), ``--start-epoch`` overriding the epoch."""
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
    return start_epoch, best_score, history


def training_sets(args, model, train, val, pre: dict, names, rank_info, device, *, use_cache: bool):
    """``(train_set, val_set, trainable, workers, feature_seconds)``: cached backbone features and the head alone
    when the backbone is frozen and caching is on, else the photos and the whole model."""
    from training.features import cached_features

    if not use_cache:
        set_preset(train, pre, train=args.lrp != 0)
        set_preset(val, pre)
        return train, val, model, args.workers, 0.0
    t = time.perf_counter()
    set_preset(train, pre)
    set_preset(val, pre)
    with D.main_first(rank_info):
        ftr, st = cached_features(model, train, pre, args.cache_dir, batch_size=32, workers=args.workers,
                                  device=device, progress=rank_info.is_main)
        fva, sv = cached_features(model, val, pre, args.cache_dir, batch_size=32, workers=args.workers,
                                  device=device, progress=rank_info.is_main)
    seconds = time.perf_counter() - t
    D.print0(f"features: {st['computed'] + sv['computed']} computed, {st['cached'] + sv['cached']} from the "
             f"cache, {seconds:.1f}s ({st['file']})")
    return (FeatureSet(ftr, *train.targets(), names), FeatureSet(fva, *val.targets(), names), Head(model), 0,
            seconds)


def validate(trainable, model, val_set, names, rank_info, *, workers: int, device, min_positives: int):
    """``(probs, targets, known, summary at 0.5, calibrated thresholds)`` of the validation photos."""
    model.eval()
    probs, vt, vk = evaluate(trainable, val_set, rank_info, batch_size=64, workers=workers, device=device)
    thresholds, _ = calibrate_thresholds(probs, vt, vk, min_positives=min_positives)
    return probs, vt, vk, summarize(probs, vt, vk, [0.5] * len(names), names), thresholds


def sgd_checkpoint(args, model, labels, pre: dict, optimizer, *, epoch: int, summary: dict, thresholds,
                   best_score, history: list[dict], use_cache: bool) -> dict:
    """The self-describing checkpoint of this recipe at ``epoch`` (everything ``--resume`` needs)."""
    meta = make_meta(arch=model.arch, labels=labels, thresholds=thresholds, preprocessing=pre,
                     version=args.version, metrics={"validation": summary, "epoch": epoch},
                     imagenet_prior=False, trained_on=list(args.ann),
                     recipe=f"sgd, lrp {args.lrp}" + (" (frozen backbone, cached features)" if use_cache else ""))
    return {"model": model.state_dict(), "meta": meta, "epoch": epoch, "best_score": best_score,
            "optimizer": optimizer.state_dict(),
            "scheduler": {"name": "step", "milestones": list(args.epoch_step), "gamma": 0.1, "last_epoch": epoch},
            "history": history, "args": vars(args)}


def run(args, model, labels, names, train, val, report, out: Path, rank_info, resume: dict | None,
        pre: dict) -> dict:
    """Train for ``--epochs`` (from a resumed epoch), validating each; returns the best summary and history."""
    from tqdm import tqdm

    from training.evaluate import format_summary, write_result_csv
    from training.plots import plot_run

    device = D.pick_device(args, rank_info)
    model.to(device)
    freeze = args.lrp == 0
    use_cache = freeze and not args.no_cache
    optimizer = build_optimizer(args, model)
    start_epoch, best_score, history = resume_state(args, resume, optimizer)
    train_set, val_set, trainable, workers, t_features = training_sets(args, model, train, val, pre, names,
                                                                       rank_info, device, use_cache=use_cache)
    fwd_train = D.wrap(trainable, rank_info, device) if any(p.requires_grad for p in trainable.parameters()) \
        else trainable
    if device.type == "cuda" and len(args.device_ids) > 1 and rank_info.world == 1:
        fwd_train = torch.nn.DataParallel(trainable, device_ids=args.device_ids)
    classifier = model.backbone.get_classifier()

    def set_train_mode():
        trainable.train()
        if freeze and not use_cache:
            model.backbone.eval()  # frozen layers keep their BatchNorm statistics
        elif not use_cache:
            classifier.eval()

    def check():
        return validate(trainable, model, val_set, names, rank_info, workers=workers, device=device,
                        min_positives=args.min_positives)

    def checkpoint(epoch: int, summary: dict, thresholds) -> dict:
        return sgd_checkpoint(args, model, labels, pre, optimizer, epoch=epoch, summary=summary,
                              thresholds=thresholds, best_score=best_score, history=history, use_cache=use_cache)

    sampler = GlobalBatches(len(train_set), args.batch_size, seed=args.seed, rank=rank_info.rank,
                            world=rank_info.world)
    loader = torch.utils.data.DataLoader(train_set, batch_sampler=sampler, num_workers=workers,
                                         persistent_workers=False)
    saver = CheckpointSaver(out)
    best = {"probs": None, "summary": None, "epoch": None, "thresholds": None}
    if best_score is not None:
        prev = saver.best_meta()
        if prev is not None:
            best.update(summary=prev["metrics"].get("validation"), thresholds=prev["thresholds"],
                        epoch=prev["metrics"].get("epoch"))

    def metrics_record() -> dict:
        return {"recipe": "sgd", "epochs": history, "best_epoch": best["epoch"], "best": best["summary"],
                "features_seconds": round(t_features, 2), "dataset": report}

    if args.evaluate:
        probs, vt, vk, summary, thresholds = check()
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
        probs, vt, vk, summary, thresholds = check()
        score = summary["mAP"] if summary["mAP"] is not None else -1.0
        is_best = best_score is None or score > best_score
        if is_best:
            best_score = score
            best.update(probs=probs, summary=summarize(probs, vt, vk, thresholds, names), epoch=epoch + 1,
                        thresholds=thresholds)
        row = {"epoch": epoch + 1, "loss": round(loss, 6), "lr": optimizer.param_groups[0]["lr"],
               **{k: summary[k] for k in METRIC_NAMES},
               "train_seconds": round(t_train, 3), "seconds": round(time.perf_counter() - t, 3),
               "cached_features": use_cache}
        history.append(row)
        if rank_info.is_main:
            saver.save(checkpoint(epoch + 1, best["summary"] if is_best else summary, thresholds), is_best=is_best)
            saver.metrics(metrics_record())
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}", mAP=f"{score:.3f}")
        if rank_info.is_main:
            bar.write(f"epoch {epoch + 1}/{args.epochs} loss {loss:.4f} val {format_summary(summary, not_applicable=False)}"
                      f" ({t_train:.2f}s train){' *best' if is_best else ''}")
    bar.close()

    if best["summary"] is None:  # nothing trained and no best yet (e.g. an original checkpoint): score it
        probs, vt, vk, summary, thresholds = check()
        best.update(probs=probs, summary=summarize(probs, vt, vk, thresholds, names), epoch=start_epoch,
                    thresholds=thresholds)
        best_score = summary["mAP"]
        if rank_info.is_main:
            saver.save(checkpoint(start_epoch, best["summary"], thresholds), is_best=True)
    elif best["probs"] is None:  # resumed, and no epoch of this run beat the best: score best.pt's weights
        current = copy.deepcopy(model.state_dict())
        model.load_state_dict(torch.load(out / "best.pt", map_location="cpu", weights_only=True)["model"])
        best["probs"] = check()[0]
        model.load_state_dict(current)
    if rank_info.is_main and args.detector != "none":
        best.update(fuse_best_checkpoint(args, labels, names, val, best["probs"], out, log=D.print0))
    if rank_info.is_main:
        vt, vk = val_set.targets()
        plot_run(out, history, best["summary"], best["probs"], vt, vk.bool(), names)
        saver.metrics(metrics_record())  # written again only when the end changed it (a fused detector, ...)
        if args.result:
            write_result_csv(args.result, val.paths, best["probs"], names, best["thresholds"])
        D.print0(f"best epoch {best['epoch']}: val (calibrated thresholds) {format_summary(best['summary'])}")
        D.print0(f"wrote {out / 'best.pt'}, {out / 'last.pt'}, {out / 'metrics.json'}, {out / 'plots'}")
    return {"best": best["summary"], "history": history, "best_epoch": best["epoch"]}
