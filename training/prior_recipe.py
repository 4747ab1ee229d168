"""The default model's recipe: frozen backbone, a linear head fitted in closed form, blended with the
backbone's own ImageNet classifier and, for labels no ImageNet class speaks for, with their supercategory siblings
(``training.head``), chosen and calibrated by repeated k-fold CV.

    python -m training --recipe prior --output checkpoints/default     # what `make model` runs

Quality is measured by repeated k-fold cross-validation on the training photos (out-of-fold predictions,
unknown labels masked, folds fixed by seed); per-label thresholds are calibrated on the out-of-fold
probabilities; the final head is then fitted on all photos.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from model.detector import detector_spec
from model.fusion import detector_columns, fuse
from tagger.meta import make_meta, save_json
from tagger.tags import DEFAULT_POLICY, POLICIES
from training.checkpoint import save_checkpoint
from training.detections import detector_inputs, label_detections, with_graph
from training.engine import set_preset
from training.errors import UsageError
from training.features import cached_features
from training.folds import fold_indices
from training.fusion_cv import FUSIONS, choose_fusion, detector_report
from training.head import fit_head, set_prior_structure
from training.metrics import AT_THRESHOLDS, calibrate_thresholds, mean_average_precision, per_label_ap, summarize
from training.plots import plot_run
from training.policies import OutOfFold, model_policies
from training.report import write_result_csv

#: Changes whenever the default model this recipe makes would differ: ``make serve`` rebuilds an older one.
RECIPE_VERSION = 2  # 2: tag policies


@torch.no_grad()
def cross_validate(model, features, targets, known, *, folds: int, repeats: int, wd: float,
                   pseudo_count: float) -> dict[str, list[torch.Tensor]]:
    """Out-of-fold logits per repeat of the blend, the head alone, the ImageNet prior alone and label frequency.

    Each photo's prediction comes from a head fitted without it (``fold_indices``).
    """
    n = len(features)
    out = {"blend": [], "head_only": [], "prior_only": [], "label_frequency": []}
    imagenet = model.backbone.get_classifier()(features)
    for r in range(repeats):
        oof = {k: torch.zeros_like(targets) for k in out}
        for train, test in fold_indices(n, folds, r):
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


def fit(model, features, targets, known, names: list[str], *, folds: int, repeats: int, wd: float,
        pseudo_count: float, detections: torch.Tensor | None = None, seen: torch.Tensor | None = None) -> dict:
    """Cross-validate, calibrate thresholds on the out-of-fold probabilities, fit on everything.

    With ``detections`` ((N, L) detector scores, NaN for labels it lacks), the classifier's out-of-fold logits
    are fused with them (``model.fusion``, cross-validated by ``training.fusion_cv``): the fitted blend or the
    detector's score alone, whichever ranks the thing labels better on the photos the detector never saw
    (``seen`` false; all photos when there is none).

    Each tag policy's thresholds are chosen on the out-of-fold scores (``training.policies``); the served ones are
    ``precise``'s. Returns ``{"thresholds", "policies", "metrics", "oof_probs", "fusion"}``; ``model`` ends fitted
    on all photos.
    """
    cv = cross_validate(model, features, targets, known, folds=folds, repeats=repeats, wd=wd,
                        pseudo_count=pseudo_count)
    fusion = fusion_source = fusion_mode = None
    if detections is not None:
        seen = torch.zeros(len(features), dtype=torch.bool) if seen is None else seen
        cv["classifier_only"] = cv["blend"]
        fusion_mode, fusion, fusion_source, fused = choose_fusion(cv["blend"], detections, targets, known, seen,
                                                                  folds=folds)
        cv.update(fused)
        cv["blend"] = cv[fusion_mode]
    cv_maps = {k: [mean_average_precision(s, targets, known) for s in v] for k, v in cv.items()}
    blend_probs = torch.cat([s.sigmoid() for s in cv["blend"]])
    all_targets, all_known = targets.repeat(repeats, 1), known.repeat(repeats, 1)
    # the out-of-fold rows repeat each photo once per repeat: count a label's positives once
    _, source = calibrate_thresholds(blend_probs, all_targets, all_known, min_positives=3 * repeats)
    objects = tuple(detector_columns(detections)) if detections is not None else ()
    imagenet = tuple(j for j in range(len(names)) if float(model.prior.matrix[:, j].sum()) > 0)
    rows = OutOfFold(torch.cat(cv["blend"]), all_targets, all_known.bool(),
                     seen if seen is not None else torch.zeros(len(features), dtype=torch.bool), objects, repeats,
                     imagenet)
    policies, policy_metrics = model_policies(rows, names, folds=folds)
    thresholds = policies[DEFAULT_POLICY]["thresholds"]
    ap = torch.tensor([per_label_ap(s, targets, known) for s in cv["blend"]]).mean(0)
    freq_ap = torch.tensor([per_label_ap(s, targets, known) for s in cv["label_frequency"]]).mean(0)
    def per_label(t):
        return {n: (None if a != a else round(float(a), 4)) for n, a in zip(names, t.tolist())}
    at_thresholds = summarize(blend_probs, all_targets, all_known, thresholds, names)
    fit_head(model, features, targets, known, weight_decay=wd, pseudo_count=pseudo_count)
    def mean(xs):
        return round(sum(xs) / len(xs), 4)
    metrics = {
        "cv_map": mean(cv_maps["blend"]),
        "cv_map_per_repeat": [round(m, 4) for m in cv_maps["blend"]],
        "cv_map_head_only": mean(cv_maps["head_only"]),
        "cv_map_imagenet_prior_only": mean(cv_maps["prior_only"]),
        "cv_map_label_frequency": mean(cv_maps["label_frequency"]),
        "cv_protocol": f"{folds}-fold x {repeats} repeats, out-of-fold, unknown labels masked, "
                       "labels with >= 1 known positive",
        "cv_per_label_ap": per_label(ap),
        "cv_per_label_ap_label_frequency": per_label(freq_ap),
        "cv_at_thresholds": {k: at_thresholds[k] for k in AT_THRESHOLDS},
        "threshold_source": dict(zip(names, source)),  # balanced's, on all photos
        "policies": policy_metrics,
        "n_images": len(features),
        "positives": {n: int(p) for n, p in zip(names, (targets * known).sum(0).tolist())},
        "train_map": round(mean_average_precision(model.logits_from_features(features).detach(), targets, known),
                           4),
    }
    if fusion is not None:
        metrics["cv_map_classifier_only"] = mean(cv_maps["classifier_only"])
        metrics.update({f"cv_map_{m}_fusion": mean(cv_maps[m]) for m in FUSIONS})
        metrics["detector"] = detector_report(cv, detections, targets, known, names, seen, fusion_source,
                                              fusion_mode)
    return {"thresholds": thresholds, "policies": policies, "metrics": metrics,
            "oof_probs": cv["blend"][0].sigmoid(), "fusion": fusion}


# ---- the recipe as the training tool runs it (python -m training --recipe prior)

def run(args, model, labels, names, train, val, report, out: Path, pre: dict) -> dict:
    """The default model: see ``training.prior_recipe``."""
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
        spec = with_graph(detector_spec(labels, args.detector, tiles=args.detector_tiles), args.cache_dir)
        detections, seen, dstats = detector_inputs(spec, train, names, args.cache_dir)
    result = fit(model, features, targets, known, names, folds=args.folds, repeats=args.repeats,
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
                     detector=detector, tag_policy=DEFAULT_POLICY, policies=result["policies"],
                     recipe_version=RECIPE_VERSION,
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
        write_result_csv(args.result, train.paths, oof, names, result["thresholds"])
    elapsed = time.perf_counter() - t0
    print(f"prior recipe: {len(train)} photos, features {t_features:.1f}s ({stats['computed']} computed, "
          f"{stats['cached']} cached)" + (f", detector {dstats['seconds']:.1f}s" if spec else "")
          + f", total {elapsed:.1f}s")
    if spec:
        rep = metrics["detector"]
        print(f"thing labels, CV mAP on the {rep['photos_unseen_by_detector']} photos the detector never saw: served "
              f"{rep['thing_map_unseen']['served']} ({rep['fusion']}), classifier "
              f"{rep['thing_map_unseen']['classifier']}, detector "
              f"{rep['thing_map_unseen']['detector']} (classifier-only model: cv mAP "
              f"{metrics['cv_map_classifier_only']:.3f})")
    print(f"cv mAP {metrics['cv_map']:.3f} (head only {metrics['cv_map_head_only']:.3f}, ImageNet prior only "
          f"{metrics['cv_map_imagenet_prior_only']:.3f}, label frequency {metrics['cv_map_label_frequency']:.3f}); "
          f"at thresholds CF1 {metrics['cv_at_thresholds']['CF1']:.3f} OF1 {metrics['cv_at_thresholds']['OF1']:.3f}")
    for policy in POLICIES:
        m = metrics["policies"][policy]
        print(f"tag policy {policy}{' (served)' if policy == DEFAULT_POLICY else ''}: scene tags right "
              f"{m['scene']['OP']:.2f}, finding {m['scene']['OR']:.2f}; object tags on unseen photos right "
              f"{m['object_unseen']['OP']:.2f}, finding {m['object_unseen']['OR']:.2f}")
    print(f"wrote {out / 'best.pt'}")
    return meta
