"""Start, wait for and stop TorchServe with the project's ``config.properties``; read its keys.

Runtime files live under ``RUN_DIR = <var>/run/torchserve``: the generated config, ``key_file.json`` (TorchServe
writes it into its working directory), logs, the pid file and Java's temporary directory (where the ``.mar`` is
unpacked). Nothing is written to /tmp or the repository root, except for a data folder so deep that TorchServe's
worker sockets (``<tmp>/.ts.sock.9000``) would pass the 107-byte limit of a Unix socket path: its temporary
directory is then ``/tmp/torchserve-<uid>-<hash of the folder>`` (mode 700, removed at stop).
"""
from __future__ import annotations

import hashlib
import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from tagger import REPO
from tagger.image import DEFAULT_MAX_BYTES
from tagger.layout import DataDir
from tagger.net import (
    TS_GRPC_INFERENCE_PORT,
    TS_GRPC_MANAGEMENT_PORT,
    TS_INFERENCE_PORT,
    TS_MANAGEMENT_PORT,
    TS_METRICS_PORT,
)
from tagger.ts_keys import KeyRefused, key_rejected, read_keys, renew_key

PID_FILE = ".model_server.pid"  # TorchServe's own name, written under $TEMP
_handed_out = itertools.count()  # how many ports free_ports has tried from TAGGER_PORT_RANGE in this process


_given: dict[str, set[int]] = {}  # ports handed out from each range in this round, never handed out twice


def free_ports(n: int) -> list[int]:
    """``n`` loopback ports free right now (for tests and benchmarks that start their own servers).

    With ``TAGGER_PORT_RANGE=LOW-HIGH`` (each parallel test worker has its own, below the kernel's ephemeral range)
    they come from that range, never twice from one process: two workers choosing ports at the same moment can
    then never choose the same one before their servers bind it. Otherwise the kernel picks them.
    """
    span = os.environ.get("TAGGER_PORT_RANGE")
    if not span:
        socks = [socket.socket() for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        ports = [s.getsockname()[1] for s in socks]
        for s in socks:
            s.close()
        return ports
    low, high = (int(p) for p in span.split("-"))
    ports = []
    size = high - low + 1
    if len(_given.get(span, ())) + n > size:  # every port of the range handed out once: a new round
        _given[span] = set()
    given = _given.setdefault(span, set())
    for _ in range(size):
        port = low + next(_handed_out) % size
        if port in given:
            continue  # handed out already this round (its server may not have bound it yet)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue  # in use (or not yet free after an earlier server): the next one
        ports.append(port)
        given.add(port)
        if len(ports) == n:
            return ports
    raise RuntimeError(f"no {n} free loopback ports left in TAGGER_PORT_RANGE={span}")


@dataclass(frozen=True)
class Ports:
    inference: int = TS_INFERENCE_PORT
    management: int = TS_MANAGEMENT_PORT
    metrics: int = TS_METRICS_PORT
    grpc_inference: int = TS_GRPC_INFERENCE_PORT
    grpc_management: int = TS_GRPC_MANAGEMENT_PORT


@dataclass(frozen=True)
class TorchServeRun:
    """Where one TorchServe instance keeps its files, and its ports."""

    var_dir: Path
    ports: Ports = Ports()
    model_store: Path = REPO / "model_store"
    config_file: Path = REPO / "config.properties"
    model_name: str = "tagger"
    overrides: tuple[tuple[str, str], ...] = ()  # extra config.properties lines: (("token_expiration_min", "1"),)

    @property
    def run_dir(self) -> Path:
        return DataDir(self.var_dir).torchserve

    @property
    def tmp_dir(self) -> Path:
        return short_tmp_dir(self.run_dir / "tmp")

    @property
    def key_file(self) -> Path:
        return self.run_dir / "key_file.json"

    @property
    def inference_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.inference}"

    @property
    def management_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.management}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.metrics}"


SOCKET_PATH_MAX = 107  # bytes in a Unix socket path (sun_path less its NUL)
SOCKET_NAME = "/.ts.sock.65535"  # what TorchServe appends to its temporary directory for a worker's socket


def short_tmp_dir(wanted: Path) -> Path:
    """``wanted``, or a short private directory standing for it when a worker socket there would be too long."""
    wanted = wanted.resolve()
    if len(os.fsencode(wanted)) + len(SOCKET_NAME) <= SOCKET_PATH_MAX:
        return wanted
    digest = hashlib.sha256(os.fsencode(wanted)).hexdigest()[:16]
    return Path("/tmp") / f"torchserve-{os.getuid()}-{digest}"  # not $TMPDIR: serve and stop must agree


def make_private_dir(path: Path) -> None:
    """Create ``path`` (mode 700) or accept it when it is ours: a shared /tmp must not lend us someone's folder."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.lstat()
    if not path.is_dir() or path.is_symlink() or st.st_uid != os.getuid():
        raise RuntimeError(f"{path} is not a directory of this user's; remove it and start again")


def render_config(run: TorchServeRun) -> str:
    """``config.properties`` with this run's ports, model store and allowed URL pattern filled in."""
    text = run.config_file.read_text()
    store = run.model_store.resolve()
    values = {
        "inference_address": run.inference_url, "management_address": run.management_url,
        "metrics_address": run.metrics_url, "grpc_inference_port": str(run.ports.grpc_inference),
        "grpc_management_port": str(run.ports.grpc_management), "model_store": str(store),
        "allowed_urls": f"file://{re.escape(str(store))}/[^/]+\\\\.mar",
        "max_request_size": str(DEFAULT_MAX_BYTES),  # the photo limit, written down once (tagger.image)
        **dict(run.overrides),
    }
    for key, value in values.items():
        line = f"{key}={value}"
        text, n = re.subn(rf"(?m)^{re.escape(key)}=.*$", lambda _m: line, text)  # noqa: B023 - called within this iteration
        if n == 0:
            text += f"\n{line}"
    return text + "\n"


def running_pid(run: TorchServeRun) -> int | None:
    """PID of this run's TorchServe frontend if it is alive, else None."""
    pid_file = run.tmp_dir / PID_FILE
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return pid if b"org.pytorch.serve.ModelServer" in cmdline else None


def start(run: TorchServeRun, mar: str, *, threads_per_worker: int | None = None, env: dict | None = None) -> int:
    """Start TorchServe with ``mar`` (a file name in the model store) unless it already runs; returns its PID.
    ``env``: more variables for it and its workers (the stack's mark, serving.leftovers)."""
    pid = running_pid(run)
    if pid is not None:
        return pid
    for d in (run.run_dir, run.run_dir / "logs"):
        d.mkdir(parents=True, exist_ok=True)
    make_private_dir(run.tmp_dir)
    config = run.run_dir / "config.properties"
    config.write_text(render_config(run))
    env = dict(os.environ, **(env or {}), TEMP=str(run.tmp_dir), TMPDIR=str(run.tmp_dir),
               LOG_LOCATION=str(run.run_dir / "logs"), METRICS_LOCATION=str(run.run_dir / "logs"))
    if threads_per_worker is not None:
        env["OMP_NUM_THREADS"] = str(threads_per_worker)
    torchserve = Path(sys.executable).with_name("torchserve")
    with open(run.run_dir / "logs" / "torchserve.out", "ab") as out:
        subprocess.run([str(torchserve), "--start", "--ts-config", str(config), "--model-store",
                        str(run.model_store.resolve()), "--models", f"{run.model_name}={mar}", "--ncs"],
                       cwd=run.run_dir, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                       check=True, start_new_session=True)
    deadline = time.monotonic() + 10
    while (pid := running_pid(run)) is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"TorchServe did not start; see {run.run_dir / 'logs'}")
        time.sleep(0.1)
    return pid


def management_request(run: TorchServeRun, method: str, path: str, *, timeout: float = 10,
                       **params) -> requests.Response:
    """A management-API call with the current key, renewing an expired key once with the API key."""
    def send():
        key = read_keys(run.key_file)["management"]
        return requests.request(method, f"{run.management_url}{path}", params=params, timeout=timeout,
                                headers={"Authorization": f"Bearer {key}"})

    r = send()
    if key_rejected(r):
        renew_key(run.management_url, read_keys(run.key_file)["API"], "management")
        r = send()
    return r


def management_get(run: TorchServeRun, path: str, **params) -> requests.Response:
    return management_request(run, "GET", path, **params)


def worker_states(run: TorchServeRun) -> list[str]:
    """States of the model's workers (e.g. ``["READY", "READY"]``); [] while the model is not registered."""
    r = management_get(run, f"/models/{run.model_name}")
    if r.status_code != 200:
        return []
    return [w.get("status", "") for entry in r.json() for w in entry.get("workers", [])]


def wait_ready(run: TorchServeRun, *, timeout: float = 240) -> float:
    """Block until a worker of the model is READY; returns the seconds waited.

    Raises:
        RuntimeError: TorchServe exited or no worker became READY in time (the message names the log).
    """
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if running_pid(run) is None:
            raise RuntimeError(f"TorchServe exited during start-up; see {run.run_dir / 'logs'}")
        try:
            if "READY" in worker_states(run):
                return time.monotonic() - t0
        except (OSError, ValueError, KeyError, requests.RequestException, KeyRefused):
            pass  # key file or API not up yet
        time.sleep(0.5)
    raise RuntimeError(f"no TorchServe worker became READY within {timeout:.0f}s; see {run.run_dir / 'logs'}")


def terminate_group(pid: int, still_running, *, timeout: float = 30) -> None:
    """SIGTERM ``pid``, wait until ``still_running()`` is false (or ``timeout``), then SIGKILL what is left of its
    process group (a server's workers share it), so no process survives. The caller's own group is never
    signalled: a server runs in a session of its own, so sharing the caller's group means ``pid`` is not one."""
    try:
        pgid = os.getpgid(pid)
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while still_running() and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        if pgid != os.getpgrp():
            os.killpg(pgid, signal.SIGKILL)
        elif still_running():
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def stop(run: TorchServeRun, *, timeout: float = 30) -> bool:
    """Stop this run's TorchServe and its workers; True if one was running."""
    pid = running_pid(run)
    if pid is None:
        return False
    terminate_group(pid, lambda: running_pid(run) is not None, timeout=timeout)
    (run.tmp_dir / PID_FILE).unlink(missing_ok=True)
    run.key_file.unlink(missing_ok=True)
    if not run.tmp_dir.is_relative_to(run.run_dir.resolve()):  # the short stand-in under /tmp goes with the run
        shutil.rmtree(run.tmp_dir, ignore_errors=True)
    return True
