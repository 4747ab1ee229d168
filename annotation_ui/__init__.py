"""The annotation page: upload photos, label them at keyboard speed with the model's suggestions, export, retrain,
compare and deploy. Mounted by the gateway at ``/annotate/`` and sharing its store (through
``current_app.extensions``) and its ``id_name`` URL converter.

    open http://127.0.0.1:7777/annotate/            # after `make serve`
    curl -o var/export.json http://127.0.0.1:7777/annotate/export.json    # or: python -m annotation_ui.export
    python -m training --data var --ann var/export.json --output checkpoints/mine

JSON API (under ``/annotate/api/``): ``labels``, ``model``, ``photos`` (filter, order, paging), ``photo``,
``PUT|DELETE photos/<id_name>/labels``, ``progress``, ``thumb``/``view``/``original`` images, ``jobs``.
The logic lives in pure modules: ``labelling`` (what a save records, order, progress), ``export``, ``thumbs``,
``vocabulary`` (the served version's labels), ``jobs`` + ``job_runner`` (retrain and deploy in the background). The
blueprint and what the routes share are in ``blueprint``; the job routes in ``job_routes``.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import re

from flask import Response, current_app, jsonify, render_template, request, send_file, stream_with_context

from annotation_ui import job_routes  # noqa: F401 - registers the job routes on bp
from annotation_ui.blueprint import _ext, _model, _vocabulary, bp, error
from annotation_ui.export import stream_export
from annotation_ui.labelling import label_detail, margin_of, progress, uncertainty
from annotation_ui.thumbs import cached_jpeg
from model.detector import coco_objects
from photo_store import LabelTaken, StalePhoto
from tagger.image import EXTENSIONS, MEDIA_TYPES, ImageError, media_type
from tagger.labels import LabelNameError, check_name, key, label_names
from tagger.meta import utc_now
from tagger.tags import PolicyMissing, UnknownPolicy, answer_tags, check_policy
from training.evidence import evidence, imagenet_wnids, sample_positives, suggestions

GRID_LIMIT_MAX = 500  # the page's grid: photos per request
# "uncertain first" computes the margins of predictions made since the last time for at most this long per request
# (a store's first time: about 100,000 a minute); those still to do come last, and the answer says so
MARGIN_SECONDS = 2.0
LABELLER = re.compile(r"^[\w .@-]{1,64}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")


#: Positives a label needs before its tags are emitted when no detector or ImageNet class speaks for it (the training
#: tool's rule for measuring a threshold), and at which its own head outweighs its evidence (the recipe's pseudo-count).
MEASURED_AT, OWN_HEAD_AT = 3, 10


def _needs(label: dict, positives: int, ev: dict) -> dict:
    """How many more examples ``label`` needs: to be tagged at all, and to stand on its own examples."""
    have = positives + sample_positives(label)
    tagged = label.get("threshold") is not None or ev["source"] != "none"
    return {"to_be_tagged": 0 if tagged else max(0, MEASURED_AT - have),
            "to_outweigh_evidence": max(0, OWN_HEAD_AT - have)}


def _record_or_404(id_name: str | None):
    if not id_name:
        return None, error(400, "parameter 'id_name' is missing (?id_name=NAME)")
    record = _ext("store").get(id_name)
    if record is None:
        return None, error(404, f"no photo stored under id_name {id_name!r}; upload it first")
    return record, None


@bp.get("/")
def page():
    return render_template("annotate.html", accept=",".join([*MEDIA_TYPES, *sorted(EXTENSIONS)]))


@bp.get("/api/labels")
def labels():
    """The labels of the next model (the served ones and those people added, less the retired), each with its
    evidence, the photos people labelled with it, the bundled photos that show it, and how many more it needs;
    the retired ones; and the names that come with evidence (for the page's "add a label" field)."""
    model, active, retired = _vocabulary()
    return jsonify(labels=_label_views(model, active), retired=retired, model_version=model["version"],
                   source=model["source"], suggestions=list(suggestions()))


def _label_views(model: dict, labels: list[dict]) -> list[dict]:
    """``labels`` with their evidence, the photos people labelled with each, the bundled photos that show it, and
    what each needs."""
    stats = _progress(label_names(labels))["per_label"]
    out = []
    for lab in labels:
        ev = evidence(lab)
        positives = stats[lab["name"]]["positives"]
        out.append({**lab, "evidence": ev, "labelled": stats[lab["name"]]["reviewed"], "positives": positives,
                    "sample_positives": sample_positives(lab), "needs": _needs(lab, positives, ev)})
    return out


def _progress(vocabulary: list[str]) -> dict:
    total, labelled = _ext("store").labelled_summaries()
    return progress(labelled, vocabulary, total)


def _label_body(body) -> dict:
    """The checked fields of a label to add; raises ``ValueError`` saying what is wrong."""
    if not isinstance(body, dict):
        raise ValueError('send JSON {"name": "dog", "synonyms": ["puppy"]}')
    name = check_name(body.get("name"))
    synonyms = body.get("synonyms", [])
    if not isinstance(synonyms, list) or len(synonyms) > 20:
        raise ValueError("synonyms must be a list of at most 20 names")
    synonyms = list(dict.fromkeys(check_name(x) for x in synonyms if key(x) != key(name)))
    kind = body.get("kind")
    if kind not in (None, "object", "scene"):
        raise ValueError("kind must be object or scene")
    detector_class = body.get("detector_class")
    if detector_class is not None:
        objects = {o["name"].lower(): o["name"] for o in coco_objects()}
        if not isinstance(detector_class, str) or detector_class.strip().lower() not in objects:
            raise ValueError(f"detector_class must be one of the 80 COCO objects the detector knows (dog, cup, ...),"
                             f" not {detector_class!r}")
        detector_class = objects[detector_class.strip().lower()]
    imagenet = body.get("imagenet")
    if imagenet is not None:
        if not isinstance(imagenet, list) or not imagenet or any(w not in imagenet_wnids() for w in imagenet):
            raise ValueError("imagenet must be a list of ImageNet-1k WordNet ids, such as n02085620")
    labeller = body.get("labeller") or "person"
    if not isinstance(labeller, str) or not LABELLER.match(labeller):
        raise ValueError("labeller must be 1-64 letters, digits, spaces or . @ - _")
    return {"name": name, "synonyms": synonyms, "kind": kind, "detector_class": detector_class,
            "imagenet": imagenet, "labeller": labeller}


@bp.post("/api/labels")
def add_label():
    """``{"name": "dog", "synonyms": ["puppy"]}`` (also ``kind``, ``detector_class``, ``imagenet``): a label for
    the next model. 201 with the evidence found; 409 when the name or a synonym names another label."""
    try:
        fields = _label_body(request.get_json(silent=True))
    except (ValueError, LabelNameError) as exc:
        return error(400, str(exc))
    model, active, retired = _vocabulary()
    words = {key(w): lab["name"] for lab in active for w in (lab["name"], *lab.get("synonyms", ()))}
    for word in (fields["name"], *fields["synonyms"]):
        if key(word) in words:
            return error(409, f"{word!r} already names the label {words[key(word)]!r} (names and synonyms are "
                              "unique, case-insensitively)")
    record = {k: v for k, v in fields.items() if v not in (None, []) and k != "labeller"}
    ev = evidence(record)
    kind = fields["kind"] or ("object" if ev["detector"] else "scene")
    served = any(key(r["name"]) == key(fields["name"]) and r.get("served") for r in retired)
    try:
        row, created = _ext("store").add_label(fields["name"], synonyms=fields["synonyms"], kind=kind, evidence=ev,
                                                by=fields["labeller"], detector_class=fields["detector_class"],
                                                imagenet=fields["imagenet"], served=served)
    except LabelTaken as exc:
        return error(409, str(exc))
    _, active, _ = _vocabulary(model)
    label = next(lab for lab in active if key(lab["name"]) == key(row["name"]))
    return jsonify(label=_label_views(model, [label])[0], evidence=ev, brought_back=not created), \
        201 if created else 200


@bp.delete("/api/labels/<name>")
def retire_label(name: str):
    """Retire a label from the next model; what people saved for it stays in the store and the export."""
    labeller = request.args.get("labeller") or "person"
    if not LABELLER.match(labeller):
        return error(400, "labeller must be 1-64 letters, digits, spaces or . @ - _")
    model, active, _ = _vocabulary()
    found = next((lab for lab in active if key(lab["name"]) == key(name)), None)
    if found is None:
        return error(404, f"no label {name!r} in the next model's vocabulary")
    retired = _ext("store").retire_label(found["name"], by=labeller,
                                         served=None if found["added"] else found)
    if retired is None:
        return error(404, f"no label {name!r} in the next model's vocabulary")
    return jsonify(label=found["name"], retired_at=retired["retired_at"],
                   note="retired from the next model; the labels people saved for it stay in the store and export")


@bp.get("/api/model")
def model():
    """The served version, its labels with thresholds (the page's checkboxes), and what deploy recorded."""
    return jsonify(_model())


def _policy(model: dict, given: str | None) -> str:
    """The tag policy whose suggestions the page shows: ``given`` (checked), else the gateway's, within what the
    served model carries (a model made before policies has balanced only)."""
    if not given:
        default = current_app.config["TAG_POLICY"]
        return default if not model.get("policies") or default in model["policies"] else model["tag_policy"]
    policy = check_policy(given)
    if model.get("policies") and policy not in model["policies"]:
        raise PolicyMissing(f"model {model['version']} carries only {', '.join(model['policies'])} thresholds (it "
                            "was made before tag policies)")
    return policy


def _thresholds(model: dict, policy: str) -> dict[str, float | None]:
    return {lab["name"]: (lab["policies"][policy]["threshold"] if policy in lab.get("policies", {})
                          else lab["threshold"]) for lab in model["labels"]}


@bp.get("/api/photos")
def photos():
    """A page of photos: ``status`` all|unlabelled|labelled, ``label``, ``order`` upload|uncertain, ``policy`` (whose
    suggestions: precise|balanced|complete), ``offset``, ``limit`` (1-500, default 500)."""
    status, order = request.args.get("status", "all"), request.args.get("order", "upload")
    if status not in ("all", "unlabelled", "labelled"):
        return error(400, "status must be all, unlabelled or labelled")
    if order not in ("upload", "uncertain"):
        return error(400, "order must be upload or uncertain")
    try:
        offset, limit = int(request.args.get("offset", 0)), int(request.args.get("limit", GRID_LIMIT_MAX))
    except ValueError:
        return error(400, "offset and limit must be integers")
    if offset < 0 or not 1 <= limit <= GRID_LIMIT_MAX:
        return error(400, f"offset must be >= 0 and limit between 1 and {GRID_LIMIT_MAX}")
    model, active, _ = _vocabulary()
    try:
        policy = _policy(model, request.args.get("policy"))
    except (UnknownPolicy, PolicyMissing) as exc:
        return error(400, str(exc))
    names = set(label_names(active))
    label = request.args.get("label") or None
    if label is not None and label not in names:
        return error(400, f"label {label!r} is not in the vocabulary")
    thresholds, store, version = _thresholds(model, policy), _ext("store"), model["version"]
    pending, ranked = False, None
    if order == "uncertain" and version:  # the margins of predictions made since the last call, computed once
        of_scores = margin_of(thresholds)

        def margin(answer: dict) -> float | None:
            return of_scores(answer.get("scores", {}))
        # cached per policy and thresholds (an archive found later may bring others for the same version)
        ranked = f"{policy}:{hashlib.sha256(json.dumps(thresholds, sort_keys=True).encode()).hexdigest()[:16]}"
        pending = not store.cache_margins(version, ranked, margin, seconds=MARGIN_SECONDS)[1]
    indexed = store.indexed_policy(version, default=policy) if label is not None else "*"
    total, page_rows = store.grid(version, status=status, tag=label, policy=indexed, offset=offset, limit=limit,
                                  uncertain=ranked)
    for r in page_rows:
        r["uncertainty"] = uncertainty(r["answer"].get("scores", {}), thresholds) if r["answer"] else None
    return jsonify(total=total, offset=offset, next_offset=offset + limit if offset + limit < total else None,
                   margins_pending=pending,
                   model_version=model["version"], tag_policy=policy,
                   photos=[{"id_name": r["id_name"], "labels": r["labels"], "uploaded_at": r["uploaded_at"],
                            "labelled_at": r["labelled_at"], "sha256": r["sha256"],
                            "suggested_tags": answer_tags(r["answer"], default=policy)[0] if r["answer"] else None,
                            "uncertainty": None if r["uncertainty"] is None else round(r["uncertainty"], 4)}
                           for r in page_rows])


@bp.get("/api/photo")
def photo():
    """One photo's saved labels (with who set each and when) and the suggestion recorded at its save."""
    record, bad = _record_or_404(request.args.get("id_name"))
    if bad:
        return bad
    return jsonify({k: record[k] for k in ("id_name", "sha256", "labels", "label_detail", "suggested",
                                           "uploaded_at", "labelled_at", "width", "height", "format")})


@bp.put("/api/photos/<id_name:id_name>/labels")
def save_labels(id_name: str):
    """``{"labels": [...], "unknown": [...], "labeller": "ann", "policy": "complete", "sha256": "..."}``: the
    person's positives, the labels left unreviewed (unknown in the export), who saved, the policy whose suggestions
    they saw, and the photo they saw (409 with both hashes when another was stored under the id_name since). Every
    other label of the vocabulary is a reviewed negative."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("labels"), list) \
            or not isinstance(body.get("unknown", []), list):
        return error(400, 'send JSON {"labels": ["sea", ...], "unknown": ["fog", ...]}')
    model, active, _ = _vocabulary()
    vocabulary = label_names(active)
    given = body["labels"] + body.get("unknown", [])
    bad = [x for x in given if not isinstance(x, str) or x not in vocabulary]
    if bad:
        return error(400, f"not in the label vocabulary (model {model['version']} and the labels people added): "
                          f"{bad[:10]}")
    if set(body["labels"]) & set(body.get("unknown", [])):
        return error(400, "a label cannot be both set and unknown")
    labeller = body.get("labeller") or "person"
    if not isinstance(labeller, str) or not LABELLER.match(labeller):
        return error(400, "labeller must be 1-64 letters, digits, spaces or . @ - _")
    seen_sha = body.get("sha256")
    if seen_sha is not None and (not isinstance(seen_sha, str) or not SHA256.match(seen_sha)):
        return error(400, "sha256 must be the 64 hex digits of the photo shown (api/photo's sha256)")
    try:
        policy = _policy(model, body.get("policy"))
    except (UnknownPolicy, PolicyMissing) as exc:
        return error(400, str(exc))
    store = _ext("store")
    record = store.get(id_name)
    if record is None:
        return error(404, f"no photo stored under id_name {id_name!r}")
    answer = store.cached_prediction(record["sha256"], model["version"]) if model["version"] else None
    shown, shown_policy = answer_tags(answer, default=policy) if answer else ([], None)
    suggested = {"model_version": model["version"], "tags": shown, "tag_policy": shown_policy} if answer else None
    now = utc_now(micro=True)
    detail = label_detail(vocabulary, positives=set(body["labels"]), unknown=set(body.get("unknown", [])),
                          suggested=set(shown), previous=record["label_detail"],
                          by=labeller, now=now)
    try:
        if not store.set_labels(id_name, body["labels"], detail=detail, suggested=suggested, sha256=seen_sha):
            return error(404, f"no photo stored under id_name {id_name!r}")
    except StalePhoto as exc:
        return jsonify(error=str(exc), shown_sha256=exc.shown, stored_sha256=exc.stored), 409
    saved = store.get(id_name)
    return jsonify(id_name=id_name, labels=saved["labels"], unknown=sorted(body.get("unknown", [])),
                   labelled_at=saved["labelled_at"], label_detail=saved["label_detail"], suggested=suggested)


@bp.delete("/api/photos/<id_name:id_name>/labels")
def clear_labels(id_name: str):
    """Make a photo unlabelled again (undo of its first save)."""
    if not _ext("store").clear_labels(id_name):
        return error(404, f"no photo stored under id_name {id_name!r}")
    return jsonify(id_name=id_name, labels=None, labelled_at=None)


@bp.get("/api/progress")
def progress_view():
    model, active, _ = _vocabulary()
    stats = _progress(label_names(active))
    return jsonify(model_version=model["version"], **stats)


def _image(size: str):
    record, bad = _record_or_404(request.args.get("id_name"))
    if bad:
        return bad
    try:
        path = cached_jpeg(_ext("store"), record, size)
    except ImageError as exc:
        return error(exc.status, f"the stored photo does not decode: {exc}")
    response = send_file(path, mimetype="image/jpeg", etag=record["sha256"], max_age=86400)
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@bp.get("/api/thumb")
def thumb():
    """A JPEG of at most 256 px, made once per photo."""
    return _image("thumb")


@bp.get("/api/view")
def view():
    """A JPEG of at most 1024 px for the image view (any stored format, HEIC included)."""
    return _image("view")


@bp.get("/api/original")
def original():
    """The stored bytes, with their real content type."""
    record, bad = _record_or_404(request.args.get("id_name"))
    if bad:
        return bad
    response = send_file(_ext("store").image_path(record), mimetype=media_type(record["format"]),
                         etag=record["sha256"], max_age=3600)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return response


@bp.get("/export.json")
def export():
    """Labelled photos as a COCO-format file that ``python -m training --data <data dir> --ann`` reads."""
    model, active, retired = _vocabulary()
    records = _ext("store").labelled_records()
    first = next(records, None)  # read here: a store that does not answer is a 503, not a cut-off file
    records = records if first is None else itertools.chain([first], records)
    chunks = stream_export(records, active + retired, source=model["source"])
    return Response(stream_with_context(chunks), mimetype="application/json",
                    headers={"Content-Disposition": 'attachment; filename="export.json"'})
