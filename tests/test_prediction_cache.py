"""Predictions cached per image content and model version, prefetched after upload, surviving a restart."""
import threading
import time
from contextlib import ExitStack
from io import BytesIO

from gateway import create_app
from gateway.tagger_client import TaggerError
from tests.conftest import COCO, FakeTagger
from tests.helpers import gateway_app

PHOTO = (COCO / "images/000000000471.jpg").read_bytes()


def _app(tmp_path, tagger, **extra):
    return create_app({"TESTING": True, "DATA_DIR": str(tmp_path / "data"), "TAGGER_CLIENT": tagger,
                       "TS_STATE_FILE": str(tmp_path / "deployed.json"), **extra})


class SlowTagger(FakeTagger):
    """A model server that takes half a second, and says when a prediction started."""

    def __init__(self):
        super().__init__()
        self.started = threading.Event()

    def predict(self, data):
        self.started.set()
        time.sleep(0.5)
        return super().predict(data)


def _upload(client, data=PHOTO, id_name="bus"):
    return client.post("/imgup", data={"file": (BytesIO(data), "bus.jpg"), "id_name": id_name})


def test_upload_prefetches_and_a_second_imginfo_never_calls_torchserve(tmp_path):
    tagger = FakeTagger()
    app = _app(tmp_path, tagger)
    client = app.test_client()
    assert _upload(client).status_code == 200
    app.extensions["predictions"].wait_idle()
    assert tagger.calls == 1  # computed in the background, right after the upload
    first = client.get("/imginfo?id_name=bus").json
    second = client.get("/imginfo?id_name=bus").json
    assert first == second
    assert first["model_version"] == "fake"
    assert tagger.calls == 1
    # the same bytes under another name share the cached answer
    assert _upload(client, id_name="bus-copy").status_code == 200
    app.extensions["predictions"].wait_idle()
    assert client.get("/imginfo?id_name=bus-copy").json["predict_tags"] == first["predict_tags"]
    assert tagger.calls == 1


def test_a_new_default_version_recomputes_on_the_next_imginfo(tmp_path):
    tagger = FakeTagger()
    app = _app(tmp_path, tagger, VERSION_TTL=3600)
    client = app.test_client()
    _upload(client)
    app.extensions["predictions"].wait_idle()
    assert client.get("/imginfo?id_name=bus").json["model_version"] == "fake"
    tagger.version = "2.0"
    (tmp_path / "deployed.json").write_text('{"default": "2.0"}')  # what make deploy writes
    assert client.get("/imginfo?id_name=bus").json["model_version"] == "2.0"
    assert tagger.calls == 2
    assert client.get("/imginfo?id_name=bus").json["model_version"] == "2.0"
    assert tagger.calls == 2


def test_version_changed_behind_the_gateways_back_is_noticed_within_the_ttl(tmp_path):
    tagger = FakeTagger()
    app = _app(tmp_path, tagger, VERSION_TTL=0.2)
    client = app.test_client()
    _upload(client)
    app.extensions["predictions"].wait_idle()
    tagger.version = "3.0"
    time.sleep(0.3)
    assert client.get("/imginfo?id_name=bus").json["model_version"] == "3.0"


def test_cached_answers_survive_a_gateway_restart(tmp_path):
    first = FakeTagger()
    app = _app(tmp_path, first)
    _upload(app.test_client())
    app.extensions["predictions"].wait_idle()
    restarted = FakeTagger()
    client = _app(tmp_path, restarted).test_client()
    assert client.get("/imginfo?id_name=bus").json["predict_tags"] == ["sea", "boat"]
    assert restarted.calls == 0


def test_upload_while_torchserve_is_down_is_stored_and_served_once_it_is_back(tmp_path):
    tagger = FakeTagger()
    tagger.error = TaggerError("model server is not reachable (make serve starts it)")
    app = _app(tmp_path, tagger, VERSION_TTL=0)
    client = app.test_client()
    assert _upload(client).status_code == 200  # stored although the background prediction failed
    app.extensions["predictions"].wait_idle()
    r = client.get("/imginfo?id_name=bus")
    assert r.status_code == 503
    assert r.headers["Retry-After"]
    tagger.error = None
    r = client.get("/imginfo?id_name=bus")
    assert r.status_code == 200
    assert r.json["predict_tags"] == ["sea", "boat"]


def test_imginfo_on_another_worker_waits_for_the_running_prefetch_instead_of_asking_again(tmp_path):
    """Two gunicorn workers are two apps on one data directory: B's /imginfo waits for A's prefetch (its flock)."""
    tagger = SlowTagger()
    worker_a, worker_b = _app(tmp_path, tagger), _app(tmp_path, tagger)
    assert _upload(worker_a.test_client()).status_code == 200
    assert tagger.started.wait(5)
    answer = worker_b.test_client().get("/imginfo?id_name=bus")
    assert answer.status_code == 200
    assert answer.json["predict_tags"] == ["sea", "boat"]
    assert tagger.calls == 1  # served by A's prediction, not a second one
    worker_a.extensions["predictions"].wait_idle()
    assert not list((tmp_path / "data/run/prefetch").iterdir())  # the marker is gone with the prefetch


def test_imginfo_on_another_machine_waits_for_its_running_prefetch_through_postgresql(tmp_path, database_url):
    """Two replicas on two machines: one PostgreSQL, one shared photo folder, each its own data folder (so no
    flock is shared): B's /imginfo waits on A's advisory lock instead of asking TorchServe a second time."""
    tagger = SlowTagger()
    with ExitStack() as stack:
        replicas = [stack.enter_context(gateway_app({"TESTING": True, "DATA_DIR": str(tmp_path / f"machine-{m}"),
                                                     "TAGGER_CLIENT": tagger, "DATABASE_URL": database_url,
                                                     "PHOTO_DIR": str(tmp_path / "nas")})) for m in "ab"]
        assert _upload(replicas[0].test_client()).status_code == 200
        assert tagger.started.wait(5)
        answer = replicas[1].test_client().get("/imginfo?id_name=bus")
        assert answer.status_code == 200
        assert answer.json["predict_tags"] == ["sea", "boat"]
        assert tagger.calls == 1  # served by A's prediction, not a second one
        replicas[0].extensions["predictions"].wait_idle()


def test_imginfo_gets_the_answer_before_it_is_written_to_the_cache(tmp_path):
    """The /imginfo that waits on this worker's prefetch answers as soon as TorchServe has answered: writing the
    cache (a commit and an fsync) is for later requests and other workers, and follows."""
    tagger = FakeTagger()
    app = _app(tmp_path, tagger)
    store, release = app.extensions["store"], threading.Event()
    save = store.save_prediction

    def held_save(*args):
        assert release.wait(10), "the cache write was never released"
        save(*args)

    store.save_prediction = held_save
    client = app.test_client()
    assert _upload(client).status_code == 200
    r = client.get("/imginfo?id_name=bus")  # the cache write is still held
    assert r.status_code == 200
    assert r.json["predict_tags"] == ["sea", "boat"]
    assert tagger.calls == 1
    assert store.cached_prediction(store.get("bus")["sha256"], "fake") is None
    release.set()
    app.extensions["predictions"].wait_idle()
    assert store.cached_prediction(store.get("bus")["sha256"], "fake")["tags"] == ["sea", "boat"]
