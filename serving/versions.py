"""Model versions on a running TorchServe: deploy a new one as the default, roll back, list them.

    python -m serving deploy 1.1     # make deploy VERSION=1.1: registers model_store/tagger-1.1.mar, makes it default
    python -m serving rollback       # make rollback: the previous version is the default again
    python -m serving versions       # make versions

Semantics of TorchServe 0.12 this relies on: ``set-default`` swaps the default at once and requests already
queued finish on the old version; unregistering or scaling down kills workers, and requests still queued on
them hang, so a version is drained (``pendingRequests`` 0) first. At most two versions stay registered: the
default with its full worker count and the previous one with one worker, ready for a rollback. What was deployed
is recorded in ``<var>/run/torchserve/deployed.json``, so ``make serve`` after ``make stop`` serves it again.

A failure before the switch leaves the old version served (``DeployError``); ``deployed.json`` is rewritten the
moment the default switched, so a failure after it (``DeployIncomplete``) leaves the new version served and
recorded, its archive kept (``served_or_registered`` tells a caller whether an archive may be removed).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import requests

from serving.torchserve import TorchServeRun, management_request
from tagger.archive import ArchiveError, read_archive
from tagger.meta import save_json

STATE_FILE = "deployed.json"
SPARE_WORKERS = 1  # workers kept on the previous version, so a rollback has one READY at once


class DeployError(RuntimeError):
    """A deploy or rollback that was refused or failed; what is served has not changed."""


class DeployIncomplete(DeployError):
    """The new version serves (it is the default and ``deployed.json`` says so), but the old one was not yet drained
    and scaled down: ``make versions`` shows both; nothing is to be undone."""


def mar_name(version: str, model_name: str = "tagger") -> str:
    return f"{model_name}-{version}.mar"


def check_archive(path: Path, version: str, model_name: str = "tagger") -> dict:
    """The archive's ``meta.json`` when ``path`` is a usable archive of ``model_name`` at ``version``."""
    if not path.is_file():
        raise DeployError(f"{path} not found: build it with `make archive CHECKPOINT=... VERSION={version}`")
    try:
        archive = read_archive(path)
    except ArchiveError as exc:
        raise DeployError(str(exc)) from None
    meta = archive.meta
    if archive.model_name != model_name or archive.version != str(version) or meta["version"] != str(version):
        raise DeployError(f"{path} holds model {archive.model_name!r} version {archive.version!r} "
                          f"(meta {meta['version']!r}), not {model_name!r} {version!r}")
    return meta


class Versions:
    """The management-API calls behind deploy, rollback and versions, for one TorchServe run."""

    def __init__(self, run: TorchServeRun, *, workers: int, timeout: float = 240):
        self.run, self.workers, self.timeout = run, workers, timeout
        self.name = run.model_name

    # -- management API, with the current key (renewed once when TorchServe rejects it)
    def _call(self, method: str, path: str, **params) -> requests.Response:
        return management_request(self.run, method, path, timeout=self.timeout, **params)

    def _ok(self, r: requests.Response, what: str) -> dict:
        if r.status_code != 200:
            try:
                message = r.json().get("message", r.text)
            except ValueError:
                message = r.text
            raise DeployError(f"{what}: TorchServe answered {r.status_code}: {message}")
        return r.json()

    def describe(self) -> list[dict]:
        """Every registered version's description."""
        return self._ok(self._call("GET", f"/models/{self.name}/all"), "listing versions")

    def default(self) -> str:
        return str(self._ok(self._call("GET", f"/models/{self.name}"), "describing the default")[0]["modelVersion"])

    def registered(self) -> list[str]:
        return [str(d["modelVersion"]) for d in self.describe()]

    def _version(self, version: str) -> dict:
        return self._ok(self._call("GET", f"/models/{self.name}/{version}"), f"describing version {version}")[0]

    def wait_ready(self, version: str) -> None:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if any(w.get("status") == "READY" for w in self._version(version).get("workers", [])):
                return
            time.sleep(0.3)
        raise DeployError(f"no worker of version {version} became READY within {self.timeout:.0f}s; see "
                          f"{self.run.run_dir / 'logs'}")

    def drain(self, version: str, *, settle: float = 0.5) -> None:
        """Wait until no request is queued on ``version`` (it is no longer the default, so none arrive)."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self._version(version).get("jobQueueStatus", {}).get("pendingRequests", 0) == 0:
                time.sleep(settle)  # a request taken from the queue just now is still running: let it finish
                if self._version(version).get("jobQueueStatus", {}).get("pendingRequests", 0) == 0:
                    return
            time.sleep(0.1)
        raise DeployError(f"version {version} still has queued requests after {self.timeout:.0f}s")

    def scale(self, version: str, workers: int) -> None:
        self._ok(self._call("PUT", f"/models/{self.name}/{version}", min_worker=workers, max_worker=workers,
                            synchronous="true"), f"scaling version {version} to {workers} workers")

    def register(self, version: str) -> None:
        self._ok(self._call("POST", "/models", url=mar_name(version, self.name), synchronous="true"),
                 f"registering {mar_name(version, self.name)}")
        self.wait_ready(version)

    def unregister(self, version: str) -> None:
        self.drain(version)
        self._ok(self._call("DELETE", f"/models/{self.name}/{version}"), f"unregistering version {version}")

    def set_default(self, version: str) -> None:
        self._ok(self._call("PUT", f"/models/{self.name}/{version}/set-default"), f"making {version} the default")

    # -- state
    @property
    def state_file(self) -> Path:
        return self.run.run_dir / STATE_FILE

    def state(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}

    def _save_state(self, default: str, previous: str | None, urls: dict | None = None) -> None:
        urls = urls or {str(d["modelVersion"]): d.get("modelUrl") for d in self.describe()}
        save_json(self.state_file, {"default": default, "mar": urls.get(default), "previous": previous,
                                    "previous_mar": urls.get(previous) if previous else None})

    # -- operations
    def deploy(self, version: str) -> dict:
        """Register ``tagger-VERSION.mar``, wait for a READY worker, make it the default, keep the old as spare."""
        version = str(version)
        check_archive(self.run.model_store / mar_name(version, self.name), version, self.name)
        registered = self.registered()
        if version in registered:
            raise DeployError(f"version {version} is already registered; `make rollback` or archive a new "
                              "version")
        old = self.default()
        for spare in [v for v in registered if v != old]:  # keep at most two: retire the older spare first
            self.unregister(spare)
        try:
            self.register(version)
        except DeployError:
            if version in self.registered():
                self.unregister(version)
            raise
        urls = {str(d["modelVersion"]): d.get("modelUrl") for d in self.describe()}
        self.set_default(version)
        self._save_state(version, old, urls)  # at once: what serves and what is recorded never disagree
        try:
            self.drain(old)
            self.scale(old, SPARE_WORKERS)
        except Exception as exc:
            raise DeployIncomplete(f"version {version} serves now, but version {old} was not scaled down: {exc}; "
                                   "`make versions` lists both, `make rollback` returns to it") from exc
        return {"default": version, "previous": old}

    def served_or_registered(self, version: str) -> bool | None:
        """Whether ``version`` is the default or registered (``None``: TorchServe does not answer, so unknown)."""
        try:
            return str(version) in self.registered() or self.default() == str(version)
        except (DeployError, requests.RequestException, OSError):
            return None

    def rollback(self) -> dict:
        """Make the previous version the default again (registering it first if TorchServe was restarted)."""
        current = self.default()
        previous = self.state().get("previous")
        if not previous or previous == current:
            others = [v for v in self.registered() if v != current]
            if not others:
                raise DeployError("no previous version to roll back to; `make versions` lists what is registered")
            previous = others[0]
        if previous not in self.registered():
            mar = self.state().get("previous_mar") or mar_name(previous, self.name)
            self._ok(self._call("POST", "/models", url=mar, synchronous="true"), f"registering {mar}")
            self.wait_ready(previous)
        self.scale(previous, self.workers)
        self.wait_ready(previous)
        self.set_default(previous)
        self.drain(current)
        self.scale(current, SPARE_WORKERS)
        self._save_state(previous, current)
        return {"default": previous, "previous": current}

    def listing(self) -> list[dict]:
        default = self.default()
        return [{"version": str(d["modelVersion"]), "default": str(d["modelVersion"]) == default,
                 "workers": len(d.get("workers", [])), "url": d.get("modelUrl"),
                 "pending": d.get("jobQueueStatus", {}).get("pendingRequests", 0)} for d in self.describe()]


def deployed_mar(run: TorchServeRun) -> str | None:
    """The archive last made the default by ``deploy``/``rollback`` (for ``serve`` after a restart), if present."""
    try:
        mar = json.loads((run.run_dir / STATE_FILE).read_text()).get("mar")
    except (OSError, ValueError):
        return None
    return mar if mar and (run.model_store / mar).is_file() else None
