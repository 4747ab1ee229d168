"""The gateway: a Flask app that stores photos and answers their tags, date and position.

    gunicorn --bind 127.0.0.1:7777 'gateway:create_app()'     # what `make serve` runs
    flask --app gateway run --port 7777                       # development server

``create_app`` assembles: the settings (``gateway/config.py``: defaults, ``TAGGER_*`` environment variables, or a
``test_config`` mapping), the store and clients, the request checks in the order they run, the routes, and the
JSON error answers (``gateway/errors.py``).
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from flask import Flask
from werkzeug.routing import PathConverter

from annotation_ui import bp as annotation_bp
from gateway.api import bp as api_bp
from gateway.auth import install as install_auth
from gateway.body import install as install_body_reader
from gateway.config import configure
from gateway.errors import install as install_errors
from gateway.hosts import install as install_hosts
from gateway.kserve_client import KServeClient
from gateway.predictions import Predictions
from gateway.request_id import install as install_request_id
from gateway.same_origin import install as install_same_origin
from gateway.server_timing import install as install_server_timing
from gateway.tagger_client import TaggerClient
from photo_store import open_store
from tagger.exif_parsers import ExifParsers
from tagger.labels import load_labels
from tagger.layout import DataDir

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
    configure(app, test_config)
    data_dir = DataDir(app.config["DATA_DIR"])
    app.extensions["store"] = open_store(data_dir.root, app.config["DATABASE_URL"], photo_dir=app.config["PHOTO_DIR"],
                                          timeout=float(app.config["DATABASE_TIMEOUT"]))
    app.extensions["labels"] = load_labels()  # the vocabulary the annotation page offers
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

    app.register_blueprint(api_bp)
    app.register_blueprint(annotation_bp)

    install_errors(app)
    return app
