"""Client of the tagger behind a KServe InferenceService (KServe v1 protocol), for a gateway running in Kubernetes.

    client = KServeClient("http://tagger-predictor.photos.svc.cluster.local")
    client.predict(jpeg_bytes)   # {"tags": [...], "scores": {...}, "model_version": "1.0"}

Selected by ``TS_PROTOCOL=kserve-v1`` (``deploy/kserve/gateway.yaml``). It posts
``{"instances": [{"data": "<base64>"}]}`` to ``/v1/models/<name>:predict`` and reads ``predictions[0]``, which is
what TorchServe's KServe envelope and the handler (``TAGGER_JSON_OBJECTS=1``) answer. There is no management API
and no TorchServe key behind KServe: authentication is the ingress's, and new versions are rolled out by
changing the InferenceService, not by the gateway. KServe's v1 model endpoint does not say which version serves,
so ``served_version`` asks the model about a tiny probe image and reads the version from its answer (the gateway
asks at most once per ``VERSION_TTL``). Errors are ``TaggerError`` with the status the gateway answers, as with
``TaggerClient``.
"""
from __future__ import annotations

import base64
import functools
import io
import logging
import time

import requests
from PIL import Image

from gateway.tagger_client import TaggerError

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def probe_image() -> bytes:
    """A 64x64 grey JPEG: enough for the model to answer with its version."""
    out = io.BytesIO()
    Image.new("RGB", (64, 64), (128, 128, 128)).save(out, "JPEG", quality=80)
    return out.getvalue()


class KServeClient:
    def __init__(self, url: str, *, model_name: str = "tagger", timeout: float = 30.0, retries: int = 2,
                 backoff: float = 0.2, pool_size: int = 8):
        self.url, self.model_name, self.timeout = url.rstrip("/"), model_name, timeout
        self.retries, self.backoff = retries, backoff
        self._session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=2, pool_maxsize=pool_size)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)

    def predict(self, data: bytes) -> dict:
        """Tags, scores and model version for one image (``TaggerError``: 503 when KServe cannot answer now, 422
        or the 4xx it gave when it refuses the image)."""
        body = {"instances": [{"data": base64.b64encode(data).decode("ascii")}]}
        for attempt in range(self.retries + 1):
            try:
                r = self._session.post(f"{self.url}/v1/models/{self.model_name}:predict", json=body,
                                       timeout=self.timeout)
            except requests.Timeout as exc:
                raise TaggerError("model server timed out") from exc
            except requests.ConnectionError as exc:
                if attempt == self.retries:
                    raise TaggerError(f"the InferenceService at {self.url} is not reachable") from exc
                time.sleep(self.backoff * 2 ** attempt)
                continue
            if r.status_code in (502, 503, 504) and attempt < self.retries:  # scaling from zero, a pod restarting
                time.sleep(self.backoff * 2 ** attempt)
                continue
            break
        try:
            answer = r.json()
        except ValueError:
            answer = {}
        if r.status_code == 200:
            try:
                prediction = answer["predictions"][0]
                if not isinstance(prediction, dict) or "model_version" not in prediction:
                    raise TypeError(prediction)
                return prediction
            except (KeyError, IndexError, TypeError) as exc:
                raise TaggerError("the InferenceService answered in an unexpected form (is TAGGER_JSON_OBJECTS=1 "
                                  "set on its predictor?)") from exc
        message = (answer.get("error") or answer.get("message") if isinstance(answer, dict) else None) \
            or f"model server answered {r.status_code}"
        if 400 <= r.status_code < 500 and r.status_code not in (401, 403, 404):
            raise TaggerError(message, status=422 if r.status_code == 400 else r.status_code, retry_after=None)
        logger.warning("InferenceService answered %s: %s", r.status_code, message)
        raise TaggerError(f"model server unavailable: {message}")

    def served_version(self) -> str:
        """The version the InferenceService serves now, from its answer about a probe image."""
        return str(self.predict(probe_image())["model_version"])
