"""How many torch threads a TorchServe worker's next batch may use: every core while the other workers are
idle, its share while they are busy.

    share = CpuShare("var/run/torchserve/cpu-share", cores=2)   # one directory for all workers on the machine
    with share.claim(spare=len(batch) == 1) as threads:         # 2 when alone, 1 when the other worker computes
        torch.set_num_threads(threads)
        logits = model(batch)

TorchServe runs each worker as its own process and sets no torch threads. A fixed split (one thread each on two
cores) leaves a lone request on one core; two threads each oversubscribe the cores once both workers are busy.
Each worker holds an exclusive ``flock`` on its own file while it computes, with the thread count it took written
inside; a worker deciding its count (under one guard lock, so two never decide at once) adds up the counts of
the files it cannot lock. A killed worker's locks vanish with it, so it never holds cores it no longer uses.
A batch of more than one request means requests are queued and the other workers are about to compute too, so
it takes only its share: oversubscribed cores cost far more than an idle one.
"""
from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path


class CpuShare:
    def __init__(self, directory: str | Path, cores: int, *, name: str | None = None):
        """``name``: this worker's file, its PID by default (how a file whose worker is gone is recognised)."""
        self.dir, self.cores = Path(directory), max(1, int(cores))
        self.dir.mkdir(parents=True, exist_ok=True)
        self._name = name or str(os.getpid())
        self._guard = os.open(self.dir / ".guard", os.O_RDWR | os.O_CREAT, 0o600)
        self._mine = os.open(self.dir / self._name, os.O_RDWR | os.O_CREAT, 0o600)

    def busy_elsewhere(self) -> int:
        """Threads the other workers compute with right now."""
        total = 0
        for name in os.listdir(self.dir):
            if name.startswith(".") or name == self._name:
                continue
            try:
                fd = os.open(self.dir / name, os.O_RDONLY)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                if name.isdigit() and not Path(f"/proc/{name}").exists():  # a worker that is gone
                    try:
                        os.unlink(self.dir / name)
                    except OSError:
                        pass
            except BlockingIOError:  # that worker is computing
                text = os.pread(fd, 16, 0).decode(errors="replace").strip()
                total += int(text) if text.isdigit() else 1
            finally:
                os.close(fd)
        return total

    @contextmanager
    def claim(self, *, share: int = 1, spare: bool = True):
        """Yield the thread count for one batch; the cores stay counted as taken until the block ends.

        ``share``: the threads this worker has when all are busy. ``spare=False`` (the caller knows requests are
        queued, e.g. its batch has more than one) takes just the share: the other workers will not stay idle.
        """
        fcntl.flock(self._guard, fcntl.LOCK_EX)
        try:
            threads = max(1, share, self.cores - self.busy_elsewhere()) if spare else max(1, share)
            os.pwrite(self._mine, f"{threads:<16}".encode(), 0)
            fcntl.flock(self._mine, fcntl.LOCK_EX)
        finally:
            fcntl.flock(self._guard, fcntl.LOCK_UN)
        try:
            yield threads
        finally:
            fcntl.flock(self._mine, fcntl.LOCK_UN)
