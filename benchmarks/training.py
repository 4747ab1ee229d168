"""Training benchmarks, side by side in one run (``make bench`` runs this after the default-model build).

    python -m benchmarks.training --out var/bench/training        # prints a table and writes results.json

1. Epoch speed: with ``--lrp 0``, epochs on cached features against epochs of full forward passes of the
   frozen backbone (``--no-cache``), same data, seed and split; the ratio of epoch times and the difference
   in validation mAP.
2. Recipes on the same folds: k-fold CV (folds of ``training.prior_recipe.fold_indices``) of the prior
   recipe, SGD head-only (EfficientNet-Lite0, cached), SGD fine-tuning (``--lrp > 0``, train preset) and
   ResNet18; each fold's photos are held out through ``--val-ann``, so every figure is a held-out mAP.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from tagger.meta import save_json
from training.cli import cli

REPO = Path(__file__).resolve().parent.parent


def write_fold_files(ann: Path, out: Path, folds: int) -> list[tuple[Path, Path]]:
    from training.folds import fold_indices

    data = json.loads(ann.read_text())
    images = sorted(data["images"], key=lambda i: i["id"])
    pairs = []
    for f, (train, test) in enumerate(fold_indices(len(images), folds, 0)):
        for name, idx in (("train", train), ("val", test)):
            keep = {images[i]["id"] for i in idx.tolist()}
            part = dict(data, images=[i for i in images if i["id"] in keep],
                        annotations=[a for a in data["annotations"] if a["image_id"] in keep])
            (out / f"fold{f}-{name}.json").write_text(json.dumps(part))
        pairs.append((out / f"fold{f}-train.json", out / f"fold{f}-val.json"))
    return pairs


def run(argv: list) -> dict:
    code = cli([str(a) for a in argv])
    if code:
        raise SystemExit(f"training failed ({code}): {argv}")
    return json.loads((Path(argv[argv.index("--output") + 1]) / "metrics.json").read_text())


def epoch_speed(out: Path, data: Path, ann: Path, cache: Path, epochs: int) -> dict:
    common = ["--data", data, "--ann", ann, "--cache-dir", cache, "-j", "2", "--seed", "0"]
    full = run([*common, "--no-cache", "--epochs", 2, "--output", out / "speed_full"])
    cached = run([*common, "--epochs", epochs, "--output", out / "speed_cached"])
    full_s = statistics.median(e["train_seconds"] for e in full["epochs"])
    cached_s = statistics.median(e["train_seconds"] for e in cached["epochs"][1:])
    return {"full_forward_epoch_s": full_s, "cached_epoch_s": cached_s, "speedup": full_s / max(cached_s, 1e-6),
            "first_epoch_features_s": cached["features_seconds"],
            "val_map_full_forward_epoch2": full["epochs"][1]["mAP"],
            "val_map_cached_epoch2": cached["epochs"][1]["mAP"]}


def recipes_cv(out: Path, data: Path, ann: Path, cache: Path, folds: int, finetune_epochs: int) -> dict:
    pairs = write_fold_files(ann, out, folds)
    recipes = {
        "prior (default recipe)": ["--recipe", "prior", "--repeats", 1],
        "sgd head-only, Lite0, 30 epochs": ["--epochs", 30, "--epoch_step", 20, "--lr", 0.1],
        f"sgd fine-tune, Lite0, lr 0.01, lrp 0.1, {finetune_epochs} epochs": ["--lrp", 0.1, "--lr", 0.01, "--epochs",
                                                                     finetune_epochs, "-b", 16],
        f"sgd fine-tune, Lite0, lr 0.1, lrp 0.01, {finetune_epochs} epochs": ["--lrp", 0.01, "--lr", 0.1, "--epochs",
                                                                     finetune_epochs, "-b", 16],
        "sgd head-only, ResNet18 random init, 30 epochs": ["--arch", "resnet18", "--pretrained", "none",
                                                           "--epochs", 30, "--epoch_step", 20],
    }
    results = {}
    for name, flags in recipes.items():
        maps, seconds = [], []
        for f, (train, val) in enumerate(pairs):
            t = time.perf_counter()
            m = run(["--data", data, "--ann", train, "--val-ann", val, "--val-data", data, "--cache-dir", cache,
                     "-j", "2", *flags, "--output", out / f"cv-{len(results)}-fold{f}"])
            seconds.append(time.perf_counter() - t)
            maps.append(m["cv"]["validation"]["mAP"] if m["recipe"] == "prior" else m["best"]["mAP"])
            if m["recipe"] == "sgd":
                ep = m["epochs"]
                results.setdefault(name, {})["epoch_s"] = statistics.median(e["train_seconds"] for e in ep[1:] or ep)
        results.setdefault(name, {}).update(fold_map=[round(x, 4) for x in maps],
                                            mean_map=round(statistics.mean(maps), 4),
                                            spread=round(statistics.pstdev(maps), 4),
                                            seconds_per_fold=round(statistics.mean(seconds), 1))
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(REPO / "var/bench/training"), help="work folder (default: var/bench/training)")
    p.add_argument("--data", default=str(REPO / "samples/coco_subset"),
                   help="image root (default: samples/coco_subset)")
    p.add_argument("--ann", default=None, help="annotation file (default: DATA/annotations.json)")
    p.add_argument("--folds", type=int, default=3, help="CV folds for the recipe comparison (default: 3)")
    p.add_argument("--finetune-epochs", type=int, default=4, help="fine-tuning epochs per fold (default: 4)")
    p.add_argument("--skip-cv", action="store_true", help="only the epoch-speed figure (default: off)")
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    data = Path(a.data)
    ann = Path(a.ann or data / "annotations.json")
    cache = out / "cache"
    speed = epoch_speed(out, data, ann, cache, epochs=6)
    results = {"epoch_speed": speed}
    if not a.skip_cv:
        results["recipes_cv"] = recipes_cv(out, data, ann, cache, a.folds, a.finetune_epochs)
    save_json(out / "results.json", results)
    print("\n== training benchmarks ==")
    print(f"epoch, full forward passes (frozen backbone): {speed['full_forward_epoch_s']:.3f} s")
    print(f"epoch on cached features (after the first):  {speed['cached_epoch_s']:.4f} s  -> "
          f"{speed['speedup']:.0f}x faster (goal >= 20x)")
    print(f"val mAP after 2 epochs: full forward {speed['val_map_full_forward_epoch2']:.4f}, cached "
          f"{speed['val_map_cached_epoch2']:.4f} (difference "
          f"{abs(speed['val_map_full_forward_epoch2'] - speed['val_map_cached_epoch2']) * 100:.2f} points, "
          "goal <= 0.5)")
    for name, r in results.get("recipes_cv", {}).items():
        extra = f", epoch {r['epoch_s']:.2f} s" if "epoch_s" in r else ""
        print(f"{a.folds}-fold CV mAP {r['mean_map']:.3f} ± {r['spread']:.3f} {r['fold_map']}  {name} "
              f"({r['seconds_per_fold']:.0f} s per fold{extra})")
    print(f"wrote {out / 'results.json'}")


if __name__ == "__main__":
    main()
