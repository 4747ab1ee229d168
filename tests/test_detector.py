"""The COCO detector behind the thing labels: its scores, its file checks, the fusion, and the handler with it."""
import io
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from model import detector_graph
from model.detector import (
    GRAPH_FILE,
    DetectorError,
    detect,
    detector_spec,
    digest,
    graph_files,
    label_scores,
    load_detector,
    load_minival_ids,
    seen_by_detector,
    tiles_of,
)
from model.detector_graph import build_graph
from model.detector_onnx import convert
from model.fusion import detector_logits, fuse, identity_fusion
from tests.conftest import COCO
from tests.helpers import HandlerContext
from training.detections import calibration_photos
from training.fusion_cv import fit_fusion

BUS = COCO / "images/000000000471.jpg"  # a bus in a street, people beside it


@pytest.fixture(scope="module")
def spec(labels):
    return detector_spec(labels)


@pytest.fixture(scope="module")
def graph(spec, tmp_path_factory):
    """The detector graph as training and archives build it (int8 heads), in a cache folder of its own."""
    return build_graph(spec, tmp_path_factory.mktemp("cache"), calibration_photos())


@pytest.fixture(scope="module")
def detector(spec, graph):
    return load_detector({**spec, "onnx_sha256": digest(graph, "sha256")}, graph, threads=1)


@pytest.fixture(scope="module")
def fp32_detector(spec, tmp_path_factory):
    path = tmp_path_factory.mktemp("fp32") / "detector.onnx"
    path.write_bytes(convert(graph_files(spec).read_bytes(), list(spec["classes"].values())))
    return load_detector(spec, path, threads=1)


def _full_graph_best(spec, image) -> dict:
    """The unmodified network's best box per class, as OpenCV's TensorFlow reader runs it (its own DetectionOutput,
    confidence >= 0.01)."""
    import cv2

    pb = graph_files(spec)
    net = cv2.dnn.readNetFromTensorflow(str(pb), str(pb.with_name("ssd_mobilenet_v2_coco_2018_03_29.pbtxt")))
    best = {}
    net.setInput(cv2.dnn.blobFromImage(np.asarray(image), 1.0, (300, 300), (0, 0, 0), False, False))
    rows = net.forward().reshape(-1, 7)
    rows = rows[rows[:, 2] > 0]  # (the output is padded with empty rows)
    for _, cls, conf in rows[:, :3]:
        best[int(cls)] = max(best.get(int(cls), 0.0), float(conf))
    # below the 0.01 confidence floor, or under the 100 best boxes it keeps (keep_top_k)
    return best, 0.0101 if len(rows) < 100 else float(rows[:, 2].min()) + 1e-6


def test_the_converted_graph_scores_as_the_full_network_read_by_opencv(spec, fp32_detector, detector):
    """The graph converted without TensorFlow (feature extractor and class predictors of all 80 objects, no boxes,
    no NMS) gives every object the confidence of the full network's best box of it, within 1e-3; with its heads in
    int8, within 0.04."""
    photos = [BUS] + sorted((COCO / "images").glob("*.jpg"))[:5]
    for path in photos:
        image = Image.open(path).convert("RGB")
        full, floor = _full_graph_best(spec, image)
        ours, int8 = detect(fp32_detector, [image])[0], detect(detector, [image])[0]
        assert np.abs(int8 - ours).max() < 0.04, path.name
        for name, score in zip(fp32_detector.names, ours):
            cls = spec["classes"][name]
            if cls in full:
                assert score == pytest.approx(full[cls], abs=1e-3), (path.name, name)
            else:  # a box the full network drops: under its confidence floor or its top 100
                assert score < floor + 1e-3, (path.name, name)
    bus = dict(zip(detector.names, detect(detector, [Image.open(BUS).convert("RGB")])[0]))
    assert bus["bus"] > 0.9
    assert bus["person"] > 0.3
    assert bus["boat"] < 0.05
    assert len(bus) == 80


def test_the_graph_is_built_once_and_the_same_every_time(spec, graph, tmp_path):
    again = build_graph(spec, tmp_path, calibration_photos())
    assert again.name == graph.name
    assert digest(again, "sha256") == digest(graph, "sha256")
    assert build_graph(spec, graph.parent, calibration_photos()) == graph  # found in the cache


def test_a_batch_scores_each_photo_as_alone_and_tiles_only_add(detector):
    images = [Image.open(p).convert("RGB") for p in sorted((COCO / "images").glob("*.jpg"))[:3]]
    alone = np.stack([detect(detector, [im])[0] for im in images])
    assert np.allclose(detect(detector, images), alone, atol=1e-5)
    tiled = detect(detector, images, tiles=True)
    assert (tiled >= alone - 1e-6).all()
    assert tiled.shape == alone.shape
    assert tiles_of(100, 50) == [(0, 0, 62, 31), (38, 0, 100, 31), (0, 19, 62, 50), (38, 19, 100, 50)]


def test_a_photo_with_nothing_in_it_scores_low_everywhere(detector):
    gray = Image.new("RGB", (320, 240), (128, 128, 128))
    assert detect(detector, [gray]).max() < 0.05
    assert detect(detector, []).shape == (0, len(detector.names))


def test_a_missing_or_altered_detector_file_is_refused_with_what_to_do(spec, graph, tmp_path, monkeypatch):
    with pytest.raises(DetectorError, match="altered.*rebuild it"):
        load_detector({**spec, "onnx_sha256": "0" * 64}, graph)
    altered = tmp_path / "frozen_inference_graph.pb"
    data = bytearray(graph_files(spec).read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: still the right size
    altered.write_bytes(bytes(data))
    monkeypatch.setattr(detector_graph, "graph_files", lambda spec: altered)
    with pytest.raises(DetectorError, match=f"altered.*expected {spec['graph_sha1']}.*make setup"):
        build_graph(spec, tmp_path / "cache", calibration_photos())
    monkeypatch.setattr(detector_graph, "graph_files", lambda spec: tmp_path / "gone.pb")
    with pytest.raises(DetectorError, match="detector file missing.*make setup.*--detector none"):
        build_graph(spec, tmp_path / "cache", calibration_photos())


def test_labels_take_their_objects_by_name_synonym_or_record(labels, spec):
    names = [lab["name"] for lab in labels]
    assert len(spec["classes"]) == 80
    assert spec["classes"]["dog"] == 18
    assert spec["classes"]["toothbrush"] == 90
    assert spec["label_objects"] == {n: n for n in ("boat", "fire hydrant", "person", "motorcycle", "stop sign",
                                                    "bicycle", "bench", "traffic light", "bus", "parking meter",
                                                    "train", "truck", "car")}
    scores = label_scores(np.full((1, 80), 0.5, dtype=np.float32), list(spec["classes"]), names,
                          spec["label_objects"])
    assert np.isnan(scores[0, names.index("sea")])
    assert scores[0, names.index("car")] == 0.5
    added = [{"name": "Puppy", "synonyms": ["DOG"]}, {"name": "mug", "detector_class": "cup"},
             {"name": "sky"}, {"name": "tv", "synonyms": []}]
    assert detector_spec(added)["label_objects"] == {"Puppy": "dog", "mug": "cup", "tv": "tv"}
    with pytest.raises(ValueError, match="choose one of"):
        detector_spec(labels, "yolo")


def test_which_photos_the_detector_saw():
    minival = load_minival_ids(COCO.parent / "mscoco_minival_ids.txt")
    assert len(minival) == 8059
    assert 25096 in minival
    assert seen_by_detector({"id": 9, "coco_split": "train2017"}, minival)
    assert not seen_by_detector({"id": 25096, "coco_split": "val2017"}, minival)  # minival: never seen
    assert not seen_by_detector({"id": 9, "file_name": "mine.jpg"}, minival)  # a user's photo


def test_fusion_is_identity_without_a_detector_class_and_fits_shared_weights():
    torch.manual_seed(0)
    n = 400
    det = torch.rand(n, 3)
    det[:, 0] = float("nan")  # label 0: no detector class
    targets = (torch.rand(n, 3) < 0.3).float()
    # labels 1-2: the detector knows the truth well, the classifier a little
    det[:, 1:] = torch.where(targets[:, 1:].bool(), 0.6 + 0.4 * torch.rand(n, 2), 0.5 * torch.rand(n, 2))
    logits = torch.randn(n, 3) + 0.5 * (2 * targets - 1)
    known = torch.ones(n, 3, dtype=torch.bool)
    fusion, source = fit_fusion(logits, det, targets, known)
    assert source == ["none", "fused", "fused"]
    assert (fusion["a"][0], fusion["b"][0], fusion["c"][0]) == (1.0, 0.0, 0.0)
    assert fusion["b"][1] > 2 * fusion["a"][1] > 0  # the detector weighs more
    z = fuse(logits, det, fusion)
    assert torch.equal(z[:, 0], logits[:, 0])
    assert torch.equal(fuse(logits, det, identity_fusion(3)), logits)
    only, _ = fit_fusion(logits, det, targets, known, detector_only=True)
    assert only["a"][1:] == [0.0, 0.0]
    assert only["b"][1:] == [1.0, 1.0]
    assert torch.isfinite(detector_logits(torch.tensor([0.0, 1.0, float("nan")]))).all()


def test_a_label_the_classifier_ranks_better_is_left_to_it():
    torch.manual_seed(1)
    n = 300
    targets = (torch.rand(n, 2) < 0.4).float()
    logits = torch.randn(n, 2)
    logits[:, 1] += 2 * (2 * targets[:, 1] - 1)  # label 1: the classifier is good, label 0: noise
    det = torch.rand(n, 2)  # label 1: the detector is noise
    det[:, 0] = torch.where(targets[:, 0].bool(), 0.9, 0.1)  # label 0: the detector is right
    fusion, source = fit_fusion(logits, det, targets, torch.ones(n, 2, dtype=torch.bool))
    assert source == ["fused", "classifier"]
    assert (fusion["a"][1], fusion["b"][1]) == (1.0, 0.0)


@pytest.fixture(scope="module")
def detector_model_dir(tmp_path_factory, tiny_model_dir, labels, graph):
    """The tiny model of conftest with the detector and a fusion: detector score only for the thing labels."""
    d = tmp_path_factory.mktemp("detector_model")
    shutil.copy(tiny_model_dir / "model.pt", d / "model.pt")
    shutil.copy(graph, d / GRAPH_FILE)
    meta = json.loads((tiny_model_dir / "meta.json").read_text())
    spec = detector_spec(labels)
    fusion = {"a": [0.0 if lab["name"] in spec["label_objects"] else 1.0 for lab in labels],
              "b": [1.0 if lab["name"] in spec["label_objects"] else 0.0 for lab in labels], "c": [0.0] * len(labels)}
    meta["detector"] = {**spec, "fusion": fusion, "onnx_sha256": digest(graph, "sha256")}
    meta["preprocessing"]["resize"] = 256  # photos decoded as the default model's are: the detector sees 256 px
    (d / "meta.json").write_text(json.dumps(meta))
    return d


def test_the_handler_answers_the_detectors_objects_and_fails_only_a_bad_image(detector_model_dir):
    from handler.tagger_handler import TaggerHandler

    handler = TaggerHandler()
    ctx = HandlerContext(detector_model_dir)
    handler.initialize(ctx)
    assert handler.detector is not None
    gray = io.BytesIO()
    Image.new("RGB", (320, 240), (128, 128, 128)).save(gray, "PNG")
    out = [json.loads(r) for r in handler.handle([{"body": BUS.read_bytes()}, {"body": b"junk"},
                                                  {"body": gray.getvalue()}], ctx)]
    assert ctx.statuses == {1: (415, out[1]["error"])}
    assert "bus" in out[0]["tags"]
    assert out[0]["scores"]["bus"] > 0.9
    assert out[0]["scores"]["person"] > 0.3
    things = {"bus", "car", "person", "truck", "boat", "train"}
    assert not things & set(out[2]["tags"])
    assert max(out[2]["scores"][t] for t in things) < 0.05


def test_a_model_whose_detector_was_altered_does_not_load(detector_model_dir, tmp_path):
    from handler.tagger_handler import TaggerHandler

    d = tmp_path / "model"
    shutil.copytree(detector_model_dir, d)
    meta = json.loads((d / "meta.json").read_text())
    meta["detector"]["onnx_sha256"] = "0" * 64  # the model expects another graph than the one its archive carries
    (d / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DetectorError, match="altered"):
        TaggerHandler().initialize(HandlerContext(d))
