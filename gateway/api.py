"""The public API: ``POST /imgup``, ``GET|POST /imginfo``, ``/healthz``, ``/openapi.json``."""
from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import re
import time
from concurrent.futures import Future

from flask import Blueprint, current_app, jsonify, request

from annotation_ui import error  # the one JSON error answer of the service
from gateway.openapi import (  # one definition for the spec and the check
    CURSOR_MAX,
    CURSOR_PATTERN,
    PHOTOS_LIMIT_MAX,
    SPEC,
    refused_id_name_categories,
)
from gateway.place import gps_information, place_name
from gateway.server_timing import record as record_timing
from gateway.server_timing import timed
from gateway.tagger_client import TaggerError
from photo_store import Conflict
from photo_store.records import MAX_ID_NAME
from tagger.exif_parsers import needs_reparse, reparsed
from tagger.image import ImageError, decode_image, decoded_bytes, open_image, oriented_size, shrinks
from tagger.meta import utc_now
from tagger.tags import PolicyMissing, UnknownPolicy, answer_tags, check_policy

bp = Blueprint("api", __name__)

# Uploads are checked by decoding at this shorter side (JPEG: DCT-scaled, 1/8 of a phone photo's pixels or less).
UPLOAD_CHECK_SIDE = 64


_CURSOR = re.compile(CURSOR_PATTERN)


def _id_name(value: str | None) -> str:
    """Validate a caller's ``id_name``; raises ValueError with the reason.

    1 to ``MAX_ID_NAME`` characters of printable Unicode, not only spaces, no control or invisible format
    characters.
    """
    if value is None or not value.strip():
        raise ValueError("form field 'id_name' is missing or empty")
    if len(value) > MAX_ID_NAME:
        raise ValueError(f"id_name is longer than {MAX_ID_NAME} characters")
    bad = sorted(refused_id_name_categories(value))
    if bad:
        raise ValueError("id_name contains control or invisible characters (Unicode categories "
                         f"{', '.join(bad)}); use printable characters only")
    return value


@bp.post("/imgup")
def imgup():
    """Store a photo under the caller's ``id_name`` (multipart fields ``file`` and ``id_name``)."""
    with timed("form"):  # the multipart body is read and parsed here
        unknown = sorted({str(k) for k in set(request.form) - {"id_name", "if_absent"}}  # a nameless part: None
                         | {str(k) for k in set(request.files) - {"file"}})
    if unknown:
        return error(400, f"unknown form field(s) {', '.join(map(repr, unknown[:5]))}: send file, id_name and "
                          "optionally if_absent")
    upload = request.files.get("file")
    if upload is None:
        return error(400, "multipart form field 'file' is missing (curl -F file=@photo.jpg -F id_name=NAME)")
    try:
        id_name = _id_name(request.form.get("id_name"))
    except ValueError as exc:
        return error(400, str(exc))
    flag = request.form.get("if_absent", "0").strip().lower()
    if flag not in ("0", "1", "true", "false"):
        return error(400, "if_absent must be 1 (refuse to replace an existing id_name) or 0")
    if_absent = flag in ("1", "true")
    data = upload.read()
    try:  # the header gives format and size (the pixels are proved to decode below)
        with timed("header"):
            header = open_image(data)
            fmt, (width, height) = header.format, oriented_size(header)
    except ImageError as exc:
        return error(exc.status, str(exc))
    # Tags start while the upload is made durable, so /imginfo right after usually finds them ready (a photo
    # refused below costs one wasted TorchServe call). The pixels are proved to decode in a thread while EXIF is
    # read and the file written and fsynced; the row that acknowledges the upload is written once that passed.
    # A photo the model decodes reduced (a 12 MP one) is decoded once, here, and TorchServe gets its pixels.
    predictions, threads = current_app.extensions["predictions"], current_app.extensions["decode_checks"]
    side = predictions.input_side()
    if side is not None and shrinks((width, height), side):
        digest = Future()  # the decode starts now; the SHA-256 its prefetch is keyed by is computed meanwhile
        checking = threads.submit(_decode_check, data, side, predictions, digest)
        with timed("sha256"):  # beside the decode: hashlib lets go of the GIL
            sha = hashlib.sha256(data).hexdigest()
        digest.set_result(sha)
    else:
        sha = hashlib.sha256(data).hexdigest()
        with timed("prefetch"):
            predictions.prefetch(sha, data)
        checking = threads.submit(_decode_check, data, UPLOAD_CHECK_SIDE)
    exif = threads.submit(current_app.extensions["exif"].read, data)  # beside the file write too
    try:
        with timed("store"):
            record = current_app.extensions["store"].put(id_name, data, sha256=sha, exif=lambda: _exif(exif),
                                                         fmt=fmt, width=width, height=height, if_absent=if_absent,
                                                         verify=lambda: _checked(checking))
    except ImageError as exc:
        return error(exc.status, str(exc))
    except Conflict as exc:
        return error(409, str(exc))
    return jsonify(image_id=id_name, status=record["status"], sha256=record["sha256"], bytes=record["bytes"],
                   replaced=record["replaced"])


def _decode_check(data: bytes, side: int, predictions=None, sha: Future | None = None) -> float:
    """Decode ``data`` reduced to ``side`` (raises ``ImageError``), then, given ``predictions``, have the decoded
    pixels tagged (the same pixels TorchServe's own decode of ``data`` gives) under the SHA-256 ``sha`` will hold;
    returns the milliseconds taken."""
    t = time.perf_counter()
    image = decode_image(data, min_side=side)
    if predictions is not None:
        predictions.prefetch(sha.result(), decoded_bytes(image))
    return (time.perf_counter() - t) * 1000


def _exif(reading) -> dict:
    with timed("exif-wait"):
        return reading.result()


def _checked(checking) -> None:
    with timed("decode-wait"):
        ms = checking.result()
    record_timing("decode", ms)  # measured in the checking thread


def _exif_of(store, record: dict) -> dict:
    """The stored EXIF of ``record``, parsed again (and stored) first when its parse overran or its parser died
    (``tagger.exif_parsers.needs_reparse``): one hostile file beside an upload never costs it its date or GPS."""
    exif = record["exif"]
    if not needs_reparse(exif):
        return exif
    with timed("exif-reparse"):
        fresh = reparsed(exif, current_app.extensions["exif"].read(store.read_image(record)))
    store.set_exif(record["id_name"], record["sha256"], fresh)
    return fresh


def requested_policy() -> str | None:
    """The ``policy`` parameter, checked (``UnknownPolicy``); ``None`` when not given."""
    given = request.values.get("policy")
    return None if given is None else check_policy(given.strip().lower())


def tags_of(prediction: dict, policy: str | None) -> tuple[list[str], str]:
    """``(tags, policy)`` of a cached answer under ``policy``, else the gateway's ``TAG_POLICY``."""
    return answer_tags(prediction, policy, default=current_app.config["TAG_POLICY"])


@bp.route("/imginfo", methods=["GET", "POST"])
def imginfo():
    """Tags (from TorchServe), EXIF date and GPS of a stored photo; ``policy`` picks the tag policy."""
    if request.method == "POST" and set(request.form) - {"id_name", "policy"}:
        return error(400, "unknown form field(s): send only id_name (and policy)")
    id_name = request.values.get("id_name")
    if not id_name:
        return error(400, "parameter 'id_name' is missing (GET /imginfo?id_name=NAME)")
    try:
        policy = requested_policy()
    except UnknownPolicy as exc:
        return error(400, str(exc))
    store = current_app.extensions["store"]
    with timed("lookup"):
        record = store.get(id_name)
    if record is None:
        return error(404, f"no photo stored under id_name {id_name!r}; upload it with POST /imgup")
    try:
        with timed("tags"):
            prediction = current_app.extensions["predictions"].get(record)
    except TaggerError as exc:
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else {}
        return error(exc.status, str(exc), **headers)
    try:
        tags, tag_policy = tags_of(prediction, policy)
    except PolicyMissing as exc:
        return error(409, str(exc))
    exif = _exif_of(store, record)
    old_layout = "datetime" not in exif  # stored before date fallbacks were read
    return jsonify(
        image_id=id_name,
        predict_tags=tags,
        tag_policy=tag_policy,
        data_information=exif.get("datetime_original") if old_layout else exif.get("datetime"),
        GPS_information=gps_information(exif.get("gps")),
        date_source=("DateTimeOriginal" if exif.get("datetime_original") else None) if old_layout
        else exif.get("date_source"),
        offset_time=exif.get("offset_time"),
        camera=exif.get("camera"),
        image={"width": record["width"], "height": record["height"], "format": record["format"],
               "orientation": exif.get("orientation")},
        place=place_name(exif.get("gps")),
        exif_unread=exif.get("unread"),
        scores=prediction["scores"],
        model_version=prediction["model_version"],
    )




def encode_cursor(uploaded_at: str, id_name: str) -> str:
    """The position after the photo (``uploaded_at``, ``id_name``): ``<uploaded_at>~<base64url id_name>``."""
    return f"{uploaded_at}~" + base64.urlsafe_b64encode(id_name.encode()).decode().rstrip("=")


def decode_cursor(value: str | None) -> tuple[str, str] | None:
    """The position a cursor names (any string of ``CURSOR_PATTERN``'s form is one); ``ValueError`` otherwise."""
    if not value:
        return None
    if len(value) > CURSOR_MAX or not _CURSOR.fullmatch(value):
        raise ValueError("cursor is not one this server gave out (next_cursor of the previous page); start again "
                         "without it")
    uploaded_at, _, name = value.partition("~")
    return uploaded_at, base64.urlsafe_b64decode(name + "=" * (-len(name) % 4)).decode("utf-8", "replace")


@bp.get("/photos")
def photos():
    """Stored photos, newest first, paged: ``?tag=sea&limit=50&cursor=...``.

    A photo has a tag when a person labelled it so, or, for photos no person labelled, when the served model's
    cached prediction says so under the tag policy (``policy``, default the gateway's); photos whose prediction is
    not computed yet are listed only without ``tag``.
    """
    tag = request.args.get("tag")
    try:
        policy = requested_policy()
    except UnknownPolicy as exc:
        return error(400, str(exc))
    try:
        limit = int(request.args.get("limit", "50"))
        if not 1 <= limit <= PHOTOS_LIMIT_MAX:
            raise ValueError
    except ValueError:
        return error(400, f"limit must be an integer from 1 to {PHOTOS_LIMIT_MAX}")
    try:
        after = decode_cursor(request.args.get("cursor"))
    except ValueError as exc:
        return error(400, str(exc))
    store = current_app.extensions["store"]
    version = current_app.extensions["predictions"].version.get()
    try:
        indexed = store.indexed_policy(version, policy, default=current_app.config["TAG_POLICY"]) \
            if tag is not None else "*"
        items = []
        records = store.page(after=after, limit=limit, model_version=version, tag=tag, policy=indexed)
        for rec in records:
            prediction = rec["answer"]  # None too while the served version is unknown
            model_tags = tags_of(prediction, policy)[0] if prediction else None
            tags = rec["labels"] if rec["labels"] is not None else model_tags
            items.append({"image_id": rec["id_name"], "uploaded_at": rec["uploaded_at"], "tags": tags,
                          "tags_from": "labels" if rec["labels"] is not None else ("model" if prediction else None),
                          "sha256": rec["sha256"]})
    except PolicyMissing as exc:
        return error(409, str(exc))
    next_cursor = encode_cursor(records[-1]["uploaded_at"], records[-1]["id_name"]) if len(records) == limit else None
    return jsonify(photos=items, next_cursor=next_cursor, model_version=version)


def _trash_days() -> float:
    return float(current_app.config["TRASH_DAYS"])


def _restorable_until(deleted_at: str) -> str:
    at = _dt.datetime.strptime(deleted_at, "%Y-%m-%dT%H:%M:%S.%fZ") + _dt.timedelta(days=_trash_days())
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def _empty_expired_trash() -> None:
    """Erase what has been in the trash longer than TRASH_DAYS (asked on each delete and each listing)."""
    current_app.extensions["store"].empty_trash(before=utc_now(micro=True, hours=-24 * _trash_days()))


@bp.delete("/photos/<id_name:id_name>")
def delete_photo(id_name: str):
    """Move a photo and its earlier versions to the trash: ``GET /trash`` lists it, ``POST
    /trash/<trash_id>/restore`` puts it back; after TRASH_DAYS days (or ``make empty-trash``) it is erased."""
    store = current_app.extensions["store"]
    entry = store.delete(id_name)
    if entry is None:
        return error(404, f"no photo stored under id_name {id_name!r}")
    _empty_expired_trash()
    return jsonify(image_id=id_name, status="deleted", trash_id=entry["trash_id"],
                   restorable_until=_restorable_until(entry["deleted_at"]))


@bp.get("/trash")
def list_trash():
    _empty_expired_trash()
    entries = current_app.extensions["store"].trash()
    return jsonify(days=_trash_days(), trash=[{**e, "restorable_until": _restorable_until(e["deleted_at"])}
                                              for e in entries])


@bp.post("/trash/<int:trash_id>/restore")
def restore_photo(trash_id: int):
    try:
        record = current_app.extensions["store"].restore(trash_id)
    except Conflict as exc:
        return error(409, str(exc))
    if record is None:
        return error(404, f"nothing in the trash under trash_id {trash_id} (GET /trash lists what is there)")
    return jsonify(image_id=record["id_name"], status="restored")


@bp.get("/healthz")
def healthz():
    """Liveness: 200 while this process serves requests."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    """Readiness: 200 when the store and TorchServe both answer, else 503 with the reason."""
    reasons = []
    try:
        current_app.extensions["store"].check()
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready", said in the answer
        reasons.append(f"store: {exc}")
    try:
        version = current_app.extensions["tagger"].served_version()
    except TaggerError as exc:
        version = None
        reasons.append(f"model server: {exc}")
    if reasons:
        response = jsonify(status="unready", reasons=reasons, error="; ".join(reasons))
        response.status_code = 503
        response.headers["Retry-After"] = "5"
        return response
    return jsonify(status="ready", model_version=version, tag_policy=current_app.config["TAG_POLICY"])


@bp.get("/openapi.json")
def openapi():
    return jsonify(SPEC)
