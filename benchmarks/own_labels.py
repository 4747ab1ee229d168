"""Labels people add, measured (issue 25, ``make bench``): how well a new label ranks photos it was never trained on
after 0, 5, 10 and 20 labelled examples, for labels the detector speaks for, labels ImageNet classes speak for, and
labels nothing speaks for; and the time from "retrain" on the page to the new model serving, with one label added.

    python -m benchmarks.own_labels [--skip-retrain]     # prints the tables, writes var/bench/own_labels.json

Ground truth: ``samples/coco_ext`` (the 544 bundled photos over all 171 COCO categories). Labels, each with at least
10 positives: the COCO objects beyond the default 34 (detector evidence); those of them whose name the curated
ImageNet table knows, and "table", scored without the detector (ImageNet evidence); and labels a person would add
for what no class speaks for, COCO-Stuff's classes under their everyday names (sky = sky-other + clouds, wall = the
seven wall-* classes, floor, ceiling, window, door, curtain, fence, shelf, counter, light, clothes: no evidence).
Protocol: 5 folds over the photos; in the other
folds a person labelled photos in a random order (seeded) until k of them showed the label, the negatives met on
the way included (k = 0: nothing); the label's head is fitted as the default recipe fits it
(``training.head.fit_head``: the frozen backbone's
features, the ImageNet prior pooled by positives) and the held-out fold is scored; AP over every held-out photo
whose truth is known, the folds' scores pooled. Goals: detector evidence >= 0.80 mean AP with 0 examples; no evidence
>= 0.45 at 10 examples; retrain + deploy with one added label <= 3 minutes.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import requests
import torch

from model.detector import coco_objects, detector_spec, label_scores
from model.network import build_model
from serving.stack import Stack, serve, stop
from serving.torchserve import Ports, free_ports
from tagger import REPO
from tagger.labels import key, label_names, words_of
from tagger.layout import DataDir
from tagger.meta import save_json
from tagger.presets import default_preprocessing
from training.datasets import LabelledImages
from training.detections import cached_detections
from training.engine import set_preset
from training.evidence import evidence
from training.features import cached_features
from training.folds import fold_indices
from training.head import fit_head, set_prior_structure
from training.metrics import average_precision

EXT = REPO / "samples/coco_ext/annotations.json"
SHOTS = (0, 5, 10, 20)
MIN_POSITIVES = 10


# What no class speaks for, as a person would name it: COCO-Stuff's classes under everyday names (their synonyms).
NO_EVIDENCE = {"sky": ["sky-other", "clouds"], "floor": ["floor-marble", "floor-other", "floor-stone", "floor-tile",
                                                         "floor-wood"],
               "wall": ["wall-brick", "wall-concrete", "wall-other", "wall-panel", "wall-stone", "wall-tile",
                        "wall-wood"], "ceiling": ["ceiling-other", "ceiling-tile"],
               "window": ["window-blind", "window-other"], "door": ["door-stuff"], "curtain": [], "fence": [],
               "shelf": [], "counter": [], "light": [], "clothes": []}


def candidate_labels() -> dict[str, list[dict]]:
    """The labels measured, by where their evidence comes from (see the module docstring)."""
    data = json.loads(EXT.read_text())
    positives: dict[int, int] = {}
    for a in data["annotations"]:
        positives[a["category_id"]] = positives.get(a["category_id"], 0) + 1
    default = {key(n) for n in label_names()}
    objects = {key(o["name"]) for o in coco_objects()}
    groups = {"detector": [], "imagenet": [], "none": [{"name": n, **({"synonyms": s} if s else {})}
                                                        for n, s in NO_EVIDENCE.items()]}
    for c in data["categories"]:
        if key(c["name"]) in default or positives.get(c["id"], 0) < MIN_POSITIVES:
            continue
        ev = evidence({"name": c["name"]})
        if key(c["name"]) in objects:
            groups["detector"].append({"name": c["name"]})
            if ev["imagenet"]:  # scored as if the detector did not know it
                groups["imagenet"].append({"name": c["name"], "as": "imagenet"})
        elif ev["imagenet"]:
            groups["imagenet"].append({"name": c["name"]})
    return groups


def known_subset(targets, known, rows, k: int, generator) -> torch.Tensor:
    """The entries a person labelled among ``rows``, per label: the photos, in a random order, up to the one that
    made k positives (with every negative met on the way, as a person labelling photos one after another meets
    them); k = 0: none."""
    out = torch.zeros_like(known)
    if k == 0:
        return out
    for j in range(targets.shape[1]):
        order = rows[known[rows, j]][torch.randperm(int(known[rows, j].sum()), generator=generator)]
        hits = torch.cumsum((targets[order, j] > 0).long(), 0)
        stop = int(torch.searchsorted(hits, k)) + 1 if int(hits[-1]) >= k else len(order)
        out[order[:stop], j] = True
    return out


def measure(cache_dir: Path, seed: int = 0) -> dict:
    groups = candidate_labels()
    labels = list({lab["name"]: lab for g in groups.values() for lab in g}.values())
    labels = [{k: v for k, v in lab.items() if k != "as"} for lab in labels]
    names = label_names(labels)
    ds, _ = LabelledImages.from_coco([(REPO / "samples", EXT)], names, words=words_of(labels))
    pre = {**default_preprocessing("efficientnet_lite0"), "squash": True}
    set_preset(ds, pre)
    net = build_model("efficientnet_lite0", len(names), pretrained=True, imagenet_prior=True).eval()
    set_prior_structure(net.prior, labels)
    features, _ = cached_features(net, ds, pre, cache_dir)
    spec = detector_spec(labels)
    raw, _ = cached_detections(spec, ds, cache_dir)
    detector = torch.from_numpy(label_scores(raw.numpy(), list(spec["classes"]), names, spec["label_objects"]))
    targets, known = ds.targets()
    known = known.bool()
    g = torch.Generator().manual_seed(seed)
    scores = {k: torch.zeros_like(targets) for k in SHOTS}
    shots = {k: [] for k in SHOTS}
    for train, test in fold_indices(len(ds), 5, seed):
        for k in SHOTS:
            labelled = known_subset(targets, known, train, k, g)
            shots[k].append(float(((targets > 0) & labelled).sum(0).float().mean()))
            fit_head(net, features[train], targets[train], labelled[train])
            with torch.no_grad():
                scores[k][test] = net.logits_from_features(features[test])
    out = {"labels": {g: [lab["name"] for lab in members] for g, members in groups.items()}, "photos": len(ds),
           "mean_positives_given": {k: statistics.mean(v) for k, v in shots.items()}}
    for group, members in groups.items():
        cols = [names.index(lab["name"]) for lab in members]
        row = {}
        for k in SHOTS:
            source = detector if group == "detector" else scores[k]
            aps = [average_precision(source[known[:, j], j], targets[known[:, j], j]) for j in cols]
            row[k] = round(statistics.mean(a for a in aps if a == a), 4)
        out[group] = row
    out["per_label_detector_0"] = {n: round(average_precision(detector[known[:, names.index(n)], names.index(n)],
                                                              targets[known[:, names.index(n)], names.index(n)]), 3)
                                   for n in out["labels"]["detector"]}
    return out


def retrain_and_deploy(tmp: Path) -> dict:
    """Seconds from "retrain" (one label added, three photos labelled with it, the bundled photos too) to the new
    version answering, on a real TorchServe and gateway like `make serve`'s."""
    p = free_ports(6)
    stack = Stack(var_dir=tmp / "var", ports=Ports(*p[:5]), gateway_port=p[5], model_store=tmp / "store",
                  cache_dir=DataDir(REPO / "var").cache)
    (tmp / "store").mkdir(parents=True, exist_ok=True)
    (tmp / "store/tagger.mar").write_bytes((REPO / "model_store/tagger.mar").read_bytes())
    serve(stack)
    url = stack.gateway_url
    try:
        assert requests.post(f"{url}/annotate/api/labels", json={"name": "dog"}, timeout=30).status_code == 201
        for i, photo in enumerate(("000000000307.jpg", "000000000074.jpg", "000000000471.jpg")):
            data = (REPO / "samples/coco_subset/images" / photo).read_bytes()
            requests.post(f"{url}/imgup", files={"file": (photo, data)}, data={"id_name": photo}, timeout=60)
            requests.put(f"{url}/annotate/api/photos/{photo}/labels", json={"labels": ["dog"] if i < 2 else []},
                         timeout=30).raise_for_status()
        before = requests.get(f"{url}/readyz", timeout=30).json()["model_version"]
        t0 = time.monotonic()
        job = requests.post(f"{url}/annotate/api/jobs/train", json={"recipe": "prior", "samples": True},
                            timeout=30).json()["job"]
        train_s = wait_job(url, job["id"]) - t0
        deploy = requests.post(f"{url}/annotate/api/jobs/deploy", json={"train_job": job["id"]}, timeout=30).json()
        wait_job(url, deploy["job"]["id"])
        while requests.get(f"{url}/readyz", timeout=30).json().get("model_version") == before:
            time.sleep(0.5)
        total = time.monotonic() - t0
    finally:
        stop(stack)
    return {"train_s": round(train_s, 1), "total_s": round(total, 1)}


def wait_job(url: str, job_id: str, limit: float = 900) -> float:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        job = requests.get(f"{url}/annotate/api/jobs/{job_id}", timeout=30).json()
        if job["state"] == "succeeded":
            return time.monotonic()
        if job["state"] == "failed":
            raise RuntimeError(f"job {job_id} failed: {job.get('error')}")
        time.sleep(0.5)
    raise RuntimeError(f"job {job_id} did not finish in {limit:.0f} s")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--skip-retrain", action="store_true", help="only the AP table (default: also the retrain time)")
    p.add_argument("--out", type=Path, default=DataDir(REPO / "var").root / "bench/own_labels.json")
    args = p.parse_args(argv)
    result = measure(DataDir(REPO / "var").cache)
    print("\n== labels people add: mean AP on held-out photos after k labelled examples (issue 25) ==")
    print("| evidence | labels | " + " | ".join(f"k={k}" for k in SHOTS) + " |")
    print("|---|---|" + "---|" * len(SHOTS))
    for group in ("detector", "imagenet", "none"):
        print(f"| {group} | {len(result['labels'][group])} | " + " | ".join(f"{result[group][k]:.3f}" for k in SHOTS)
              + " |")
    print("positives given, mean per label: " + ", ".join(f"k={k}: {v:.1f}" for k, v in
                                                           result["mean_positives_given"].items()))
    print(f"goals: detector evidence >= 0.80 at k=0 ({result['detector'][0]:.3f}); no evidence >= 0.45 at k=10 "
          f"({result['none'][10]:.3f})")
    if not args.skip_retrain:
        tmp = DataDir(REPO / "var").root / "bench/own_labels"
        result["retrain"] = retrain_and_deploy(tmp)
        print(f"retrain + deploy with one added label: {result['retrain']['total_s']:.0f} s (training "
              f"{result['retrain']['train_s']:.0f} s; goal <= 180 s)")
    save_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
