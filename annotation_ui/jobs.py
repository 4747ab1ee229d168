"""Background jobs of the annotation page (retrain, deploy): their own process, one at a time, state on disk.

    jobs = Jobs(Path("var/jobs"))
    job = jobs.start("train", {"recipe": "prior", "epochs": 20, "samples": True}, config)   # JobBusy when one runs
    jobs.get(job["id"])          # state queued | running | succeeded | failed, step, log tail, result or error

A job is a directory ``<root>/<id>/`` with ``job.json`` (rewritten atomically by the runner,
``python -m annotation_ui.job_runner DIR``) and ``log.txt``. The runner is started in its own session and holds an
exclusive ``flock`` on ``<root>/.lock`` for its whole life (inherited from the gateway worker that started it), so
only one job runs across every gateway worker, a page reload or a gateway restart finds the job where it is, and
a job whose process died is reported as failed. On a PostgreSQL store the runner also holds an advisory lock for
its life (``photo_store.postgres.hold_job_lock``), so replicas on other machines run no second job either.
"""
from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from tagger import REPO
from tagger.meta import save_json, utc_now

LOG_TAIL = 6000  # characters of the log shown on the page


class JobBusy(Exception):
    """Another job runs (answered 409)."""


class Jobs:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def _lock_is_free(self) -> bool:
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
        finally:
            os.close(fd)

    def _acquire(self, fd: int) -> bool:
        """The lock, or False while a job runs; a job whose final state is written gets a moment to exit."""
        for _ in range(50):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                latest = self.latest()
                if latest is None or latest["state"] in ("queued", "running"):
                    return False
                time.sleep(0.1)
        return False

    def start(self, kind: str, options: dict, config: dict, *, env: dict | None = None) -> dict:
        """Start a job; raises ``JobBusy`` while another runs. ``config`` says where the store, the model store
        and TorchServe are (written into job.json); ``env``: variables for the job's process only (the database
        URL), never written down."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if not self._acquire(fd):
                running = self.latest()
                raise JobBusy(f"job {running['id'] if running else '?'} ({running['kind'] if running else '?'}) "
                              "is still running; wait for it to finish") from None
            job_id = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
            job_dir = self.root / job_id
            job_dir.mkdir()
            job = {"id": job_id, "kind": kind, "state": "queued", "step": "starting", "created": utc_now(),
                   "options": options, "config": config, "pid": None}
            save_json(job_dir / "job.json", job)
            with open(job_dir / "log.txt", "ab") as log:
                proc = subprocess.Popen([sys.executable, "-m", "annotation_ui.job_runner", str(job_dir)],
                                        cwd=REPO, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True, pass_fds=(fd,),
                                        env=dict(os.environ, **(env or {}), TAGGER_JOB_LOCK_FD=str(fd),
                                                 PYTHONUNBUFFERED="1"))
            threading.Thread(target=proc.wait, daemon=True, name=f"reap-{job_id}").start()  # no zombie left
            job["pid"] = proc.pid
            return job
        finally:
            os.close(fd)  # the runner holds the lock through its inherited descriptor

    def _read(self, job_dir: Path) -> dict | None:
        try:
            job = json.loads((job_dir / "job.json").read_text())
        except (OSError, ValueError):
            return None
        if job["state"] in ("queued", "running") and self._lock_is_free():
            # the runner holds the lock from its start until its final state is written: free means it ended;
            # read again in case it finished just now
            job = json.loads((job_dir / "job.json").read_text())
            if job["state"] in ("queued", "running"):
                job.update(state="failed", error="the job's process ended without a result (killed or crashed); "
                                                 "see its log, then start it again")
        return job

    def get(self, job_id: str, *, log: bool = True) -> dict | None:
        if not job_id or "/" in job_id or job_id.startswith("."):
            return None
        job = self._read(self.root / job_id)
        if job is not None and log:
            try:
                with open(self.root / job_id / "log.txt", "rb") as f:
                    f.seek(max(0, os.path.getsize(f.name) - LOG_TAIL))
                    text = f.read().decode("utf-8", "replace")
            except OSError:
                text = ""
            job["log"] = "\n".join(line.rsplit("\r", 1)[-1] for line in text.split("\n"))  # tqdm's \r updates
        if job is not None:
            job.pop("config", None)
        return job

    def cancel(self, job_id: str) -> dict:
        """Ask a running retrain to stop (SIGTERM to its runner, which kills its training run and records
        ``cancelled``); returns the job as it stands. ``JobBusy`` when it cannot be cancelled (with why)."""
        job = self.get(job_id, log=False)
        if job is None:
            raise KeyError(job_id)
        if job["state"] not in ("queued", "running"):
            raise JobBusy(f"job {job_id} is {job['state']}: there is nothing to cancel")
        if job["kind"] != "train":
            raise JobBusy("a deploy is never stopped half-way: it finishes or fails by itself (make rollback "
                          "returns to the previous version)")
        if not job.get("pid") or self._lock_is_free():
            raise JobBusy(f"job {job_id} is starting; cancel it again in a moment")
        try:
            os.kill(int(job["pid"]), signal.SIGTERM)  # the runner holds the lock: the pid is its, not reused
        except ProcessLookupError:
            pass  # it ended just now; its own final state stands
        return job

    def list(self, limit: int = 20) -> list[dict]:
        if not self.root.is_dir():
            return []
        dirs = sorted((d for d in self.root.iterdir() if d.is_dir() and not d.name.startswith(".")), reverse=True)
        out = []
        for d in dirs[:limit]:
            job = self._read(d)
            if job is not None:
                job.pop("config", None)
                out.append(job)
        return out

    def latest(self, kind: str | None = None) -> dict | None:
        for job in self.list(limit=50):
            if kind is None or job["kind"] == kind:
                return job
        return None
