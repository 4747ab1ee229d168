"""Predictions cached per image content and model version, and computed in the background after an upload.

    predictions = Predictions(store, tagger, state_file)
    predictions.prefetch(sha, data)         # in /imgup: a bounded background pool, never blocks the upload
    predictions.get(record)                 # the stored answer for (sha256, served version), else TorchServe's

Answers live in the store, so they survive a gateway restart. A prefetch also holds an exclusive
``flock`` on ``inflight_dir/<sha256>`` while it runs, so an ``/imginfo`` that lands on another gunicorn worker
waits for it instead of asking TorchServe a second time (a SIGKILLed worker's lock is released by the kernel); on
PostgreSQL an advisory lock does the same across replicas on other machines (``store.predicting``).
The served version is asked of TorchServe's management API at most every ``ttl`` seconds, and again as soon as
``make deploy``/``make rollback`` rewrite ``deployed.json``; a new default version therefore recomputes on the
next ``/imginfo``. A version changed by
other means (a raw management call) is noticed within ``ttl``.
"""
from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from gateway.tagger_client import TaggerError
from tagger.archive import archive_of, cached_archive

logger = logging.getLogger(__name__)


class ServedVersion:
    """The model version TorchServe serves now (``None`` while unknown, e.g. TorchServe is down)."""

    def __init__(self, tagger, state_file: str | Path | None, *, ttl: float = 30.0):
        self.tagger, self.state_file, self.ttl = tagger, Path(state_file) if state_file else None, ttl
        self._lock = threading.Lock()
        self._version: str | None = None
        self._asked = -float("inf")
        self._state_mtime: float | None = None

    def _state_changed(self) -> bool:
        if self.state_file is None:
            return False
        try:
            mtime = self.state_file.stat().st_mtime_ns
        except OSError:
            mtime = None
        changed, self._state_mtime = mtime != self._state_mtime, mtime
        return changed

    def get(self) -> str | None:
        with self._lock:
            if self._state_changed() or time.monotonic() - self._asked > self.ttl:
                self._asked = time.monotonic()
                try:
                    self._version = self.tagger.served_version()
                except TaggerError:
                    self._version = None
            return self._version

    def learn(self, version: str) -> None:
        """A fresh answer says which version serves now."""
        with self._lock:
            self._version = version


class Predictions:
    def __init__(self, store, tagger, state_file=None, *, workers: int = 2, max_pending: int = 32,
                 ttl: float = 30.0, inflight_dir: str | Path | None = None, model_store: str | Path | None = None,
                 model_name: str = "tagger"):
        self.store, self.tagger = store, tagger
        self.model_store, self.model_name = model_store, model_name
        self._sides: dict[str, tuple[int, float]] = {}  # version -> (decode side, when read): re-read after ttl
        self.inflight_dir = Path(inflight_dir) if inflight_dir else None
        self.version = ServedVersion(tagger, state_file, ttl=ttl)
        self.workers, self._slots = workers, threading.BoundedSemaphore(max_pending)
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._inflight: dict[str, tuple[Future, Future]] = {}  # sha -> (its answer, the task storing it)

    def input_side(self) -> int | None:
        """The shorter side the served model decodes photos to (its archive's ``preprocessing.resize``), or
        ``None`` when no archive of the served version is in the model store."""
        version = self.version.get()
        if version is None or self.model_store is None:
            return None
        side, read_at = self._sides.get(version, (None, -float("inf")))
        if time.monotonic() - read_at > self.version.ttl:  # the model store is looked at as often as the version
            path = archive_of(self.model_store, version, self.model_name)
            archive = cached_archive(path) if path is not None else None
            side = int(archive.meta["preprocessing"]["resize"]) if archive is not None else None
            self._sides[version] = (side, time.monotonic())
        return side

    def _cached(self, sha: str) -> dict | None:
        version = self.version.get()
        return self.store.cached_prediction(sha, version) if version else None

    def _compute(self, sha: str, data: bytes, answered: Future | None = None) -> dict:
        """TorchServe's answer for ``data``, stored in the cache; ``answered`` (this process's waiters) gets it
        before it is written there: the cache is for later requests and other workers."""
        answer = self.tagger.predict(data)
        self.version.learn(answer["model_version"])
        if answered is not None:
            answered.set_result(answer)
        self.store.save_prediction(sha, answer["model_version"], answer)
        return answer

    def prefetch(self, sha: str, data: bytes) -> bool:
        """Start computing the prediction of ``data`` (SHA-256 ``sha``) in the background; False when the pool
        is full (then the first ``/imginfo`` computes it). ``/imgup`` calls it before the photo is written, so
        the prediction runs while the upload is made durable; its answer is keyed by content, so an upload that
        then fails leaves only a harmless cache row."""
        if not self._slots.acquire(blocking=False):
            return False
        with self._lock:
            if self._pool is None:  # created on first use, in the serving process (after gunicorn's fork)
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="prefetch")
            if sha in self._inflight:
                self._slots.release()
                return True
            answered = Future()  # the answer, as soon as TorchServe gave it (None when there is none)
            task = self._pool.submit(self._prefetch, sha, data, answered)
            self._inflight[sha] = (answered, task)
        task.add_done_callback(lambda _f, sha=sha: self._done(sha))
        return True

    def _mark(self, sha: str) -> int | None:
        """Create ``inflight_dir/sha`` already locked (made under a private name, locked, then renamed in)."""
        if self.inflight_dir is None:
            return None
        tmp, fd = self.inflight_dir / f".{sha}.{os.getpid()}.{threading.get_ident()}", None
        try:
            self.inflight_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_CREAT | os.O_WRONLY, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.rename(tmp, self.inflight_dir / sha)
            return fd
        except OSError as exc:  # only a lost optimisation: another worker may then ask TorchServe too
            logger.info("no in-flight marker for %s: %s", sha[:12], exc)
            if fd is not None:
                os.close(fd)
                tmp.unlink(missing_ok=True)
            return None

    def _unmark(self, sha: str, fd: int | None) -> None:
        if fd is None:
            return
        try:
            os.unlink(self.inflight_dir / sha)
        except OSError:
            pass
        os.close(fd)  # releases the lock: waiters in other workers wake up and read the stored answer

    def _across_replicas(self, sha: str):
        """The store's lock on computing ``sha`` when it has one (PostgreSQL: replicas on other machines), else a
        lock that is always ours (the flock above covers one machine's workers)."""
        return self.store.predicting(sha)

    def _wait_other_worker(self, sha: str, wait: float) -> None:
        """If another worker (or replica) is computing ``sha`` now, wait (at most ``wait`` s) until it has finished."""
        self.store.wait_predicted(sha, wait)
        if self.inflight_dir is None:
            return
        try:
            fd = os.open(self.inflight_dir / sha, os.O_RDONLY)
        except OSError:
            return  # nobody is computing it
        try:
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                    return
                except BlockingIOError:
                    time.sleep(0.002)
        finally:
            os.close(fd)

    def _prefetch(self, sha: str, data: bytes, answered: Future) -> None:
        fd = self._mark(sha)
        try:
            with self._across_replicas(sha) as ours:
                if ours and self._cached(sha) is None:
                    self._compute(sha, data, answered)
        except TaggerError as exc:  # TorchServe down or busy: /imginfo will try again and say so
            logger.info("background prediction of %s failed: %s", sha[:12], exc)
        except Exception:  # noqa: BLE001 - a background task must never take the gateway down
            logger.exception("background prediction of %s failed", sha[:12])
        finally:
            if not answered.done():  # no answer of ours: a waiter looks in the store, or asks TorchServe itself
                answered.set_result(None)
            self._unmark(sha, fd)

    def _done(self, sha: str) -> None:
        with self._lock:
            self._inflight.pop(sha, None)
        self._slots.release()

    def get(self, record: dict, *, wait: float = 30.0) -> dict:
        """The answer for ``record`` under the served version: cached, or awaited from a running prefetch, or
        asked of TorchServe now. Raises ``TaggerError`` when TorchServe cannot answer."""
        sha = record["sha256"]
        hit = self._cached(sha)
        if hit is not None:
            return hit
        with self._lock:
            answered, _ = self._inflight.get(sha, (None, None))
        if answered is not None:
            try:
                answer = answered.result(timeout=wait)
            except Exception:  # noqa: BLE001 - the prefetch logs its own failure; we ask again below
                answer = None
            if answer is not None and answer["model_version"] == self.version.get():
                return answer  # just computed (and being stored): no need to read it back
        else:
            self._wait_other_worker(sha, wait)
        hit = self._cached(sha)
        if hit is not None:
            return hit
        return self._compute(sha, self.store.read_image(record))

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Block until no prefetch runs (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                futures = [task for _, task in self._inflight.values()]
            if not futures:
                return
            for f in futures:
                try:
                    f.result(timeout=max(0.0, deadline - time.monotonic()))
                except Exception:  # noqa: BLE001 - waiting only: each prediction reports its own failure
                    pass
