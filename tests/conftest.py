"""Shared fixtures: sample data paths, a tiny saved model, and the gateway app with a fake model client."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from photo_store.postgres import PostgresStore
from serving.postgres import ROLE, PostgresRun
from serving.stack import Stack, ensure_default_archive, gateway_pid, serve, start_gateway, stop, stop_gateway
from serving.torchserve import Ports, free_ports
from tagger.labels import load_labels
from tagger.meta import make_meta, save_json

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples"
COCO = SAMPLES / "coco_subset"
EXIF = SAMPLES / "exif"


@pytest.fixture(scope="session")
def labels():
    return load_labels()


@pytest.fixture(scope="session")
def exif_expected():
    return json.loads((EXIF / "expected.json").read_text())["files"]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, labels):
    """An unpacked-archive directory (meta.json + model.pt) holding an untrained ResNet18 tagger."""
    import torch

    from model.network import build_model
    from tagger.presets import default_preprocessing

    d = tmp_path_factory.mktemp("tiny_model")
    torch.manual_seed(0)
    model = build_model("resnet18", len(labels))
    meta = make_meta(arch="resnet18", labels=labels, thresholds=[0.5] * len(labels),
                     preprocessing={**default_preprocessing("resnet18"), "resize": 72, "crop": 64},
                     version="0.0-test")
    save_json(d / "meta.json", meta)
    torch.save(model.state_dict(), d / "model.pt")
    return d


def send_json(handler, status: int, body) -> None:
    """Answer an ``http.server`` request with ``body`` as JSON (the small stand-in servers of the client tests)."""
    data = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


class FakeTagger:
    """Stands in for TorchServe in gateway unit tests: answers a fixed prediction or raises ``error``."""

    def __init__(self):
        self.error = None
        self.calls = 0
        self.version = "fake"

    def served_version(self) -> str:
        if self.error is not None:
            raise self.error
        return self.version

    def predict(self, data: bytes) -> dict:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return {"tags": ["sea", "boat"], "scores": {"sea": 0.9, "boat": 0.8, "car": 0.01},
                "model_version": self.version}


@pytest.fixture
def fake_tagger():
    return FakeTagger()


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL 15 for the session (initdb into a folder of its own, a free loopback port), stopped at the
    end; as root the server runs as the ``postgres`` user, so its folder is under /tmp (pytest's are mode 700)."""
    root = Path(tempfile.mkdtemp(prefix="tagger-pg-"))
    root.chmod(0o711)  # the server user passes through, lists nothing
    pg = PostgresRun(root / "pg", port=free_ports(1)[0])
    try:
        pg.start()
        yield pg
    finally:
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


_databases = iter(range(10**6))


def _url_of(postgres, name: str) -> str:
    return postgres.connect_url.replace(f"/{postgres.url.rsplit('/', 1)[1]}?", f"/{name}?")


@pytest.fixture(scope="session")
def migrated_template(postgres):
    """A database at the newest schema revision (migrated once by the store itself), copied for each test."""
    import psycopg

    with psycopg.connect(postgres.admin_url, autocommit=True) as db:  # the gateway's role creates no database
        db.execute(f'CREATE DATABASE "store_template" OWNER {ROLE}')
    PostgresStore(_url_of(postgres, "store_template"), photo_dir=postgres.root / "template-photos").close()
    return "store_template"


@pytest.fixture
def database_url(postgres, migrated_template):
    """A new database on the session's PostgreSQL at the newest schema: the URL a store or a gateway takes."""
    import psycopg

    name = f"store_{next(_databases)}"
    with psycopg.connect(postgres.admin_url, autocommit=True) as db:
        db.execute(f'CREATE DATABASE "{name}" TEMPLATE "{migrated_template}" OWNER {ROLE}')
    return _url_of(postgres, name)


# The gateway and store tests run on both backends: the embedded default and PostgreSQL.
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.stack)]


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture
def store_url(request, backend):
    return request.getfixturevalue("database_url") if backend == "postgresql" else ""


@pytest.fixture
def app(tmp_path, fake_tagger, store_url):
    from tests.helpers import gateway_app  # here: tests.helpers imports this module

    with gateway_app({"TESTING": True, "DATA_DIR": str(tmp_path / "data"), "TAGGER_CLIENT": fake_tagger,
                      "DATABASE_URL": store_url}) as app:
        yield app


@pytest.fixture
def client(app):
    return app.test_client()


def private_model_store(tmp_path_factory):
    """A model store of its own holding the default archive: deploys in a test write there, not into the repo."""
    store = tmp_path_factory.mktemp("model_store")
    shutil.copy(ensure_default_archive(), store / "tagger.mar")
    return store


def served_stack(tmp_path_factory, **stack_args):
    """A real TorchServe + gateway on free ports with their own data directory, started and, at the end, stopped:
    ``yield from served_stack(tmp_path_factory, model_store=..., gateway_workers=2)`` in a fixture."""
    ensure_default_archive()
    p = free_ports(6)
    st = Stack(var_dir=tmp_path_factory.mktemp("var"), ports=Ports(*p[:5]), gateway_port=p[5], **stack_args)
    try:
        serve(st)
        yield st
        if gateway_pid(st) is None:  # a gateway that died under the tests says why (its own log)
            log = st.gateway_dir / "error.log"
            tail = log.read_text(errors="replace")[-3000:] if log.is_file() else "(no error.log)"
            pytest.fail(f"the gateway on {st.gateway_url} died during the tests; its error.log ends:\n{tail}")
    finally:
        stop(st)


@contextlib.contextmanager
def secured_gateway(stack):
    """A second gateway of ``stack`` (same store, same TorchServe) started with GATEWAY_AUTH=required, as serving a
    cluster beyond loopback starts its replicas; stopped at the end."""
    secured = dataclasses.replace(stack, gateway_port=free_ports(1)[0], gateway_auth="required",
                                  gateway_name="gateway-secured")
    start_gateway(secured)
    try:
        yield secured
    finally:
        stop_gateway(secured)


# Tests that start real components (TorchServe, gunicorn, Chromium) or build a model are marked ``stack`` by the
# fixtures they use, or by a module's own ``pytestmark``; ``make test-fast`` runs the rest in seconds.
STACK_FIXTURES = {"stack", "browser", "gateway", "archive", "server", "detector_model_dir", "postgres"}

# ``make test`` runs the tests in parallel workers (pytest-xdist, ``--dist loadfile``: a module's tests share its
# served stack or cache, so a module runs whole on one worker). The costliest modules start first, so that no
# worker is left with a long one at the end: seconds of one warm serial run (``--durations=0`` summed per module,
# 2 cores, BENCHMARKS.md); a module not listed counts as cheap and keeps its place.
MODULE_SECONDS = {
    "test_annotation_browser": 125, "test_e2e": 47, "test_own_labels": 16, "test_training": 41, "test_versions": 37,
    "test_cluster": 35,
    "test_photo_library": 34, "test_chaos": 32, "test_load": 25, "test_fuzz": 19, "test_hostile": 19,
    "test_train_serve": 16, "test_gateway": 9, "test_decode": 7, "test_default_model": 7, "test_detector": 6,
}


def pytest_collection_modifyitems(items):
    for item in items:
        if STACK_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.stack)
    _ids_from_names(items)
    items.sort(key=lambda item: -MODULE_SECONDS.get(item.module.__name__.rpartition(".")[2], 0))  # stable


def _ids_from_names(items) -> None:
    """Every test has an id of its own: pytest-xdist schedules by id and runs only the first of tests sharing one.

    pytest 9.2 builds a test's id from its original name and its parametrization; schemathesis 4.32 makes one test
    per API operation, named ``test_x[GET /imginfo]`` but not parametrized, so all of them had the id ``test_x``.
    Their names carry the operation, and become their ids again.
    """
    for item in items:
        name, original = item.name, getattr(item, "originalname", item.name)
        if name != original and name.startswith(original + "[") and item.id.params is None:
            item._id = item.parent.id.child(original).with_params(name[len(original) + 1:-1])
    seen = {}
    for item in items:
        if seen.setdefault(item.nodeid, item) is not item:
            raise pytest.UsageError(f"two tests share the id {item.nodeid}: give each its own (parametrize ids)")


def pytest_configure(config):
    """Servers the tests start take loopback ports below the kernel's ephemeral range (32768-60999 by default), each
    parallel worker from a range of its own (``serving.torchserve.free_ports``): a port that a killed server left
    free cannot be taken meanwhile by the source port of some connection, nor chosen by two workers at once."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    low = 20000 + 1500 * (int(worker[2:]) % 8)
    os.environ["TAGGER_PORT_RANGE"] = f"{low}-{low + 1499}"
    if "PYTEST_XDIST_WORKER" in os.environ:
        # Parallel workers share the cores with each other and with the servers they start: one thread per torch
        # (and training subprocess) each, or OpenMP's threads spin at their barriers waiting for a thread that has
        # no core (a training test ran 5x slower). Set before anything imports torch; TorchServe's workers get
        # their own count from serving.
        os.environ.setdefault("OMP_NUM_THREADS", "1")
