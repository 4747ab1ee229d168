"""End to end: the real TorchServe and gateway started on loopback the way `make serve` does, then stopped.

Uses its own ports and data directory, so it runs beside a `make serve` stack. Inference keys expire after
6 seconds here, so the gateway's key renewal is exercised against the real TorchServe. The data directory is
deeper than a Unix socket path may be long, as a user's can be.
"""
import base64
import dataclasses
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import requests
from PIL import Image

from serving import torchserve
from serving.leftovers import leftovers, marked
from serving.stack import (
    Stack,
    ensure_default_archive,
    gateway_pid,
    model_workers,
    serve,
    start_gateway,
    stop,
    stop_gateway,
)
from serving.torchserve import SOCKET_NAME, SOCKET_PATH_MAX, Ports, free_ports
from tagger.image import DEFAULT_MAX_BYTES, decode_image
from tagger.ts_keys import key_rejected, read_keys, renew_key
from tests.conftest import COCO, EXIF, REPO
from tests.helpers import alive, phone_jpeg, wait_until

KEY_MINUTES = 0.1
PIDS = []  # TorchServe frontend, gunicorn master


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    ensure_default_archive()
    p = free_ports(6)
    deep = tmp_path_factory.mktemp("var") / "a-photo-library-folder-whose-path-is-longer-than-a-unix-socket-may-be"
    st = Stack(var_dir=deep, ports=Ports(*p[:5]), gateway_port=p[5], gateway_workers=1,
               ts_overrides=(("token_expiration_min", str(KEY_MINUTES)),))
    try:
        serve(st)
        PIDS[:] = [torchserve.running_pid(st.torchserve), gateway_pid(st)]
        yield st
    finally:
        stop(st)


def ts_post(stack, **kwargs):
    """A direct TorchServe prediction; keys expire every 6 s here, so a rejected one is renewed with the API key."""
    headers = kwargs.pop("headers", {})
    for _ in range(2):
        key = read_keys(stack.torchserve.key_file)["inference"]
        r = requests.post(f"{stack.torchserve.inference_url}/predictions/tagger", timeout=60,
                          headers={**headers, "Authorization": f"Bearer {key}"}, **kwargs)
        if not key_rejected(r):
            return r
        renew_key(stack.torchserve.management_url, read_keys(stack.torchserve.key_file)["API"], "inference")
    return r


def test_bind_addresses_are_loopback(stack):
    config = (stack.torchserve.run_dir / "config.properties").read_text()
    for key in ("inference_address", "management_address", "metrics_address"):
        assert f"{key}=http://127.0.0.1:" in config
    assert "grpc_inference_address=127.0.0.1" in config
    assert "grpc_management_address=127.0.0.1" in config
    assert stack.torchserve.key_file.is_file()  # token authorization is on
    r = requests.post(f"{stack.torchserve.inference_url}/predictions/tagger", data=b"x", timeout=10)
    assert r.status_code in (400, 401)  # no key, no answer


def test_torchserve_accepts_raw_multipart_and_base64_json_and_survives_bad_bodies(stack):
    def post(**kwargs):
        return ts_post(stack, **kwargs)

    octet = {"Content-Type": "application/octet-stream"}
    photo = (COCO / "images/000000000471.jpg").read_bytes()
    raw = post(data=photo, headers=octet)
    multipart = post(files={"data": ("bus.jpg", photo, "image/jpeg")})
    as_json = post(json={"data": base64.b64encode(photo).decode()})
    assert (raw.status_code, multipart.status_code, as_json.status_code) == (200, 200, 200)
    assert raw.json() == multipart.json() == as_json.json()
    assert "bus" in raw.json()["tags"]
    assert "\n" not in raw.text  # serialised by the handler, not re-encoded with indent=2
    png = io.BytesIO()
    Image.open(io.BytesIO(photo)).save(png, "PNG")
    r = post(data=png.getvalue(), headers=octet)
    assert r.status_code == 200
    assert set(r.json()["scores"]) == set(raw.json()["scores"])
    gif = io.BytesIO()
    Image.open(io.BytesIO(photo)).convert("RGB").save(gif, "GIF")
    r = post(data=gif.getvalue(), headers=octet)
    assert r.status_code == 415
    assert "JPEG, PNG" in r.json()["error"]  # the one list of formats, here too
    workers = torchserve.worker_states(stack.torchserve)
    for body, status in ((photo[: len(photo) // 3], 400), (os.urandom(4096), 415), (b"", 400)):
        r = post(data=body, headers=octet)
        assert r.status_code == status, (status, r.text)
    r = post(json={"data": "not base64!"})
    assert r.status_code == 400
    assert "base64" in r.text
    assert torchserve.worker_states(stack.torchserve) == workers  # no worker died
    assert post(data=photo, headers=octet).json() == raw.json()
    json.loads(raw.text)


def test_prometheus_metrics_on_loopback_name_the_model(stack):
    r = requests.get(f"{stack.torchserve.metrics_url}/metrics", timeout=10)
    assert r.status_code == 200
    for name in ("ts_inference_requests_total", "ts_inference_latency_microseconds", "ts_queue_latency_microseconds",
                 "HandlerTime", "PredictionTime", "Requests2XX", "QueueTime", "WorkerThreadTime"):
        assert name in r.text, name
    assert 'model_name="tagger"' in r.text


def test_a_chunked_body_without_length_over_the_limit_is_a_413_json(stack):
    boundary = "xyzzy"

    def body():
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"id_name\"\r\n\r\nbig\r\n--{boundary}\r\n"
               'Content-Disposition: form-data; name="file"; filename="big.jpg"\r\n\r\n').encode()
        chunk = b"\xff" * (1 << 20)
        for _ in range(DEFAULT_MAX_BYTES // len(chunk) + 3):
            yield chunk
        yield f"\r\n--{boundary}--\r\n".encode()

    r = requests.post(f"{stack.gateway_url}/imgup", data=body(), timeout=120,
                      headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 413
    assert "error" in r.json()
    assert requests.get(f"{stack.gateway_url}/healthz", timeout=10).status_code == 200


def test_readyz_and_request_ids_through_gunicorn(stack):
    r = requests.get(f"{stack.gateway_url}/readyz", headers={"X-Request-ID": "e2e-1"}, timeout=30)
    assert r.status_code == 200
    assert r.json()["status"] == "ready"
    assert r.headers["X-Request-ID"] == "e2e-1"
    time.sleep(0.5)
    assert "rid=e2e-1" in (stack.gateway_dir / "access.log").read_text()


def test_upload_and_info_for_real(stack):
    url = stack.gateway_url
    with open(EXIF / "DSCN0010.jpg", "rb") as f:
        assert requests.post(f"{url}/imgup", files={"file": f}, data={"id_name": "tuscany"}, timeout=30).ok
    with open(COCO / "images/000000000471.jpg", "rb") as f:
        assert requests.post(f"{url}/imgup", files={"file": f}, data={"id_name": "bus"}, timeout=30).ok
    info = requests.get(f"{url}/imginfo", params={"id_name": "tuscany"}, timeout=60).json()
    assert info["data_information"] == "2008:10:22 16:28:39"
    assert info["GPS_information"]["GPSLatitude"] == pytest.approx(43.4674483, abs=1e-6)
    assert info["GPS_information"]["GPSLongitude"] == pytest.approx(11.8851267, abs=1e-6)
    bus = requests.get(f"{url}/imginfo", params={"id_name": "bus"}, timeout=60).json()
    assert "bus" in bus["predict_tags"]
    assert "person" in bus["predict_tags"]
    assert bus["model_version"] == "1.0"
    assert len(bus["scores"]) == 34
    assert all(bus["scores"][t] > 0 for t in bus["predict_tags"])


def test_a_12_megapixel_photo_is_decoded_once_and_tagged_as_torchserve_tags_it(stack):
    """The gateway decodes a photo the model reduces (12 MP) once and sends TorchServe those pixels: the answer
    is the one TorchServe gives for the photo's own bytes."""

    data = phone_jpeg("000000000471.jpg")
    url = stack.gateway_url
    up = requests.post(f"{url}/imgup", files={"file": ("big.jpg", data)}, data={"id_name": "big"}, timeout=60)
    assert up.status_code == 200, up.text
    info = requests.get(f"{url}/imginfo", params={"id_name": "big"}, timeout=60).json()
    direct = ts_post(stack, data=data, headers={"Content-Type": "application/octet-stream"}).json()
    assert info["predict_tags"] == direct["tags"]
    assert info["model_version"] == direct["model_version"]
    assert info["scores"] == pytest.approx(direct["scores"], abs=2e-4)
    assert info["image"]["width"] == 4000
    assert info["image"]["height"] == 3000


def test_workers_serve_onnx_runtime_and_agree_with_the_eager_model(stack):
    """The archive's workers run its own ONNX graph in ONNX Runtime (handler.core.load_for_serving: the network is
    not built) and the detector, and answer what PyTorch and the detector do in this process."""
    import torch

    from handler.core import postprocess, with_detector
    from tagger.presets import eval_transform
    from training.checkpoint import load_for_inference
    from training.detections import model_detector

    log = (stack.torchserve.run_dir / "logs/model_log.log").read_text()
    assert log.count("onnxruntime (1 thread, the archive's graph), detector ssd_mobilenet_v2_coco_2018_03_29") \
        >= model_workers()
    data = (COCO / "images/000000000471.jpg").read_bytes()
    served = ts_post(stack, data=data, headers={"Content-Type": "application/octet-stream"}).json()
    model, meta, _ = load_for_inference(REPO / "checkpoints/default/best.pt")
    image = decode_image(data, min_side=meta["preprocessing"]["resize"])
    x = eval_transform(meta["preprocessing"])(image)[None]
    with torch.inference_mode():
        eager = postprocess(with_detector(model(x), [image], model_detector(meta), meta), meta)[0]
    assert served["tags"] == eager["tags"]
    assert max(abs(served["scores"][k] - eager["scores"][k]) for k in eager["scores"]) <= 2e-4  # 4 decimals


def test_bad_input_is_a_json_4xx_through_the_real_stack(stack):
    r = requests.post(f"{stack.gateway_url}/imgup", files={"file": ("a.jpg", b"not an image")},
                      data={"id_name": "junk"}, timeout=30)
    assert r.status_code == 415
    assert "error" in r.json()
    r = ts_post(stack, data=b"junk", headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 415


def test_gateway_renews_an_expired_inference_key(stack):
    first = torchserve.read_keys(stack.torchserve.key_file)
    time.sleep(KEY_MINUTES * 60 + 1)
    # a photo not seen before, so the gateway must ask TorchServe (a cached answer would need no key)
    with open(COCO / "images/000000000382.jpg", "rb") as f:
        assert requests.post(f"{stack.gateway_url}/imgup", files={"file": f}, data={"id_name": "alp"},
                             timeout=30).ok
    r = requests.get(f"{stack.gateway_url}/imginfo", params={"id_name": "alp"}, timeout=60)
    assert r.status_code == 200
    assert r.json()["model_version"] == "1.0"
    assert torchserve.read_keys(stack.torchserve.key_file)["inference"] != first["inference"]


def test_upload_while_torchserve_is_down_is_served_once_it_is_back(stack):
    """The real TorchServe stopped: uploads are still stored, /imginfo says 503 with Retry-After; started again,
    the same /imginfo answers 200 by itself."""
    url = stack.gateway_url
    torchserve.stop(stack.torchserve)
    photo = (COCO / "images/000000000009.jpg").read_bytes()
    r = requests.post(f"{url}/imgup", files={"file": ("p.jpg", photo)}, data={"id_name": "while-down"}, timeout=60)
    assert r.status_code == 200
    assert r.json()["status"] == "stored"
    r = requests.get(f"{url}/imginfo", params={"id_name": "while-down"}, timeout=60)
    assert r.status_code == 503
    assert int(r.headers["Retry-After"]) > 0
    assert "error" in r.json()
    assert requests.get(f"{url}/readyz", timeout=30).status_code == 503
    torchserve.start(stack.torchserve, "tagger.mar", threads_per_worker=1, env=marked({}, stack.var_dir))
    torchserve.wait_ready(stack.torchserve)
    PIDS[0] = torchserve.running_pid(stack.torchserve)
    r = requests.get(f"{url}/imginfo", params={"id_name": "while-down"}, timeout=60)
    assert r.status_code == 200
    assert r.json()["model_version"] == "1.0"
    assert requests.get(f"{url}/readyz", timeout=30).status_code == 200


def test_a_data_folder_deeper_than_a_socket_path_serves_from_a_short_private_folder(stack):
    run = stack.torchserve
    assert len(f"{run.run_dir}/tmp{SOCKET_NAME}") > SOCKET_PATH_MAX  # TorchServe's workers could not bind there
    assert run.tmp_dir.parent == Path("/tmp")
    assert (run.tmp_dir.stat().st_mode & 0o777) == 0o700
    assert list(run.tmp_dir.glob(".ts.sock.*"))  # the workers' sockets, bound
    assert requests.get(f"{stack.gateway_url}/readyz", timeout=10).status_code == 200


def test_a_gateway_whose_killed_master_is_still_a_zombie_starts_again(stack):
    """A SIGKILLed gunicorn master stays a zombie until init reaps it; its pid file then names a PID that still
    "exists", and gunicorn would refuse to start ("Already running"). Starting the gateway again must work."""
    again = dataclasses.replace(stack, gateway_port=free_ports(1)[0], gateway_name="gateway-after-a-kill")
    zombie = os.fork()
    if zombie == 0:
        os._exit(0)
    try:
        time.sleep(0.2)
        again.gateway_dir.mkdir(parents=True, exist_ok=True)
        (again.gateway_dir / "gunicorn.pid").write_text(f"{zombie}\n")
        assert gateway_pid(again) is None  # a zombie counts as gone
        assert start_gateway(again, timeout=15) != zombie
        assert requests.get(f"{again.gateway_url}/healthz", timeout=5).status_code == 200
    finally:
        stop_gateway(again)
        os.waitpid(zombie, 0)


def test_serve_twice_starts_no_second_copy_and_make_stop_leaves_nothing_even_after_kills(stack):
    serve(stack)
    assert [torchserve.running_pid(stack.torchserve), gateway_pid(stack)] == PIDS
    group = subprocess.run(["pgrep", "-g", str(os.getpgid(PIDS[0]))], capture_output=True, text=True, check=True)
    assert len(group.stdout.split()) >= 2  # the frontend and its model workers
    with open(EXIF / "DSCN0010.jpg", "rb") as f:  # the gateway's workers now hold EXIF parser processes
        assert requests.post(f"{stack.gateway_url}/imgup", files={"file": f}, data={"id_name": "last"}, timeout=60).ok
    started = {p.pid for p in leftovers(stack.var_dir)}  # all the stack started carries its mark
    assert set(PIDS) | {int(p) for p in group.stdout.split()} <= started
    assert any("tagger.exif" in " ".join(psutil.Process(p).cmdline()) for p in started if alive(p))
    for pid in PIDS:  # the OOM killer takes TorchServe's frontend and gunicorn's master: their children live on
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not any(alive(p) for p in PIDS), what="the killed parents to go")
    done = subprocess.run([sys.executable, "-m", "serving", "stop", "--var", str(stack.var_dir)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert not leftovers(stack.var_dir), done.stdout
    assert not [p for p in started if alive(p)], done.stdout
    assert not stack.torchserve.tmp_dir.exists() or not list(stack.torchserve.tmp_dir.glob(".ts.sock.*"))
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{stack.gateway_url}/healthz", timeout=2)


def test_a_stale_pid_file_naming_another_process_stops_nothing(tmp_path):
    """A pid file left by a killed gunicorn may name a PID the system has since given to another process (this
    test's own, here): that process is no gateway, and stopping the stack signals neither it nor its group."""
    stack = Stack(var_dir=tmp_path / "var")
    stack.gateway_dir.mkdir(parents=True)
    (stack.gateway_dir / "gunicorn.pid").write_text(f"{os.getpid()}\n")
    assert gateway_pid(stack) is None
    stop_gateway(stack)  # would have SIGTERMed this process and SIGKILLed its group
    assert alive(os.getpid())
