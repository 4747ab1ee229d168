"""deploy/kserve: the InferenceService and TorchServe config that KServe's kserve-torchserve runtime expects."""
import base64
import http.server
import io
import json
import threading

import pytest
import yaml

from gateway import create_app
from gateway.auth import needed_scope
from serving.stack import kserve_bundle
from tests.conftest import COCO, REPO, send_json
from tests.helpers import HandlerContext

KSERVE = REPO / "deploy/kserve"


def _properties(path):
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def test_bundle_layout_and_every_referenced_file_exists():
    bundle = kserve_bundle()
    isvc = yaml.safe_load((KSERVE / "inferenceservice.yaml").read_text())
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert isvc["kind"] == "InferenceService"
    model = isvc["spec"]["predictor"]["model"]
    assert model["modelFormat"]["name"] == "pytorch"
    assert model["runtime"] == "kserve-torchserve"
    assert model["protocolVersion"] == "v1"
    assert model["storageUri"].startswith("pvc://")
    assert {e["name"]: e["value"] for e in model["env"]}["TAGGER_JSON_OBJECTS"] == "1"
    props = _properties(bundle / "config/config.properties")
    assert props["service_envelope"] == "kserve"
    assert props["model_store"] == "/mnt/models/model-store"
    assert props["metrics_mode"] == "prometheus"
    snapshot = json.loads(props["model_snapshot"])
    assert list(snapshot["models"]) == ["tagger"]
    assert snapshot["modelCount"] == 1
    for entry in snapshot["models"]["tagger"].values():
        # /mnt/models/model-store in the pod is deploy/kserve/model-store here
        assert (bundle / "model-store" / entry["marName"]).is_file(), entry["marName"]
        assert entry["defaultVersion"] is True


def test_the_handler_answers_under_torchserves_kserve_envelope(tiny_model_dir, monkeypatch):
    """TorchServe's own KServe v1 envelope around the handler, as the runtime runs it (no server needed)."""
    from ts.torch_handler.request_envelope.kserve import KServeEnvelope

    from handler.tagger_handler import TaggerHandler

    monkeypatch.setenv("TAGGER_JSON_OBJECTS", "1")
    handler = TaggerHandler()
    ctx = HandlerContext(tiny_model_dir)
    handler.initialize(ctx)
    photo = (COCO / "images/000000000471.jpg").read_bytes()
    body = json.dumps({"instances": [{"data": base64.b64encode(photo).decode()}] * 2}).encode()
    out = KServeEnvelope(handler.handle).handle([{"body": body}], ctx)
    predictions = out[0]["predictions"]
    assert len(predictions) == 2
    assert predictions[0] == predictions[1]
    assert set(predictions[0]) == {"tags", "tag_policy", "policy_tags", "scores", "model_version"}


# ---------------------------------------------------------------------------------- the gateway in Kubernetes

def _manifests():
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all((KSERVE / "gateway.yaml").read_text())}


def test_gateway_manifests_replicas_on_one_claim_and_a_secret_database_url(tmp_path):
    """deploy/kserve/gateway.yaml on paper: a Deployment of N replicas, its Service, a ReadWriteMany claim for the
    photo folder and the database URL from a Secret; every setting it gives is one the gateway reads."""
    docs = _manifests()
    assert set(docs) == {("Secret", "tagger-database"), ("PersistentVolumeClaim", "tagger-photos"),
                         ("Deployment", "tagger-gateway"), ("Service", "tagger-gateway")}
    isvc = yaml.safe_load((KSERVE / "inferenceservice.yaml").read_text())
    namespace = isvc["metadata"]["namespace"]
    assert {d["metadata"]["namespace"] for d in docs.values()} == {namespace}
    claim = docs[("PersistentVolumeClaim", "tagger-photos")]["spec"]
    assert claim["accessModes"] == ["ReadWriteMany"]
    deployment = docs[("Deployment", "tagger-gateway")]["spec"]
    assert deployment["replicas"] >= 2
    assert deployment["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = deployment["template"]["spec"]
    assert deployment["selector"]["matchLabels"].items() <= deployment["template"]["metadata"]["labels"].items()
    container, = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    # the database URL (with its password) only from the Secret, under a key the Secret has
    ref = env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    secret = docs[("Secret", ref["name"])]
    assert ref["key"] in secret["stringData"]
    assert "value" not in env["DATABASE_URL"]
    assert secret["stringData"][ref["key"]].startswith("postgresql://")
    # the claim is mounted where the photo folder setting points
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    photos = next(n for n, v in volumes.items()
                  if v.get("persistentVolumeClaim", {}).get("claimName") == "tagger-photos")
    assert mounts[photos] == env["TAGGER_PHOTO_DIR"]["value"]
    assert env["TAGGER_DATA_DIR"]["value"] in mounts.values()
    assert env["GATEWAY_AUTH"]["value"] == "required"  # reachable from other pods: every request needs a token
    # the InferenceService's predictor, by its name and namespace, over KServe v1
    assert env["TAGGER_TS_PROTOCOL"]["value"] == "kserve-v1"
    assert env["TAGGER_TS_INFERENCE_URL"]["value"] == \
        f"http://{isvc['metadata']['name']}-predictor.{namespace}.svc.cluster.local"
    # every TAGGER_ setting names a config key the app has; the command is gunicorn with the repo's config
    app = create_app({"TESTING": True, "DATA_DIR": str(tmp_path)})
    for name in env:
        if name.startswith("TAGGER_"):
            assert name.removeprefix("TAGGER_") in app.config, name
    assert container["command"][:3] == ["gunicorn", "--config", "gateway/gunicorn.conf.py"]
    assert (REPO / container["command"][2]).is_file()
    assert container["command"][-1] == "gateway:create_app()"
    port = int(container["command"][container["command"].index("--bind") + 1].rsplit(":", 1)[1])
    assert container["ports"][0]["containerPort"] == port
    # probes on public routes the app has (no token needed by the kubelet)
    routes = {r.rule: r.endpoint for r in app.url_map.iter_rules()}
    for probe in ("readinessProbe", "livenessProbe"):
        path = container[probe]["httpGet"]["path"]
        assert path in routes
        assert needed_scope(routes[path], "GET") is None
        assert container[probe]["httpGet"]["port"] == container["ports"][0]["name"]
    service = docs[("Service", "tagger-gateway")]["spec"]
    assert service["selector"] == deployment["selector"]["matchLabels"]
    assert service["ports"][0]["targetPort"] == container["ports"][0]["name"]
    # the image: what the Dockerfile copies exists, and it runs what the manifest runs
    dockerfile = (KSERVE / "Dockerfile.gateway").read_text()
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            for src in line.split()[1:-1]:
                assert (REPO / src).exists(), src
    assert json.loads(dockerfile.split("CMD ", 1)[1]) == container["command"]
    assert f"USER {pod['securityContext']['runAsUser']}" in dockerfile


class _Predictor:
    """The tagger as a KServe v1 predictor on loopback: the real handler inside TorchServe's own KServe envelope,
    behind an HTTP server (what the kserve-torchserve runtime does in a pod)."""

    def __init__(self, model_dir, monkeypatch):
        from ts.torch_handler.request_envelope.kserve import KServeEnvelope

        from handler.tagger_handler import TaggerHandler

        monkeypatch.setenv("TAGGER_JSON_OBJECTS", "1")
        handler, ctx = TaggerHandler(), HandlerContext(model_dir)
        handler.initialize(ctx)
        envelope = KServeEnvelope(handler.handle)
        self.calls = []
        lock = threading.Lock()
        calls = self.calls

        class Http(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                calls.append(self.path)
                if self.path != "/v1/models/tagger:predict":
                    self.send_response(404)
                    self.end_headers()
                    return
                with lock:
                    out = envelope.handle([{"body": body}], ctx)
                send_json(self, 200, out[0])

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Http)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_the_gateway_tags_through_an_inference_service_over_kserve_v1(tiny_model_dir, monkeypatch, tmp_path):
    predictor = _Predictor(tiny_model_dir, monkeypatch)
    try:
        app = create_app({"TESTING": True, "DATA_DIR": str(tmp_path), "TS_PROTOCOL": "kserve-v1",
                          "TS_INFERENCE_URL": predictor.url, "MODEL_STORE": str(tmp_path / "no-model-store")})
        client = app.test_client()
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.json
        version = ready.json["model_version"]
        photo = (COCO / "images/000000000471.jpg").read_bytes()
        up = client.post("/imgup", data={"file": (io.BytesIO(photo), "bus.jpg"), "id_name": "bus"},
                         content_type="multipart/form-data")
        assert up.status_code == 200, up.json
        info = client.get("/imginfo?id_name=bus").json
        assert info["model_version"] == version
        assert set(info["scores"])
        assert isinstance(info["predict_tags"], list)
        assert predictor.calls
        assert set(predictor.calls) == {"/v1/models/tagger:predict"}
        # the same answer as the handler gives for these bytes directly
        direct = app.extensions["tagger"].predict(photo)
        assert direct["scores"] == pytest.approx(info["scores"], abs=1e-6)
        # deploys are the InferenceService's business here: the page says so instead of trying
        deploy = client.post("/annotate/api/jobs/deploy", json={"train_job": "x"})
        assert deploy.status_code == 409
        assert "InferenceService" in deploy.json["error"]
    finally:
        predictor.close()
    down = app.test_client().get("/readyz")
    assert down.status_code == 503
    assert "not reachable" in down.json["error"]


def test_an_unknown_ts_protocol_is_refused_at_start(tmp_path):
    with pytest.raises(ValueError, match="TS_PROTOCOL='grpc'"):
        create_app({"TESTING": True, "DATA_DIR": str(tmp_path), "TS_PROTOCOL": "grpc"})


def test_only_the_inference_services_own_pods_reach_torchserve():
    """deploy/kserve/networkpolicy.yaml on paper: it selects the InferenceService's pods by the label KServe sets, in
    its namespace; other pods may reach KServe's model server and the metrics, never a port TorchServe listens on
    for inference, management or gRPC (it runs without tokens there)."""
    isvc = yaml.safe_load((KSERVE / "inferenceservice.yaml").read_text())
    policy = yaml.safe_load((KSERVE / "networkpolicy.yaml").read_text())
    assert policy["kind"] == "NetworkPolicy"
    assert policy["metadata"]["namespace"] == isvc["metadata"]["namespace"]
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"] == {"serving.kserve.io/inferenceservice": isvc["metadata"]["name"]}
    assert spec["policyTypes"] == ["Ingress"]
    allowed = {p["port"] for rule in spec["ingress"] for p in rule["ports"]}
    config = dict(line.split("=", 1) for line in (KSERVE / "config/config.properties").read_text().splitlines()
                  if line and not line.startswith("#"))
    torchserve = {int(config[k].rsplit(":", 1)[1]) for k in ("inference_address", "management_address")} | \
        {int(config[k]) for k in ("grpc_inference_port", "grpc_management_port")}
    assert config["disable_token_authorization"] == "true"
    assert torchserve == {8085, 7070, 7071}
    assert not allowed & torchserve
    assert allowed == {8080, 8012, int(config["metrics_address"].rsplit(":", 1)[1])}
    gateway = _manifests()[("Deployment", "tagger-gateway")]["spec"]["template"]["metadata"]["labels"]
    assert any(peer.get("podSelector", {}).get("matchLabels", {}).items() <= gateway.items()
               and "podSelector" in peer for rule in spec["ingress"] for peer in rule["from"])
