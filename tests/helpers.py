"""What several test modules share, kept out of the test modules themselves (a test module imports no other).

    value = wait_until(lambda: store.get("x"), timeout=30, what="the upload to be stored")
    exiftool(sidecar, "XMP-dc:Subject")       # what the ExifTool command line reads back
    alive(pid), children(pid)                  # a process (not a zombie), and its live children
    upload(client, PHOTO, "tuscany")           # a photo through a Flask test client (upload_file: from a path)
    HandlerContext(model_dir)                  # the parts of TorchServe's context the handler uses

``wait_until`` is the one way a test waits for the system: it polls a condition, bounded, and fails naming what it
waited for and for how long; it never asserts how long something took (a busy machine is slower, not wrong).
"""
from __future__ import annotations

import io
import json
import shutil
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import psutil
from PIL import Image

from annotation_ui.labelling import uncertainty
from gateway import create_app
from photo_store.records import decode_record
from tagger.tags import DEFAULT_POLICY, answer_tags
from tests.conftest import COCO, EXIF

EXIFTOOL = shutil.which("exiftool") or "/usr/bin/exiftool"


class WaitedTooLong(AssertionError):
    """A condition that did not hold within its bound; the message names it."""


def wait_until(condition, *, timeout: float = 30.0, interval: float = 0.05, what: str = "the condition"):
    """Call ``condition`` until it returns something truthy (returned), at most ``timeout`` seconds.

    Raises:
        WaitedTooLong: naming ``what`` and the last value seen.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise WaitedTooLong(f"waited {timeout:.0f} s for {what}; last seen: {value!r}"[:500])
        time.sleep(interval)


def exiftool(path, *tags):
    """What the ExifTool command line reads from ``path`` (lists always lists)."""
    out = json.loads(subprocess.run([EXIFTOOL, "-j", "-G1", *[f"-{t}" for t in tags], str(path)], check=True,
                                    capture_output=True, text=True).stdout)[0]
    return {t: (v if isinstance(v, list) else [str(v)]) for t in tags if (v := out.get(t)) is not None}


def alive(pid: int) -> bool:
    """True while process ``pid`` runs (a zombie has ended)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def children(pid: int) -> list[int]:
    """Live child processes of ``pid`` (of any of its threads: the JVM starts workers from several)."""
    try:
        return sorted(c.pid for c in psutil.Process(pid).children() if c.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return []


# ---- photos through a Flask test client
PHOTO = (EXIF / "DSCN0010.jpg").read_bytes()  # a camera photo with a date and a GPS position
IMAGES = sorted((COCO / "images").iterdir())[:4]


def upload(client, data: bytes = PHOTO, id_name: str = "tuscany", filename: str = "photo.jpg"):
    """``POST /imgup`` of ``data`` under ``id_name``; the response (whatever its status)."""
    return client.post("/imgup", data={"file": (io.BytesIO(data), filename), "id_name": id_name},
                       content_type="multipart/form-data")


def upload_file(client, path: Path, name: str | None = None):
    """``POST /imgup`` of the file at ``path`` (under its file name unless ``name``); asserts it was stored."""
    r = client.post("/imgup", data={"file": (io.BytesIO(path.read_bytes()), path.name), "id_name": name or path.name})
    assert r.status_code == 200, r.json
    return r


def phone_jpeg(name: str, size=(4000, 3000), quality=92) -> bytes:
    """A 12-megapixel JPEG made from a sample photo (upscaled), as a phone would send it."""
    with Image.open(COCO / "images" / name) as im:
        big = im.convert("RGB").resize(size, Image.Resampling.BICUBIC)
    out = io.BytesIO()
    big.save(out, "JPEG", quality=quality)
    return out.getvalue()



# ---- TorchServe's handler without TorchServe
class HandlerContext:
    """The parts of ts.context.Context the handler uses."""

    def __init__(self, model_dir):
        self.system_properties = {"model_dir": str(model_dir), "gpu_id": None}
        self.manifest = {"model": {"modelName": "tagger", "serializedFile": "model.pt"}}
        self.model_yaml_config = {}
        self.statuses = {}
        self.metrics = _NoMetrics()

    def set_response_status(self, code=200, phrase="", idx=0):
        self.statuses[idx] = (code, phrase)

    def get_request_header(self, idx, key):
        return None


class _NoMetrics:
    def add_time(self, *args, **kwargs):
        pass


@contextmanager
def gateway_app(config: dict):
    """``create_app(config)``; at the end its store's connection pool and its EXIF parsers are closed, whatever
    the test did (a pool left to the garbage collector may be collected on one of its own threads and fail)."""
    app = create_app(config)
    try:
        yield app
    finally:
        app.extensions["predictions"].wait_idle()  # a prefetch still running would open the pool again
        app.extensions["store"].close()
        app.extensions["exif"].close()


def summaries(store, model_version: str | None) -> list[dict]:
    """Every photo's id, labels and upload order with the cached answer of ``model_version`` (or None), newest
    first, read row by row: what the store's indexed pages and grid must agree with."""
    with store._connect() as db:
        rows = store._rows(
            db, "SELECT p.id_name, p.sha256, p.labels, p.label_detail, p.suggested, p.uploaded_at,"
                " p.labelled_at, r.answer FROM photos p LEFT JOIN predictions r ON r.sha256 = p.sha256"
                " AND r.model_version = ? ORDER BY p.uploaded_at DESC, p.id_name DESC", (model_version or "",))
    out = []
    for r in rows:
        rec = decode_record({k: r[k] for k in ("id_name", "sha256", "uploaded_at", "labelled_at", "labels",
                                               "label_detail", "suggested")})
        rec["answer"] = json.loads(r["answer"]) if r["answer"] else None
        out.append(rec)
    return out


def select(summaries: list[dict], *, status: str = "all", label: str | None = None, order: str = "upload",
           thresholds: dict[str, float | None] | None = None, policy: str | None = None) -> list[dict]:
    """Filter (``status`` all | unlabelled | labelled; ``label``: a person's label on a labelled photo, the model's
    tag under ``policy`` on an unlabelled one) and order (``upload``: newest first; ``uncertain``: smallest margin
    first, photos without a prediction last) ``summaries``: the rule the annotation page's grid follows,
    written plainly."""
    rows = summaries
    if status == "labelled":
        rows = [r for r in rows if r["labelled_at"] is not None]
    elif status == "unlabelled":
        rows = [r for r in rows if r["labelled_at"] is None]
    if label:
        def has(r):
            if r["labelled_at"] is not None and r["labels"] is not None:
                return label in r["labels"]
            return bool(r["answer"]) and label in answer_tags(r["answer"], default=policy or DEFAULT_POLICY)[0]
        rows = [r for r in rows if has(r)]
    for r in rows:
        r["uncertainty"] = uncertainty(r["answer"]["scores"], thresholds or {}) if r["answer"] else None
    if order == "uncertain":
        rows = sorted(rows, key=lambda r: (r["uncertainty"] is None, r["uncertainty"] or 0.0))
    return rows
