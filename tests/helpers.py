"""What several test modules share, kept out of the test modules themselves (a test module imports no other).

    value = wait_until(lambda: store.get("x"), timeout=30, what="the upload to be stored")
    exiftool(sidecar, "XMP-dc:Subject")       # what the ExifTool command line reads back
    alive(pid), children(pid)                  # a process (not a zombie), and its live children

``wait_until`` is the one way a test waits for the system: it polls a condition, bounded, and fails naming what it
waited for and for how long; it never asserts how long something took (a busy machine is slower, not wrong).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import time

import psutil

EXIFTOOL = shutil.which("exiftool") or "/usr/bin/exiftool"


class WaitedTooLong(AssertionError):
    """A condition that did not hold within its bound; the message names it."""


def wait_until(condition, *, timeout: float = 30.0, interval: float = 0.05, what: str = "the condition"):
    """Call ``condition`` until it returns something truthy (returned), at most ``timeout`` seconds.

    Raises:
        WaitedTooLong: naming ``what`` and the last value seen.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise WaitedTooLong(f"waited {timeout:.0f} s for {what}; last seen: {value!r}"[:500])
        time.sleep(interval)


def exiftool(path, *tags):
    """What the ExifTool command line reads from ``path`` (lists always lists)."""
    out = json.loads(subprocess.run([EXIFTOOL, "-j", "-G1", *[f"-{t}" for t in tags], str(path)], check=True,
                                    capture_output=True, text=True).stdout)[0]
    return {t: (v if isinstance(v, list) else [str(v)]) for t in tags if (v := out.get(t)) is not None}


def alive(pid: int) -> bool:
    """True while process ``pid`` runs (a zombie has ended)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def children(pid: int) -> list[int]:
    """Live child processes of ``pid`` (of any of its threads: the JVM starts workers from several)."""
    try:
        return sorted(c.pid for c in psutil.Process(pid).children() if c.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return []
