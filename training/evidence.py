"""Where a label's evidence comes from before anyone labels a photo with it: the COCO detector's score of the object
of the same name, ImageNet classes through a curated name table, or nothing (examples alone).

    evidence({"name": "puppy", "synonyms": ["dog"]})
    # {"source": "detector", "detector": "dog", "imagenet": {"n02085620": "Chihuahua", ...}}
    evidence({"name": "sky"})                   # {"source": "none", "detector": None, "imagenet": {}}
    suggestions()                               # every name with evidence, for the page's "add a label" field

A name or synonym matches a COCO object name exactly (case-insensitive), or a record names its object
(``detector_class``); ImageNet classes come from the record (``imagenet``: WordNet ids) or from
``imagenet_names.json`` by exact name: substring matching is wrong (it maps cup to porcupine and sky to husky), and a
label's classes are summed, not maxed. The default 34 labels keep their own table (``imagenet_prior.json``).
Torch-free: the gateway's annotation page calls it.
"""
from __future__ import annotations

import importlib.util
import json
from functools import cache
from pathlib import Path

from model.detector import coco_objects, object_of
from tagger import REPO
from tagger.labels import key

NAMES_FILE = Path(__file__).with_name("imagenet_names.json")
PRIOR_FILE = Path(__file__).with_name("imagenet_prior.json")
SOURCES = ("detector", "imagenet", "none")


@cache
def imagenet_names() -> dict[str, dict[str, str]]:
    """Curated name -> ``{wnid: class name}`` (``imagenet_names.json``), names lower case."""
    return {key(n): v for n, v in json.loads(NAMES_FILE.read_text())["names"].items()}


@cache
def default_prior() -> dict[str, dict[str, str]]:
    """The default labels' own ImageNet classes (``imagenet_prior.json``)."""
    return json.loads(PRIOR_FILE.read_text())["labels"]


@cache
def _objects() -> dict[str, str]:
    return {o["name"].lower(): o["name"] for o in coco_objects()}


def imagenet_classes(label: dict) -> dict[str, str]:
    """``{wnid: class name}`` that speak for ``label``: its record's, the default labels' table, else the curated
    names table for its name or a synonym (the first that has classes)."""
    if label.get("imagenet"):
        return {w: w for w in label["imagenet"]}
    if label["name"] in default_prior():
        return dict(default_prior()[label["name"]])
    for word in (label["name"], *label.get("synonyms", ())):
        found = imagenet_names().get(key(word))
        if found:
            return dict(found)
    return {}


def evidence(label: dict) -> dict:
    """``{"source", "detector", "imagenet"}``: the COCO object whose score speaks for ``label`` (or ``None``), its
    ImageNet classes (possibly none), and the strongest of the two as ``source`` (``none``: examples alone)."""
    detector = object_of(label, _objects())
    classes = imagenet_classes(label)
    return {"source": "detector" if detector else "imagenet" if classes else "none", "detector": detector,
            "imagenet": classes}


@cache
def suggestions() -> tuple[dict, ...]:
    """Every name that comes with evidence, sorted: ``{"name", "source"}`` (the 80 COCO objects, then the curated
    ImageNet names that are not also COCO objects)."""
    objects = [{"name": o["name"], "source": "detector"} for o in coco_objects()]
    taken = {key(o["name"]) for o in coco_objects()}
    names = [{"name": n, "source": "imagenet"} for n in json.loads(NAMES_FILE.read_text())["names"]
             if key(n) not in taken]
    return tuple(sorted(objects + names, key=lambda s: s["name"].lower()))


SAMPLES_EXT = REPO / "samples/coco_ext/annotations.json"  # the bundled photos over all 171 COCO categories


@cache
def _sample_categories() -> tuple[dict, dict]:
    data = json.loads(SAMPLES_EXT.read_text())
    positives: dict[int, int] = {}
    for ann in data["annotations"]:
        positives[ann["category_id"]] = positives.get(ann["category_id"], 0) + 1
    return {key(c["name"]): c["id"] for c in data["categories"]}, positives


def sample_positives(label: dict) -> int:
    """How many of the bundled photos show ``label`` (``samples/coco_ext``, matched by name or synonym): what a
    retrain on the samples learns it from besides the photos people label."""
    ids, positives = _sample_categories()
    for word in (label["name"], *label.get("synonyms", ())):
        if key(word) in ids:
            return positives.get(ids[key(word)], 0)
    return 0


@cache
def imagenet_wnids() -> frozenset[str]:
    """The 1000 ImageNet-1k WordNet ids (timm's class list, read as a file: no timm import)."""
    found = importlib.util.find_spec("timm")
    root = Path(list(found.submodule_search_locations)[0]) if found and found.submodule_search_locations else None
    if root is None:
        return frozenset()
    return frozenset((root / "data/_info/imagenet_synsets.txt").read_text().split())
