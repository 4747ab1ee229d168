"""The logs of a running stack stay small: each one over ``max_bytes`` is rotated (``NAME.1`` ... ``NAME.KEEP``).

    keep_logs(DataDir("var").run)    # what gunicorn's master does every LOG_CHECK_S seconds (gateway/gunicorn.conf.py)

Where a log's writer reopens its files on SIGUSR1 (gunicorn's master, which passes the signal on to its workers;
nginx), the file is renamed and the writer signalled, so no line is lost. A log written through an inherited
descriptor (TorchServe's ``torchserve.out``, PostgreSQL's ``postgres.log``: both opened for appending) is copied,
then truncated in place: lines written between the copy and the truncation are lost, nothing else. TorchServe's
own ``logs/*.log`` roll over by themselves (its log4j2 configuration, 100 MB). Rotation takes a lock in ``run/``,
so the masters of a cluster's replicas never rotate one file twice.

Settings (environment): ``TAGGER_LOG_MAX_BYTES`` (default 10 MiB), ``TAGGER_LOG_KEEP`` (5 rotated files).
"""
from __future__ import annotations

import fcntl
import os
import shutil
import signal
from pathlib import Path

MAX_BYTES = 10 * 1024 * 1024
KEEP = 5
# log file (a glob under run/) -> the pid file, beside it, of the process that reopens it on SIGUSR1 (None: none)
LOGS = {
    "gateway*/error.log": "gunicorn.pid",
    "gateway*/access.log": "gunicorn.pid",
    "nginx/error.log": "nginx.pid",
    "nginx/access.log": "nginx.pid",
    "torchserve/logs/torchserve.out": None,
    "postgres/postgres.log": None,
}


def settings() -> tuple[int, int]:
    """``(max_bytes, keep)`` from the environment, else the defaults."""
    return int(os.environ.get("TAGGER_LOG_MAX_BYTES", MAX_BYTES)), int(os.environ.get("TAGGER_LOG_KEEP", KEEP))


def _shift(path: Path, keep: int) -> None:
    """NAME.{keep-1} -> NAME.{keep}, ..., NAME.1 -> NAME.2 (the oldest is dropped)."""
    for i in range(keep - 1, 0, -1):
        older = path.with_name(f"{path.name}.{i}")
        if older.exists():
            older.replace(path.with_name(f"{path.name}.{i + 1}"))


def _reader_pid(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return None
    return pid


def rotate(path: Path, *, keep: int = KEEP, pid_file: Path | None = None) -> None:
    """Rotate ``path`` now: renamed and its writer signalled (``pid_file`` names a live process), else copied and
    truncated in place."""
    _shift(path, keep)
    first = path.with_name(f"{path.name}.1")
    pid = _reader_pid(pid_file) if pid_file is not None else None
    if pid is not None:
        path.replace(first)
        os.kill(pid, signal.SIGUSR1)  # reopens the file under its name: a new, empty one
        return
    shutil.copyfile(path, first)
    with open(path, "r+b") as f:  # the writer appends (O_APPEND): its next line lands at the new end, 0
        f.truncate(0)


def keep_logs(run_dir: Path, *, max_bytes: int | None = None, keep: int | None = None) -> list[Path]:
    """Rotate every log under ``run_dir`` that has grown past ``max_bytes``; returns the rotated ones."""
    env_max, env_keep = settings()
    max_bytes, keep = max_bytes or env_max, keep or env_keep
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    rotated = []
    with open(run_dir / "logs.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for pattern, pid_name in LOGS.items():
            for path in sorted(run_dir.glob(pattern)):
                try:
                    if path.stat().st_size <= max_bytes:
                        continue
                    rotate(path, keep=keep, pid_file=path.parent / pid_name if pid_name else None)
                except OSError:  # gone meanwhile (a stack stopping): the next round looks again
                    continue
                rotated.append(path)
    return rotated
