"""The TorchServe client's retries, against a small real HTTP server on loopback that misbehaves on purpose."""
import http.server
import json
import os
import socket
import threading
import time

import pytest

from gateway.tagger_client import TaggerClient, TaggerError
from tests.conftest import send_json


@pytest.fixture
def server(tmp_path):
    plan = {"answers": []}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            status, body = plan["answers"].pop(0) if plan["answers"] else (200, {"tags": ["sea"], "scores": {},
                                                                                  "model_version": "1.0"})
            send_json(self, status, body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    keys = tmp_path / "key_file.json"
    keys.write_text(json.dumps({"inference": {"key": "k"}, "management": {"key": "m"}, "API": {"key": "a"}}))
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield plan, TaggerClient(url, url, keys, backoff=0.01)
    httpd.shutdown()
    httpd.server_close()


def test_503_is_retried_with_backoff_then_answers(server):
    plan, client = server
    plan["answers"] = [(503, {"message": "no worker"}), (503, {"message": "no worker"})]
    assert client.predict(b"x")["tags"] == ["sea"]
    assert plan["answers"] == []


def test_503_that_persists_is_a_503_with_retry_after(server):
    plan, client = server
    plan["answers"] = [(503, {"message": "no worker"})] * 3
    with pytest.raises(TaggerError) as e:
        client.predict(b"x")
    assert e.value.status == 503
    assert e.value.retry_after


def test_a_bad_image_is_not_retried(server):
    plan, client = server
    plan["answers"] = [(415, {"error": "not an image"}), (200, {"tags": [], "scores": {}, "model_version": "x"})]
    with pytest.raises(TaggerError) as e:
        client.predict(b"x")
    assert e.value.status == 415
    assert len(plan["answers"]) == 1


def test_connection_refused_is_retried_then_a_503(tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there
    keys = tmp_path / "k.json"
    keys.write_text(json.dumps({"inference": {"key": "k"}}))
    client = TaggerClient(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}", keys, backoff=0.01)
    with pytest.raises(TaggerError) as e:
        client.predict(b"x")
    assert e.value.status == 503
    assert "not reachable" in str(e.value)


def test_a_key_file_caught_half_rewritten_is_read_again(tmp_path):
    """Found by `make load`: TorchServe rewrites key_file.json in place when it renews a key, and a read in that
    instant got half a file (one 503 among 23,077 requests). The client reads again, or keeps the keys it has."""
    keys = tmp_path / "key_file.json"
    keys.write_text(json.dumps({"management": {"key": "m1"}, "inference": {"key": "i1"}, "API": {"key": "a1"}}))
    client = TaggerClient("http://127.0.0.1:9", "http://127.0.0.1:9", keys)
    assert client._key("inference") == "i1"
    keys.write_text('{"management": {"key": "m2"}, "infer')  # half written
    os.utime(keys, (time.time() + 5, time.time() + 5))

    def finish():
        time.sleep(0.1)
        keys.write_text(json.dumps({"management": {"key": "m2"}, "inference": {"key": "i2"}, "API": {"key": "a2"}}))
        os.utime(keys, (time.time() + 10, time.time() + 10))
    t = threading.Thread(target=finish)
    t.start()
    assert client._key("inference") == "i2"
    t.join()
    keys.write_text("{")  # stays broken: the keys read before are used (a rejected one gets renewed)
    os.utime(keys, (time.time() + 20, time.time() + 20))
    assert client._key("inference") == "i2"
    with pytest.raises(TaggerError, match="not readable"):
        TaggerClient("http://127.0.0.1:9", "http://127.0.0.1:9", keys)._key("inference")
