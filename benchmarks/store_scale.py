"""The store at scale (issue 26.3): the listing, search, annotation page and export endpoints timed over stores of
1,000, 10,000 and 100,000 photos, on SQLite and on PostgreSQL (a real server on a free loopback port, started here).

    python -m benchmarks.store_scale [--sizes 1000,10000,100000] [--backends sqlite,postgresql] [--repeat 15]

How a store is filled: its first ``--through-api`` photos (default 300) go through the store's own API (``put``,
``set_labels``, ``save_prediction``: distinct small images, a person's labels on one in ten, a cached prediction of
the served version on every one); the rest are rows of the same shape written in one transaction per 5,000 (what
the API would write, in minutes instead of hours: one ``put`` is a file written and fsynced and a commit). A
prediction tags ``sea`` on half the photos (common) and ``bus`` on one in a thousand (rare).

Each endpoint is called through the gateway (its Flask app, in this process, the served model's archive from
``model_store/``) ``--repeat`` times; the p50 is reported, and its ratio to the p50 at the smallest size. The
export's peak Python allocation (tracemalloc) says whether it streams.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

from annotation_ui.vocabulary import cached_archive
from gateway import create_app
from gateway.api import encode_cursor
from photo_store import open_store
from serving.postgres import ROLE, PostgresRun
from serving.torchserve import free_ports

REPO = Path(__file__).resolve().parent.parent
MODEL_STORE = REPO / "model_store"
BATCH = 5000


class CachedOnly:
    """The model server for a store whose every photo has its prediction cached: never asked to predict."""

    def __init__(self, version: str):
        self.version = version

    def served_version(self) -> str:
        return self.version

    def predict(self, data: bytes) -> dict:
        raise AssertionError("every prediction is cached; the model server is never asked")


def answer(i: int, names: list[str], version: str) -> dict:
    """The cached answer of photo ``i``: sea on even photos, bus on one in a thousand, scores for every label."""
    rnd = random.Random(i)
    scores = {n: round(rnd.random() * 0.3, 4) for n in names}
    tags = []
    if i % 2 == 0:
        scores["sea"], tags = 0.95, ["sea"]
    if i % 1000 == 7:
        scores["bus"], tags = 0.97, tags + ["bus"]
    return {"tags": tags, "policy_tags": {p: tags for p in ("precise", "balanced", "complete")},
            "tag_policy": "precise", "scores": scores, "model_version": version}


def labels_of(i: int) -> list[str] | None:
    """A person's labels on one photo in ten."""
    return (["sea", "boat"] if i % 20 == 0 else ["road"]) if i % 10 == 3 else None


def image(i: int) -> bytes:
    return b"\xff\xd8\xff\xe0 store-scale %d " % i + bytes(range(64))


def fill(store, n: int, names: list[str], version: str, through_api: int, start: float) -> None:
    """Photos 0..n-1, photo i uploaded ``i`` seconds after ``start`` (so 0 is the oldest)."""
    for i in range(min(n, through_api)):
        rec = store.put(f"p{i:06d}", image(i), exif={}, fmt="JPEG", width=8, height=8)
        store.save_prediction(rec["sha256"], version, answer(i, names, version))
        if labels_of(i) is not None:
            store.set_labels(f"p{i:06d}", labels_of(i), detail={lab: {"value": 1, "source": "person"}
                                                                  for lab in labels_of(i)})
    with store._connect() as db:  # the API's photos carry API times: spread them like the rest
        for i in range(min(n, through_api)):
            store._run(db, "UPDATE photos SET uploaded_at = ? WHERE id_name = ?", (stamp(start, i), f"p{i:06d}"))
    shared = store.get("p000000")  # the rest share one small file (nothing here reads the bytes)
    for lo in range(through_api, n, BATCH):
        photos, predictions = [], []
        for i in range(lo, min(n, lo + BATCH)):
            sha = hashlib.sha256(image(i)).hexdigest()
            labels = labels_of(i)
            photos.append((f"p{i:06d}", shared["file"], sha, len(image(i)), "JPEG", 8, 8, "{}",
                           json.dumps(sorted(labels)) if labels else None, stamp(start, i),
                           stamp(start, i + 0.5) if labels else None,
                           json.dumps({lab: {"value": 1, "source": "person"} for lab in labels}) if labels else None))
            predictions.append((sha, version, json.dumps(answer(i, names, version)), stamp(start, i)))
        with store._connect() as db, store._write(db, "store-scale"):
            cur = db.cursor()
            cur.executemany(store._sql("INSERT INTO photos (id_name, file, sha256, bytes, format, width, height, exif,"
                                       " labels, uploaded_at, labelled_at, label_detail) VALUES"
                                       " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"), photos)
            cur.executemany(store._sql("INSERT INTO predictions (sha256, model_version, answer, created_at)"
                                       " VALUES (?, ?, ?, ?)"), predictions)
    with store._connect() as db:
        db.execute("ANALYZE")  # the planner's statistics, as a long-running store has them


def stamp(start: float, seconds: float) -> str:
    t = start + seconds
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


def p50(call, repeat: int, budget: float = 10.0) -> float:
    """The median milliseconds of ``call()`` (which must answer 200), after one warm-up call: ``repeat`` calls, or
    fewer (at least 3) once they took ``budget`` seconds."""
    call()
    times = []
    while len(times) < repeat and (len(times) < 3 or sum(times) < budget * 1000):
        t = time.perf_counter()
        r = call()
        times.append((time.perf_counter() - t) * 1000)
        assert r.status_code == 200, (r.status_code, r.get_data(as_text=True)[:300])
    return statistics.median(times)


def measure(client, store, n: int, repeat: int) -> dict:
    deep = store.get(f"p{n // 10:06d}")  # nine tenths of the way down the newest-first list
    cursor = encode_cursor(deep["uploaded_at"], deep["id_name"])
    calls = {
        "/photos": lambda: client.get("/photos?limit=50"),
        "/photos?tag=common": lambda: client.get("/photos?tag=sea&limit=50"),
        "/photos?tag=rare": lambda: client.get("/photos?tag=bus&limit=50"),
        "/photos deep cursor": lambda: client.get(f"/photos?limit=50&cursor={cursor}"),
        "/imginfo cached": lambda: client.get(f"/imginfo?id_name=p{n // 2:06d}"),
        "grid": lambda: client.get("/annotate/api/photos?limit=100"),
        "grid unlabelled": lambda: client.get("/annotate/api/photos?limit=100&status=unlabelled"),
        "grid label=sea": lambda: client.get("/annotate/api/photos?limit=100&label=sea"),
        "grid uncertain first": lambda: client.get("/annotate/api/photos?limit=100&order=uncertain"),
        "progress": lambda: client.get("/annotate/api/progress"),
    }
    t, ranking_calls = time.perf_counter(), 1  # the first calls compute every prediction's margin, once per version
    while calls["grid uncertain first"]().json["margins_pending"]:  # and policy, about 2 s a call
        ranking_calls += 1
    first_uncertain = (time.perf_counter() - t) * 1000
    out = {name: p50(call, repeat) for name, call in calls.items()}

    def export() -> int:  # read as a client reads a download: piece by piece, nothing kept
        r = client.get("/annotate/export.json", buffered=False)
        assert r.status_code == 200
        return sum(len(piece) for piece in r.response)

    t = time.perf_counter()
    size = export()
    out["export"] = (time.perf_counter() - t) * 1000
    tracemalloc.start()  # again, for its peak allocation (tracemalloc slows Python down: not timed)
    assert export() == size
    out["export peak MiB"] = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    out["uncertain: ranking all"] = first_uncertain
    out["uncertain: its calls"] = ranking_calls
    return out


def run(backend: str, sizes: list[int], repeat: int, through_api: int, tmp: Path) -> dict[int, dict]:
    meta = cached_archive(MODEL_STORE / "tagger.mar").meta
    names, version = [lab["name"] for lab in meta["labels"]], meta["version"]
    results = {}
    pg = None
    if backend == "postgresql":
        pg = PostgresRun(Path(tempfile.mkdtemp(prefix="tagger-pg-")), port=free_ports(1)[0])  # /tmp: the server's

        pg.start()
    try:
        for n in sizes:
            data = tmp / f"{backend}-{n}"
            url = ""
            if pg is not None:
                import psycopg

                with psycopg.connect(pg.admin_url, autocommit=True) as admin:
                    admin.execute(f'CREATE DATABASE "scale_{n}" OWNER {ROLE}')
                url = pg.connect_url.replace(f"/{pg.url.rsplit('/', 1)[1]}?", f"/scale_{n}?")
            t = time.perf_counter()
            with open_store(data, url) as store:
                fill(store, n, names, version, through_api, start=time.time() - n - 60)
            filled = time.perf_counter() - t
            app = create_app({"TESTING": True, "DATA_DIR": str(data), "DATABASE_URL": url,
                              "TAGGER_CLIENT": CachedOnly(version), "MODEL_STORE": str(MODEL_STORE)})
            try:
                results[n] = measure(app.test_client(), app.extensions["store"], n, repeat)
            finally:
                app.extensions["store"].close()
                app.extensions["exif"].close()
            print(f"  {backend} {n:>7,} photos: filled in {filled:.0f} s", flush=True)
    finally:
        if pg is not None:
            pg.stop()
            shutil.rmtree(pg.root, ignore_errors=True)
    return results


def report(backend: str, results: dict[int, dict]) -> None:
    sizes = sorted(results)
    first = results[sizes[0]]
    print(f"\n{backend}: p50 ms (ratio to {sizes[0]:,} photos)")
    print(f"  {'endpoint':<22}" + "".join(f"{n:>20,}" for n in sizes))
    for name in first:
        cells = []
        for n in sizes:
            v = results[n][name]
            cells.append(f"{v:>12.1f}" + (f" ({v / first[name]:4.1f}x)" if n != sizes[0] and first[name] else " " * 7))
        print(f"  {name:<22}" + "".join(f"{c:>20}" for c in cells))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="1000,10000,100000", help="store sizes (default: 1000,10000,100000)")
    p.add_argument("--backends", default="sqlite,postgresql", help="sqlite, postgresql or both (default)")
    p.add_argument("--repeat", type=int, default=15, help="calls per endpoint (default: 15)")
    p.add_argument("--through-api", type=int, default=300, help="photos stored through the API (default: 300)")
    a = p.parse_args()
    sizes = [int(s) for s in a.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-store-scale-", dir=REPO / "var") as tmp:
        for backend in a.backends.split(","):
            report(backend, run(backend, sizes, a.repeat, a.through_api, Path(tmp)))


if __name__ == "__main__":
    main()
