"""Choose the default model's recipe by repeated k-fold cross-validation on the bundled photos (never a test set).

    python -m benchmarks.recipe_cv --out var/bench/recipe        # table on stdout, results.json, learning curve

Every variant is scored on the same folds (``training.prior_recipe.fold_indices``: 5 folds x 3 repeats, seeded),
from out-of-fold predictions with unknown labels masked; the spread is the standard deviation over repeats.
A variant is kept only when it beats the baseline by more than that spread. The baseline is the classifier
alone (whole photo squashed); the detector's fusion is then scored on it as the training tool fuses it, with the
thing labels reported on the photos the detector never saw and on the others apart. The learning curve
(``docs/learning_curve.png``) trains on the first n photos of the pool (the 113 original samples first, then the
431 others in a seeded order) and scores every fold on the same held-out photos of all 544.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from model.detector import detector_spec
from model.network import build_model
from tagger.labels import label_names, load_labels
from tagger.presets import default_preprocessing, eval_transform
from training.datasets import LabelledImages
from training.detections import detector_inputs
from training.features import cached_features
from training.folds import fold_indices
from training.head import blend_weights, fit_linear, fit_prior_calibration, fit_sibling_prior, set_prior_structure
from training.metrics import calibrate_thresholds, decision_metrics, mean_average_precision, per_label_ap

REPO = Path(__file__).resolve().parent.parent

SOURCES = [(REPO / "samples/coco_subset", REPO / "samples/coco_subset/annotations.json"),
           (REPO / "samples/coco_more", REPO / "samples/coco_more/annotations.json")]


class Flip:
    def __init__(self, transform):
        self.transform = transform

    def __call__(self, image):
        return self.transform(image).flip(-1)


def load(cache: Path, arch: str = "efficientnet_lite0", flip: bool = True, squash: bool = True):
    names = label_names()
    pre = {**default_preprocessing(arch), "squash": squash}  # the training tool's default: --resize-mode squash
    ds, _ = LabelledImages.from_coco(SOURCES, names, transform=eval_transform(pre), min_side=pre["resize"])
    model = build_model(arch, len(names), pretrained=True, imagenet_prior=True).eval()
    set_prior_structure(model.prior, load_labels())
    feats, _ = cached_features(model, ds, pre, cache, batch_size=32)
    if not flip:
        return model, feats
    flipped = ds.subset(range(len(ds)), transform=Flip(eval_transform(pre)))
    flip_feats, _ = cached_features(model, flipped, {**pre, "hflip": True}, cache, batch_size=32)
    targets, known = ds.targets()
    return model, names, feats, flip_feats, targets, known


@torch.no_grad()
def oof(model, x, feats_for_prior, targets, known, *, folds, repeats, wd, pc, train_limit=None, order=None,
        siblings=True):
    """Out-of-fold blended logits per repeat (the recipe of ``training.head.fit_head``, with variants)."""
    zero_shot = model.prior.zero_shot(model.backbone.get_classifier()(feats_for_prior))
    has_prior = model.prior.matrix.sum(0) > 0
    kf = known.float()
    out = []
    for r in range(repeats):
        logits = torch.zeros_like(targets)
        for train, test in fold_indices(len(x), folds, r):
            if train_limit is not None:  # learning curve: only photos among the first `train_limit` of `order`
                allowed = torch.zeros(len(x), dtype=torch.bool)
                allowed[order[:train_limit]] = True
                train = train[allowed[train]]
            w, b = fit_linear(x[train], targets[train], kf[train], weight_decay=wd)
            scale, bias = fit_prior_calibration(zero_shot[train], targets[train], kf[train])
            weight = blend_weights((targets[train] * kf[train]).sum(0), has_prior, pc)
            blended = [weight * (x[p] @ w.T + b) + (1 - weight) * (scale * zero_shot[p] + bias) for p in (train, test)]
            logits[test] = blended[1]
            if siblings:
                prior = model.prior  # its sibling buffers hold this fold's fit only while it is scored
                fitted = fit_sibling_prior(blended[0], targets[train], kf[train], prior.siblings, has_prior,
                                           pseudo_count=pc)
                for buffer, value in zip((prior.sibling_scale, prior.sibling_bias, prior.sibling_weight), fitted):
                    buffer.copy_(value)
                logits[test] = prior.sibling_blend(blended[1])
        out.append(logits)
    return out


def score(runs, targets, known) -> dict:
    """CV mAP (mean and spread over repeats) and CF1/OF1 at thresholds calibrated as the recipe does."""
    maps = [mean_average_precision(r, targets, known) for r in runs]
    probs = torch.cat([r.sigmoid() for r in runs])
    tt, kk = targets.repeat(len(runs), 1), known.repeat(len(runs), 1)
    thresholds, _ = calibrate_thresholds(probs, tt, kk, min_positives=3 * len(runs))
    per = [decision_metrics(r.sigmoid(), targets, thresholds, known) for r in runs]
    return {"map": round(statistics.mean(maps), 4), "spread": round(statistics.pstdev(maps), 4),
            "per_repeat": [round(m, 4) for m in maps],
            "CF1": round(statistics.mean(p["CF1"] for p in per), 4),
            "CF1_spread": round(statistics.pstdev(p["CF1"] for p in per), 4),
            "OF1": round(statistics.mean(p["OF1"] for p in per), 4),
            "OF1_spread": round(statistics.pstdev(p["OF1"] for p in per), 4)}


def detections_of(cache: Path, *, tiles: bool = False):
    """The detector's label scores (N, L) of the bundled photos and which of them it saw in its own training."""
    labels = load_labels()
    names = label_names(labels)
    pre = default_preprocessing("efficientnet_lite0")
    ds, _ = LabelledImages.from_coco(SOURCES, names, min_side=pre["resize"])
    detections, seen, _ = detector_inputs(detector_spec(labels, tiles=tiles), ds, names, cache)
    return detections, seen


def with_detector(runs, detections, targets, known, seen, *, folds) -> dict:
    """The recipe's fusion of ``runs`` (training.prior_recipe.choose_fusion) and its report (the thing labels'
    mAP of every mode, on the photos the detector never saw and on the others: ``detector_report``), with the
    chosen mode's overall score."""
    from training.fusion_cv import choose_fusion, detector_report

    mode, _, source, fused = choose_fusion(runs, detections, targets, known, seen, folds=folds)
    report = detector_report({"blend": fused[mode], "classifier_only": runs, **fused}, detections, targets, known,
                             label_names(), seen, source, mode)
    things = {part: report[f"thing_map_{part}"] for part in ("unseen", "seen")}
    return {**score(fused[mode], targets, known), "fusion": mode, "thing_map": things, "runs": fused[mode]}


def learning_curve(model, feats, targets, known, *, folds, repeats, out_png: Path, n_first: int,
                   detections=None) -> list[dict]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rest = torch.randperm(len(feats) - n_first, generator=torch.Generator().manual_seed(0)) + n_first
    order = torch.cat([torch.arange(n_first), rest])
    points = []
    for n in (n_first, 200, 300, 400, len(feats)):
        runs = oof(model, feats, feats, targets, known, folds=folds, repeats=repeats, wd=1e-2, pc=10.0,
                   train_limit=n, order=order)
        s = score(runs, targets, known)
        point = {"pool": n, "train_photos_per_fold": round(n * (folds - 1) / folds), **s}
        if detections is not None:  # the detector's fusion as served (its score alone: no weight learnt per size)
            from training.fusion_cv import fuse_out_of_fold

            point["with_detector"] = score(fuse_out_of_fold(runs, detections, targets, known, folds=folds,
                                                            detector_only=True), targets, known)
        points.append(point)
        print(f"learning curve: pool {n:4d} photos -> CV mAP {s['map']:.3f} ± {s['spread']:.3f}, CF1 {s['CF1']:.3f}, "
              f"OF1 {s['OF1']:.3f}" + (f"; with the detector {point['with_detector']['map']:.3f}"
                                       if detections is not None else ""), flush=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [p["train_photos_per_fold"] for p in points]
    if detections is not None:
        ax.errorbar(xs, [p["with_detector"]["map"] for p in points],
                    yerr=[p["with_detector"]["spread"] for p in points], marker="o", capsize=3,
                    label="default model (classifier + detector)")
    ax.errorbar(xs, [p["map"] for p in points], yerr=[p["spread"] for p in points], marker="o", capsize=3,
                label="classifier alone (--detector none)")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_xlabel("training photos per fold (113 original samples first, then COCO photos)")
    ax.set_ylabel(f"mAP on the same held-out photos ({folds}-fold x {repeats})")
    ax.set_title("default recipe: learning curve on the bundled photos")  # (the detector's photos: see README)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return points


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(REPO / "var/bench/recipe"), help="work folder (default: var/bench/recipe)")
    p.add_argument("--folds", type=int, default=5, help="folds (default: 5)")
    p.add_argument("--repeats", type=int, default=3, help="repeats (default: 3)")
    p.add_argument("--curve", default=str(REPO / "docs/learning_curve.png"), help="learning-curve PNG "
                                                                                 "(default: docs/learning_curve.png)")
    p.add_argument("--no-lite1", action="store_true", help="skip the Lite1 variant (default: run it)")
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    model, names, feats, flip, targets, known = load(out / "cache")
    print(f"features of {len(feats)} photos (and their mirror images): {time.perf_counter() - t0:.1f}s", flush=True)
    imagenet_logp = model.backbone.get_classifier()(feats).log_softmax(-1).detach()
    tta = (feats + flip) / 2
    variants = {
        "baseline: pseudo-count 10, head L2 1e-2": dict(x=feats, prior=feats, wd=1e-2, pc=10.0),
        "without the supercategory back-off (the recipe before)": dict(x=feats, prior=feats, wd=1e-2, pc=10.0,
                                                                        siblings=False),
        "pseudo-count 3": dict(x=feats, prior=feats, wd=1e-2, pc=3.0),
        "pseudo-count 30": dict(x=feats, prior=feats, wd=1e-2, pc=30.0),
        "pseudo-count 100": dict(x=feats, prior=feats, wd=1e-2, pc=100.0),
        "head L2 3e-3": dict(x=feats, prior=feats, wd=3e-3, pc=10.0),
        "head L2 3e-2": dict(x=feats, prior=feats, wd=3e-2, pc=10.0),
        "head L2 1e-1": dict(x=feats, prior=feats, wd=1e-1, pc=10.0),
        "ImageNet log-probabilities as extra head inputs": dict(x=torch.cat([feats, imagenet_logp], 1), prior=feats,
                                                                wd=1e-2, pc=10.0),
        "flip test-time averaging (features of photo + mirror)": dict(x=tta, prior=tta, wd=1e-2, pc=10.0),
    }
    results = {}
    freq_runs = []
    for r in range(a.repeats):
        lf = torch.zeros_like(targets)
        for train, test in fold_indices(len(feats), a.folds, r):
            lf[test] = ((targets[train] * known[train]).sum(0) / known[train].sum(0).clamp(min=1)).expand(len(test), -1)
        freq_runs.append(lf)
    results["label frequency"] = score([torch.logit(r.clamp(1e-6, 1 - 1e-6)) for r in freq_runs], targets, known)
    freq_ap = torch.tensor([per_label_ap(r, targets, known) for r in freq_runs]).mean(0)
    for name, v in variants.items():
        t = time.perf_counter()
        runs = oof(model, v["x"], v["prior"], targets, known, folds=a.folds, repeats=a.repeats, wd=v["wd"], pc=v["pc"],
                   siblings=v.get("siblings", True))
        results[name] = {**score(runs, targets, known), "seconds": round(time.perf_counter() - t, 1)}
        maps = [mean_average_precision(r, targets, known) for r in runs]
        if name.startswith("baseline"):
            base_maps = maps
            ap = torch.tensor([per_label_ap(r, targets, known) for r in runs])
            def per_label(t):
                return {n: None if x != x else round(float(x), 4) for n, x in zip(names, t)}
            results[name]["per_label_ap"] = per_label(ap.mean(0))
            results[name]["per_label_ap_spread"] = per_label(ap.std(0, unbiased=False))
            results[name]["label_frequency_ap"] = per_label(freq_ap)
            # "clearly above": at least 1.5x the frequency baseline's AP, and above it by more than the spread
            results[name]["labels_not_clearly_above_frequency"] = [
                n for n, m, sd, f in zip(names, ap.mean(0), ap.std(0, unbiased=False), freq_ap)
                if m == m and not (m >= 1.5 * f and m - f > sd)]
        else:  # paired: the same folds, so the gain per repeat is far less noisy than either figure
            results[name]["paired_gain_per_repeat"] = [round(m - b, 4) for m, b in zip(maps, base_maps)]
        print(f"{results[name]['map']:.4f} ± {results[name]['spread']:.4f} {results[name]['per_repeat']}  {name}",
              flush=True)
    b = results["baseline: pseudo-count 10, head L2 1e-2"]
    print("per-label CV AP (label-frequency AP): " + ", ".join(
        f"{n} {b['per_label_ap'][n]} ({b['label_frequency_ap'][n]})" for n in names
        if b["per_label_ap"][n] is not None))
    print(f"labels not clearly above their frequency baseline: {b['labels_not_clearly_above_frequency'] or 'none'}")
    if not a.no_lite1:
        t = time.perf_counter()
        model1, feats1 = load(out / "cache", "efficientnet_lite1", flip=False)
        runs = oof(model1, feats1, feats1, targets, known, folds=a.folds, repeats=a.repeats, wd=1e-2, pc=10.0)
        name = "EfficientNet-Lite1 backbone (240 px) instead of Lite0"
        results[name] = {**score(runs, targets, known), "seconds": round(time.perf_counter() - t, 1)}
        print(f"{results[name]['map']:.4f} ± {results[name]['spread']:.4f} {results[name]['per_repeat']}  {name}",
              flush=True)
    base = results["baseline: pseudo-count 10, head L2 1e-2"]
    for r in results.values():
        if not isinstance(r, dict) or "map" not in r:
            continue
        r["vs_baseline"] = round(r["map"] - base["map"], 4)
        r["beyond_spread"] = r["map"] - base["map"] > max(base["spread"], r["spread"])
    # The detector (issue 19): the baseline's out-of-fold logits fused as the training tool fuses them, on the photos
    # the detector never saw and on the others; then the same with the detector on 4 tiles too.
    base_runs = oof(model, feats, feats, targets, known, folds=a.folds, repeats=a.repeats, wd=1e-2, pc=10.0)
    detections, seen = detections_of(out / "cache")
    for name, dets in (("default: + detector (training.prior_recipe.choose_fusion)", detections),
                       ("+ detector on the photo and 4 tiles (--detector-tiles)",
                        detections_of(out / "cache", tiles=True)[0])):
        t = time.perf_counter()
        r = with_detector(base_runs, dets, targets, known, seen, folds=a.folds)
        maps = [mean_average_precision(x, targets, known) for x in r.pop("runs")]
        results[name] = {**r, "seconds": round(time.perf_counter() - t, 1),
                         "paired_gain_per_repeat": [round(m - b, 4) for m, b in zip(maps, base_maps)]}
        print(f"{r['map']:.4f} ± {r['spread']:.4f} {r['per_repeat']}  {name}: fusion {r['fusion']}; thing labels "
              f"{r['thing_map']}", flush=True)
    crop_model, crop_feats = load(out / "cache", flip=False, squash=False)
    runs = oof(crop_model, crop_feats, crop_feats, targets, known, folds=a.folds, repeats=a.repeats, wd=1e-2, pc=10.0)
    name = "centre crop instead of the squashed photo (the preprocessing before)"
    results[name] = {**score(runs, targets, known), "paired_gain_per_repeat": [
        round(mean_average_precision(x, targets, known) - b, 4) for x, b in zip(runs, base_maps)]}
    print(f"{results[name]['map']:.4f} ± {results[name]['spread']:.4f} {results[name]['per_repeat']}  {name}",
          flush=True)
    results["learning_curve"] = learning_curve(model, feats, targets, known, folds=a.folds, repeats=a.repeats,
                                               out_png=Path(a.curve), n_first=113, detections=detections)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"wrote {out / 'results.json'} and {a.curve}")


if __name__ == "__main__":
    main()
