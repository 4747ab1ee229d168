"""Runs one annotation-page job in its own process: ``python -m annotation_ui.job_runner var/jobs/<id>``.

``train``: export the store's labelled photos, hold a seeded fifth of them out for validation, run the training
tool (``python -m training``) on the rest (plus the bundled samples when asked), then evaluate the new checkpoint
and the served model's archive on the same validation photos. ``deploy``: archive a finished train job's
checkpoint as the next version and deploy it (what ``make archive`` + ``make deploy`` do). Each step is written
to ``job.json``; an error fails the job with its message and leaves what is served untouched.
"""
from __future__ import annotations

import argparse
import functools
import io
import json
import os
import random
import signal
import subprocess
import sys
import traceback
from pathlib import Path
from urllib.parse import urlparse

from annotation_ui.export import export_store
from photo_store.postgres import hold_job_lock, release_job_lock
from serving.stack import model_workers
from serving.torchserve import Ports, TorchServeRun
from serving.versions import Versions
from tagger import REPO
from tagger.archive import read_archive
from tagger.labels import label_names
from tagger.layout import DataDir
from tagger.lifetime import die_with_parent
from tagger.meta import save_json, utc_now

SAMPLE_SETS = ("samples/coco_subset", "samples/coco_more")
# the same photos over all 171 COCO categories: what a label people added learns from in the bundled photos
SAMPLES_EXT = "samples/coco_ext/annotations.json"
MIN_LABELLED = 3
DEFAULT_NAMES = frozenset(label_names())
PAGE_METRICS = ("mAP", "CF1", "OF1", "CP", "CR")  # what the page compares, in this order (training.metrics)


class JobError(RuntimeError):
    """A job that cannot go on; its message is shown on the page."""


class JobStopped(JobError):
    """A retrain cancelled from the page (SIGTERM) or past its time limit (SIGALRM): final state ``state``."""

    def __init__(self, message: str, state: str):
        super().__init__(message)
        self.state = state


def _stop_on(signum: int, message: str, state: str) -> None:
    """Raise ``JobStopped`` in the main thread when ``signum`` arrives: whatever the job waits on (the training
    run, kept by subprocess.run, is killed as the exception passes) unwinds, and the final state is written."""
    def handler(_signum, _frame):
        signal.signal(signum, signal.SIG_IGN)  # once
        raise JobStopped(message, state)
    signal.signal(signum, handler)


class Job:
    def __init__(self, job_dir: Path):
        self.dir = job_dir
        self.data = json.loads((job_dir / "job.json").read_text())

    def update(self, **changes) -> None:
        self.data.update(changes)
        save_json(self.dir / "job.json", self.data)

    def step(self, name: str) -> None:
        print(f"== {name}", flush=True)
        self.update(step=name)


def split_validation(export: dict, *, fraction: float = 0.2, seed: int = 0) -> tuple[dict, dict]:
    """(train, validation) COCO dicts: a seeded ``fraction`` of the photos (at least one) held out."""
    images = list(export["images"])
    random.Random(seed).shuffle(images)
    n_val = max(1, round(len(images) * fraction))
    val_ids = {im["id"] for im in images[:n_val]}

    def part(keep):
        return {**export, "images": [im for im in export["images"] if keep(im["id"])],
                "annotations": [a for a in export["annotations"] if keep(a["image_id"])]}
    return part(lambda i: i not in val_ids), part(lambda i: i in val_ids)


def _summary(s: dict) -> dict:
    from training.metrics import METRIC_NAMES

    return {**{k: s.get(k) for k in METRIC_NAMES}, "per_label_ap": s.get("per_label_ap"),
            "images": s.get("images", s.get("n_images"))}


def evaluate(checkpoint: Path, data_dir: Path, ann: Path, out: Path, cache_dir: Path) -> dict:
    from training.evaluate import main as evaluate_main

    return _summary(evaluate_main(argparse.Namespace(checkpoint=str(checkpoint), data=[str(data_dir)], ann=[str(ann)],
                                                     labels=None, result=None, out=str(out), batch_size=16,
                                                     workers=0, cache_dir=str(cache_dir))))


def archive_checkpoint(mar: Path, out: Path) -> Path:
    """A checkpoint file (model + meta) from a served archive, so the training tool's evaluation reads it."""
    import torch

    archive = read_archive(mar)
    state = torch.load(io.BytesIO(archive.read("model.pt")), map_location="cpu", weights_only=True)
    torch.save({"model": state, "meta": archive.meta}, out)
    return out


def run_train(job: Job) -> dict:
    cfg, opt = job.data["config"], job.data["options"]
    data_dir = Path(cfg["data_dir"])
    photo_dir = Path(cfg.get("photo_dir") or data_dir)  # where the store keeps the files the export names
    cache_dir = Path(cfg.get("cache_dir") or DataDir(data_dir).cache)  # features and detections, per photo
    job.step("export")
    vocabulary = cfg["vocabulary"]
    export = export_store(data_dir, vocabulary + cfg.get("retired", []), source=cfg.get("vocabulary_source", ""),
                          database_url=os.environ.get("DATABASE_URL", ""), photo_dir=photo_dir)
    n = len(export["images"])
    if n < MIN_LABELLED:
        raise JobError(f"only {n} labelled photo(s): label and save at least {MIN_LABELLED} before retraining")
    train, val = split_validation(export, seed=int(opt.get("seed", 0)))
    for name, obj in (("export.json", export), ("train.json", train), ("val.json", val)):
        save_json(job.dir / name, obj)
    save_json(job.dir / "labels.json", {"labels": vocabulary})
    print(f"{n} labelled photos: {len(train['images'])} to train on, {len(val['images'])} held out for validation",
          flush=True)
    job.step("training")
    out = job.dir / "checkpoint"
    cmd = [sys.executable, "-m", "training", "--recipe", opt["recipe"], "--data", str(photo_dir),
           "--ann", str(job.dir / "train.json")]
    if opt.get("samples"):
        for d in SAMPLE_SETS:
            cmd += ["--data", str(REPO / d), "--ann", str(REPO / d / "annotations.json")]
        if any(lab.get("added") or lab["name"] not in DEFAULT_NAMES for lab in vocabulary):
            cmd += ["--data", str(REPO / "samples"), "--ann", str(REPO / SAMPLES_EXT)]
    cmd += ["--val-ann", str(job.dir / "val.json"), "--val-data", str(photo_dir), "--labels",
            str(job.dir / "labels.json"), "--output", str(out), "--cache-dir", str(cache_dir),
            "--epochs", str(int(opt["epochs"])), "--workers", "0"]
    print("$ " + " ".join(cmd), flush=True)
    # the training run dies with this runner: a killed job leaves nothing training on
    # (and is killed when this job is cancelled or runs out of time: subprocess.run kills it as JobStopped passes)
    rc = subprocess.run(cmd, cwd=REPO, stdin=subprocess.DEVNULL,
                        preexec_fn=functools.partial(die_with_parent, os.getpid())).returncode
    if rc != 0 or not (out / "best.pt").is_file():
        raise JobError(f"the training tool exited with status {rc}; its output is in the log above")
    job.step("evaluating")
    result = {"metric_names": list(PAGE_METRICS), "photos": n, "train_photos": len(train["images"]),
              "validation_photos": len(val["images"]),
              "samples": bool(opt.get("samples")), "checkpoint": str(out / "best.pt"),
              "new": evaluate(out / "best.pt", photo_dir, job.dir / "val.json", job.dir / "eval-new.json", cache_dir)}
    mar = Path(cfg["served_archive"]) if cfg.get("served_archive") else None
    if mar is not None and mar.is_file():
        served = archive_checkpoint(mar, job.dir / "served.pt")
        result["served"] = evaluate(served, photo_dir, job.dir / "val.json", job.dir / "eval-served.json", cache_dir)
        result["served"]["version"] = cfg.get("served_version")
    else:
        result["served"] = None
        print("the served model's archive was not found; only the new model is evaluated", flush=True)
    return result


def run_deploy(job: Job) -> dict:
    from training.archive import build_archive

    cfg, opt = job.data["config"], job.data["options"]
    checkpoint, version = Path(opt["checkpoint"]), str(opt["version"])
    if not checkpoint.is_file():
        raise JobError(f"{checkpoint} not found: retrain first")
    job.step("archiving")
    mar = Path(cfg["model_store"]) / f"{cfg.get('model_name', 'tagger')}-{version}.mar"
    if mar.exists():
        raise JobError(f"{mar} already exists; version {version} was archived before")
    build_archive(checkpoint, mar, version=version)
    print(f"wrote {mar}", flush=True)
    job.step("deploying")
    key_file = Path(cfg["key_file"])
    inference, management = (urlparse(cfg[k]).port for k in ("inference_url", "management_url"))
    run = TorchServeRun(var_dir=DataDir.of_key_file(key_file).root, ports=Ports(inference=inference,
                        management=management), model_store=Path(cfg["model_store"]),
                        model_name=cfg.get("model_name", "tagger"))
    done = deploy_archive(run, mar, version)
    print(f"version {done['default']} serves now; {done['previous']} stays registered for rollback", flush=True)
    return {"version": done["default"], "previous": done["previous"], "archive": str(mar)}


def deploy_archive(run: TorchServeRun, mar: Path, version: str) -> dict:
    """Deploy the archive ``mar`` as ``version``; after a failure its file is removed only when TorchServe says that
    version is neither served nor registered (the served default, the archives and deployed.json always agree)."""
    versions = Versions(run, workers=model_workers())
    try:
        return versions.deploy(version)
    except Exception:
        if versions.served_or_registered(version) is False:  # never remove an archive TorchServe may serve from
            mar.unlink(missing_ok=True)  # nothing half-done stays behind; the served version is unchanged
        raise


def _release_lock() -> None:
    """Let the next job start (the final state is written): the gateway's flock descriptor we inherited, and on
    PostgreSQL the cluster's job lock."""
    global _CLUSTER_LOCK
    fd = os.environ.get("TAGGER_JOB_LOCK_FD")
    if fd:
        try:
            os.close(int(fd))
        except OSError:
            pass
    if _CLUSTER_LOCK is not None:
        release_job_lock(_CLUSTER_LOCK)
        _CLUSTER_LOCK = None


_CLUSTER_LOCK = None  # on PostgreSQL: the connection holding the cluster's job lock while this job runs


def _cluster_lock() -> None:
    """With a PostgreSQL store, one job in the whole cluster (the flock covers one machine's replicas)."""
    global _CLUSTER_LOCK
    url = os.environ.get("DATABASE_URL", "")
    if url.startswith(("postgresql://", "postgres://")):
        _CLUSTER_LOCK = hold_job_lock(url)
        if _CLUSTER_LOCK is None:
            raise JobError("a job runs on another gateway replica; wait for it to finish")


def _unstoppable() -> None:
    """From here on the final state is being written: no cancel or time limit interrupts it."""
    signal.alarm(0)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGALRM, signal.SIG_IGN)


def main(job_dir: str) -> int:
    job = Job(Path(job_dir))
    if job.data["kind"] == "train":  # a deploy is never interrupted half-way: it finishes or fails by itself
        timeout = int(job.data["config"].get("timeout") or 0)
        _stop_on(signal.SIGTERM, "cancelled from the page", "cancelled")
        if timeout:
            _stop_on(signal.SIGALRM, f"the retrain took longer than {timeout} s (the gateway's JOB_TIMEOUT); "
                                     "label fewer photos at once, choose fewer epochs, or raise the limit", "failed")
            signal.alarm(timeout)
    try:
        job.update(state="running", pid=os.getpid())
        _cluster_lock()
        result = {"train": run_train, "deploy": run_deploy}[job.data["kind"]](job)
        _unstoppable()
    except Exception as exc:  # noqa: BLE001 - every failure is reported on the page
        _unstoppable()
        if not isinstance(exc, JobError):
            traceback.print_exc()
        message = str(exc) or type(exc).__name__
        state = exc.state if isinstance(exc, JobStopped) else "failed"
        print(f"job {state}: {message}", flush=True)
        job.update(state=state, error=message, finished=utc_now())
        _release_lock()
        return 1
    job.update(state="succeeded", step="done", result=result, finished=utc_now())
    _release_lock()
    print("job done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
