"""Gateway speed, side by side in one run (``make bench``), against the real TorchServe behind it.

    python -m benchmarks.gateway

Starts TorchServe and the gateway (gunicorn) on free loopback ports with their own data directory, then for a
640x480 sample photo and a 12-megapixel JPEG (made here): a direct TorchServe prediction (baseline), ``/imgup``
followed at once by the first ``/imginfo`` (prefetch included), and repeated cached ``/imginfo`` (p50, p99).
Medians over repeated photos with fresh bytes each time (so nothing is cached where it must not be).
"""
from __future__ import annotations

import io
import statistics
import tempfile
import time
from pathlib import Path

import requests
from PIL import Image

from serving.stack import Stack, ensure_default_archive, serve, stop
from serving.torchserve import Ports, free_ports
from tagger.ts_keys import key_rejected, read_keys, renew_key

REPO = Path(__file__).resolve().parent.parent


def variants(base: Image.Image, size, n):
    """``n`` JPEGs of ``base`` at ``size`` that differ in one pixel each (distinct bytes, same content)."""
    out = []
    img = base.convert("RGB").resize(size, Image.Resampling.BICUBIC)
    for i in range(n):
        img.putpixel((i % size[0], 0), (i % 256, 0, 0))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=92)
        out.append(buf.getvalue())
    return out


def server_timing(r: requests.Response) -> dict[str, float]:
    """``{"decode": 2.7, ...}`` (ms) from the gateway's ``Server-Timing`` header."""
    out = {}
    for part in r.headers.get("Server-Timing", "").split(","):
        name, _, dur = part.strip().partition(";dur=")
        if name and dur:
            out[name] = float(dur)
    return out


def main() -> None:
    ensure_default_archive()
    base = Image.open(REPO / "samples/coco_subset/images/000000000471.jpg")
    with tempfile.TemporaryDirectory(prefix="bench-gw-", dir=REPO / "var") as tmp:
        p = free_ports(6)
        st = Stack(var_dir=Path(tmp), ports=Ports(*p[:5]), gateway_port=p[5])
        serve(st)
        try:
            ts = st.torchserve
            session = requests.Session()

            def direct(data):
                for _ in range(2):
                    key = read_keys(ts.key_file)["inference"]
                    r = session.post(f"{ts.inference_url}/predictions/tagger", data=data, timeout=60,
                                     headers={"Authorization": f"Bearer {key}",
                                              "Content-Type": "application/octet-stream"})
                    if not key_rejected(r):
                        return r.raise_for_status()
                    renew_key(ts.management_url, read_keys(ts.key_file)["API"], "inference")

            rows, breakdowns = [], []
            for label, size, n in (("640x480 JPEG", (640, 480), 30), ("12 MP JPEG", (4000, 3000), 24)):
                photos = variants(base, size, 2 * n + 2)
                direct(photos[-1])  # warm
                d, g, parts = [], [], {}
                # interleaved, one direct prediction then one upload + imginfo of another photo, so that a slower
                # or faster stretch of the machine falls on both series alike
                for i, data in enumerate(photos[n:2 * n]):
                    t = time.perf_counter()
                    direct(photos[i])
                    d.append(time.perf_counter() - t)
                    t = time.perf_counter()
                    up = session.post(f"{st.gateway_url}/imgup", files={"file": ("p.jpg", data)},
                                      data={"id_name": f"{label}-{i}"}, timeout=60)
                    up.raise_for_status()
                    t_up = time.perf_counter()
                    info = session.get(f"{st.gateway_url}/imginfo", params={"id_name": f"{label}-{i}"},
                                       timeout=60)
                    info.raise_for_status()
                    g.append(time.perf_counter() - t)
                    timing = {f"imgup {k}": v for k, v in server_timing(up).items()}
                    timing.update({f"imginfo {k}": v for k, v in server_timing(info).items()})
                    timing["imgup round trip"] = (t_up - t) * 1000
                    timing["imginfo round trip"] = (time.perf_counter() - t_up) * 1000
                    for k, v in timing.items():
                        parts.setdefault(k, []).append(v)
                breakdowns.append((label, {k: statistics.median(v) for k, v in parts.items()}))
                cached = []
                for _ in range(200):
                    t = time.perf_counter()
                    session.get(f"{st.gateway_url}/imginfo", params={"id_name": f"{label}-0"},
                                timeout=60).raise_for_status()
                    cached.append(time.perf_counter() - t)
                cached.sort()
                rows.append((label, statistics.median(d) * 1000, statistics.median(g) * 1000,
                             cached[len(cached) // 2] * 1000, cached[int(len(cached) * 0.99)] * 1000))
        finally:
            stop(st)
    print("\n== gateway, concurrency 1 ==")
    for label, d, g, c50, c99 in rows:
        print(f"{label:14s} direct TorchServe {d:6.1f} ms | /imgup + first /imginfo {g:6.1f} ms = {g / d:.2f}x "
              f"(goal <= 1.25x at 640x480, <= 1.15x at 12 MP) | cached /imginfo p50 {c50:.2f} ms (goal < 5 ms), "
              f"p99 {c99:.2f} ms")
    print("\n== where /imgup + first /imginfo spend their time (medians, ms; Server-Timing inside the worker) ==")
    for label, parts in breakdowns:
        print(f"{label:14s} " + ", ".join(f"{k} {v:.1f}" for k, v in parts.items()))


if __name__ == "__main__":
    main()
