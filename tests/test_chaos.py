"""Faults injected into the real services: SIGKILL of TorchServe workers under load, SIGKILL of gateway workers
during uploads, over and over. Nothing acknowledged is lost, nothing half-written sits under a final name, the
database stays intact, and every process comes back by itself.

    make chaos      # CHAOS_KILLS=100, prints the figures (RELIABILITY.md); `make test` runs CHAOS_KILLS=10
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import resource
import signal
import sqlite3
import threading
import time

import pytest
import requests
from PIL import Image

from benchmarks.load import synthetic_jpeg
from photo_store import PhotoStore
from serving import torchserve
from serving.stack import Stack, ensure_default_archive, gateway_pid, serve, stop
from serving.torchserve import Ports, free_ports
from tests.helpers import children, wait_until

KILLS = int(os.environ.get("CHAOS_KILLS", "10"))
FIGURES = {}


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _jpeg(i: int) -> bytes:
    return synthetic_jpeg(i, (200, 150))


@contextlib.contextmanager
def clients(n: int, loop):
    """``n`` threads running ``loop(done)`` until the block ends."""
    done = threading.Event()
    threads = [threading.Thread(target=loop, args=(done,)) for _ in range(n)]
    for t in threads:
        t.start()
    try:
        yield
    finally:
        done.set()
        for t in threads:
            t.join(timeout=120)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    ensure_default_archive()
    p = free_ports(6)
    st = Stack(var_dir=tmp_path_factory.mktemp("var"), ports=Ports(*p[:5]), gateway_port=p[5], gateway_workers=2)
    try:
        serve(st)
        yield st
    finally:
        stop(st)
        if FIGURES:
            print(f"\nchaos figures: {json.dumps(FIGURES)}")


def test_sigkilled_torchserve_workers_give_503_with_retry_after_then_recover(stack):
    url, answers = stack.gateway_url, []
    counter = iter(range(10_000_000))
    lock = threading.Lock()

    def client(done):
        with requests.Session() as s:
            while not done.is_set():
                with lock:
                    i = next(counter)
                r = s.post(f"{url}/imgup", files={"file": ("p.jpg", _jpeg(100_000 + i), "image/jpeg")},
                           data={"id_name": f"ts-{i}"}, timeout=60)
                if r.status_code != 200:  # recorded, not asserted: an assert in a thread would go unseen
                    answers.append((time.monotonic(), r.status_code, r.headers.get("Retry-After")))
                    continue
                r = s.get(f"{url}/imginfo", params={"id_name": f"ts-{i}"}, timeout=60)
                answers.append((time.monotonic(), r.status_code, r.headers.get("Retry-After")))

    def recovered():
        """The time of the first of 20 answers in a row, all 200, after the last kill (None: not yet)."""
        after = [(t, c) for t, c, _ in list(answers) if t > kills[-1]]
        for i in range(len(after) - 19):
            if all(c == 200 for _, c in after[i:i + 20]):
                return after[i][0]
        return None

    kills = []
    with clients(8, client):
        wait_until(lambda: len(answers) >= 8, what="the first answers")
        frontend = torchserve.running_pid(stack.torchserve)
        for _ in range(3):
            workers = [p for p in children(frontend) if "model_service_worker" in _cmdline(p)]
            assert workers, "no TorchServe worker found"
            os.kill(workers[0], signal.SIGKILL)
            kills.append(time.monotonic())
            n = len(answers)
            wait_until(lambda: len(answers) > n + 8, timeout=120, what="answers after the kill")  # noqa: B023 - called within this iteration
        # recovered by itself: bounded, never a wall-clock goal (the time is a figure in RELIABILITY.md)
        back = wait_until(recovered, timeout=180, what="20 answers in a row of 200 after the last kill")
    codes = [c for _, c, _ in answers]
    assert set(codes) <= {200, 503}, sorted(set(codes))
    assert all(ra for _, c, ra in answers if c == 503)  # every 503 says when to come back
    FIGURES["torchserve_recovery_s_after_last_kill"] = round(back - kills[-1], 1)
    FIGURES["torchserve_worker_kills"] = len(kills)
    FIGURES["imginfo_answers"] = len(codes)
    FIGURES["imginfo_503_with_retry_after"] = codes.count(503)


def test_sigkilled_gateway_workers_lose_no_acknowledged_upload(stack):
    url, acked, errors = stack.gateway_url, {}, []
    counter = iter(range(10_000_000))
    lock = threading.Lock()

    def client(done):
        while not done.is_set():
            with lock:
                i = next(counter)
            data = _jpeg(i)
            try:  # a fresh connection each time: a killed worker takes its connections with it
                r = requests.post(f"{url}/imgup", files={"file": ("p.jpg", data, "image/jpeg")},
                                  data={"id_name": f"gw-{i}"}, timeout=60, headers={"Connection": "close"})
            except requests.RequestException as exc:
                errors.append(type(exc).__name__)
                continue
            if r.status_code == 200:
                acked[f"gw-{i}"] = hashlib.sha256(data).hexdigest()
            else:
                errors.append(r.status_code)

    master = gateway_pid(stack)
    killed = 0
    with clients(4, client):
        time.sleep(1)
        for _ in range(KILLS):
            workers = children(master)
            assert workers, "gunicorn has no worker"
            os.kill(workers[killed % len(workers)], signal.SIGKILL)
            killed += 1
            wait_until(lambda: len(children(master)) >= 2, timeout=60, what="gunicorn to replace the killed worker")
            time.sleep(0.15)  # pacing: uploads between the kills
    assert gateway_pid(stack) == master
    assert len(children(master)) == 2
    var = stack.var_dir
    with sqlite3.connect(var / "photos.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    store = PhotoStore(var)
    for id_name, sha in acked.items():  # every acknowledged upload is there, byte-identical
        record = store.get(id_name)
        assert record is not None
        assert record["sha256"] == sha
        assert hashlib.sha256(store.read_image(record)).hexdigest() == sha
    finals = [p for p in (var / "images").rglob("*") if p.is_file() and not p.name.startswith(".")]
    for p in finals:  # no truncated file under a final name, recorded or orphaned
        with Image.open(p) as im:
            im.load()
    assert len(acked) > KILLS  # uploads went on between the kills
    assert requests.get(f"{url}/healthz", timeout=5).status_code == 200
    FIGURES["gateway_worker_kills"] = killed
    FIGURES["uploads_acknowledged"] = len(acked)
    FIGURES["uploads_cut_by_a_kill"] = len(errors)
    FIGURES["files_under_final_names_checked"] = len(finals)


def test_every_listening_socket_of_the_stack_is_on_loopback(stack):
    """What the kernel says, not the configuration: every port of TorchServe (inference, management, metrics,
    gRPC) and of the gateway listens on 127.0.0.1 only."""
    ports = {stack.gateway_port, *dataclasses.astuple(stack.ports)}
    loopback = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}
    seen = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                addr, port = local.split(":")
                if state == "0A" and int(port, 16) in ports:  # LISTEN
                    seen.setdefault(int(port, 16), set()).add(addr)
    assert set(seen) == ports, f"not listening: {ports - set(seen)}"
    for port, addrs in seen.items():
        assert addrs <= loopback, f"port {port} listens on {addrs}"


def test_a_full_disk_gives_507_json_and_keeps_what_was_acknowledged(stack):
    """The gateway's workers get a 64 KB file-size limit (RLIMIT_FSIZE, as a nearly full disk gives): a new photo
    cannot be written, the upload answers 507 with a JSON message, the workers live on, and once there is room
    again the next upload is stored. Every photo acknowledged before is intact."""
    url = stack.gateway_url
    before = _jpeg(7_000_000)
    assert requests.post(f"{url}/imgup", files={"file": ("a.jpg", before, "image/jpeg")}, data={"id_name": "before"},
                         timeout=60).status_code == 200

    big = io.BytesIO()
    Image.effect_noise((400, 300), 64).convert("RGB").save(big, "JPEG", quality=95)  # noise: > 64 KB
    workers = children(gateway_pid(stack))
    limit = 64 * 1024
    hard = {pid: resource.prlimit(pid, resource.RLIMIT_FSIZE)[1] for pid in workers}
    for pid in workers:  # the soft limit only: raising it back needs no privilege
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, hard[pid]))
    try:
        answers = [requests.post(f"{url}/imgup", files={"file": ("b.jpg", big.getvalue(), "image/jpeg")},
                                 data={"id_name": "while-full"}, timeout=60) for _ in range(4)]  # both workers
        assert {r.status_code for r in answers} == {507}, [r.text for r in answers]
        assert all("full" in r.json()["error"] for r in answers)
    finally:
        for pid in workers:
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (hard[pid], hard[pid]))
    assert children(gateway_pid(stack)) == workers  # no worker died
    r = requests.post(f"{url}/imgup", files={"file": ("b.jpg", big.getvalue(), "image/jpeg")},
                      data={"id_name": "while-full"}, timeout=60)
    assert r.status_code == 200
    info = requests.get(f"{url}/annotate/api/photo", params={"id_name": "before"}, timeout=10).json()
    assert info["sha256"] == hashlib.sha256(before).hexdigest()
    with sqlite3.connect(stack.var_dir / "photos.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    FIGURES["full_disk_uploads_answered_507"] = len(answers)
