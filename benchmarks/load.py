"""Load against the real stack: 16 clients uploading and looking up photos for minutes, across TorchServe key expiries.

    make load                                   # LOAD_SECONDS=240, 16 clients, keys expiring every 30 s
    .venv/bin/python -m benchmarks.load --seconds 20 --out var/load.json

It starts its own TorchServe and gateway (own ports and data directory), runs the mixed load (each client: upload a
new photo, read it back with /imginfo, read a random earlier photo with /imginfo, list /photos), then stops them.
Reports requests/s, p50/p99 per kind, every failed request (any status other than 200, any exception), and the
resident memory of every process (sampled every 2 s): its peak after the warm-up (by default the first half) against
its peak during it. Exit status 1 when a request failed, a process's later peak is more than 10% above its warm-up
peak, or a process was replaced for another reason than gunicorn's ``max_requests`` recycling (a crash).
"""
from __future__ import annotations

import argparse
import io
import json
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import requests
from PIL import Image

from serving import torchserve
from serving.stack import Stack, ensure_default_archive, gateway_pid, serve, stop
from serving.torchserve import Ports, free_ports
from tagger.ts_keys import read_keys

REPO = Path(__file__).resolve().parent.parent
SAMPLE_SECONDS = 1.0  # how often the key file and every process's RSS are read


def synthetic_jpeg(i: int, size: tuple[int, int] = (320, 240)) -> bytes:
    """A small JPEG whose bytes differ for every ``i`` (a colour and a rectangle): distinct uploads at will."""
    w, h = size
    im = Image.new("RGB", size, ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256))
    x, y = i % (w - 60), (i * 3) % (h - 50)
    im.paste((255 - (i * 7) % 256, (i * 13) % 256, 90), (x, y, x + 60, y + 50))
    out = io.BytesIO()
    im.save(out, "JPEG", quality=90)
    return out.getvalue()


def post_all(url: str, headers: dict, bodies: list[bytes], clients: int = 8) -> tuple[float, list[int]]:
    """POST every body to ``url`` from ``clients`` threads, each taking the next body left: ``(seconds taken,
    the status of every answer other than 200)``."""
    todo, lock, errors = iter(bodies), threading.Lock(), []

    def client():
        with requests.Session() as s:
            while True:
                with lock:
                    data = next(todo, None)
                if data is None:
                    return
                r = s.post(url, data=data, headers=headers, timeout=120)
                if r.status_code != 200:
                    errors.append(r.status_code)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return time.perf_counter() - t, errors


def _processes(stack) -> dict[str, int]:
    def children(pid):
        try:
            return sorted(c.pid for c in psutil.Process(pid).children())
        except psutil.Error:
            return []

    procs = {}
    ts = torchserve.running_pid(stack.torchserve)
    procs["torchserve-frontend"] = ts
    for i, pid in enumerate(children(ts)):
        procs[f"torchserve-worker-{i}"] = pid
    gw = gateway_pid(stack)
    procs["gunicorn-master"] = gw
    for i, pid in enumerate(children(gw)):
        procs[f"gateway-worker-{i}"] = pid
    return procs


def _rss_mb(pid: int) -> float | None:
    try:
        return psutil.Process(pid).memory_info().rss / 2**20
    except psutil.Error:
        return None


def run(seconds: float, clients: int, key_minutes: float, warmup: float, workers: int = 2,
        gunicorn_threads: int | None = None) -> dict:
    ensure_default_archive()
    p = free_ports(6)
    var = Path(tempfile.mkdtemp(prefix="tagger-load-"))
    stack = Stack(var_dir=var, ports=Ports(*p[:5]), gateway_port=p[5], gateway_workers=workers,
                  gateway_threads=gunicorn_threads, ts_overrides=(("token_expiration_min", str(key_minutes)),))
    serve(stack)
    url = stack.gateway_url
    lat: dict[str, list[float]] = {"imgup": [], "imginfo-new": [], "imginfo-old": [], "photos": []}
    failures: list[str] = []
    names: list[str] = []
    lock, done = threading.Lock(), threading.Event()
    counter = iter(range(10**9))

    def timed(kind, fn):
        t = time.perf_counter()
        try:
            r = fn()
            ok = r.status_code == 200
            if not ok:
                failures.append(f"{kind}: {r.status_code} {r.text[:200]}")
        except requests.RequestException as exc:
            failures.append(f"{kind}: {type(exc).__name__}: {exc}")
            ok = False
        lat[kind].append((time.perf_counter() - t) * 1000)
        return ok

    def client(seed):
        rng = random.Random(seed)
        with requests.Session() as s:
            while not done.is_set():
                with lock:
                    i = next(counter)
                name = f"load-{i}"
                if timed("imgup", lambda: s.post(f"{url}/imgup", data={"id_name": name}, timeout=60,  # noqa: B023 - called within this iteration
                                                 files={"file": ("p.jpg", synthetic_jpeg(i), "image/jpeg")})):  # noqa: B023 - called within this iteration
                    with lock:
                        names.append(name)
                timed("imginfo-new", lambda: s.get(f"{url}/imginfo", params={"id_name": name}, timeout=60))  # noqa: B023 - called within this iteration
                with lock:
                    old = rng.choice(names) if names else name
                timed("imginfo-old", lambda: s.get(f"{url}/imginfo", params={"id_name": old}, timeout=60))  # noqa: B023 - called within this iteration
                if i % 10 == 0:
                    timed("photos", lambda: s.get(f"{url}/photos", params={"limit": 20}, timeout=60))

    series: list[tuple[float, dict]] = []  # (seconds since the start, role -> RSS in MB)
    keys_seen: set[str] = set()  # the inference keys TorchServe's key file held: renewed ones add to it

    def sampler():
        while not done.wait(SAMPLE_SECONDS):
            try:
                keys_seen.add(read_keys(stack.torchserve.key_file)["inference"])
            except (OSError, ValueError, KeyError):
                pass  # caught while TorchServe rewrites it
            try:
                roles = {}
                for name, pid in _processes(stack).items():
                    rss = _rss_mb(pid)
                    if rss is None:
                        continue
                    if name.startswith("gateway-worker"):  # recycled by max_requests: follow the largest one
                        name = "gateway-worker (largest)"
                        rss = max(rss, roles.get(name, 0.0))
                    roles[name] = rss
                series.append((time.monotonic() - t0, roles))
            except (OSError, ValueError):
                pass

    try:
        procs = _processes(stack)
        threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        watcher = threading.Thread(target=sampler, daemon=True)
        watcher.start()
        time.sleep(warmup)
        requests_at_warmup = sum(len(v) for v in lat.values())
        time.sleep(max(0.0, seconds - warmup))
        done.set()
        for t in threads:
            t.join(timeout=120)
        elapsed = time.monotonic() - t0
        procs_end = _processes(stack)
        log = (stack.gateway_dir / "error.log").read_text()
    finally:
        done.set()
        stop(stack)

        shutil.rmtree(var, ignore_errors=True)
    # the peak of each process in the second part of the run against its peak during warm-up: memory that keeps
    # growing shows as a higher second peak; a plateau as the same one
    before = [m for t, m in series if t < warmup]
    later = [m for t, m in series if t >= warmup]
    roles = sorted({n for _, m in series for n in m})
    peak_before = {n: max((m[n] for m in before if n in m), default=None) for n in roles}
    peak = {n: max((m[n] for m in later if n in m), default=None) for n in roles}
    replaced = sorted(set(procs.values()) - set(procs_end.values()))
    recycled = log.count("Autorestarting worker after current request")  # gunicorn max_requests, by design
    total = sum(len(v) for v in lat.values())
    growth = {n: round((peak[n] - peak_before[n]) / peak_before[n] * 100, 1)
              for n in roles if peak_before.get(n) and peak.get(n)}
    return {
        "seconds": round(elapsed, 1), "clients": clients, "gateway_workers": workers,
        "gateway_threads": gunicorn_threads or "gunicorn.conf.py", "token_expiration_min": key_minutes,
        "key_expiries_crossed": int(elapsed // (key_minutes * 60)), "inference_keys_seen": len(keys_seen),
        "requests": total, "requests_per_s": round(total / elapsed, 1),
        "requests_after_warmup": total - requests_at_warmup, "failed": len(failures), "failures": failures[:20],
        "latency_ms": {k: {"n": len(v), "p50": round(statistics.median(v), 1),
                           "p99": round(sorted(v)[int(0.99 * (len(v) - 1))], 1)} for k, v in lat.items() if v},
        "rss_mb_peak_in_warmup": {n: round(v, 1) for n, v in peak_before.items() if v},
        "rss_mb_peak_after_warmup": {n: round(v, 1) for n, v in peak.items() if v},
        "rss_growth_percent": growth, "memory_samples": len(later),
        "rss_mb_every_20s": [[round(t), {n: round(v, 1) for n, v in m.items()}]
                             for t, m in series[::round(20 / SAMPLE_SECONDS)]],
        "processes_replaced": len(replaced), "gateway_workers_recycled_by_max_requests": recycled,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=240)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--key-minutes", type=float, default=0.5, help="TorchServe token_expiration_min (default 0.5)")
    p.add_argument("--warmup", type=float, default=None, help="seconds before memory is compared (default: half "
                   "the run: the JVM grows its heap and JIT code cache for the first minutes)")
    p.add_argument("--workers", type=int, default=2, help="gunicorn workers of the gateway (default 2)")
    p.add_argument("--threads", type=int, default=None, help="gunicorn threads per worker (default: "
                   "gateway/gunicorn.conf.py's)")
    p.add_argument("--out", default=str(REPO / "var/load.json"))
    args = p.parse_args(argv)
    result = run(args.seconds, args.clients, args.key_minutes, args.warmup or args.seconds / 2, args.workers,
                 args.threads)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    bad = result["failed"] or any(g > 10 for g in result["rss_growth_percent"].values()) \
        or result["processes_replaced"] > result["gateway_workers_recycled_by_max_requests"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
