"""Client of TorchServe's REST inference API, with token authorization.

    client = TaggerClient("http://127.0.0.1:8080", "http://127.0.0.1:8081", "var/run/torchserve/key_file.json")
    client.predict(jpeg_bytes)   # {"tags": [...], "scores": {...}, "model_version": "1.0"}

The inference key is read from TorchServe's ``key_file.json`` (re-read whenever the file changes). When TorchServe
rejects the key (it expires after ``token_expiration_min``), the client asks the management API for a new
inference key with the API key and retries once. Connection errors and 503 answers (no worker ready, e.g. while
TorchServe restarts one) are retried ``retries`` times with exponential backoff; a timeout is not retried.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import requests

from tagger.ts_keys import KeyRefused, key_rejected, read_keys, renew_key

logger = logging.getLogger(__name__)


class TaggerError(Exception):
    """TorchServe could not answer; ``status`` is what the gateway should answer with."""

    def __init__(self, message: str, status: int = 503, retry_after: int | None = 5):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class TaggerClient:
    def __init__(self, inference_url: str, management_url: str, key_file: str | Path, *,
                 model_name: str = "tagger", timeout: float = 30.0, retries: int = 2, backoff: float = 0.2,
                 pool_size: int = 8):
        self.inference_url = inference_url.rstrip("/")
        self.management_url = management_url.rstrip("/")
        self.key_file = Path(key_file)
        self.model_name = model_name
        self.timeout = timeout
        self._lock = threading.Lock()
        self._keys: dict[str, str] = {}
        self._keys_mtime: float | None = None
        self.retries, self.backoff = retries, backoff
        self._session = requests.Session()  # pooled keep-alive connections, one pool per gateway worker
        adapter = requests.adapters.HTTPAdapter(pool_connections=2, pool_maxsize=pool_size)
        self._session.mount("http://", adapter)

    def _key(self, kind: str) -> str:
        with self._lock:
            for attempt in range(6):  # TorchServe rewrites the file in place when it renews a key: a read can
                try:                  # catch it half-written, so read again shortly
                    mtime = self.key_file.stat().st_mtime
                    if mtime != self._keys_mtime:
                        self._keys = read_keys(self.key_file)
                        self._keys_mtime = mtime
                    break
                except (OSError, ValueError, KeyError, TypeError) as exc:
                    if attempt < 5:
                        time.sleep(0.05 * 2 ** attempt)
                    elif not self._keys:  # never read: TorchServe is not there
                        raise TaggerError(f"model server keys are not readable at {self.key_file}: is "
                                          "TorchServe running? (make serve)") from exc
                    else:  # keep the keys we have; a rejected one is renewed by the caller
                        logger.warning("key file %s unreadable (%s); using the keys read before", self.key_file,
                                       exc)
            if kind not in self._keys:
                raise TaggerError(f"{self.key_file} has no {kind} key")
            return self._keys[kind]

    def _renew(self, kind: str) -> None:
        try:
            renew_key(self.management_url, self._key("API"), kind, timeout=self.timeout, session=self._session)
        except KeyRefused as exc:
            raise TaggerError(str(exc)) from exc

    def refresh_inference_key(self) -> None:
        """Ask TorchServe for a new inference key (it rewrites the key file)."""
        self._renew("inference")
        with self._lock:
            self._keys_mtime = None  # force a re-read

    def _post(self, data: bytes) -> requests.Response:
        return self._session.post(
            f"{self.inference_url}/predictions/{self.model_name}", data=data, timeout=self.timeout,
            headers={"Authorization": f"Bearer {self._key('inference')}",
                     "Content-Type": "application/octet-stream"})

    def served_version(self) -> str:
        """The default version of the model on TorchServe (management API, management key renewed once)."""
        def get():
            return self._session.get(f"{self.management_url}/models/{self.model_name}", timeout=self.timeout,
                                     headers={"Authorization": f"Bearer {self._key('management')}"})

        try:
            r = get()
            if key_rejected(r):
                self._renew("management")
                with self._lock:
                    self._keys_mtime = None
                r = get()
            if r.status_code != 200:
                raise TaggerError(f"model server answered {r.status_code} describing {self.model_name}")
            return str(r.json()[0]["modelVersion"])
        except requests.RequestException as exc:
            raise TaggerError("model server is not reachable (make serve starts it)") from exc
        except (ValueError, KeyError, IndexError) as exc:
            raise TaggerError("model server described the model in an unexpected form") from exc

    def predict(self, data: bytes) -> dict:
        """Tags, scores and model version for one image.

        Raises:
            TaggerError: 503 when TorchServe is down, busy or has no ready worker; the 4xx TorchServe gave when
                it rejects the image itself.
        """
        for attempt in range(self.retries + 1):
            try:
                r = self._post(data)
                if key_rejected(r):
                    logger.info("inference key rejected; requesting a new one")
                    self.refresh_inference_key()
                    r = self._post(data)
            except requests.Timeout as exc:
                raise TaggerError("model server timed out") from exc  # not retried: the work may be running
            except requests.ConnectionError as exc:
                if attempt == self.retries:
                    raise TaggerError("model server is not reachable (make serve starts it)") from exc
                time.sleep(self.backoff * 2 ** attempt)
                continue
            if r.status_code == 503 and attempt < self.retries:  # no worker free or ready yet: back off, retry
                time.sleep(self.backoff * 2 ** attempt)
                continue
            break
        if r.status_code == 200:
            return r.json()
        try:
            body = r.json()
        except ValueError:
            body = {}
        message = body.get("error") or body.get("message") or f"model server answered {r.status_code}"
        if 400 <= r.status_code < 500 and r.status_code != 404 and not key_rejected(r):
            raise TaggerError(message, status=422 if r.status_code == 400 else r.status_code, retry_after=None)
        logger.warning("model server answered %s: %s", r.status_code, message)
        raise TaggerError(f"model server unavailable: {message}")
