"""The gateway: a Flask app that stores photos and answers their tags, date and position.

    gunicorn --bind 127.0.0.1:7777 'gateway:create_app()'     # what `make serve` runs
    flask --app gateway run --port 7777                       # development server

Configuration: defaults below, then ``TAGGER_*`` environment variables (``TAGGER_DATA_DIR=/srv/photos``), or a
``test_config`` mapping passed to ``create_app`` (tests inject a fake ``TAGGER_CLIENT`` there).
"""
from __future__ import annotations

import errno
import logging
import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.routing import PathConverter

from annotation_ui import bp as annotation_bp
from gateway.api import bp as api_bp
from gateway.auth import install as install_auth
from gateway.body import install as install_body_reader
from gateway.hosts import install as install_hosts
from gateway.kserve_client import KServeClient
from gateway.predictions import Predictions
from gateway.request_id import install as install_request_id
from gateway.same_origin import install as install_same_origin
from gateway.server_timing import install as install_server_timing
from gateway.tagger_client import TaggerClient
from photo_store import StoreUnavailable, open_store
from tagger import REPO
from tagger.exif_parsers import ExifParsers
from tagger.image import DEFAULT_MAX_BYTES
from tagger.labels import load_labels
from tagger.layout import DEFAULT as DEFAULT_DATA
from tagger.layout import DataDir
from tagger.net import TS_INFERENCE_PORT, TS_MANAGEMENT_PORT, local_url
from tagger.tags import check_policy

logger = logging.getLogger(__name__)


class IdNameConverter(PathConverter):
    """``<id_name:id_name>``: any id_name, a leading slash and "//" included (werkzeug's path converter refuses a
    leading slash)."""

    regex = ".+?"
    part_isolating = False  # it spans "/" (werkzeug infers True from a regex without a slash)


def model_client(config):
    """The client of the model server ``TS_PROTOCOL`` names: TorchServe's own API, or a KServe InferenceService."""
    if config["TS_PROTOCOL"] == "kserve-v1":
        return KServeClient(config["TS_INFERENCE_URL"], model_name=config["MODEL_NAME"],
                            timeout=float(config["TS_TIMEOUT"]))
    return TaggerClient(config["TS_INFERENCE_URL"], config["TS_MANAGEMENT_URL"], config["TS_KEY_FILE"],
                        model_name=config["MODEL_NAME"], timeout=float(config["TS_TIMEOUT"]))


def create_app(test_config: dict | None = None) -> Flask:
    app = Flask(__name__)
    # An id_name in a URL path (DELETE /photos/<id_name>, the page's labels) may start with "/" or hold "//": it is
    # data, so it is matched whole and never merged or redirected to another photo's path.
    app.url_map.merge_slashes = False
    app.url_map.converters["id_name"] = IdNameConverter
    app.config.from_mapping(
        DATA_DIR=str(DEFAULT_DATA.root),
        DATABASE_URL=os.environ.get("DATABASE_URL", ""),  # empty: SQLite in DATA_DIR; postgresql://USER@HOST:PORT/DB
        PHOTO_DIR=None,  # default: DATA_DIR; replicas share one (a NAS or NFS mount)
        CACHE_DIR=None,  # training's per-photo features and detections (default: DATA_DIR/cache; jobs write there)
        DATABASE_TIMEOUT=3.0,  # seconds to wait for a PostgreSQL connection before answering 503
        TS_PROTOCOL="torchserve",  # or kserve-v1: an InferenceService at TS_INFERENCE_URL (no management API)
        TS_INFERENCE_URL=local_url(TS_INFERENCE_PORT),
        TS_MANAGEMENT_URL=local_url(TS_MANAGEMENT_PORT),
        TS_KEY_FILE=None,  # default: DATA_DIR/run/torchserve/key_file.json
        TS_TIMEOUT=30.0,
        MODEL_NAME="tagger",
        MODEL_STORE=str(REPO / "model_store"),  # archives: the annotation page reads labels from them, deploys to it
        MAX_CONTENT_LENGTH=DEFAULT_MAX_BYTES + 1024 * 1024,  # the image limit plus room for the form
        FORM_PARTS=8,  # multipart parts accepted in one request (file, id_name, if_absent and a few spare)
        TAGGER_CLIENT=None,
        TS_STATE_FILE=None,  # default: DATA_DIR/run/torchserve/deployed.json (rewritten by make deploy/rollback)
        VERSION_TTL=30.0,  # seconds between asking TorchServe which version it serves
        PREFETCH_WORKERS=2,
        DECODE_CHECK_THREADS=8,  # per worker: each upload checks its pixels and reads its EXIF beside its file write
        EXIF_TIMEOUT=3.0,  # seconds one EXIF parse may take from its start (its process is then killed)
        EXIF_PARSE=None,  # "module:function" parsing EXIF in the parser processes (default tagger.exif.parse_exif)
        GATEWAY_AUTH=os.environ.get("GATEWAY_AUTH", "auto"),  # auto: tokens for other machines; required; off
        TAG_POLICY="precise",  # whose tags /imginfo answers: precise, balanced or complete (?policy= picks another)
        HOSTS="",  # host names answered beyond loopback ones (TAGGER_HOSTS="nas.local 192.168.1.5"; "*": any)
        SESSION_HOURS=12.0,  # how long the annotation page's sign-in lasts
        TRASH_DAYS=30.0,  # days a deleted photo stays restorable (GET /trash) before it is erased
        JOB_TIMEOUT=7200,  # seconds a retrain from the annotation page may run before it is stopped
    )
    if test_config is None:
        app.config.from_prefixed_env("TAGGER")
    else:
        app.config.update(test_config)
    app.config["TAG_POLICY"] = check_policy(str(app.config["TAG_POLICY"]).strip().lower())
    data_dir = DataDir(app.config["DATA_DIR"])
    app.config["TS_KEY_FILE"] = str(app.config["TS_KEY_FILE"] or data_dir.key_file)
    app.extensions["store"] = open_store(data_dir.root, app.config["DATABASE_URL"], photo_dir=app.config["PHOTO_DIR"],
                                          timeout=float(app.config["DATABASE_TIMEOUT"]))
    app.extensions["labels"] = load_labels()  # the vocabulary the annotation page offers
    protocol = str(app.config["TS_PROTOCOL"]).strip().lower()
    if protocol not in ("torchserve", "kserve-v1"):
        raise ValueError(f"TS_PROTOCOL={app.config['TS_PROTOCOL']!r}: use torchserve (TorchServe's own API, "
                         "make serve) or kserve-v1 (an InferenceService, deploy/kserve/gateway.yaml)")
    app.config["TS_PROTOCOL"] = protocol  # the annotation page reads it: no deploys through KServe
    app.extensions["tagger"] = app.config["TAGGER_CLIENT"] or model_client(app.config)
    app.extensions["decode_checks"] = ThreadPoolExecutor(int(app.config["DECODE_CHECK_THREADS"]),
                                                         thread_name_prefix="decode-check")
    app.extensions["exif"] = ExifParsers(timeout=float(app.config["EXIF_TIMEOUT"]), parse=app.config["EXIF_PARSE"])
    app.extensions["predictions"] = Predictions(
        app.extensions["store"], app.extensions["tagger"],
        app.config["TS_STATE_FILE"] or data_dir.deployed,
        workers=int(app.config["PREFETCH_WORKERS"]), ttl=float(app.config["VERSION_TTL"]),
        inflight_dir=data_dir.prefetch, model_store=app.config["MODEL_STORE"], model_name=app.config["MODEL_NAME"])
    install_request_id(app)
    install_hosts(app)  # first of the checks: a request naming another host (DNS rebinding) goes no further
    install_server_timing(app)
    install_same_origin(app)
    install_auth(app)  # after the same-origin check, before the body is read: a refused request's body is never read
    install_body_reader(app)  # after auth: only the routes in gateway.body.BODIES read a body, once authorized
    app.config["MAX_CONTENT_LENGTH"] = int(app.config["MAX_CONTENT_LENGTH"])

    @app.before_request
    def _limit_form_parts():
        """Refuse a multipart form with more parts than FORM_PARTS before it is parsed."""
        if request.mimetype != "multipart/form-data":
            return None
        boundary = request.mimetype_params.get("boundary")
        if not boundary:
            return jsonify(error="multipart body without a boundary: let your HTTP client build the form "
                                 "(curl -F file=@photo.jpg -F id_name=NAME)"), 400
        data = request.get_data(cache=True)  # already read, within the limit, by gateway.body
        parts = data.count(b"--" + boundary.encode("latin-1")) - 1
        if parts > int(app.config["FORM_PARTS"]):
            return jsonify(error=f"the form has {parts} parts; send at most {app.config['FORM_PARTS']} "
                                 "(file, id_name, if_absent)"), 400
        return None

    app.register_blueprint(api_bp)
    app.register_blueprint(annotation_bp)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        response = jsonify(error=exc.description)
        response.status_code = exc.code
        for name, value in exc.get_headers():  # e.g. Allow on a 405, as RFC 9110 asks
            if name.lower() != "content-type":
                response.headers[name] = value
        return response

    @app.errorhandler(StoreUnavailable)
    def store_unavailable(exc: StoreUnavailable):
        """The database is restarting or unreachable: nothing was stored; the client retries (never a 500)."""
        logger.error("%s", exc)
        response = jsonify(error="the photo database does not answer now: nothing was stored; retry shortly")
        response.status_code = 503
        response.headers["Retry-After"] = "5"
        return response

    @app.errorhandler(OSError)
    @app.errorhandler(sqlite3.OperationalError)
    def storage_error(exc: Exception):
        """A full disk is 507, a read-only or vanished data directory 503: the request was not stored, what was
        acknowledged before is untouched, and the client can retry once an operator has made room."""
        full = getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) \
            or "full" in str(exc).lower()
        readonly = getattr(exc, "errno", None) in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOENT) \
            or "readonly" in str(exc).lower() or "read-only" in str(exc).lower()
        if not (full or readonly):
            return internal_error(exc)
        logger.error("storage error: %s", exc)
        if full:
            response = jsonify(error="the photo store is full: nothing was stored; free disk space under the data "
                                     "directory and retry")
            response.status_code = 507
        else:
            response = jsonify(error="the photo store is not writable (read-only or missing data directory): "
                                     "nothing was stored; retry later")
            response.status_code = 503
            response.headers["Retry-After"] = "30"
        return response

    @app.errorhandler(Exception)
    def internal_error(exc: Exception):
        logger.exception("unhandled error")
        return jsonify(error="internal error; the gateway log has the details"), 500

    return app
