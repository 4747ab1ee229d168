"""The gateway: a Flask app that stores photos and answers their tags, date and position.

    gunicorn --bind 127.0.0.1:7777 'gateway:create_app()'     # what `make serve` runs
    flask --app gateway run --port 7777                       # development server

Configuration: defaults below, then ``TAGGER_*`` environment variables (``TAGGER_DATA_DIR=/srv/photos``), or a
``test_config`` mapping passed to ``create_app`` (tests inject a fake ``TAGGER_CLIENT`` there).
"""
from __future__ import annotations

import logging
from pathlib import Path

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

REPO = Path(__file__).resolve().parent.parent
logger = logging.getLogger(__name__)


def create_app(test_config: dict | None = None) -> Flask:
    from gateway.api import bp as api_bp
    from gateway.store import PhotoStore
    from gateway.tagger_client import TaggerClient
    from handler.image import DEFAULT_MAX_BYTES
    from training.labels import load_labels

    app = Flask(__name__)
    app.config.from_mapping(
        DATA_DIR=str(REPO / "var"),
        TS_INFERENCE_URL="http://127.0.0.1:8080",
        TS_MANAGEMENT_URL="http://127.0.0.1:8081",
        TS_KEY_FILE=None,  # default: DATA_DIR/run/torchserve/key_file.json
        TS_TIMEOUT=30.0,
        MODEL_NAME="tagger",
        MAX_CONTENT_LENGTH=DEFAULT_MAX_BYTES + 1024 * 1024,  # the image limit plus room for the form
        TAGGER_CLIENT=None,
        TS_STATE_FILE=None,  # default: DATA_DIR/run/torchserve/deployed.json (rewritten by make deploy/rollback)
        VERSION_TTL=30.0,  # seconds between asking TorchServe which version it serves
        PREFETCH_WORKERS=2,
    )
    if test_config is None:
        app.config.from_prefixed_env("TAGGER")
    else:
        app.config.update(test_config)
    data_dir = Path(app.config["DATA_DIR"])
    app.extensions["store"] = PhotoStore(data_dir)
    app.extensions["labels"] = load_labels()  # the vocabulary the annotation page offers
    app.extensions["tagger"] = app.config["TAGGER_CLIENT"] or TaggerClient(
        app.config["TS_INFERENCE_URL"], app.config["TS_MANAGEMENT_URL"],
        app.config["TS_KEY_FILE"] or data_dir / "run/torchserve/key_file.json",
        model_name=app.config["MODEL_NAME"], timeout=float(app.config["TS_TIMEOUT"]))

    from gateway.predictions import Predictions

    app.extensions["predictions"] = Predictions(
        app.extensions["store"], app.extensions["tagger"],
        app.config["TS_STATE_FILE"] or data_dir / "run/torchserve/deployed.json",
        workers=int(app.config["PREFETCH_WORKERS"]), ttl=float(app.config["VERSION_TTL"]))
    from gateway.request_id import install as install_request_id

    install_request_id(app)
    app.register_blueprint(api_bp)
    from annotation_ui import bp as annotation_bp

    app.register_blueprint(annotation_bp)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return jsonify(error=exc.description), exc.code

    @app.errorhandler(Exception)
    def internal_error(exc: Exception):
        logger.exception("unhandled error")
        return jsonify(error="internal error; the gateway log has the details"), 500

    return app
