"""The original tool's recipe (``--recipe sgd``, the default): SGD with momentum for ``--epochs``, the learning rate
x0.1 at each ``--epoch_step``, pretrained layers at ``lr*lrp``; with ``--lrp 0`` the backbone is frozen and the
epochs run on cached features. Validation every epoch picks ``best.pt`` by mAP, with per-label thresholds; with a
detector, the best epoch's validation scores are then fused with its scores (``fuse_best_checkpoint``).

``run`` is one flat loop in the style of torchvision's reference ``train.py``: set the learning rate, train one
epoch, validate, save; every step is a function of its own here or in ``training.engine``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from model.detector import detector_spec
from model.fusion import detector_columns
from tagger.meta import make_meta, save_json
from tagger.tags import DEFAULT_POLICY
from training import distributed as D
from training.checkpoint import CheckpointSaver, save_checkpoint
from training.detections import detector_inputs, with_graph
from training.engine import FeatureSet, GlobalBatches, Head, evaluate, lr_factor, set_preset, train_one_epoch
from training.features import cached_features
from training.fusion_cv import choose_fusion
from training.metrics import METRIC_NAMES, calibrate_thresholds, summarize
from training.plots import plot_run
from training.policies import OutOfFold, model_policies
from training.report import format_summary, write_result_csv


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


@dataclass
class Best:
    """The best epoch so far: its validation scores, summary at its calibrated thresholds, and those thresholds."""
    score: float | None = None
    epoch: int | None = None
    summary: dict | None = None
    thresholds: list | None = None
    probs: torch.Tensor | None = None

    @classmethod
    def of_earlier_run(cls, saver: CheckpointSaver, score: float | None) -> Best:
        """The best a resumed run starts from: ``best.pt``'s record (its scores are computed when needed)."""
        meta = saver.best_meta() if score is not None else None
        if meta is None:
            return cls(score=score)
        return cls(score=score, epoch=meta["metrics"].get("epoch"), summary=meta["metrics"].get("validation"),
                   thresholds=meta["thresholds"])


def set_train_mode(model, trainable, *, freeze: bool, use_cache: bool) -> None:
    """Training mode for what learns; frozen layers keep their BatchNorm statistics, and the backbone's ImageNet
    classifier (not this recipe's output) stays in eval mode."""
    trainable.train()
    if freeze and not use_cache:
        model.backbone.eval()
    elif not use_cache:
        model.backbone.get_classifier().eval()


def training_forward(args, trainable, rank_info, device):
    """What the epoch loop calls: ``trainable`` wrapped for DDP (or DataParallel on several GPUs of one process)."""
    forward = D.wrap(trainable, rank_info, device) if any(p.requires_grad for p in trainable.parameters()) \
        else trainable
    if device.type == "cuda" and len(args.device_ids) > 1 and rank_info.world == 1:
        forward = torch.nn.DataParallel(trainable, device_ids=args.device_ids)
    return forward


def metrics_record(history: list[dict], best: Best, t_features: float, report: dict) -> dict:
    return {"recipe": "sgd", "epochs": history, "best_epoch": best.epoch, "best": best.summary,
            "features_seconds": round(t_features, 2), "dataset": report}


def epoch_row(epoch: int, loss: float, lr: float, summary: dict, t_train: float, seconds: float,
              use_cache: bool) -> dict:
    return {"epoch": epoch, "loss": round(loss, 6), "lr": lr, **{k: summary[k] for k in METRIC_NAMES},
            "train_seconds": round(t_train, 3), "seconds": round(seconds, 3), "cached_features": use_cache}


def run(args, model, labels, names, train, val, report, out: Path, rank_info, resume: dict | None,
        pre: dict) -> dict:
    """Train for ``--epochs`` (from a resumed epoch), validating each; returns the best summary and history."""
    device = D.pick_device(args, rank_info)
    model.to(device)
    freeze = args.lrp == 0
    use_cache = freeze and not args.no_cache
    optimizer = build_optimizer(args, model)
    start_epoch, best_score, history = resume_state(args, resume, optimizer)
    train_set, val_set, trainable, workers, t_features = training_sets(args, model, train, val, pre, names,
                                                                       rank_info, device, use_cache=use_cache)
    forward = training_forward(args, trainable, rank_info, device)
    sampler = GlobalBatches(len(train_set), args.batch_size, seed=args.seed, rank=rank_info.rank,
                            world=rank_info.world)
    loader = torch.utils.data.DataLoader(train_set, batch_sampler=sampler, num_workers=workers,
                                         persistent_workers=False)
    saver = CheckpointSaver(out)
    best = Best.of_earlier_run(saver, best_score)
    validate_args = dict(workers=workers, device=device, min_positives=args.min_positives)

    if args.evaluate:
        probs, vt, vk, summary, thresholds = validate(trainable, model, val_set, names, rank_info, **validate_args)
        D.print0(f"evaluate ({len(val_set)} validation photos, thresholds 0.5): {format_summary(summary)}")
        if rank_info.is_main:
            save_json(out / "evaluate.json", summary)
        return summary

    not_applicable = summarize(torch.zeros(len(val_set), len(names)), *val_set.targets(), [0.5] * len(names),
                               names)["labels_not_applicable"]
    if not_applicable:
        D.print0(f"validation: {len(val_set)} photos; no known positive (not applicable, left out of every "
                 f"average): {', '.join(not_applicable)}")
    epochs = range(start_epoch, args.epochs)
    bar = tqdm(total=len(epochs), desc="epochs", unit="epoch", disable=not rank_info.is_main or len(epochs) == 0)
    for epoch in epochs:
        t = time.perf_counter()
        for g in optimizer.param_groups:
            g["lr"] = g["base_lr"] * lr_factor(epoch, args.epoch_step)
        sampler.set_epoch(epoch)
        torch.manual_seed(args.seed * 1000 + epoch)  # augmentation and worker seeds: a resumed epoch repeats
        set_train_mode(model, trainable, freeze=freeze, use_cache=use_cache)
        inner = None if use_cache or not rank_info.is_main else tqdm(total=len(loader), desc=f"epoch {epoch + 1}",
                                                                     unit="batch", leave=False)
        loss = train_one_epoch(forward, loader, optimizer, epoch, num_labels=len(names),
                               batch_size=args.batch_size, world=rank_info.world, device=device,
                               print_freq=args.print_freq, progress=inner)
        if inner is not None:
            inner.close()
        t_train = time.perf_counter() - t
        probs, vt, vk, summary, thresholds = validate(trainable, model, val_set, names, rank_info, **validate_args)
        score = summary["mAP"] if summary["mAP"] is not None else -1.0
        is_best = best.score is None or score > best.score
        if is_best:
            best = Best(score, epoch + 1, summarize(probs, vt, vk, thresholds, names), thresholds, probs)
        history.append(epoch_row(epoch + 1, loss, optimizer.param_groups[0]["lr"], summary, t_train,
                                 time.perf_counter() - t, use_cache))
        if rank_info.is_main:
            saver.save(sgd_checkpoint(args, model, labels, pre, optimizer, epoch=epoch + 1,
                                      summary=best.summary if is_best else summary, thresholds=thresholds,
                                      best_score=best.score, history=history, use_cache=use_cache),
                       is_best=is_best)
            saver.metrics(metrics_record(history, best, t_features, report))
            bar.write(f"epoch {epoch + 1}/{args.epochs} loss {loss:.4f} val "
                      f"{format_summary(summary, not_applicable=False)} ({t_train:.2f}s train)"
                      f"{' *best' if is_best else ''}")
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}", mAP=f"{score:.3f}")
    bar.close()

    if best.summary is None:  # nothing trained and no best yet (e.g. an original checkpoint): score it
        probs, vt, vk, summary, thresholds = validate(trainable, model, val_set, names, rank_info, **validate_args)
        best = Best(summary["mAP"], start_epoch, summarize(probs, vt, vk, thresholds, names), thresholds, probs)
        if rank_info.is_main:
            saver.save(sgd_checkpoint(args, model, labels, pre, optimizer, epoch=start_epoch, summary=best.summary,
                                      thresholds=thresholds, best_score=best.score, history=history,
                                      use_cache=use_cache), is_best=True)
    elif best.probs is None:  # resumed, and no epoch of this run beat the best: score best.pt's weights
        best.probs = best_checkpoint_probs(model, out, trainable, val_set, names, rank_info, validate_args)
    if not rank_info.is_main:
        return {"best": best.summary, "history": history, "best_epoch": best.epoch}
    seen, objects = torch.zeros(len(val_set), dtype=torch.bool), ()
    if args.detector != "none":
        fused = fuse_best_checkpoint(args, labels, names, val, best.probs, out, log=D.print0)
        best.probs, best.summary, best.thresholds = fused["probs"], fused["summary"], fused["thresholds"]
        seen, objects = fused["seen"], fused["object_cols"]
    vt, vk = val_set.targets()
    best.thresholds = attach_policies(out, best.probs, vt, vk, seen, objects, names, folds=min(5, len(val_set)))
    plot_run(out, history, best.summary, best.probs, vt, vk.bool(), names)
    saver.metrics(metrics_record(history, best, t_features, report))  # again only when the end changed it
    if args.result:
        write_result_csv(args.result, val.paths, best.probs, names, best.thresholds)
    D.print0(f"best epoch {best.epoch}: val (calibrated thresholds) {format_summary(best.summary)}")
    D.print0(f"wrote {out / 'best.pt'}, {out / 'last.pt'}, {out / 'metrics.json'}, {out / 'plots'}")
    return {"best": best.summary, "history": history, "best_epoch": best.epoch}


def best_checkpoint_probs(model, out: Path, trainable, val_set, names, rank_info, validate_args) -> torch.Tensor:
    """The validation scores of ``best.pt``'s weights, the model's own weights restored afterwards."""
    current = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(torch.load(out / "best.pt", map_location="cpu", weights_only=True)["model"])
    probs = validate(trainable, model, val_set, names, rank_info, **validate_args)[0]
    model.load_state_dict(current)
    return probs


def fuse_best_checkpoint(args, labels, names, val, probs: torch.Tensor, out: Path, log=print) -> dict:
    """The SGD recipe with a detector: the best epoch's validation logits fused with the detector's scores
    (``training.fusion_cv.choose_fusion``, out of fold over the validation photos), thresholds calibrated again on the
    fused scores, and ``best.pt`` / ``meta.json`` rewritten with the detector. Returns what ``best`` changes."""
    spec = with_graph(detector_spec(labels, args.detector, tiles=args.detector_tiles), args.cache_dir)
    detections, seen, _ = detector_inputs(spec, val, names, args.cache_dir)
    vt, vk = val.targets()
    logits = torch.logit(probs.clamp(1e-7, 1 - 1e-7))
    mode, fusion, source, fused = choose_fusion([logits], detections, vt, vk, seen, folds=min(5, len(val)))
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
    return {"probs": fused_probs, "summary": summary, "thresholds": thresholds, "seen": seen,
            "object_cols": tuple(detector_columns(detections))}


def attach_policies(out: Path, probs: torch.Tensor, targets, known, seen, object_cols, names, *, folds: int) -> list:
    """Every tag policy chosen on the best epoch's validation scores (``training.policies``), written into
    ``best.pt`` and ``meta.json``; the served thresholds become precise's. Returns them."""
    rows = OutOfFold(torch.logit(probs.clamp(1e-7, 1 - 1e-7)), targets, known.bool(), seen, tuple(object_cols), 1)
    policies, report = model_policies(rows, names, folds=max(2, folds))
    ckpt = torch.load(out / "best.pt", map_location="cpu", weights_only=True)
    meta = {**ckpt["meta"], "tag_policy": DEFAULT_POLICY, "policies": policies,
            "thresholds": policies[DEFAULT_POLICY]["thresholds"]}
    meta["metrics"] = {**meta["metrics"], "policies": report}
    save_checkpoint(out / "best.pt", {**ckpt, "meta": meta})
    save_json(out / "meta.json", meta)
    return meta["thresholds"]
