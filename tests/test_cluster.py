"""The cluster for real: PostgreSQL, TorchServe, two gateway replicas on one store and nginx, started the way
`make serve-cluster` starts them (on free loopback ports, in a folder of their own), then stopped."""
from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from benchmarks.load import synthetic_jpeg
from serving.cluster import Cluster, cluster_status, serve_cluster, stop_cluster
from serving.stack import ensure_default_archive, gateway_pid
from serving.torchserve import Ports, free_ports
from tests.conftest import COCO, REPO
from tests.helpers import wait_until

pytestmark = pytest.mark.stack
PHOTO = (COCO / "images/000000000471.jpg").read_bytes()


@pytest.fixture(scope="module")
def cluster():
    ensure_default_archive()
    root = Path(tempfile.mkdtemp(prefix="tagger-cluster-"))
    root.chmod(0o711)  # PostgreSQL's and nginx's unprivileged users pass through it
    p = free_ports(9)
    c = Cluster(var_dir=root / "var", replicas=2, proxy_port=p[0], replica_ports=(p[1], p[2]), postgres_port=p[3],
                ports=Ports(*p[4:9]))
    try:
        serve_cluster(c)
        yield c
    finally:
        stop_cluster(c)
        shutil.rmtree(root, ignore_errors=True)


def cli(c: Cluster, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "serving", *args, "--var", str(c.var_dir)], cwd=REPO,
                          capture_output=True, text=True, timeout=300, **kwargs)


def test_status_lists_every_process_and_a_database_url_that_psql_takes_as_printed(cluster):
    out = cli(cluster, "status")
    assert out.returncode == 0, out.stdout + out.stderr
    for name in ("postgres", "torchserve", *(f"gateway-{p}" for p in cluster.replica_ports), "nginx"):
        assert any(line.startswith(name) and "running, pid" in line for line in out.stdout.splitlines()), name
    url = next(w for w in out.stdout.split() if w.startswith("postgresql://"))
    passfile = next(line.split("=", 1)[1] for line in out.stdout.splitlines() if line.startswith("PGPASSFILE="))
    assert ":" not in url.split("//", 1)[1].split("@")[0]  # no password in the URL
    assert (os.stat(passfile).st_mode & 0o777) == 0o600
    psql = subprocess.run(["psql", url, "-tAc", "SELECT count(*) FROM alembic_version"], capture_output=True,
                          text=True, env={**os.environ, "PGPASSFILE": passfile}, timeout=30)
    assert psql.returncode == 0, psql.stderr
    assert psql.stdout.strip() == "1", psql.stderr
    no_password = subprocess.run(["psql", url, "-w", "-tAc", "SELECT 1"], capture_output=True, text=True,
                                 env={k: v for k, v in os.environ.items() if k != "PGPASSFILE"}, timeout=30)
    assert no_password.returncode != 0  # the server asks for the password: it is not open to anyone local


def test_an_upload_through_nginx_is_one_record_that_every_replica_answers(cluster):
    r = requests.post(f"{cluster.url}/imgup", files={"file": ("p.jpg", PHOTO, "image/jpeg")},
                      data={"id_name": "through-nginx"}, timeout=60)
    assert r.status_code == 200, r.text
    answers = [requests.get(f"http://127.0.0.1:{p}/imginfo", params={"id_name": "through-nginx"}, timeout=60).json()
               for p in cluster.replica_ports]
    assert answers[0] == answers[1]
    assert answers[0]["predict_tags"]
    import psycopg

    with psycopg.connect(cluster.postgres.connect_url) as db:
        (file,) = db.execute("SELECT file FROM photos WHERE id_name = 'through-nginx'").fetchone()
    assert (cluster.var_dir / file).read_bytes() == PHOTO  # in the one photo folder, content-addressed


def test_a_sigkilled_replica_is_skipped_and_serve_cluster_again_brings_only_it_back(cluster):
    victim, survivor = cluster.stacks
    others = {name: pid for name, pid, _ in cluster_status(cluster) if name != victim.gateway_name}
    os.killpg(os.getpgid(gateway_pid(victim)), signal.SIGKILL)  # the whole replica: master and workers
    wait_until(lambda: gateway_pid(victim) is None, timeout=30, what="the killed replica to be gone")
    for i in range(8):  # every request is answered by the survivor, uploads included
        r = requests.post(f"{cluster.url}/imgup", files={"file": ("p.jpg", PHOTO, "image/jpeg")},
                          data={"id_name": f"while-down-{i}"}, timeout=60)
        assert r.status_code == 200, r.text
    out = cli(cluster, "serve-cluster")
    assert out.returncode == 0, out.stderr
    now = {name: pid for name, pid, _ in cluster_status(cluster)}
    assert now[victim.gateway_name]
    assert all(now[name] == pid for name, pid in others.items())
    assert requests.get(f"{victim.gateway_url}/imginfo", params={"id_name": "while-down-7"},
                        timeout=60).status_code == 200


def test_64_trickling_clients_hold_no_gateway_thread(cluster):
    """Clients that send a request byte by byte wait in nginx, which hands a replica only whole requests: the
    replicas' 16 threads stay free and a normal client is answered at once (without nginx, 64 of them would hold
    every thread until the gateway's own read timeout)."""
    socks = []
    try:
        for _ in range(64):
            s = socket.create_connection(("127.0.0.1", cluster.proxy_port), timeout=10)
            s.sendall(b"POST /imgup HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                      b"Content-Length: 100000\r\n\r\n--b")
            socks.append(s)
        for _ in range(3):
            for s in socks:
                s.sendall(b"x")  # a byte now and then: the body never completes
            with ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(lambda _: requests.get(f"{cluster.url}/imginfo",
                                                               params={"id_name": "through-nginx"}, timeout=10),
                                        range(16)))
            # not queued behind the trickling clients: each answered within its own 10 s timeout
            assert [a.status_code for a in answers] == [200] * 16
    finally:
        for s in socks:
            s.close()


def test_a_killed_replica_and_a_crash_restarted_database_lose_no_acknowledged_upload_or_label(cluster):
    """Chaos under 4 uploaders through nginx: SIGKILL one whole replica, then restart PostgreSQL itself with
    ``pg_ctl restart -m immediate``. Every answer meanwhile is a 200, or a 503 or nginx's 429 with Retry-After (never
    a 500); the gateway reconnects by itself; every acknowledged upload and label is there afterwards,
    byte-identical."""
    import psycopg

    acked, labelled, answers, stop = {}, {}, [], threading.Event()

    def uploader(u):
        i = 0
        with requests.Session() as s:
            while not stop.is_set():
                name, data = f"chaos-{u}-{i}", synthetic_jpeg(10_000 + u * 1000 + i)
                i += 1
                try:
                    r = s.post(f"{cluster.url}/imgup", files={"file": ("p.jpg", data, "image/jpeg")},
                               data={"id_name": name}, timeout=30)
                    answers.append((r.status_code, r.headers.get("Retry-After")))
                    if r.status_code == 429:  # nginx's per-client limit (fast 503s while the database is down
                        time.sleep(0.5)       # make 4 loops exceed it): a polite client slows down
                    if r.status_code != 200:
                        continue
                    acked[name] = hashlib.sha256(data).hexdigest()
                    r = s.put(f"{cluster.url}/annotate/api/photos/{name}/labels", json={"labels": ["sea"]},
                              timeout=30)
                    answers.append((r.status_code, r.headers.get("Retry-After")))
                    if r.status_code == 200:
                        labelled[name] = ["sea"]
                except requests.ConnectionError:
                    answers.append(("connection", None))  # only while nothing listens, which nginx never stops
                time.sleep(0.02)

    threads = [threading.Thread(target=uploader, args=(u,)) for u in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(2)
        victim = cluster.stacks[0]
        os.killpg(os.getpgid(gateway_pid(victim)), signal.SIGKILL)
        time.sleep(2)
        cluster.postgres.restart_immediate()
        time.sleep(3)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert acked
    assert labelled
    codes = {code for code, _ in answers}
    assert codes <= {200, 429, 503}, answers
    assert all(after for code, after in answers if code in (429, 503))  # every refusal says when to retry
    wait_until(lambda: requests.get(f"{cluster.url}/readyz", timeout=10).status_code == 200, interval=0.5,
               what="the surviving gateway to reconnect to PostgreSQL by itself")
    with psycopg.connect(cluster.postgres.connect_url) as db:
        rows = {name: (sha, file, labels) for name, sha, file, labels in
                db.execute("SELECT id_name, sha256, file, labels FROM photos WHERE id_name LIKE 'chaos-%'")}
    for name, sha in acked.items():
        assert rows[name][0] == sha
        assert hashlib.sha256((cluster.var_dir / rows[name][1]).read_bytes()).hexdigest() == sha
    for name in labelled:
        assert rows[name][2] == '["sea"]', name
    out = cli(cluster, "serve-cluster")  # the killed replica comes back for the tests after this one
    assert out.returncode == 0, out.stderr


def test_nginx_answers_its_own_refusals_as_json(cluster):
    """What nginx refuses itself (a body over its limit) is JSON like every gateway answer, never an HTML page."""
    s = socket.create_connection(("127.0.0.1", cluster.proxy_port), timeout=10)
    try:
        s.sendall(b"POST /imgup HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                  b"Content-Length: 99999999999\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    finally:
        s.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413")
    assert b"application/json" in head
    assert b'"error"' in body


def test_a_page_that_rebinds_its_name_to_the_cluster_gets_nothing_from_nginx(cluster):
    """DNS rebinding through the proxy: a request naming another host is answered 421 by nginx itself (JSON), so
    no replica reads, deletes or deploys anything for it; the loopback names still work."""
    url = f"http://127.0.0.1:{cluster.proxy_port}"
    evil = {"Host": f"evil.example:{cluster.proxy_port}", "Origin": f"http://evil.example:{cluster.proxy_port}"}
    for method, path in (("GET", "/photos"), ("DELETE", "/photos/anything"), ("GET", "/annotate/export.json")):
        r = requests.request(method, url + path, headers=evil, timeout=30)
        assert r.status_code == 421, (method, r.text)
        assert r.headers["Content-Type"].startswith("application/json"), (method, r.text)
        assert "host name" in r.json()["error"]
    assert requests.get(f"http://localhost:{cluster.proxy_port}/photos", timeout=30).status_code == 200


def lan_address() -> str | None:
    """This machine's address on its network (not loopback), if it has one: where other machines reach it."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # a UDP connect sends nothing: it only picks the route's source address
            address = s.getsockname()[0]
    except OSError:
        return None
    return None if address.startswith("127.") else address


def test_beyond_loopback_every_request_needs_a_token_and_a_revoked_one_is_refused_at_once_everywhere(cluster):
    """serve-cluster --listen beyond loopback: the replicas are started with GATEWAY_AUTH=required, so even a
    request from this machine needs a token; make token / make revoke reach the cluster's PostgreSQL, a revoked token
    is refused by the very next request on every replica, and no log of any process holds a token."""
    address = lan_address() or "0.0.0.0"
    wide = dataclasses.replace(cluster, proxy_host=address)
    assert all(s.gateway_auth == "required" for s in wide.stacks)
    assert not any(s.gateway_auth for s in cluster.stacks)
    before = [gateway_pid(s) for s in cluster.stacks]
    tokens = []
    try:
        serve_cluster(wide)  # on the running cluster: nginx reloaded, the replicas restarted asking for tokens
        assert all(gateway_pid(s) not in (None, *before) for s in wide.stacks)
        assert f"listen {address}:{cluster.proxy_port};" in wide.proxy.conf.read_text()
        proxy = f"http://{address}:{cluster.proxy_port}"
        replicas = [f"http://127.0.0.1:{p}" for p in cluster.replica_ports]
        assert requests.get(f"{proxy}/readyz", timeout=30).status_code == 200  # public: health checks
        for base in (proxy, *replicas):
            r = requests.get(f"{base}/photos", timeout=30)
            assert r.status_code == 401, base
            assert r.headers["WWW-Authenticate"].startswith("Bearer"), base
        made = cli(cluster, "token", "--name", "ops", "--scope", "write")
        reader = cli(cluster, "token", "--name", "dashboard", "--scope", "read")
        assert made.returncode == 0, made.stderr + reader.stderr
        assert reader.returncode == 0, made.stderr + reader.stderr
        write, read = made.stdout.split()[0], reader.stdout.split()[0]
        tokens += [write, read]
        up = requests.post(f"{proxy}/imgup", files={"file": ("p.jpg", PHOTO, "image/jpeg")},
                           data={"id_name": "beyond-loopback"}, headers={"Authorization": f"Bearer {write}"},
                           timeout=60)
        assert up.status_code == 200, up.text
        assert requests.post(f"{proxy}/imgup", files={"file": ("p.jpg", PHOTO, "image/jpeg")},
                             data={"id_name": "reader"}, headers={"Authorization": f"Bearer {read}"},
                             timeout=60).status_code == 403
        for base in (proxy, *replicas):
            for token in (write, read):
                r = requests.get(f"{base}/imginfo", params={"id_name": "beyond-loopback"},
                                 headers={"Authorization": f"Bearer {token}"}, timeout=60)
                assert r.status_code == 200, (base, r.text)
                assert r.json()["predict_tags"], (base, r.text)
        session = requests.Session()  # the page's sign-in, through the proxy, used on a replica behind it
        assert session.post(f"{proxy}/session", json={"token": read}, timeout=30).status_code == 200
        assert session.get(f"{proxy}/photos", timeout=30).status_code == 200
        revoked = cli(cluster, "revoke", "--name", "dashboard")
        assert revoked.returncode == 0
        assert "revoked" in revoked.stdout
        for base in (*replicas, proxy):  # no wait: the very next request on each
            r = requests.get(f"{base}/photos", headers={"Authorization": f"Bearer {read}"}, timeout=30)
            assert r.status_code == 401, base
            assert "revoked" in r.json()["error"], base
        assert session.get(f"{proxy}/photos", timeout=30).status_code == 401  # its session ended with it
        assert requests.get(f"{proxy}/photos", headers={"Authorization": f"Bearer {write}"},
                            timeout=30).status_code == 200
    finally:
        serve_cluster(cluster)  # as the other tests found it: loopback, no token asked
    assert requests.get(f"{cluster.url}/photos", timeout=30).status_code == 200
    logs = [p for p in cluster.var_dir.rglob("*.log") if p.is_file()]
    assert len(logs) >= 4  # nginx's, each replica's, TorchServe's, PostgreSQL's
    assert not [(p, t) for p in logs for t in tokens if t in p.read_text(errors="replace")]


def test_a_wrong_database_url_stops_serve_with_one_line(cluster, tmp_path):
    closed = free_ports(1)[0]
    out = subprocess.run([sys.executable, "-m", "serving", "serve", "--var", str(tmp_path / "var")], cwd=REPO,
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "DATABASE_URL": f"postgresql://tagger:secret@127.0.0.1:{closed}/tagger"})
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "cannot open the PostgreSQL store" in lines[0]
    assert "secret" not in lines[0]
    assert not (tmp_path / "var/run/torchserve/key_file.json").exists()  # nothing was started


def test_stop_leaves_no_process(cluster):
    pids = [pid for _, pid, _ in cluster_status(cluster)]
    assert all(pids)
    out = cli(cluster, "stop")
    assert out.returncode == 0
    assert "nginx" in out.stdout
    assert "postgres" in out.stdout
    time.sleep(0.5)
    alive = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                    alive.append(pid)
        except OSError:
            pass
    assert alive == []
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{cluster.url}/healthz", timeout=2)
