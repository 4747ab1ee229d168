"""The Debian packages the project needs: those missing are installed in one apt-get call (as root), else named.

    python3 -m serving.debian java chromium exiftool postgres nginx     # what `make test` needs

Runs on the system's Python (the standard library only), so `make` can call it before the virtual environment
exists. apt-get runs under a lock, so parallel make jobs (`make test` installs these beside `pip install`) take
turns instead of failing on dpkg's lock.
"""
from __future__ import annotations

import fcntl
import glob
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

LOCK = Path("/tmp/tagger-apt.lock")


def _java17() -> bool:
    try:
        out = subprocess.run(["java", "-XX:-UsePerfData", "-version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return 'version "17' in out.stderr + out.stdout


@dataclass(frozen=True)
class Need:
    present: Callable[[], bool]
    packages: tuple[str, ...]
    why: str


NEEDS = {
    "java": Need(_java17, ("openjdk-17-jre-headless",), "TorchServe needs Java 17"),
    "chromium": Need(lambda: Path("/usr/bin/chromium").is_file(), ("chromium", "chromium-driver"),
                     "the annotation page's browser tests drive Debian's headless Chromium"),
    "exiftool": Need(lambda: shutil.which("exiftool") is not None, ("libimage-exiftool-perl",),
                     "the photo library writes and reads XMP sidecars through ExifTool"),
    "postgres": Need(lambda: bool(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")), ("postgresql-15",),
                     "the PostgreSQL store (its tests, make serve-cluster) runs Debian's PostgreSQL 15"),
    "nginx": Need(lambda: shutil.which("nginx") is not None or Path("/usr/sbin/nginx").is_file(), ("nginx",),
                  "make serve-cluster puts nginx in front of the gateway replicas"),
}


def missing(names: list[str]) -> list[str]:
    """Which of ``names`` (keys of ``NEEDS``) are not on this machine."""
    unknown = [n for n in names if n not in NEEDS]
    if unknown:
        raise SystemExit(f"unknown system need(s) {', '.join(unknown)}: choose from {', '.join(NEEDS)}")
    return [n for n in names if not NEEDS[n].present()]


def ensure(names: list[str]) -> int:
    """Install what ``names`` need and is missing; 0 when all is there afterwards, 1 (having said what to install)
    when it cannot be installed here."""
    if not missing(names):
        return 0
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        for name in missing(names):
            need = NEEDS[name]
            print(f"{need.why}: install it, e.g. sudo apt-get install {' '.join(need.packages)}", file=sys.stderr)
        return 1
    with open(LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another make job may install them meanwhile: ask again once ours
        todo = missing(names)
        if not todo:
            return 0
        packages = [p for name in todo for p in NEEDS[name].packages]
        print(f"installing {' '.join(packages)} ({'; '.join(NEEDS[n].why for n in todo)})", flush=True)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", *packages], check=True, env=env,
                       stdout=subprocess.DEVNULL)
    left = missing(names)
    for name in left:
        print(f"{NEEDS[name].why}, but it is still missing after apt-get install {' '.join(NEEDS[name].packages)}",
              file=sys.stderr)
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(ensure(sys.argv[1:]))
