"""The whole stack: TorchServe with the tagger model, and the gateway under gunicorn.

    python -m serving serve      # build the default model if missing, start both, return when ready
    python -m serving stop       # stop both, leave no process behind
    python -m serving status

``serve`` is idempotent: what already runs is left alone. Runtime files (pids, logs, keys) go under
``<var>/run/``; photos under ``<var>/`` (``--var``, default ``var/``).
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests
import yaml

from photo_store import StoreUnavailable, open_store
from serving import torchserve
from serving.leftovers import marked, stop_leftovers
from serving.torchserve import Ports, TorchServeRun
from serving.versions import DeployError, Versions, deployed_mar
from tagger import REPO
from tagger.layout import DataDir
from tagger.net import GATEWAY_PORT

DEFAULT_MAR = "tagger.mar"
# The default model: the training tool's prior recipe on the bundled samples (what `make model` runs).
DEFAULT_MODEL_ARGS = ("--recipe", "prior", "--output", "checkpoints/default")  # data: all bundled samples


@dataclass(frozen=True)
class Stack:
    var_dir: Path = REPO / "var"
    ports: Ports = field(default_factory=Ports)
    gateway_port: int = GATEWAY_PORT
    gateway_workers: int = 2
    gateway_threads: int | None = None  # None: gateway/gunicorn.conf.py's
    model_store: Path = REPO / "model_store"
    ts_overrides: tuple[tuple[str, str], ...] = ()
    # empty: SQLite in var_dir; postgresql://USER@HOST:PORT/DB, its password in pgpass_file (libpq's PGPASSFILE)
    database_url: str = field(default_factory=lambda: os.environ.get("DATABASE_URL", ""))
    pgpass_file: Path | None = None
    photo_dir: Path | None = None  # default: var_dir
    gateway_auth: str = ""  # GATEWAY_AUTH for the gateway (empty: its default, auto)
    hosts: tuple[str, ...] = ()  # TAGGER_HOSTS: host names it answers to beyond loopback ones (a cluster's LAN name)
    cache_dir: Path | None = None  # TAGGER_CACHE_DIR: training's caches for the page's retrain (default: <var>/cache)
    gateway_name: str = "gateway"  # its run folder under <var>/run (a cluster's replicas: gateway-7781, ...)

    @property
    def torchserve(self) -> TorchServeRun:
        return TorchServeRun(var_dir=self.var_dir, ports=self.ports, model_store=self.model_store,
                             overrides=self.ts_overrides)

    @property
    def access_settings(self) -> str:
        """Who may call the gateway (``GATEWAY_AUTH`` and ``TAGGER_HOSTS``): a replica started with others is
        restarted by ``serve_cluster``."""
        return " ".join((self.gateway_auth or "auto", *self.hosts))

    @property
    def gateway_dir(self) -> Path:
        return DataDir(self.var_dir).run / self.gateway_name

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"


def ensure_default_archive(model_store: Path = REPO / "model_store") -> Path:
    """Build ``model_store/tagger.mar`` from the bundled samples when it is missing, re-pack it (from the same
    checkpoint) when the handler code or settings it carries are older than the repository's, and build the
    default model again first when the recipe that made it is older than the repository's."""
    from training.archive import archive_code_hash, code_hash

    mar = model_store / DEFAULT_MAR
    if mar.is_file() and archive_code_hash(mar) == code_hash() and _default_model_is_current():
        return mar
    model_store.mkdir(parents=True, exist_ok=True)
    with open(model_store / ".build.lock", "a") as lock:  # two processes (test workers, make serve) build it once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if mar.is_file() and archive_code_hash(mar) == code_hash() and _default_model_is_current():
            return mar
        return _build_default_archive(mar)


DEFAULT_CHECKPOINT = REPO / "checkpoints/default"


def _default_model_is_current() -> bool:
    """Whether ``checkpoints/default`` was made by the repository's default recipe (its ``recipe_version``)."""
    from training.prior_recipe import RECIPE_VERSION

    try:
        meta = json.loads((DEFAULT_CHECKPOINT / "meta.json").read_text())
    except (OSError, ValueError):
        return False
    return meta.get("recipe_version") == RECIPE_VERSION


def _build_default_archive(mar: Path) -> Path:
    ckpt = DEFAULT_CHECKPOINT / "best.pt"
    if not ckpt.is_file() or not _default_model_is_current():
        print("building the default model from the bundled samples (about a minute)"
              + ("; the one there was made by an older recipe" if ckpt.is_file() else "") + "...", flush=True)
        subprocess.run([sys.executable, "-m", "training", *DEFAULT_MODEL_ARGS], cwd=REPO, check=True)
    elif mar.is_file():
        print("re-packing model_store/tagger.mar: its handler code is older than the repository's", flush=True)
    subprocess.run([sys.executable, "-m", "training.archive", "--checkpoint", str(ckpt), "--out", str(mar)],
                   cwd=REPO, check=True)
    return mar


def kserve_bundle(model_store: Path = REPO / "model_store") -> Path:
    """Fill ``deploy/kserve/model-store/`` with the default archive; returns ``deploy/kserve``."""
    bundle = REPO / "deploy/kserve"
    (bundle / "model-store").mkdir(parents=True, exist_ok=True)
    shutil.copy2(ensure_default_archive(model_store), bundle / "model-store" / DEFAULT_MAR)
    return bundle


def model_workers() -> int:
    """Workers per model, from the settings packed into the archive (``handler/model-config.yaml``)."""
    return int(yaml.safe_load((REPO / "handler/model-config.yaml").read_text())["minWorkers"])


def gateway_pid(stack: Stack) -> int | None:
    """The gunicorn master's PID while it runs: the process the pid file names, if it is this stack's gunicorn
    (its command line names this pid file: a stale file whose PID the system gave to another process since names
    no gateway) and alive (a killed one not yet reaped, a zombie, counts as gone)."""
    pid_file = stack.gateway_dir / "gunicorn.pid"
    try:
        pid = int(pid_file.read_text().strip())
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError, IndexError):
        return None
    mine = pid_file.resolve()
    if state in ("Z", "X") or not any(arg.endswith(b"gunicorn.pid") and Path(arg.decode()).resolve() == mine
                                      for arg in cmdline):
        return None
    return pid


def start_gateway(stack: Stack, *, timeout: float = 30) -> int:
    """Start gunicorn with the gateway app unless it already runs; returns the master PID once it answers."""
    pid = gateway_pid(stack)
    if pid is None:
        stack.gateway_dir.mkdir(parents=True, exist_ok=True)
        # a killed master's pid file is stale; gunicorn would refuse to start ("Already running") while that
        # master is still a zombie that init has not reaped yet
        (stack.gateway_dir / "gunicorn.pid").unlink(missing_ok=True)
        ts = stack.torchserve
        env = marked(dict(os.environ), stack.var_dir)  # the stack's mark: make stop finds whatever outlives a parent
        env.update(TAGGER_DATA_DIR=str(stack.var_dir), TAGGER_TS_INFERENCE_URL=ts.inference_url,
                   TAGGER_TS_MANAGEMENT_URL=ts.management_url, TAGGER_TS_KEY_FILE=str(ts.key_file),
                   TAGGER_MODEL_STORE=str(stack.model_store), DATABASE_URL=stack.database_url)
        if stack.pgpass_file is not None:
            env["PGPASSFILE"] = str(stack.pgpass_file)
        if stack.photo_dir is not None:
            env["TAGGER_PHOTO_DIR"] = str(stack.photo_dir)
        if stack.gateway_auth:
            env["GATEWAY_AUTH"] = stack.gateway_auth
        env["TAGGER_HOSTS"] = " ".join(stack.hosts)
        if stack.cache_dir is not None:
            env["TAGGER_CACHE_DIR"] = str(stack.cache_dir)
        open_checked(stack)  # a wrong DATABASE_URL is one clear line here, not a traceback per gunicorn worker
        (stack.gateway_dir / "gateway_auth").write_text(stack.access_settings)  # what serve_cluster compares
        gunicorn = Path(sys.executable).with_name("gunicorn")
        subprocess.run(  # --daemon: gunicorn detaches into its own session, so no child is left for us to reap
            [str(gunicorn), "--daemon", "--chdir", str(REPO), "--config", str(REPO / "gateway/gunicorn.conf.py"),
             "--bind", f"127.0.0.1:{stack.gateway_port}", "--workers", str(stack.gateway_workers),
             *(("--threads", str(stack.gateway_threads)) if stack.gateway_threads else ()),
             "--pid", str(stack.gateway_dir / "gunicorn.pid"),
             "--access-logfile", str(stack.gateway_dir / "access.log"),
             "--error-logfile", str(stack.gateway_dir / "error.log"), "gateway:create_app()"],
            cwd=REPO, env=env, stdin=subprocess.DEVNULL, check=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{stack.gateway_url}/healthz", timeout=2).status_code == 200 and gateway_pid(stack):
                return gateway_pid(stack)
        except requests.RequestException:
            pass
        time.sleep(0.2)
    log = stack.gateway_dir / "error.log"
    tail = log.read_text(errors="replace").strip().splitlines()[-5:] if log.is_file() else []
    raise RuntimeError(f"gateway did not answer on {stack.gateway_url}; {log} ends:\n" + "\n".join(tail))


def open_stack_store(stack: Stack):
    """The store the stack's gateway opens (its DATABASE_URL with the password file, or SQLite in its var/)."""
    url = stack.database_url
    if stack.pgpass_file is not None and url:
        url += ("&" if "?" in url else "?") + f"passfile={stack.pgpass_file}"
    return open_store(stack.var_dir, url, photo_dir=stack.photo_dir)


def open_checked(stack: Stack) -> None:
    """Open (and migrate) the stack's store once before its workers do; RuntimeError in one line if it cannot."""
    try:
        store = open_stack_store(stack)
    except (StoreUnavailable, ValueError) as exc:
        raise RuntimeError(str(exc)) from None
    store.close()


def stop_gateway(stack: Stack, *, timeout: float = 30) -> bool:
    pid = gateway_pid(stack)
    if pid is None:
        return False
    torchserve.terminate_group(pid, lambda: gateway_pid(stack) is not None, timeout=timeout)
    (stack.gateway_dir / "gunicorn.pid").unlink(missing_ok=True)
    return True


def serve(stack: Stack, *, mar: str | None = None) -> dict:
    """Start TorchServe and the gateway (each only if not running); returns timings in seconds.

    TorchServe serves ``mar``, else the version last deployed (``make deploy``), else the default archive.
    """
    t0 = time.monotonic()
    if gateway_pid(stack) is None:
        open_checked(stack)  # before TorchServe: a store that cannot open stops everything at once, in one line
    mar = mar or deployed_mar(stack.torchserve) or DEFAULT_MAR
    if mar == DEFAULT_MAR:
        ensure_default_archive(stack.model_store)
    threads = max(1, (os.cpu_count() or 1) // model_workers())
    torchserve.start(stack.torchserve, mar, threads_per_worker=threads, env=marked({}, stack.var_dir))
    torchserve.wait_ready(stack.torchserve)
    t_model = time.monotonic() - t0
    start_gateway(stack)
    return {"model_ready_s": round(t_model, 1), "total_s": round(time.monotonic() - t0, 1)}


def versions(stack: Stack):
    """The version operations (deploy, rollback, listing) on this stack's TorchServe."""
    if torchserve.running_pid(stack.torchserve) is None:
        raise DeployError("TorchServe is not running: `make serve` first")
    return Versions(stack.torchserve, workers=model_workers())


def stop(stack: Stack, *, sweep: bool = True) -> list[str]:
    """Stop the gateway and TorchServe by their PIDs, then (``sweep``) whatever else carries the stack's mark (a
    job's training run, an orphaned worker or parser whose parent was killed); names those leftovers."""
    stop_gateway(stack)
    torchserve.stop(stack.torchserve)
    return stop_leftovers(stack.var_dir) if sweep else []
