"""The gateway's settings: defaults, then ``TAGGER_*`` environment variables (``TAGGER_DATA_DIR=/srv/photos``), or a
``test_config`` mapping (tests inject a fake ``TAGGER_CLIENT`` there); checked once, at start.

    configure(app, test_config)     # in create_app, first
"""
from __future__ import annotations

import os

from flask import Flask

from tagger import REPO
from tagger.image import DEFAULT_MAX_BYTES
from tagger.layout import DEFAULT as DEFAULT_DATA
from tagger.layout import DataDir
from tagger.net import TS_INFERENCE_PORT, TS_MANAGEMENT_PORT, local_url
from tagger.tags import check_policy

PROTOCOLS = ("torchserve", "kserve-v1")


def defaults() -> dict:
    """Every setting and its default (read when the app is made: the environment may have changed)."""
    return dict(
        DATA_DIR=str(DEFAULT_DATA.root),
        DATABASE_URL=os.environ.get("DATABASE_URL", ""),  # empty: SQLite in DATA_DIR; postgresql://USER@HOST:PORT/DB
        PHOTO_DIR=None,  # default: DATA_DIR; replicas share one (a NAS or NFS mount)
        CACHE_DIR=None,  # training's per-photo features and detections (default: DATA_DIR/cache; jobs write there)
        DATABASE_TIMEOUT=3.0,  # seconds to wait for a PostgreSQL connection before answering 503
        TS_PROTOCOL="torchserve",  # or kserve-v1: an InferenceService at TS_INFERENCE_URL (no management API)
        TS_INFERENCE_URL=local_url(TS_INFERENCE_PORT),
        TS_MANAGEMENT_URL=local_url(TS_MANAGEMENT_PORT),
        TS_KEY_FILE=None,  # default: DATA_DIR/run/torchserve/key_file.json
        TS_TIMEOUT=30.0,
        MODEL_NAME="tagger",
        MODEL_STORE=str(REPO / "model_store"),  # archives: the annotation page reads labels from them, deploys to it
        MAX_CONTENT_LENGTH=DEFAULT_MAX_BYTES + 1024 * 1024,  # the image limit plus room for the form
        FORM_PARTS=8,  # multipart parts accepted in one request (file, id_name, if_absent and a few spare)
        TAGGER_CLIENT=None,
        TS_STATE_FILE=None,  # default: DATA_DIR/run/torchserve/deployed.json (rewritten by make deploy/rollback)
        VERSION_TTL=30.0,  # seconds between asking TorchServe which version it serves
        PREFETCH_WORKERS=2,
        DECODE_CHECK_THREADS=8,  # per worker: each upload checks its pixels and reads its EXIF beside its file write
        EXIF_TIMEOUT=3.0,  # seconds one EXIF parse may take from its start (its process is then killed)
        EXIF_PARSE=None,  # "module:function" parsing EXIF in the parser processes (default tagger.exif.parse_exif)
        GATEWAY_AUTH=os.environ.get("GATEWAY_AUTH", "auto"),  # auto: tokens for other machines; required; off
        TAG_POLICY="precise",  # whose tags /imginfo answers: precise, balanced or complete (?policy= picks another)
        HOSTS="",  # host names answered beyond loopback ones (TAGGER_HOSTS="nas.local 192.168.1.5"; "*": any)
        SESSION_HOURS=12.0,  # how long the annotation page's sign-in lasts
        TRASH_DAYS=30.0,  # days a deleted photo stays restorable (GET /trash) before it is erased
        JOB_TIMEOUT=7200,  # seconds a retrain from the annotation page may run before it is stopped
    )


def configure(app: Flask, test_config: dict | None = None) -> None:
    """Fill ``app.config``: defaults, then the environment (or ``test_config``), then the derived and checked
    values. A bad value is a ValueError that says what to set."""
    app.config.from_mapping(defaults())
    if test_config is None:
        app.config.from_prefixed_env("TAGGER")
    else:
        app.config.update(test_config)
    app.config["TAG_POLICY"] = check_policy(str(app.config["TAG_POLICY"]).strip().lower())
    app.config["TS_KEY_FILE"] = str(app.config["TS_KEY_FILE"] or DataDir(app.config["DATA_DIR"]).key_file)
    protocol = str(app.config["TS_PROTOCOL"]).strip().lower()
    if protocol not in PROTOCOLS:
        raise ValueError(f"TS_PROTOCOL={app.config['TS_PROTOCOL']!r}: use torchserve (TorchServe's own API, "
                         "make serve) or kserve-v1 (an InferenceService, deploy/kserve/gateway.yaml)")
    app.config["TS_PROTOCOL"] = protocol  # the annotation page reads it: no deploys through KServe
    app.config["MAX_CONTENT_LENGTH"] = int(app.config["MAX_CONTENT_LENGTH"])
