"""The annotation page's retrain and deploy jobs over HTTP (``/annotate/api/jobs``): start, follow, cancel. The jobs
themselves run in their own process (``annotation_ui.jobs``, ``annotation_ui.job_runner``).
"""
from __future__ import annotations

from pathlib import Path

from flask import current_app, jsonify, request

from annotation_ui.blueprint import _ext, _model, _vocabulary, bp, error
from annotation_ui.jobs import JobBusy, Jobs
from annotation_ui.vocabulary import label_file_records, next_version
from tagger.archive import archive_of
from tagger.layout import DataDir

RECIPES = ("prior", "sgd")


def _jobs() -> Jobs:
    return Jobs(DataDir(current_app.config["DATA_DIR"]).jobs)


def _busy_elsewhere() -> str | None:
    """Why no job can start now on a PostgreSQL store: one runs on another replica (else None)."""
    if _ext("store").job_running_elsewhere():
        return "a job runs on another gateway replica; wait for it to finish"
    return None


def _job_env() -> dict:
    """The store's database URL for the job's process (which exports the labels from the same store)."""
    return {"DATABASE_URL": current_app.config.get("DATABASE_URL") or ""}


def _job_config(model: dict) -> dict:
    cfg = current_app.config
    _, active, retired = _vocabulary(model)
    store_dir = Path(cfg["MODEL_STORE"])
    served = archive_of(store_dir, model["version"], cfg["MODEL_NAME"]) if model["version"] else None
    return {"data_dir": str(Path(cfg["DATA_DIR"]).resolve()), "photo_dir": str(_ext("store").root.resolve()),
            "cache_dir": str(Path(cfg.get("CACHE_DIR") or DataDir(cfg["DATA_DIR"]).cache).resolve()),
            "model_store": str(store_dir.resolve()),
            "model_name": cfg["MODEL_NAME"], "inference_url": cfg["TS_INFERENCE_URL"],
            "management_url": cfg["TS_MANAGEMENT_URL"],
            "key_file": cfg["TS_KEY_FILE"], "timeout": int(cfg["JOB_TIMEOUT"]),
            "vocabulary": label_file_records(active), "retired": label_file_records(retired),
            "vocabulary_source": model["source"],
            "served_version": model["version"], "served_archive": str(served) if served else None}


@bp.post("/api/jobs/train")
def start_train():
    """``{"recipe": "prior"|"sgd", "epochs": N, "samples": true}``: retrain on the export in the background."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return error(400, 'send JSON {"recipe": "prior", "epochs": 20, "samples": true}')
    recipe, epochs, samples = body.get("recipe", "prior"), body.get("epochs", 20), body.get("samples", True)
    if recipe not in RECIPES:
        return error(400, f"recipe must be one of {', '.join(RECIPES)}")
    if not isinstance(epochs, int) or isinstance(epochs, bool) or not 1 <= epochs <= 200:
        return error(400, "epochs must be an integer from 1 to 200")
    if not isinstance(samples, bool):
        return error(400, "samples must be true or false")
    if (busy := _busy_elsewhere()) is not None:
        return error(409, busy)
    try:
        job = _jobs().start("train", {"recipe": recipe, "epochs": epochs, "samples": samples},
                            _job_config(_model()), env=_job_env())
    except JobBusy as exc:
        return error(409, str(exc))
    return jsonify(job={k: v for k, v in job.items() if k != "config"}), 202


@bp.post("/api/jobs/deploy")
def start_deploy():
    """``{"train_job": ID}``: archive that job's checkpoint as the next version and deploy it."""
    if current_app.config["TS_PROTOCOL"] == "kserve-v1":
        return error(409, "the model is served by a KServe InferenceService here, which the gateway does not "
                          "manage: archive the checkpoint (make archive) and roll it out by updating the "
                          "InferenceService's storage (deploy/kserve/)")
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("train_job"), str):
        return error(400, 'send JSON {"train_job": "<id of a finished retrain job>"}')
    jobs = _jobs()
    train = jobs.get(body["train_job"], log=False)
    if train is None or train["kind"] != "train":
        return error(404, f"no retrain job {body['train_job']!r}")
    if train["state"] != "succeeded":
        return error(409, f"retrain job {train['id']} has not succeeded ({train['state']}); nothing to deploy")
    model = _model()
    if model["version"] is None:
        return error(503, "the model server is not answering, so the served version is unknown; make serve "
                          "first", **{"Retry-After": "5"})
    version = next_version(model["version"], Path(current_app.config["MODEL_STORE"]), current_app.config["MODEL_NAME"])
    if (busy := _busy_elsewhere()) is not None:
        return error(409, busy)
    try:
        job = jobs.start("deploy", {"train_job": train["id"], "checkpoint": train["result"]["checkpoint"],
                                    "version": version}, _job_config(model), env=_job_env())
    except JobBusy as exc:
        return error(409, str(exc))
    return jsonify(job={k: v for k, v in job.items() if k != "config"}), 202


@bp.get("/api/jobs")
def jobs_list():
    jobs = _jobs().list()
    return jsonify(jobs=jobs, latest=_jobs().get(jobs[0]["id"]) if jobs else None)


@bp.post("/api/jobs/<job_id>/cancel")
def cancel_job(job_id: str):
    """Stop a running retrain: its training run is killed and the job ends ``cancelled`` (202: asked)."""
    try:
        job = _jobs().cancel(job_id)
    except KeyError:
        return error(404, f"no job {job_id!r}")
    except JobBusy as exc:
        return error(409, str(exc))
    return jsonify(job=job), 202


@bp.get("/api/jobs/<job_id>")
def job_view(job_id: str):
    job = _jobs().get(job_id)
    if job is None:
        return error(404, f"no job {job_id!r}")
    return jsonify(job)
