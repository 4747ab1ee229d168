"""Labels beyond the 34 in the training tool: a COCO object's name is tagged by the first model trained after it is
added, with no example (the detector's score is its evidence); a label nothing speaks for and no photo shows is
scored, never tagged; the labels file carries synonyms, and the model what it needs to serve them."""
import json

import pytest
import torch

from handler.core import postprocess, with_detector
from tagger.image import decode_image
from tagger.labels import load_labels
from tagger.presets import eval_transform
from tests.conftest import REPO
from training.checkpoint import load_for_inference
from training.cli import cli
from training.detections import model_detector

pytestmark = pytest.mark.slow
DOGS = ["coco_subset/images/000000000307.jpg", "coco_subset/images/000000000074.jpg"]  # coco_ext: a dog in each
BUS = "coco_subset/images/000000000471.jpg"  # no dog


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """The default recipe on the bundled photos' 34-label files (no file knows dog, Mia or sky), with three labels
    added: dog (a COCO object), Mia (nothing speaks for it), sky (COCO-Stuff's names as synonyms)."""
    out = tmp_path_factory.mktemp("own")
    labels = out / "labels.json"
    labels.write_text(json.dumps({"labels": load_labels() + [
        {"name": "dog", "synonyms": ["puppy"]}, {"name": "Mia"},
        {"name": "sky", "synonyms": ["sky-other", "clouds"]}]}))
    assert cli(["--recipe", "prior", "--labels", str(labels), "--output", str(out / "ckpt"),
                "--cache-dir", str(REPO / "var/cache"), "--repeats", "1"]) == 0
    return load_for_inference(out / "ckpt/best.pt")[:2]


def test_a_coco_objects_name_is_tagged_with_no_example(model):
    net, meta = model
    names = [lab["name"] for lab in meta["labels"]]
    dog, mia, sky = names.index("dog"), names.index("Mia"), names.index("sky")
    assert meta["labels"][dog]["synonyms"] == ["puppy"]
    assert meta["detector"]["label_objects"]["dog"] == "dog"
    assert meta["metrics"]["positives"]["dog"] == 0  # no annotation file knows it
    policies = meta["policies"]
    assert policies["precise"]["source"][dog] == "pooled-detector"
    assert policies["precise"]["thresholds"][dog]
    for j in (mia, sky):  # nothing speaks for them and no photo shows them: scored, never a tag
        assert policies["precise"]["source"][j] == "too-few-positives"
        assert all(policies[p]["thresholds"][j] is None for p in policies)
    transform = eval_transform(meta["preprocessing"])
    detector = model_detector(meta)
    for photo in DOGS + [BUS]:
        image = decode_image((REPO / "samples" / photo).read_bytes(), min_side=meta["preprocessing"]["resize"])
        with torch.no_grad():
            logits = with_detector(net(transform(image)[None]), [image], detector, meta)
        answer = postprocess(logits, meta)[0]
        assert ("dog" in answer["tags"]) == (photo in DOGS), (photo, answer["scores"]["dog"])
        assert "Mia" not in answer["tags"]
        assert "Mia" in answer["scores"]
