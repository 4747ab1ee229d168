"""The public API: ``POST /imgup``, ``GET|POST /imginfo``, ``/healthz``, ``/openapi.json``."""
from __future__ import annotations

import hashlib
import unicodedata

from flask import Blueprint, current_app, jsonify, request

from gateway.exif import gps_information, read_exif
from gateway.openapi import SPEC
from gateway.store import Conflict
from gateway.tagger_client import TaggerError
from handler.image import ImageError, decode_image, open_image, oriented_size

bp = Blueprint("api", __name__)

MAX_ID_NAME = 256
# Uploads are checked by decoding at this shorter side (JPEG: DCT-scaled, 1/8 of a phone photo's pixels or less).
UPLOAD_CHECK_SIDE = 64


def error(status: int, message: str, **headers):
    response = jsonify(error=message)
    response.status_code = status
    response.headers.update(headers)
    return response


# Unicode categories refused in an id_name: control, format (zero-width, bidi overrides), surrogates, unassigned,
# private use, and line/paragraph separators. Everything else printable is allowed; it is never used in a path.
_REFUSED_CATEGORIES = {"Cc", "Cf", "Cs", "Cn", "Co", "Zl", "Zp"}


def _id_name(value: str | None) -> str:
    """Validate a caller's ``id_name``; raises ValueError with the reason.

    1 to ``MAX_ID_NAME`` characters of printable Unicode, not only spaces, no control or invisible format
    characters.
    """
    if value is None or not value.strip():
        raise ValueError("form field 'id_name' is missing or empty")
    if len(value) > MAX_ID_NAME:
        raise ValueError(f"id_name is longer than {MAX_ID_NAME} characters")
    bad = sorted({unicodedata.category(c) for c in value} & _REFUSED_CATEGORIES)
    if bad:
        raise ValueError("id_name contains control or invisible characters (Unicode categories "
                         f"{', '.join(bad)}); use printable characters only")
    return value


@bp.post("/imgup")
def imgup():
    """Store a photo under the caller's ``id_name`` (multipart fields ``file`` and ``id_name``)."""
    upload = request.files.get("file")
    if upload is None:
        return error(400, "multipart form field 'file' is missing (curl -F file=@photo.jpg -F id_name=NAME)")
    try:
        id_name = _id_name(request.form.get("id_name"))
    except ValueError as exc:
        return error(400, str(exc))
    data = upload.read()
    try:  # the header gives format and size; a reduced decode proves the pixels decode (the handler's decoder)
        header = open_image(data)
        fmt, (width, height) = header.format, oriented_size(header)
        decode_image(data, min_side=UPLOAD_CHECK_SIDE)
    except ImageError as exc:
        return error(exc.status, str(exc))
    # tags start now, while the upload is made durable, so /imginfo right after usually finds them ready
    current_app.extensions["predictions"].prefetch(hashlib.sha256(data).hexdigest(), data)
    if_absent = request.form.get("if_absent", "0").strip().lower() in ("1", "true", "yes")
    try:
        record = current_app.extensions["store"].put(id_name, data, exif=read_exif(data), fmt=fmt,
                                                     width=width, height=height, if_absent=if_absent)
    except Conflict as exc:
        return error(409, str(exc))
    return jsonify(image_id=id_name, status=record["status"], sha256=record["sha256"], bytes=record["bytes"],
                   replaced=record["replaced"])


@bp.route("/imginfo", methods=["GET", "POST"])
def imginfo():
    """Tags (from TorchServe), EXIF date and GPS of a stored photo."""
    id_name = request.values.get("id_name")
    if not id_name:
        return error(400, "parameter 'id_name' is missing (GET /imginfo?id_name=NAME)")
    store = current_app.extensions["store"]
    record = store.get(id_name)
    if record is None:
        return error(404, f"no photo stored under id_name {id_name!r}; upload it with POST /imgup")
    try:
        prediction = current_app.extensions["predictions"].get(record)
    except TaggerError as exc:
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else {}
        return error(exc.status, str(exc), **headers)
    exif = record["exif"]
    return jsonify(
        image_id=id_name,
        predict_tags=prediction["tags"],
        data_information=exif.get("datetime_original"),
        GPS_information=gps_information(exif.get("gps")),
        scores=prediction["scores"],
        model_version=prediction["model_version"],
    )


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
    return jsonify(status="ready", model_version=version)


@bp.get("/openapi.json")
def openapi():
    return jsonify(SPEC)
