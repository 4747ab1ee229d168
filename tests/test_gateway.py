"""The gateway through Flask's test client, with a fake model client (the real one is in test_e2e)."""
import errno
import hashlib
import io
import json
import multiprocessing
import socket
import sqlite3
import struct
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO
from pathlib import Path

import pytest
from PIL import Image

from gateway import create_app
from gateway.body import BODIES, _Watchdog
from gateway.errors import storage_problem
from gateway.openapi import SPEC
from gateway.tagger_client import TaggerError
from photo_library.files import photos_in
from photo_store import PhotoStore, base
from photo_store import sqlite as store_module
from tagger.image import EXTENSIONS, FORMATS, MEDIA_TYPES, ImageError, decode_image
from tagger.labels import label_names
from tagger.meta import utc_now
from tests.conftest import COCO, EXIF, REPO
from tests.helpers import PHOTO, gateway_app, upload
from tests.slow_exif import hanging_jpeg
from training.datasets import check_image


def test_upload_then_info_has_exactly_the_original_keys_plus_additive_ones(client):
    r = upload(client)
    assert r.status_code == 200
    assert r.json["image_id"] == "tuscany"
    assert r.json["status"] == "stored"
    info = client.get("/imginfo?id_name=tuscany").json
    assert set(info) == {"image_id", "predict_tags", "data_information", "GPS_information", "scores",
                         "model_version", "place", "date_source", "offset_time", "camera", "image", "tag_policy",
                         "exif_unread"}
    assert info["date_source"] == "DateTimeOriginal"
    assert info["camera"]["make"] == "NIKON"
    assert info["image"] == {"width": 640, "height": 480, "format": "JPEG", "orientation": 1}
    assert info["predict_tags"] == ["sea", "boat"]
    assert info["data_information"] == "2008:10:22 16:28:39"
    assert info["GPS_information"]["GPSLatitude"] == pytest.approx(43.46744833)
    assert info["GPS_information"]["GPSLongitudeRef"] == "E"
    assert client.post("/imginfo", data={"id_name": "tuscany"}).json == info


def test_four_gps_photos_uploaded_beside_a_hostile_one_all_keep_their_gps(tmp_path, fake_tagger, store_url):
    """One photo whose EXIF parse hangs costs nobody else their date or GPS; its own EXIF is parsed again on its
    next /imginfo (here by a parser that reads it), so nothing is lost for good."""
    config = {"TESTING": True, "DATA_DIR": str(tmp_path), "TAGGER_CLIENT": fake_tagger, "DATABASE_URL": store_url}
    with gateway_app({**config, "EXIF_PARSE": "tests.slow_exif:parse", "EXIF_TIMEOUT": 4.0}) as app:
        client = app.test_client()
        jobs = [("hostile", hanging_jpeg())] + [(f"gps-{i}", PHOTO) for i in range(4)]
        with ThreadPoolExecutor(len(jobs)) as pool:
            assert [r.status_code for r in pool.map(lambda job: upload(client, job[1], job[0]), jobs)] == [200] * 5
        for name, _ in jobs[1:]:
            info = client.get(f"/imginfo?id_name={name}").json
            assert info["GPS_information"]["GPSLatitude"] == pytest.approx(43.46744833)
            assert info["exif_unread"] is None
        stored = app.extensions["store"].get("hostile")["exif"]
        assert "longer than 4 s" in stored["unread"]
        assert stored["gps"] is None
        assert "longer than 4 s" in client.get("/imginfo?id_name=hostile").json["exif_unread"]  # tried again: hangs
        assert app.extensions["store"].get("hostile")["exif"]["attempts"] == 2
    with gateway_app(config) as again:  # parsers that read the file
        info = again.test_client().get("/imginfo?id_name=hostile").json
        assert info["exif_unread"] is None
        assert info["data_information"] is None  # read: it has no EXIF
        assert "unread" not in again.extensions["store"].get("hostile")["exif"]


def test_photo_without_exif_has_null_date_and_gps(client):
    upload(client, (COCO / "images/000000000471.jpg").read_bytes(), "bus")
    info = client.get("/imginfo?id_name=bus").json
    assert info["data_information"] is None
    assert info["GPS_information"] is None


@pytest.mark.parametrize("form, status, words", [
    ({"id_name": "x"}, 400, "'file' is missing"),
    ({"file": PHOTO}, 400, "id_name"),
    ({"file": PHOTO, "id_name": "   "}, 400, "id_name"),
    ({"file": PHOTO, "id_name": "a\x00b"}, 400, "control"),
    ({"file": PHOTO, "id_name": "x" * 300}, 400, "longer"),
    ({"file": b"", "id_name": "x"}, 400, "empty"),
    ({"file": b"%PDF-1.4 not a photo", "id_name": "x"}, 415, "not a photo in a format"),
    ({"file": PHOTO[:5000], "id_name": "x"}, 400, "truncated"),
])
def test_bad_uploads_get_a_json_4xx(client, form, status, words):
    form = {k: (io.BytesIO(v), "a.jpg") if k == "file" else v for k, v in form.items()}
    r = client.post("/imgup", data=form, content_type="multipart/form-data")
    assert r.status_code == status
    assert words in r.json["error"]


def test_oversized_body_is_413_json(tmp_path, fake_tagger):
    app = create_app({"TESTING": True, "DATA_DIR": str(tmp_path), "TAGGER_CLIENT": fake_tagger,
                      "MAX_CONTENT_LENGTH": 50_000})
    r = upload(app.test_client(), PHOTO)  # 161 kB
    assert r.status_code == 413
    assert "error" in r.json


@pytest.mark.parametrize("method, path, body, status", [
    ("get", "/imginfo", None, 400),
    ("get", "/imginfo?id_name=missing", None, 404),
    ("post", "/imgup", "not multipart", 400),
    ("get", "/imgup", None, 405),
    ("get", "/nowhere", None, 404),
])
def test_malformed_requests_answer_json(client, method, path, body, status):
    r = getattr(client, method)(path, data=body)
    assert r.status_code == status
    assert r.is_json
    assert r.json["error"]


def test_model_server_down_is_503_with_retry_after(client, fake_tagger, app):
    fake_tagger.error = TaggerError("model server is not reachable")  # down before the upload: nothing cached
    upload(client)
    app.extensions["predictions"].wait_idle()
    r = client.get("/imginfo?id_name=tuscany")
    assert r.status_code == 503
    assert r.headers["Retry-After"] == "5"
    assert "not reachable" in r.json["error"]


def test_id_name_is_never_a_path_and_reupload_replaces(client, app):
    assert upload(client, id_name="../../etc/passwd").status_code == 200
    store = app.extensions["store"]
    first = store.get("../../etc/passwd")
    assert first["file"].startswith("images/")
    assert ".." not in first["file"]
    r = upload(client, (COCO / "images/000000000471.jpg").read_bytes(), "../../etc/passwd")
    assert r.json["replaced"] is True
    second = store.get("../../etc/passwd")
    assert second["sha256"] != first["sha256"]
    assert store.image_path(first).exists()
    assert store.image_path(second).exists()  # the old one is history


def test_reuploads_lose_nothing(client, app):
    store = app.extensions["store"]
    jpeg = (COCO / "images/000000000471.jpg").read_bytes()
    assert upload(client, jpeg, "bus").json["status"] == "stored"
    assert client.put("/annotate/api/photos/bus/labels", json={"labels": ["bus", "person"]},
                      headers={"Origin": "http://localhost"}).status_code == 200
    first = store.get("bus")
    # identical bytes: a no-op, labels kept, no new file
    r = upload(client, jpeg, "bus")
    assert (r.status_code, r.json["status"], r.json["replaced"]) == (200, "unchanged", False)
    assert store.get("bus")["labels"] == ["bus", "person"]
    assert store.get("bus")["file"] == first["file"]
    # if_absent: 409, nothing changes
    other = (COCO / "images/000000000382.jpg").read_bytes()

    r = client.post("/imgup", data={"file": (BytesIO(other), "x.jpg"), "id_name": "bus", "if_absent": "1"})
    assert r.status_code == 409
    assert "if_absent" in r.json["error"]
    assert store.get("bus")["sha256"] == first["sha256"]
    # different bytes: replaced as the original did, the old photo and its labels kept in the history
    r = upload(client, other, "bus")
    assert (r.json["status"], r.json["replaced"]) == ("stored", True)
    (old,) = store.history("bus")
    assert old["labels"] == ["bus", "person"]
    assert old["sha256"] == first["sha256"]
    assert store.image_path(old).read_bytes() == jpeg
    assert store.get("bus")["labels"] is None


@pytest.mark.parametrize("id_name", ["a\u200bb", "x\u202ey", "tab\there", "\u2028", "   "])
def test_invisible_and_control_characters_are_refused_in_id_name(client, id_name):
    r = upload(client, id_name=id_name)
    assert r.status_code == 400
    assert "id_name" in r.json["error"]


@pytest.mark.parametrize("id_name", ["Ünïcödé 写真", "../../x", "..", "CON", "a" * 256])
def test_printable_id_names_are_data_never_paths(client, app, id_name):
    assert upload(client, id_name=id_name).status_code == 200
    assert app.extensions["store"].get(id_name)["file"].startswith("images/")


def test_acknowledged_upload_is_committed_to_disk(client, app, backend, store_url):
    """After the 200, a fresh connection (another process after a crash) sees the record and the file."""
    upload(client)
    store = app.extensions["store"]
    if backend == "sqlite":
        db = sqlite3.connect(store.db_path)
        (file_name, sha) = db.execute("SELECT file, sha256 FROM photos WHERE id_name='tuscany'").fetchone()
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        db.close()
    else:
        import psycopg

        with psycopg.connect(store_url) as db:
            (file_name, sha) = db.execute("SELECT file, sha256 FROM photos WHERE id_name='tuscany'").fetchone()
            assert db.execute("SHOW synchronous_commit").fetchone()[0] == "on"
    assert file_name == f"images/{sha[:2]}/{sha}.jpg"  # content-addressed
    assert hashlib.sha256((store.root / file_name).read_bytes()).hexdigest() == sha


def test_openapi_describes_the_routes(client):
    spec = client.get("/openapi.json").json
    assert {"/imgup", "/imginfo", "/healthz"} <= set(spec["paths"])
    assert client.get("/healthz").json == {"status": "ok"}


def test_annotation_labels_and_export_readable_by_training(client, app):
    from training.datasets import CocoMultiLabel

    assert client.get("/annotate/").status_code == 200
    assert len(client.get("/annotate/api/labels").json["labels"]) == 34
    upload(client)
    upload(client, (COCO / "images/000000000471.jpg").read_bytes(), "bus")
    assert client.put("/annotate/api/photos/bus/labels", json={"labels": ["bus", "road"]}).status_code == 200
    assert client.put("/annotate/api/photos/bus/labels", json={"labels": ["unicorn"]}).status_code == 400
    assert client.put("/annotate/api/photos/bus/labels", data="x").status_code == 400
    assert client.put("/annotate/api/photos/nope/labels", json={"labels": []}).status_code == 404
    export = client.get("/annotate/export.json").json
    assert [i["id_name"] for i in export["images"]] == ["bus"]  # only labelled photos
    ann = app.extensions["store"].root / "export.json"
    ann.write_text(json.dumps(export))
    names = label_names()
    ds = CocoMultiLabel(app.extensions["store"].root, ann, names)
    target, known = ds.targets()
    assert {names[j] for j in target[0].nonzero().flatten().tolist()} == {"bus", "road"}
    assert known.all()
    image, _, _ = ds[0]
    assert image.size == (640, 427)


def test_request_ids_are_echoed_or_made(client):
    assert client.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"] == "abc-123"
    made = client.get("/healthz", headers={"X-Request-ID": "bad id <script>" + "x" * 200}).headers["X-Request-ID"]
    assert len(made) == 32
    assert made.isalnum()
    assert client.get("/imginfo").headers["X-Request-ID"]  # errors carry one too


def test_readyz_says_what_is_not_ready(client, fake_tagger, app, tmp_path):
    r = client.get("/readyz")
    assert r.status_code == 200
    assert r.json == {"status": "ready", "model_version": "fake", "tag_policy": "precise"}
    assert client.get("/healthz").status_code == 200
    fake_tagger.error = TaggerError("model server is not reachable (make serve starts it)")
    r = client.get("/readyz")
    assert r.status_code == 503
    assert "model server" in r.json["error"]
    assert r.headers["Retry-After"]
    assert client.get("/healthz").status_code == 200  # still alive


def test_photos_search_by_tag_is_paged_newest_first_and_labels_win(client, app, fake_tagger):
    for i in range(7):
        data = (COCO / "images" / sorted(p.name for p in (COCO / "images").iterdir())[i]).read_bytes()
        assert client.post("/imgup", data={"file": (BytesIO(data), "p.jpg"), "id_name": f"p{i}"}).status_code == 200
    app.extensions["predictions"].wait_idle()  # the fake model says sea and boat for every photo
    client.put("/annotate/api/photos/p3/labels", json={"labels": ["car"]})
    names, cursor = [], None
    while True:
        r = client.get("/photos", query_string={"tag": "sea", "limit": 2, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200
        names += [p["image_id"] for p in r.json["photos"]]
        cursor = r.json["next_cursor"]
        if cursor is None:
            break
    assert names == ["p6", "p5", "p4", "p2", "p1", "p0"]  # newest first; p3 was labelled car by a person
    cars = client.get("/photos?tag=car").json["photos"]
    assert [(p["image_id"], p["tags_from"]) for p in cars] == [("p3", "labels")]
    assert len(client.get("/photos").json["photos"]) == 7
    assert client.get("/photos?limit=0").status_code == 400
    assert client.get("/photos?cursor=garbage!").status_code == 400
    # any cursor of the documented form (the spec's pattern) is a position: one from the future lists everything
    assert len(client.get("/photos", query_string={"cursor": "2999-01-01T00:00:00.000000Z~"}).json["photos"]) == 7
    assert client.get("/photos", query_string={"cursor": "2999-01-01T00:00:00.000000Z~\n"}).status_code == 400


def test_delete_moves_to_the_trash_restore_brings_all_back_and_emptying_erases_it(client, app):
    """DELETE keeps the photo, its earlier versions, labels, files, thumbnails and predictions in the trash (GET
    /trash); a restore puts it all back; emptying the trash (make empty-trash, or TRASH_DAYS) erases everything."""
    store = app.extensions["store"]
    a = (COCO / "images/000000000471.jpg").read_bytes()
    b = (COCO / "images/000000000382.jpg").read_bytes()
    client.post("/imgup", data={"file": (BytesIO(a), "a.jpg"), "id_name": "x"})
    client.post("/imgup", data={"file": (BytesIO(b), "b.jpg"), "id_name": "x"})  # a goes to the history
    assert client.put("/annotate/api/photos/x/labels", json={"labels": ["sea"]}).status_code == 200
    app.extensions["predictions"].wait_idle()
    files = [store.image_path(store.get("x")), store.image_path(store.history("x")[0])]
    for size in ("thumb", "view"):
        with client.get(f"/annotate/api/{size}?id_name=x") as r:
            assert r.status_code == 200
    renderings = list((Path(app.config["DATA_DIR"]) / "thumbs").rglob("*.jpg"))
    assert len(renderings) == 2
    files += renderings

    r = client.delete("/photos/x")
    assert r.status_code == 200
    assert (r.json["image_id"], r.json["status"]) == ("x", "deleted")
    trash_id = r.json["trash_id"]
    assert r.json["restorable_until"] > utc_now(hours=24 * 29)
    assert store.get("x") is None
    assert store.history("x") == []
    assert client.get("/imginfo?id_name=x").status_code == 404
    assert client.delete("/photos/x").status_code == 404
    listed = client.get("/trash").json
    assert listed["days"] == 30
    assert [(e["trash_id"], e["id_name"], e["labels"], e["versions"]) for e in listed["trash"]] == \
        [(trash_id, "x", ["sea"], 1)]
    assert all(f.exists() for f in files)  # kept while in the trash

    r = client.post(f"/trash/{trash_id}/restore")
    assert r.status_code == 200
    assert r.json == {"image_id": "x", "status": "restored"}
    assert store.get("x")["labels"] == ["sea"]
    assert store.read_image(store.get("x")) == b
    assert [h["sha256"] for h in store.history("x")] == [hashlib.sha256(a).hexdigest()]
    assert client.get("/trash").json["trash"] == []
    assert client.post(f"/trash/{trash_id}/restore").status_code == 404

    trash_id = client.delete("/photos/x").json["trash_id"]
    client.post("/imgup", data={"file": (BytesIO(a), "a.jpg"), "id_name": "x"})  # the name taken again
    r = client.post(f"/trash/{trash_id}/restore")
    assert r.status_code == 409
    assert "is stored under id_name 'x' now" in r.json["error"]
    assert client.delete("/photos/x").status_code == 200
    assert store.empty_trash() == 2
    assert client.get("/trash").json["trash"] == []
    assert not any(f.exists() for f in files)
    assert store.cached_prediction(hashlib.sha256(b).hexdigest(), "fake") is None


def test_what_stayed_in_the_trash_past_trash_days_is_erased(tmp_path, fake_tagger):
    app = create_app({"TESTING": True, "DATA_DIR": str(tmp_path), "TAGGER_CLIENT": fake_tagger, "TRASH_DAYS": 0})
    client = app.test_client()
    upload(client, id_name="old")
    file = app.extensions["store"].image_path(app.extensions["store"].get("old"))
    assert client.delete("/photos/old").status_code == 200
    assert client.get("/trash").json == {"days": 0, "trash": []}
    assert not file.exists()
    app.extensions["exif"].close()


def test_place_names_come_offline_from_geonames(client, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("no network at run time")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    upload(client, (EXIF / "DSCN0010.jpg").read_bytes(), "tuscany")
    place = client.get("/imginfo?id_name=tuscany").json["place"]
    assert place["city"] == "Arezzo"
    assert place["region"] == "Tuscany"
    assert place["country"] == "Italy"
    assert place["country_code"] == "IT"
    assert place["distance_km"] < 5
    upload(client, (EXIF / "no_exif.jpg").read_bytes(), "nogps")
    assert client.get("/imginfo?id_name=nogps").json["place"] is None


def test_more_than_a_few_form_parts_is_a_400(client):
    fields = {f"f{i}": "x" for i in range(1001)}
    r = client.post("/imgup", data={"file": (BytesIO(PHOTO), "p.jpg"), "id_name": "many", **fields})
    assert r.status_code == 400
    assert "parts" in r.json["error"]
    assert upload(client, id_name="fine").status_code == 200  # and the next normal request is served


def test_a_form_part_without_a_name_gets_a_400(client):
    """Found by schemathesis: a multipart part without a name used to crash the unknown-field check (500)."""
    body = (b"--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n"
            b"--b\r\nContent-Disposition: form-data; name=\"extra\"\r\n\r\ny\r\n"
            b"--b\r\nContent-Disposition: form-data; name=\"id_name\"\r\n\r\nq\r\n--b--\r\n")
    r = client.post("/imgup", data=body, content_type="multipart/form-data; boundary=b")
    assert r.status_code == 400
    assert "unknown form field" in r.json["error"]


@pytest.mark.parametrize("fault, status", [(OSError(28, "No space left on device"), 507),
                                           (OSError(30, "Read-only file system"), 503)])
def test_a_full_or_read_only_photo_folder_answers_507_or_503_and_loses_nothing(client, app, monkeypatch, fault,
                                                                                status):
    jpeg = (COCO / "images/000000000471.jpg").read_bytes()
    assert upload(client, jpeg, "kept").status_code == 200
    store = app.extensions["store"]

    def failing_write(*args, **kwargs):
        raise fault
    monkeypatch.setattr(base, "atomic_write", failing_write)
    r = upload(client, (COCO / "images/000000000382.jpg").read_bytes(), "new")
    assert r.status_code == status
    assert "nothing was stored" in r.json["error"]
    monkeypatch.undo()
    assert store.get("new") is None
    assert store.read_image(store.get("kept")) == jpeg  # acknowledged: intact
    assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize("pragma, status", [("full", 507), ("query_only", 503)])
def test_a_full_or_read_only_sqlite_database_answers_507_or_503_and_loses_nothing(tmp_path, fake_tagger,
                                                                                  monkeypatch, pragma, status):
    """SQLite errors classified by their code, never by their message: SQLITE_READONLY for real (a connection that
    may not write); SQLITE_FULL as SQLite raises it (its result code on the exception), since a database cannot be
    made to run out of room on demand."""
    client = create_app({"TESTING": True, "DATA_DIR": str(tmp_path), "TAGGER_CLIENT": fake_tagger}).test_client()
    jpeg = (COCO / "images/000000000471.jpg").read_bytes()
    assert upload(client, jpeg, "kept").status_code == 200
    real_open = store_module.SQLiteStore._open

    def constrained(self):
        if pragma == "full":
            full = sqlite3.OperationalError("database or disk is full")
            full.sqlite_errorcode, full.sqlite_errorname = 13, "SQLITE_FULL"
            raise full
        db = real_open(self)
        db.execute("PRAGMA query_only = 1")
        return db
    monkeypatch.setattr(store_module.SQLiteStore, "_open", constrained)
    r = upload(client, (COCO / "images/000000000382.jpg").read_bytes(), "new")
    assert r.status_code == status, r.json
    assert "nothing was stored" in r.json["error"], r.json
    monkeypatch.undo()
    assert client.get("/imginfo", query_string={"id_name": "new"}).status_code == 404
    assert client.get("/imginfo", query_string={"id_name": "kept"}).status_code == 200


def test_storage_errors_are_classified_by_their_code_not_their_message():
    assert storage_problem(OSError(errno.ENOSPC, "anything")) == "full"
    assert storage_problem(OSError(errno.EROFS, "anything")) == "read-only"
    assert storage_problem(OSError(errno.ENOENT, "the disk is full")) == "missing"  # the message says nothing
    assert storage_problem(OSError(errno.EIO, "database or disk is full")) is None
    assert storage_problem(sqlite3.OperationalError("database or disk is full")) is None  # no code: not guessed


def test_a_postgresql_outage_is_503_with_retry_after_and_the_gateway_reconnects(fake_tagger, tmp_path,
                                                                                database_url, postgres):
    """The database refuses connections and drops the open ones (as a restart does): 503, never a 500; once it
    is back, the same app answers again without being restarted, and the acknowledged photo is intact."""
    import psycopg

    with gateway_app({"TESTING": True, "DATA_DIR": str(tmp_path), "TAGGER_CLIENT": fake_tagger,
                      "DATABASE_URL": database_url, "DATABASE_TIMEOUT": 1.0}) as app:
        client = app.test_client()
        jpeg = (COCO / "images/000000000471.jpg").read_bytes()
        assert upload(client, jpeg, "kept").status_code == 200
        name = database_url.split("?")[0].rsplit("/", 1)[1]
        with psycopg.connect(postgres.admin_url, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
            try:
                for send in (lambda: upload(client, (COCO / "images/000000000382.jpg").read_bytes(), "new"),
                             lambda: client.get("/imginfo", query_string={"id_name": "kept"})):
                    r = send()
                    assert r.status_code == 503
                    assert r.headers["Retry-After"]
                    assert "retry" in r.json["error"]
            finally:
                admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        r = client.get("/imginfo", query_string={"id_name": "kept"})
        assert r.status_code == 200
        assert r.json["image_id"] == "kept"
        assert upload(client, (COCO / "images/000000000382.jpg").read_bytes(), "new").status_code == 200


def test_the_gateway_loads_without_torch():
    """The gateway and its annotation page import no torch: a worker boots in a fraction of a second and stays
    small (retraining runs in its own process)."""
    out = subprocess.run([sys.executable, "-c", "import sys, gateway; gateway.create_app(); print('torch' in "
                          "sys.modules)"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.stdout.strip() == "False", out.stderr


def _open_store(path, barrier, errors):
    barrier.wait()
    try:
        PhotoStore(path)
    except Exception as exc:  # noqa: BLE001 - reported to the test
        errors.put(repr(exc))


@pytest.mark.slow
def test_workers_booting_at_once_all_open_a_new_store(tmp_path):
    """gunicorn boots its workers together on a fresh data folder; one failing to open the store ("database is
    locked") would halt gunicorn altogether. Before the schema lock, about one try in five failed."""
    ctx = multiprocessing.get_context("fork")
    errors = ctx.Queue()
    for i in range(25):
        barrier = ctx.Barrier(3)
        procs = [ctx.Process(target=_open_store, args=(tmp_path / str(i), barrier, errors)) for _ in range(3)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(30)
            assert p.exitcode == 0
    assert errors.empty(), errors.get()


def test_an_id_name_with_slashes_is_deleted_and_labelled_by_its_path(client):
    """``/photos//a//b.jpg`` names the id_name "/a//b.jpg": never merged into another path or redirected (found by
    schemathesis's stateful phase: a 308 with an HTML body)."""
    assert upload(client, id_name="/a//b.jpg").status_code == 200
    r = client.put("/annotate/api/photos//a//b.jpg/labels", json={"labels": ["sea"]})
    assert r.status_code == 200, r.json
    r = client.delete("/photos//a//b.jpg")
    assert r.status_code == 200
    assert (r.json["image_id"], r.json["status"]) == ("/a//b.jpg", "deleted")
    assert client.get("/imginfo", query_string={"id_name": "/a//b.jpg"}).status_code == 404


def test_server_timing_says_where_an_upload_spent_its_time(client):
    r = upload(client)
    names = [part.split(";")[0].strip() for part in r.headers["Server-Timing"].split(",")]
    assert names == ["body", "form", "header", "prefetch", "decode-wait", "decode", "exif-wait", "store", "total"]
    assert all(float(part.split("dur=")[1]) >= 0 for part in r.headers["Server-Timing"].split(","))
    timing = client.get("/imginfo?id_name=tuscany").headers["Server-Timing"]
    names = [p.split(";")[0].strip() for p in timing.split(",")]
    assert names == ["lookup", "tags", "total"]


def test_a_photo_that_does_not_decode_leaves_no_file_and_no_row(client, app):
    """The pixel check runs beside the file write: a photo that fails it is refused and its file removed."""
    store = app.extensions["store"]
    for body in (PHOTO[:5000], PHOTO[:len(PHOTO) - 4000]):
        r = upload(client, body, "cut")
        assert r.status_code in (400, 415)
        assert "error" in r.json
    assert store.get("cut") is None
    assert upload(client, PHOTO, "kept", ).status_code == 200
    r = client.post("/imgup", data={"file": (io.BytesIO(PHOTO[:5000]), "a.jpg"), "id_name": "kept", "if_absent": "1"},
                    content_type="multipart/form-data")
    assert r.status_code == 400  # the pixels are judged before the name: as before, not a 409
    files = [p for p in (store.root / "images").rglob("*") if p.is_file()]
    assert len(files) == 1
    assert not list(store.root.rglob("*.tmp"))


POLICY_ANSWER = {"tags": ["sea"], "tag_policy": "precise", "model_version": "fake",
                 "policy_tags": {"precise": ["sea"], "balanced": ["sea", "boat"], "complete": ["sea", "boat", "fog"]},
                 "scores": {"sea": 0.9, "boat": 0.4, "fog": 0.1}}


def test_a_policy_changes_predict_tags_and_nothing_else(client, fake_tagger):
    fake_tagger.predict = lambda data: dict(POLICY_ANSWER)
    upload(client)
    default = client.get("/imginfo?id_name=tuscany").json
    assert default["predict_tags"] == ["sea"]
    assert default["tag_policy"] == "precise"  # the gateway's default
    for policy, tags in POLICY_ANSWER["policy_tags"].items():
        answer = client.get(f"/imginfo?id_name=tuscany&policy={policy}").json
        assert answer == {**default, "predict_tags": tags, "tag_policy": policy}
        assert client.post("/imginfo", data={"id_name": "tuscany", "policy": policy}).json == answer
    tagged = {p: [x["image_id"] for x in client.get(f"/photos?tag=boat&policy={p}").json["photos"]]
              for p in POLICY_ANSWER["policy_tags"]}
    assert tagged == {"precise": [], "balanced": ["tuscany"], "complete": ["tuscany"]}


@pytest.mark.parametrize("path", ["/imginfo?id_name=tuscany&policy=strict", "/photos?policy=PRECISE!",
                                  "/annotate/api/photos?policy=all"])
def test_an_unknown_policy_is_a_400_naming_the_three(client, path):
    upload(client)
    answer = client.get(path)
    assert answer.status_code == 400
    assert all(p in answer.json["error"] for p in ("precise", "balanced", "complete"))


def test_the_served_policy_is_a_setting_and_an_old_model_answers_what_it_has(tmp_path, fake_tagger):
    fake_tagger.predict = lambda data: dict(POLICY_ANSWER)
    app = create_app({"TESTING": True, "DATA_DIR": str(tmp_path), "TAGGER_CLIENT": fake_tagger,
                      "TAG_POLICY": "complete"})
    client = app.test_client()
    upload(client)
    assert client.get("/imginfo?id_name=tuscany").json["predict_tags"] == ["sea", "boat", "fog"]
    with pytest.raises(ValueError, match="unknown tag policy 'loose'"):
        create_app({"TESTING": True, "DATA_DIR": str(tmp_path), "TAGGER_CLIENT": fake_tagger, "TAG_POLICY": "loose"})
    old = create_app({"TESTING": True, "DATA_DIR": str(tmp_path / "old"), "TAGGER_CLIENT": FakeOldTagger()})
    client = old.test_client()
    upload(client)
    answer = client.get("/imginfo?id_name=tuscany")
    assert answer.json["predict_tags"] == ["sea", "boat"]
    assert answer.json["tag_policy"] == "balanced"
    refused = client.get("/imginfo?id_name=tuscany&policy=precise")
    assert refused.status_code == 409
    assert "made before tag policies" in refused.json["error"]


class FakeOldTagger:
    """A model made before tag policies: tags without policy_tags."""
    version = "old"

    def served_version(self):
        return self.version

    def predict(self, data):
        return {"tags": ["sea", "boat"], "scores": {"sea": 0.9, "boat": 0.8}, "model_version": self.version}


def _encoded(fmt: str) -> bytes:
    """A tiny real file in Pillow format ``fmt`` (PSD, which Pillow cannot write, built by hand)."""
    if fmt == "PSD":
        return (b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, 4, 4, 8, 3) + struct.pack(">III", 0, 0, 0)
                + struct.pack(">H", 0) + bytes(3 * 4 * 4))
    out = BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 40)).save(out, fmt)
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["PPM", "ICO", "TGA", "PCX", "GIF", "BMP", "EPS", "PSD", "DDS", "SGI"])
def test_a_format_outside_the_one_list_is_415_everywhere(client, tmp_path, fmt):
    """Pillow reads these, but the service promises five formats (tagger.image.FORMATS): the decoder tries no other,
    so an upload is 415, training's data check skips it and the photo library never picks its file up."""
    data = _encoded(fmt)
    (tmp_path / f"x.{fmt.lower()}").write_bytes(data)
    assert check_image(tmp_path / f"x.{fmt.lower()}")  # a reason to skip it
    assert photos_in(tmp_path) == []
    r = upload(client, data, f"f-{fmt}")
    assert r.status_code == 415, (fmt, r.json)
    assert "JPEG, PNG, HEIC/HEIF, TIFF or WebP" in r.json["error"]
    with pytest.raises(ImageError):
        decode_image(data)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "TIFF", "WEBP"])
def test_the_formats_on_the_list_are_stored_under_their_own_extension(client, app, fmt):
    assert upload(client, _encoded(fmt), f"ok-{fmt}").status_code == 200
    record = app.extensions["store"].get(f"ok-{fmt}")
    assert record["format"] == fmt
    assert record["file"].endswith(FORMATS[fmt][0][0])
    assert record["file"][-5:] != ".bin"
    declared = SPEC["paths"]["/imgup"]["post"]["requestBody"]["content"]["multipart/form-data"]["encoding"]["file"]
    assert declared["contentType"] == ", ".join(MEDIA_TYPES)  # the spec says what the decoder reads, nothing more
    assert ".heic" in EXTENSIONS
    assert ".bmp" not in EXTENSIONS


def test_every_route_that_takes_a_body_is_listed_with_its_limit(tmp_path, fake_tagger):
    """gateway.body.BODIES is the one list of routes that read a body: a new POST or PUT route must be added there
    (any other route refuses a body unread)."""
    app = create_app({"TESTING": True, "DATA_DIR": str(tmp_path), "TAGGER_CLIENT": fake_tagger})
    app.extensions["exif"].close()
    takes = {rule.endpoint for rule in app.url_map.iter_rules() if rule.methods & {"POST", "PUT", "PATCH"}}
    assert takes == set(BODIES)


def test_a_body_past_its_deadline_is_cut_however_fast_it_came():
    ours, theirs = socket.socketpair()
    try:
        dog = _Watchdog(ours, grace=10.0, rate=1e12, deadline=0.5)
        try:
            assert not dog.check(dog.start + 0.4)
            assert dog.check(dog.start + 0.6)
            assert ours.recv(10) == b""  # the blocked read wakes with nothing
            assert "within 0 s" not in dog.too_slow()
            assert "did not arrive within" in dog.too_slow()
        finally:
            dog.stop()
    finally:
        ours.close()
        theirs.close()
