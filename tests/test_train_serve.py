"""What the training tool writes, archived with `make archive`, is served by the real TorchServe."""
import json

import pytest
import requests
import torch

from serving import torchserve
from serving.torchserve import Ports, TorchServeRun, free_ports
from tagger.image import decode_image
from tagger.ts_keys import read_keys
from tests.conftest import COCO
from training.cli import cli

pytestmark = pytest.mark.stack  # starts real TorchServe (make test-fast leaves it out)


def test_a_trained_checkpoint_archives_and_torchserve_serves_it(tmp_path):
    out = tmp_path / "run"
    assert cli(["--data", str(COCO), "--output", str(out), "--epochs", "3", "-j", "0",
                "--cache-dir", str(tmp_path / "cache")]) == 0
    from training.archive import build_archive

    store = tmp_path / "store"
    build_archive(out / "best.pt", store / "tagger-2.0.mar", version="2.0")
    run = TorchServeRun(var_dir=tmp_path / "var", ports=Ports(*free_ports(5)), model_store=store)
    try:
        torchserve.start(run, "tagger-2.0.mar", threads_per_worker=1)
        torchserve.wait_ready(run)
        photo = (COCO / "images/000000000471.jpg").read_bytes()
        key = read_keys(run.key_file)["inference"]
        r = requests.post(f"{run.inference_url}/predictions/tagger", data=photo, timeout=60,
                          headers={"Authorization": f"Bearer {key}", "Content-Type": "application/octet-stream"})
        assert r.status_code == 200, r.text
        answer = r.json()
    finally:
        torchserve.stop(run)
    assert answer["model_version"] == "2.0"
    # the same scores as the checkpoint in-process (classifier and detector), and tags exactly the labels at or
    # above their thresholds
    from handler.core import with_detector
    from tagger.presets import eval_transform
    from training.checkpoint import load_for_inference
    from training.detections import model_detector

    model, meta, _ = load_for_inference(out / "best.pt")
    assert meta["detector"] is not None  # the SGD recipe fuses the detector in too
    image = decode_image(photo, min_side=meta["preprocessing"]["resize"])
    with torch.no_grad():
        logits = model(eval_transform(meta["preprocessing"])(image)[None])
        probs = with_detector(logits, [image], model_detector(meta), meta).sigmoid()[0]
    names = [lab["name"] for lab in meta["labels"]]
    for j, name in enumerate(names):
        assert abs(answer["scores"][name] - float(probs[j])) < 2e-3, name
    expected = {n for j, n in enumerate(names)
                if meta["thresholds"][j] is not None and answer["scores"][n] >= meta["thresholds"][j]}
    assert set(answer["tags"]) == expected
    assert answer["tag_policy"] == meta["tag_policy"] == "precise"
    assert set(answer["policy_tags"]) == {"precise", "balanced", "complete"}  # the SGD recipe's policies too
    assert json.loads((out / "metrics.json").read_text())["best_epoch"] >= 1
