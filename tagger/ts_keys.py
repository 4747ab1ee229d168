"""TorchServe's token authorization, as every client of it (gateway, serving, benchmarks) speaks it.

    keys = read_keys("var/run/torchserve/key_file.json")     # {"inference": ..., "management": ..., "API": ...}
    r = requests.post(url, headers={"Authorization": f"Bearer {keys['inference']}"}, ...)
    if key_rejected(r):                                      # expired or wrong: TorchServe answers 400
        renew_key("http://127.0.0.1:8081", keys["API"], "inference")   # TorchServe rewrites its key file

TorchServe rewrites ``key_file.json`` in place, so a read can catch it half-written: callers retry a read that
fails to parse.
"""
from __future__ import annotations

import json
from pathlib import Path

import requests


class KeyRefused(RuntimeError):
    """TorchServe refused to issue a new key (the API key itself is wrong, or the management API is down)."""


def read_keys(key_file: str | Path) -> dict[str, str]:
    """``{"inference": ..., "management": ..., "API": ...}`` from TorchServe's ``key_file.json``."""
    data = json.loads(Path(key_file).read_text())
    return {kind: (entry["key"] if isinstance(entry, dict) else entry) for kind, entry in data.items()}


def key_rejected(r: requests.Response) -> bool:
    """True when TorchServe refused the request's key (wrong or expired: it answers 400 InvalidKeyException)."""
    if r.status_code not in (400, 401):
        return False
    try:
        return r.json().get("type") == "InvalidKeyException"
    except ValueError:
        return False


def renew_key(management_url: str, api_key: str, kind: str, *, timeout: float = 10, session=requests) -> None:
    """Have TorchServe issue a new ``kind`` ("inference" or "management") key; it rewrites its key file.

    Raises:
        KeyRefused: TorchServe answered anything but 200.
    """
    r = session.get(f"{management_url.rstrip('/')}/token", params={"type": kind}, timeout=timeout,
                    headers={"Authorization": f"Bearer {api_key}"})
    if r.status_code != 200:
        raise KeyRefused(f"model server refused a new {kind} key ({r.status_code})")
