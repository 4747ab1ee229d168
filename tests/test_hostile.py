"""The hostile-input corpus (tests/hostile.py) against the real gateway under gunicorn, as `make serve` starts it:
every case gets its JSON answer within a time bound, no file lands outside the store, memory stays bounded, and
every process stays alive and serves the next normal request."""
from __future__ import annotations

import os
import socket
import sqlite3
import time

import psutil
import pytest
import requests

from photo_store import PhotoStore
from serving.stack import Stack, gateway_pid, start_gateway, stop_gateway
from serving.torchserve import Ports, free_ports
from tests.helpers import wait_until
from tests.hostile import PHOTO, id_name_cases, image_cases

STATE = {}


def _children(pid: int) -> list[int]:
    return [c.pid for c in psutil.Process(pid).children()]


def _rss_mb(pids) -> float:
    return sum(psutil.Process(pid).memory_info().rss for pid in pids) / 2**20


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    p = free_ports(6)
    st = Stack(var_dir=root / "var", ports=Ports(*p[:5]), gateway_port=p[5], gateway_workers=2)
    with pytest.MonkeyPatch.context() as env:  # logs capped small, checked often: the corpus rotates them
        env.setenv("TAGGER_LOG_MAX_BYTES", "4096")
        env.setenv("TAGGER_LOG_CHECK_S", "0.5")
        start_gateway(st)
    master = gateway_pid(st)
    r = requests.post(f"{st.gateway_url}/imgup", files={"file": ("photo.jpg", PHOTO.read_bytes(), "image/jpeg")},
                      data={"id_name": "warm"}, timeout=30)
    assert r.status_code == 200
    STATE.update(root=root, master=master, workers=sorted(_children(master)), rss=_rss_mb([master, *_children(master)]),
                 stored={"warm"})
    try:
        yield st
    finally:
        stop_gateway(st)


def _normal_request_still_served(st):
    assert requests.get(f"{st.gateway_url}/healthz", timeout=5).json() == {"status": "ok"}


@pytest.mark.parametrize("case", sorted(image_cases()))
def test_hostile_image_gets_its_answer(gateway, case):
    data, expected = image_cases()[case]
    r = requests.post(f"{gateway.gateway_url}/imgup", files={"file": ("photo.jpg", data, "image/jpeg")},
                      data={"id_name": f"case-{case}"}, timeout=60)  # an answer, not a hang: bounded by its timeout
    assert r.status_code == expected, r.text
    assert r.headers["Content-Type"] == "application/json"
    if expected >= 400:
        assert r.json()["error"]
        assert "Traceback" not in r.text
    else:
        STATE["stored"].add(f"case-{case}")
    _normal_request_still_served(gateway)


@pytest.mark.parametrize("case", sorted(id_name_cases()))
def test_hostile_id_name_is_data_or_refused(gateway, case):
    id_name, expected = id_name_cases()[case]
    r = requests.post(f"{gateway.gateway_url}/imgup", files={"file": ("photo.jpg", PHOTO.read_bytes(), "image/jpeg")},
                      data={"id_name": id_name},
                      timeout=30)
    assert r.status_code == expected, r.text
    if expected == 200:
        STATE["stored"].add(id_name)
        got = requests.get(f"{gateway.gateway_url}/annotate/api/photo", params={"id_name": id_name}, timeout=10).json()
        assert got["id_name"] == id_name  # stored and found under exactly that name
    else:
        assert "id_name" in r.json()["error"]


def test_oversized_chunked_and_many_part_bodies_are_refused(gateway):
    url = f"{gateway.gateway_url}/imgup"
    big = b"\xff\xd8" + b"\x00" * (41 * 1024 * 1024)
    r = requests.post(url, data=big, headers={"Content-Type": "multipart/form-data; boundary=x"}, timeout=60)
    assert r.status_code == 413
    assert "limit" in r.json()["error"]

    def chunks():  # chunked, no Content-Length, past the limit
        for _ in range(45):
            yield b"x" * (1024 * 1024)
    r = requests.post(url, data=chunks(), headers={"Content-Type": "multipart/form-data; boundary=x"}, timeout=60)
    assert r.status_code == 413
    parts = b"".join(b"--b\r\nContent-Disposition: form-data; name=\"f%d\"\r\n\r\nv\r\n" % i for i in range(1001))
    r = requests.post(url, data=parts + b"--b--\r\n", headers={"Content-Type": "multipart/form-data; boundary=b"},
                      timeout=30)
    assert r.status_code == 400
    assert "parts" in r.json()["error"]
    _normal_request_still_served(gateway)


def test_a_client_sending_one_byte_a_second_gets_408_and_frees_its_thread(gateway):
    port = gateway.gateway_port
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    s.sendall(b"POST /imgup HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=b\r\n"
              b"Content-Length: 5000\r\n\r\n")
    t = time.monotonic()
    answer = b""
    s.settimeout(1.0)
    while time.monotonic() - t < 40:
        try:
            s.sendall(b"x")
        except OSError:
            break
        try:
            answer += s.recv(4096)
            if b"\r\n\r\n" in answer:
                break
        except socket.timeout:
            pass
    head, _, body = answer.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length")))
    s.settimeout(5)
    while len(body) < length:
        chunk = s.recv(4096)
        if not chunk:
            break
        body += chunk
    s.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"too slowly" in body
    _normal_request_still_served(gateway)


def _raw(port: int, head: bytes, body: bytes = b"", timeout: float = 30) -> tuple[bytes, bytes, bool]:
    """Send a request's head and part of its body, then read the answer: (status line and headers, body, whether the
    server closed the connection after it)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(head + b"\r\n" + body)
        answer = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                return *answer.partition(b"\r\n\r\n")[::2], True
            if not chunk:
                return *answer.partition(b"\r\n\r\n")[::2], True
            answer += chunk
            head_part, sep, rest = answer.partition(b"\r\n\r\n")
            length = [int(line.split(b":")[1]) for line in head_part.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")]
            if sep and length and len(rest) >= length[0]:
                break
        s.settimeout(10)  # the server must close: it does not wait for (or drain) the rest of the body
        try:
            closed = s.recv(1) == b""
        except ConnectionResetError:
            closed = True
        return head_part, rest, closed
    finally:
        s.close()


@pytest.mark.parametrize("request_head, status, words", [
    (b"POST /no-such-route HTTP/1.1\r\nHost: 127.0.0.1\r\n", b"404", b"not found"),
    (b"POST /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n", b"405", b"not allowed"),
    (b"DELETE /photos/warm HTTP/1.1\r\nHost: 127.0.0.1\r\n", b"413", b"takes no request body"),
    (b"POST /session HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n", b"413",
     b"small json or form body"),
    (b"POST /imgup HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Real-IP: 203.0.113.9\r\n", b"401", b"token"),
    (b"POST /imgup HTTP/1.1\r\nHost: evil.example:7777\r\n", b"421", b"host"),
])
def test_a_body_no_route_takes_is_never_read(gateway, request_head, status, words):
    """40 MB announced, 64 KB sent: the answer comes at once and the connection closes, with the rest never read
    (before, the gateway or gunicorn read the whole body first, so the client waited on itself)."""
    head, body, closed = _raw(gateway.gateway_port, request_head + b"Content-Length: 41943040\r\n",
                              b"x" * 65536)
    assert head.split(b" ")[1] == status, head
    assert words in body.lower(), body
    assert closed
    _normal_request_still_served(gateway)
    assert "warm" in {r["id_name"] for r in PhotoStore(gateway.var_dir).list(limit=100)}  # no DELETE happened


def test_the_gateways_logs_were_rotated_and_it_logs_on(gateway):
    """gunicorn's master renamed its access log past the cap and had its workers reopen it: the next request is in
    the new file, and at most TAGGER_LOG_KEEP old ones are kept."""
    log = gateway.gateway_dir / "access.log"

    def rotated():  # the corpus wrote most of it; a few more lines in case it ran on another worker
        requests.get(f"{gateway.gateway_url}/healthz", timeout=5)
        return log.with_name("access.log.1").exists()
    wait_until(rotated, what="access.log rotated", timeout=60, interval=0.2)
    rid = "rotated" + os.urandom(4).hex()

    def logged():
        requests.get(f"{gateway.gateway_url}/healthz", headers={"X-Request-ID": rid}, timeout=5)
        return rid in log.read_text()
    wait_until(logged, what="the next request in the reopened access.log", timeout=30, interval=0.5)
    assert len(list(gateway.gateway_dir.glob("access.log.*"))) <= 5


def test_afterwards_every_process_lives_memory_is_bounded_and_nothing_left_the_store(gateway):
    master = gateway_pid(gateway)
    assert master == STATE["master"]
    assert sorted(_children(master)) == STATE["workers"]  # none died, none replaced
    growth = _rss_mb([master, *_children(master)]) - STATE["rss"]
    assert growth < 300, f"gateway memory grew by {growth:.0f} MB over the corpus"
    root, var = STATE["root"], gateway.var_dir
    outside = [p for p in root.rglob("*") if p.is_file() and var not in p.parents]
    assert outside == []
    for p in var.rglob("*"):  # only the store's own files
        rel = p.relative_to(var).parts
        assert rel[0] in ("images", "thumbs", "run", "jobs", "cache") or rel[0].startswith("photos.db"), p

    store = PhotoStore(var)
    names = {r["id_name"] for r in store.list(limit=10_000)}
    assert names == STATE["stored"]
    for record in store.list(limit=10_000):  # every acknowledged upload is there, whole
        assert store.image_path(record).is_file()
        assert len(store.read_image(record)) == record["bytes"]
    assert not [p for p in var.rglob("*.tmp")]

    with sqlite3.connect(var / "photos.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert os.path.isdir(var / "images")
