"""deploy/kserve: the InferenceService and TorchServe config that KServe's kserve-torchserve runtime expects."""
import base64
import json

import yaml

from tests.conftest import COCO, REPO

KSERVE = REPO / "deploy/kserve"


def _properties(path):
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def test_bundle_layout_and_every_referenced_file_exists():
    from serving.stack import kserve_bundle

    bundle = kserve_bundle()
    isvc = yaml.safe_load((KSERVE / "inferenceservice.yaml").read_text())
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1" and isvc["kind"] == "InferenceService"
    model = isvc["spec"]["predictor"]["model"]
    assert model["modelFormat"]["name"] == "pytorch" and model["runtime"] == "kserve-torchserve"
    assert model["protocolVersion"] == "v1" and model["storageUri"].startswith("pvc://")
    assert {e["name"]: e["value"] for e in model["env"]}["TAGGER_JSON_OBJECTS"] == "1"
    props = _properties(bundle / "config/config.properties")
    assert props["service_envelope"] == "kserve" and props["model_store"] == "/mnt/models/model-store"
    assert props["metrics_mode"] == "prometheus"
    snapshot = json.loads(props["model_snapshot"])
    assert list(snapshot["models"]) == ["tagger"] and snapshot["modelCount"] == 1
    for version, entry in snapshot["models"]["tagger"].items():
        # /mnt/models/model-store in the pod is deploy/kserve/model-store here
        assert (bundle / "model-store" / entry["marName"]).is_file(), entry["marName"]
        assert entry["defaultVersion"] is True


def test_the_handler_answers_under_torchserves_kserve_envelope(tiny_model_dir, monkeypatch):
    """TorchServe's own KServe v1 envelope around the handler, as the runtime runs it (no server needed)."""
    from ts.torch_handler.request_envelope.kserve import KServeEnvelope

    from handler.tagger_handler import TaggerHandler
    from tests.test_handler import Context

    monkeypatch.setenv("TAGGER_JSON_OBJECTS", "1")
    handler = TaggerHandler()
    ctx = Context(tiny_model_dir)
    handler.initialize(ctx)
    photo = (COCO / "images/000000000471.jpg").read_bytes()
    body = json.dumps({"instances": [{"data": base64.b64encode(photo).decode()}] * 2}).encode()
    out = KServeEnvelope(handler.handle).handle([{"body": body}], ctx)
    predictions = out[0]["predictions"]
    assert len(predictions) == 2 and predictions[0] == predictions[1]
    assert set(predictions[0]) == {"tags", "scores", "model_version"}
