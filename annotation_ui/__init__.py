"""The annotation page: upload photos, see the model's suggestions, correct the labels, export a dataset.

Mounted by the gateway at ``/annotate/`` and sharing its store. The export is a COCO-format file whose
``file_name`` entries are relative to the data directory, so training reads it directly::

    curl -o var/export.json http://127.0.0.1:7777/annotate/export.json
    python -m training --recipe prior --data var --ann var/export.json --output checkpoints/mine
"""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify, render_template, request

from gateway.api import error

bp = Blueprint("annotation_ui", __name__, url_prefix="/annotate", template_folder="templates",
               static_folder="static")


@bp.get("/")
def page():
    return render_template("annotate.html")


@bp.get("/api/labels")
def labels():
    return jsonify(labels=[lab["name"] for lab in current_app.extensions["labels"]])


@bp.get("/api/photos")
def photos():
    rows = current_app.extensions["store"].list()
    return jsonify(photos=[{"id_name": r["id_name"], "labels": r["labels"], "uploaded_at": r["uploaded_at"]}
                           for r in rows])


@bp.put("/api/photos/<path:id_name>/labels")
def save_labels(id_name: str):
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("labels"), list):
        return error(400, 'send JSON {"labels": ["sea", ...]}')
    vocabulary = {lab["name"] for lab in current_app.extensions["labels"]}
    unknown = [x for x in body["labels"] if not isinstance(x, str) or x not in vocabulary]
    if unknown:
        return error(400, f"not in the label vocabulary: {unknown}")
    if not current_app.extensions["store"].set_labels(id_name, body["labels"]):
        return error(404, f"no photo stored under id_name {id_name!r}")
    return jsonify(id_name=id_name, labels=sorted(set(body["labels"])))


@bp.get("/export.json")
def export():
    """Labelled photos as a COCO-format file (image-level labels; every label was judged by the labeller)."""
    vocabulary = current_app.extensions["labels"]
    by_name = {lab["name"]: lab for lab in vocabulary}
    images, annotations = [], []
    for i, record in enumerate(r for r in current_app.extensions["store"].list(limit=1_000_000)
                               if r["labels"] is not None):
        images.append({"id": i + 1, "file_name": record["file"], "width": record["width"],
                       "height": record["height"], "id_name": record["id_name"], "sha256": record["sha256"],
                       "labelled_at": record["labelled_at"], "unknown_category_ids": []})
        for name in record["labels"]:
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": by_name[name]["id"],
                                "iscrowd": 0, "area": 0, "bbox": []})
    return jsonify(info={"description": "photo tagger annotation export (image-level labels)"}, licenses=[],
                   categories=[{"id": lab["id"], "name": lab["name"], "isthing": lab["isthing"]}
                               for lab in vocabulary],
                   images=images, annotations=annotations)
