"""The gateway's HTTP API as the photo library uses it: store a photo, read its tags, ask the served version.

    client = GatewayClient("http://127.0.0.1:7777")      # token: TAGGER_TOKEN, when the gateway asks for one
    client.served_version()                   # "1.0"
    info = client.tag(b"...jpeg bytes...", "Pictures/a.jpg")   # /imgup then /imginfo: the /imginfo answer
"""
from __future__ import annotations

import os
import threading
import time

import requests


class GatewayDown(RuntimeError):
    """The gateway cannot be reached, or stays unavailable after the retries; the message is one line."""


class AccessRefused(GatewayDown):
    """The gateway asks for a token (401) or one with the write scope (403)."""


class PhotoRefused(ValueError):
    """The gateway refused this photo (not an image, truncated, too large...); the message is its reason."""


class GatewayClient:
    """One ``requests.Session`` per thread; 503 answers are retried after their ``Retry-After``."""

    def __init__(self, url: str, *, retries: int = 5, timeout: float = 120, max_wait: float = 10,
                 token: str | None = None):
        self.url, self.retries, self.timeout, self.max_wait = url.rstrip("/"), retries, timeout, max_wait
        self.token = token if token is not None else os.environ.get("TAGGER_TOKEN", "").strip() or None
        self._local = threading.local()

    def _session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
            if self.token:
                self._local.session.headers["Authorization"] = f"Bearer {self.token}"
        return self._local.session

    def _call(self, method: str, path: str, **kwargs) -> requests.Response:
        for attempt in range(self.retries + 1):
            try:
                r = self._session().request(method, self.url + path, timeout=self.timeout, **kwargs)
            except requests.ConnectionError:
                raise GatewayDown(f"cannot reach the gateway at {self.url}: is it running? (make serve, or pass "
                                  "--gateway URL)") from None
            except requests.Timeout:
                raise GatewayDown(f"the gateway at {self.url} did not answer within {self.timeout:.0f} s") from None
            if r.status_code in (401, 403) and "WWW-Authenticate" in r.headers:
                raise AccessRefused(f"the gateway at {self.url} refused {'the token' if self.token else 'us'}: "
                                    f"{_message(r)}; set TAGGER_TOKEN to a write token (make token NAME=... "
                                    "SCOPE=write on the gateway's machine)")
            if r.status_code != 503:
                return r
            if attempt < self.retries:
                try:
                    wait = float(r.headers.get("Retry-After", 1))
                except ValueError:
                    wait = 1.0
                time.sleep(min(max(wait, 0.1), self.max_wait))
        raise GatewayDown(f"the gateway at {self.url} answered 503 {self.retries + 1} times: {_message(r)}")

    def served_version(self) -> str | None:
        """The model version the gateway's TorchServe serves (``/readyz``)."""
        return self.served()[0]

    def served(self) -> tuple[str | None, str]:
        """``(model version, tag policy)`` the gateway answers with by default (``/readyz``)."""
        r = self._call("GET", "/readyz")
        if r.status_code != 200:
            raise GatewayDown(f"the gateway at {self.url} is not ready: {_message(r)}")
        body = r.json()
        return body.get("model_version"), body.get("tag_policy") or "balanced"  # an older gateway: no policies

    def tag(self, data: bytes, id_name: str, filename: str = "photo", policy: str | None = None) -> dict:
        """Store ``data`` as ``id_name`` and return its ``/imginfo`` answer (tags under ``policy``, else the
        gateway's; scores, model version, ...).

        Raises:
            PhotoRefused: the gateway refused the photo (a 4xx with its reason).
            GatewayDown: as ``_call``.
        """
        r = self._call("POST", "/imgup", files={"file": (filename, data)}, data={"id_name": id_name})
        if r.status_code != 200:
            raise PhotoRefused(f"{r.status_code}: {_message(r)}")
        return self.info(id_name, policy)

    def info(self, id_name: str, policy: str | None = None) -> dict:
        r = self._call("GET", "/imginfo", params={"id_name": id_name, **({"policy": policy} if policy else {})})
        if r.status_code != 200:
            raise PhotoRefused(f"{r.status_code}: {_message(r)}")
        return r.json()


def _message(r: requests.Response) -> str:
    try:
        return str(r.json().get("error") or r.json())[:300]
    except ValueError:
        return r.text[:300] or r.reason
