"""The annotation page's blueprint and what its route modules share: the JSON error answer, the app's
extensions, the served model and the vocabulary of the next model.

    from annotation_ui.blueprint import bp, error     # a route module registers its routes on ``bp``
"""
from __future__ import annotations

from pathlib import Path

from flask import Blueprint, current_app, jsonify

from annotation_ui.vocabulary import next_vocabulary, served_model

bp = Blueprint("annotation_ui", __name__, url_prefix="/annotate", template_folder="templates",
               static_folder="static")


def error(status: int, message: str, **headers):
    """The JSON error answer every endpoint of the service gives: ``{"error": message}`` with ``status`` and
    ``headers`` (``error(503, "...", **{"Retry-After": "5"})``); the gateway's API answers with it too."""
    response = jsonify(error=message)
    response.status_code = status
    response.headers.update(headers)
    return response


def _ext(name):
    return current_app.extensions[name]


def _model() -> dict:
    return served_model(Path(current_app.config["MODEL_STORE"]), _ext("predictions").version.get(),
                        current_app.config["MODEL_NAME"])


def _vocabulary(model: dict | None = None) -> tuple[dict, list[dict], list[dict]]:
    """``(served model, labels of the next model, retired labels)`` (``annotation_ui.vocabulary``)."""
    model = model or _model()
    labels, retired = next_vocabulary(model, _ext("store").vocabulary_rows())
    return model, labels, retired
