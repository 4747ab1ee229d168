"""The cluster against the single machine, side by side in one command (``make bench``):

    .venv/bin/python -m benchmarks.cluster [--seconds 30] [--clients 8]

1. Baseline: ``make serve``'s shape, one gunicorn (2 workers x 4 threads) on SQLite, clients straight at it.
2. ``make serve-cluster``'s shape: 2 replicas (each 2 x 4) on PostgreSQL, behind nginx.
3. The same replicas restarted as ``LISTEN`` beyond loopback starts them: a token asked of every request.

Each runs its own TorchServe, data folder and ports. Load: ``--clients`` threads, each uploading a new photo and
reading its ``/imginfo`` (the prediction) in a loop for ``--seconds``; then the cached ``/imginfo`` p50 of 300
lookups of stored photos. Prints one JSON line per setup and the ratios.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

from benchmarks.load import synthetic_jpeg
from serving.cluster import Cluster, serve_cluster, stop_cluster
from serving.stack import Stack, ensure_default_archive, serve, stop
from serving.tokens import open_setup_store
from serving.torchserve import Ports, free_ports

REPO = Path(__file__).resolve().parent.parent


def load(url: str, seconds: float, clients: int, offset: int) -> dict:
    done, failed, lock, stop = [], [], threading.Lock(), threading.Event()

    def client(c):
        i = 0
        with requests.Session() as s:
            while not stop.is_set():
                name, t = f"bench-{offset + c * 100_000 + i}", time.perf_counter()
                i += 1
                r = s.post(f"{url}/imgup", files={"file": ("p.jpg", synthetic_jpeg(offset + c * 100_000 + i),
                                                           "image/jpeg")}, data={"id_name": name}, timeout=60)
                ok = r.status_code == 200
                if ok:
                    r = s.get(f"{url}/imginfo", params={"id_name": name}, timeout=60)
                    ok = r.status_code == 200
                with lock:
                    (done if ok else failed).append((name, time.perf_counter() - t))

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    names = [n for n, _ in done]
    return {"pairs_per_s": round(len(done) / wall, 2), "failed": len(failed),
            "p50_pair_ms": round(statistics.median(d for _, d in done) * 1000, 1),
            "cached_imginfo_p50_ms": cached_p50(url, names), "names": names}


def cached_p50(url: str, names: list[str], headers: dict | None = None, n: int = 300) -> float:
    """The median of ``n`` lookups of stored (and predicted) photos, in ms."""
    cached = []
    with requests.Session() as s:
        s.headers.update(headers or {})
        for k in range(n):
            t = time.perf_counter()
            assert s.get(f"{url}/imginfo", params={"id_name": names[k % len(names)]}, timeout=30).status_code == 200
            cached.append((time.perf_counter() - t) * 1000)
    return round(statistics.median(cached), 2)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--clients", type=int, default=8)
    args = p.parse_args(argv)
    ensure_default_archive()
    root = Path(tempfile.mkdtemp(prefix="tagger-bench-cluster-"))
    root.chmod(0o711)  # PostgreSQL's and nginx's users pass through
    results = {}
    try:
        ports = free_ports(6)
        single = Stack(var_dir=root / "single", ports=Ports(*ports[:5]), gateway_port=ports[5], database_url="")
        serve(single)
        try:
            results["1 gunicorn, SQLite"] = load(single.gateway_url, args.seconds, args.clients, 0)
        finally:
            stop(single)
        ports = free_ports(9)
        cluster = Cluster(var_dir=root / "cluster", replicas=2, proxy_port=ports[0], replica_ports=tuple(ports[1:3]),
                          postgres_port=ports[3], ports=Ports(*ports[4:9]))
        serve_cluster(cluster)
        try:
            results["2 replicas, PostgreSQL, nginx"] = load(cluster.url, args.seconds, args.clients, 10_000_000)
            # the same replicas asking every request for a token (what LISTEN beyond loopback sets): the price of
            # looking the token up in PostgreSQL on each request, measured on the same photos right after
            wide = dataclasses.replace(cluster, proxy_host="0.0.0.0")
            serve_cluster(wide)  # restarts the replicas asking for tokens
            store = open_setup_store(wide.stacks[0])
            token = store.create_token("bench", "read")["token"]
            store.close()
            names = results["2 replicas, PostgreSQL, nginx"]["names"]
            url = f"http://127.0.0.1:{wide.proxy_port}"
            results["2 replicas, tokens required"] = {
                "cached_imginfo_p50_ms": cached_p50(url, names, {"Authorization": f"Bearer {token}"})}
        finally:
            stop_cluster(cluster)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    for name, r in results.items():
        print(json.dumps({"setup": name, "clients": args.clients, "seconds": args.seconds,
                          **{k: v for k, v in r.items() if k != "names"}}))
    base, cl = results["1 gunicorn, SQLite"], results["2 replicas, PostgreSQL, nginx"]
    auth = results["2 replicas, tokens required"]
    print(f"upload+imginfo throughput at c{args.clients}: {cl['pairs_per_s']} against {base['pairs_per_s']} pairs/s "
          f"= {cl['pairs_per_s'] / base['pairs_per_s']:.2f}x; cached /imginfo p50 {cl['cached_imginfo_p50_ms']} ms "
          f"through nginx on PostgreSQL against {base['cached_imginfo_p50_ms']} ms (goal < 5 ms); with a token "
          f"asked of every request {auth['cached_imginfo_p50_ms']} ms = "
          f"{auth['cached_imginfo_p50_ms'] / cl['cached_imginfo_p50_ms']:.2f}x without")
    return 1 if base["failed"] or cl["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
