"""Every process a stack started carries its data folder in its environment, so ``make stop`` finds what killed
parents left behind (an orphaned TorchServe worker, a job's training run, anything started from those).

    env = marked(dict(os.environ), var_dir)     # what a started server (and all it starts) inherits
    stop_leftovers(var_dir)                     # SIGTERM, then SIGKILL, every process still marked

Processes are found by that mark only (``/proc/PID/environ``), never by name, so two checkouts or two test
stacks never stop each other's; the caller and its parents are never stopped.
"""
from __future__ import annotations

import os
from pathlib import Path

import psutil

MARK = "TAGGER_STACK_DIR"


def marked(env: dict, var_dir: Path) -> dict:
    """``env`` with the mark of the stack whose data folder is ``var_dir``."""
    return {**env, MARK: str(Path(var_dir).resolve())}


def leftovers(var_dir: Path) -> list[psutil.Process]:
    """The live processes carrying ``var_dir``'s mark (not this one nor its parents)."""
    mine = str(Path(var_dir).resolve())
    spared = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.pid not in spared and proc.status() != psutil.STATUS_ZOMBIE and \
                    proc.environ().get(MARK) == mine:
                found.append(proc)
        except psutil.Error:  # gone meanwhile, or another user's
            continue
    return found


def stop_leftovers(var_dir: Path, *, timeout: float = 10.0) -> list[str]:
    """SIGTERM every marked process, SIGKILL those alive after ``timeout``; describes each one stopped."""
    procs = leftovers(var_dir)
    names = []
    for proc in procs:
        try:
            names.append(f"{proc.pid} ({' '.join(proc.cmdline())[:80]})")
            proc.terminate()
        except psutil.Error:
            continue
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=timeout)
    return names
