"""The annotation page's API and pure functions, with the gateway app and a fake model client (the browser test
drives the real page against the real TorchServe)."""
from __future__ import annotations

import json
import sqlite3
import zipfile
from io import BytesIO
from pathlib import Path

import psutil
import pytest
from PIL import Image

from annotation_ui import job_runner
from annotation_ui.export import build_export
from annotation_ui.labelling import label_detail, uncertainty
from annotation_ui.vocabulary import next_version, served_model
from gateway import create_app
from gateway.tagger_client import TaggerError
from photo_store import PhotoStore
from photo_store.postgres import hold_job_lock, release_job_lock
from tagger.labels import label_names, load_labels
from tagger.layout import DataDir
from tagger.meta import make_meta
from tests.helpers import IMAGES, alive, gateway_app, select, wait_until
from tests.helpers import upload_file as upload


@pytest.fixture
def photos(client, app):
    for p in IMAGES:
        upload(client, p)
    app.extensions["predictions"].wait_idle()  # the fake model suggests sea and boat for every photo
    return [p.name for p in IMAGES]


def test_label_detail_records_who_set_each_label_and_keeps_unchanged_ones():
    vocab = ["sea", "boat", "car", "fog"]
    first = label_detail(vocab, positives={"sea", "car"}, unknown={"fog"}, suggested={"sea", "boat"}, previous=None,
                         by="ann", now="t1")
    assert first == {"sea": {"value": True, "source": "suggestion", "by": "ann", "at": "t1"},  # accepted
                     "boat": {"value": False, "source": "person", "by": "ann", "at": "t1"},  # rejected
                     "car": {"value": True, "source": "person", "by": "ann", "at": "t1"}}    # added; fog unknown
    again = label_detail(vocab, positives={"sea"}, unknown=set(), suggested={"sea", "boat"}, previous=first, by="bob",
                         now="t2")
    assert again["sea"]["by"] == "ann"
    assert again["car"] == {"value": False, "source": "person", "by": "bob", "at": "t2"}
    assert again["fog"]["by"] == "bob"
    assert again["boat"]["at"] == "t1"


def test_uncertainty_is_the_smallest_logit_margin_and_orders_photos():
    assert uncertainty({"a": 0.5, "b": 0.99}, {"a": 0.5, "b": 0.5}) == pytest.approx(0.0)
    assert uncertainty({"a": 0.9}, {"a": 0.5}) == pytest.approx(2.1972, abs=1e-4)
    rows = [{"id_name": n, "labelled_at": None, "labels": None, "answer": a} for n, a in [
        ("sure", {"scores": {"a": 0.999}, "tags": ["a"]}), ("none", None),
        ("unsure", {"scores": {"a": 0.45}, "tags": []})]]
    assert [r["id_name"] for r in select(rows, order="uncertain", thresholds={"a": 0.5})] == ["unsure", "sure", "none"]
    assert [r["id_name"] for r in select(rows, label="a")] == ["sure"]
    # a model none of whose labels is tagged yet (too few positives): no margin, never Infinity (not JSON)
    assert uncertainty({"a": 0.9}, {"a": None}) is None
    assert all(r["uncertainty"] is None for r in select(rows, order="uncertain", thresholds={"a": None}))


def test_saving_labels_records_provenance_and_the_suggestion_seen(client, photos):
    r = client.put(f"/annotate/api/photos/{photos[0]}/labels",
                   json={"labels": ["sea", "car"], "unknown": ["fog"], "labeller": "ann"})
    assert r.status_code == 200
    # the fake model answers as one made before policies: its tags are balanced's, whatever the page asked for
    assert r.json["suggested"] == {"model_version": "fake", "tags": ["sea", "boat"], "tag_policy": "balanced"}
    detail = r.json["label_detail"]
    assert detail["sea"]["source"] == "suggestion"
    assert detail["car"]["source"] == "person"
    assert detail["boat"] == {**detail["boat"], "value": False, "source": "person", "by": "ann"}
    assert "fog" not in detail
    assert len(detail) == 33
    photo = client.get("/annotate/api/photo", query_string={"id_name": photos[0]}).json
    assert photo["labels"] == ["car", "sea"]
    assert photo["labelled_at"]
    assert photo["label_detail"] == detail
    # refused: outside the vocabulary, both set and unknown, a bad labeller, malformed bodies, unknown photo
    for body in ({"labels": ["unicorn"]}, {"labels": ["sea"], "unknown": ["sea"]},
                 {"labels": [], "labeller": "<script>"}, {"labels": "sea"}, {"labels": [], "unknown": "fog"}):
        r = client.put(f"/annotate/api/photos/{photos[0]}/labels", json=body)
        assert r.status_code == 400
        assert r.json["error"]
    assert client.put("/annotate/api/photos/nope/labels", json={"labels": []}).status_code == 404
    # undo of a first save: unlabelled again
    assert client.delete(f"/annotate/api/photos/{photos[0]}/labels").status_code == 200
    assert client.get("/annotate/api/photo", query_string={"id_name": photos[0]}).json["labelled_at"] is None
    assert client.delete("/annotate/api/photos/nope/labels").status_code == 404


def test_export_marks_unreviewed_labels_unknown_and_trains_as_is(client, app, photos, tmp_path, store_url):
    from training.datasets import LabelledImages

    client.put(f"/annotate/api/photos/{photos[0]}/labels", json={"labels": ["sea"], "unknown": ["fog", "boat"]})
    client.put(f"/annotate/api/photos/{photos[1]}/labels", json={"labels": []})  # reviewed: nothing in it
    export = client.get("/annotate/export.json").json
    images = {i["id_name"]: i for i in export["images"]}
    assert set(images) == {photos[0], photos[1]}  # only photos a person saved
    ids = {c["name"]: c["id"] for c in export["categories"]}
    assert sorted(images[photos[0]]["unknown_category_ids"]) == sorted([ids["fog"], ids["boat"]])
    assert images[photos[1]]["unknown_category_ids"] == []
    ann = tmp_path / "export.json"
    ann.write_text(json.dumps(export))
    names = label_names()
    ds, _ = LabelledImages.from_coco([(app.extensions["store"].root, ann)], names)
    targets, known = ds.targets()
    first = [i["id_name"] for i in export["images"]].index(photos[0])
    assert targets[first, names.index("sea")] == 1
    assert not known[first, names.index("fog")]
    assert known[1 - first].all()
    # the command writes the same file
    from annotation_ui.export import main

    out = tmp_path / "cli.json"
    assert main(["--data-dir", str(app.extensions["store"].root), "--out", str(out), "--database-url", store_url]) == 0
    cli = json.loads(out.read_text())
    assert [i["file_name"] for i in cli["images"]] == [i["file_name"] for i in export["images"]]
    assert main(["--data-dir", str(tmp_path / "nothing"), "--out", str(out), "--database-url", ""]) == 2
    assert main(["--data-dir", str(tmp_path), "--out", str(out), "--database-url", "mysql://x@y/z"]) == 2


def test_photos_filter_order_page_and_progress(client, photos):
    client.put(f"/annotate/api/photos/{photos[0]}/labels", json={"labels": ["sea"]})        # kept sea, removed boat
    client.put(f"/annotate/api/photos/{photos[1]}/labels", json={"labels": ["sea", "boat", "car"]})  # added car
    page = client.get("/annotate/api/photos", query_string={"status": "unlabelled", "limit": 1}).json
    assert page["total"] == 2
    assert len(page["photos"]) == 1
    assert page["next_offset"] == 1
    assert page["photos"][0]["suggested_tags"] == ["sea", "boat"]
    assert page["photos"][0]["uncertainty"] is not None
    labelled = client.get("/annotate/api/photos", query_string={"status": "labelled", "label": "car"}).json
    assert [p["id_name"] for p in labelled["photos"]] == [photos[1]]
    assert client.get("/annotate/api/photos").json["total"] == 4  # the original endpoint: every photo
    for bad in ({"status": "x"}, {"order": "x"}, {"limit": 0}, {"limit": 501}, {"offset": -1}, {"label": "unicorn"},
                {"limit": "a"}):
        assert client.get("/annotate/api/photos", query_string=bad).status_code == 400
    p = client.get("/annotate/api/progress").json
    assert (p["total"], p["labelled"], p["compared_with_suggestions"]) == (4, 2, 2)
    sea, boat, car = (p["per_label"][n] for n in ("sea", "boat", "car"))
    assert (sea["accepted"], sea["positives"], sea["agreement"]) == (2, 2, 1.0)
    assert (boat["accepted"], boat["rejected"], boat["agreement"]) == (1, 1, 0.5)
    assert (car["added"], car["agreed_negative"]) == (1, 1)
    assert p["suggestion_precision"] == pytest.approx(3 / 4)
    assert p["suggestion_recall"] == pytest.approx(3 / 4)


def test_thumbnails_and_views_are_jpeg_made_once_with_nosniff(client, app, photos):
    def get(path, **query):
        with client.get(path, query_string=query) as r:  # closes the file a send_file response holds
            return r.status_code, r.mimetype, dict(r.headers), r.data

    status, mimetype, headers, data = get("/annotate/api/thumb", id_name=photos[0])
    assert status == 200
    assert mimetype == "image/jpeg"
    assert headers["X-Content-Type-Options"] == "nosniff"
    im = Image.open(BytesIO(data))
    assert im.format == "JPEG"
    assert max(im.size) == 256
    cached = list((app.extensions["store"].root / "thumbs" / "thumb").rglob("*.jpg"))
    assert len(cached) == 1
    mtime = cached[0].stat().st_mtime_ns
    get("/annotate/api/thumb", id_name=photos[0])
    assert cached[0].stat().st_mtime_ns == mtime  # made once
    assert max(Image.open(BytesIO(get("/annotate/api/view", id_name=photos[0])[3])).size) == 640
    status, mimetype, headers, data = get("/annotate/api/original", id_name=photos[0])
    assert mimetype == "image/jpeg"
    assert data == IMAGES[0].read_bytes()
    assert headers["X-Content-Type-Options"]
    assert get("/annotate/api/thumb", id_name="nope")[0] == 404
    assert get("/annotate/api/thumb")[0] == 400


def test_cross_site_requests_are_refused_and_same_origin_ones_served(client, photos):
    for headers in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}, {"Origin": "null"}):
        r = client.put(f"/annotate/api/photos/{photos[0]}/labels", json={"labels": []}, headers=headers)
        assert r.status_code == 403
        assert "cross-site" in r.json["error"]
        r = client.post("/imgup", data={"file": (BytesIO(IMAGES[0].read_bytes()), "x.jpg"), "id_name": "x"},
                        headers=headers)
        assert r.status_code == 403
    ok = {"Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"}
    assert client.put(f"/annotate/api/photos/{photos[0]}/labels", json={"labels": []}, headers=ok).status_code == 200
    assert client.get("/annotate/api/photos", headers={"Origin": "http://evil.example"}).status_code == 200  # reads


def test_the_page_escapes_nothing_it_did_not_write():
    modules = sorted((Path(__file__).parent.parent / "annotation_ui/static/js").glob("*.js"))
    assert len(modules) >= 8
    for path in modules:
        js = path.read_text()
        assert "innerHTML" not in js, path.name
        assert "insertAdjacentHTML" not in js, path.name
        assert "document.write" not in js, path.name


def _fake_archive(path, version, labels, **extra):
    from tagger.presets import default_preprocessing

    meta = make_meta(arch="resnet18", labels=labels, thresholds=[0.3] * len(labels),
                     preprocessing=default_preprocessing("resnet18"), version=version, **extra)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("MAR-INF/MANIFEST.json", json.dumps({"model": {"modelName": "tagger", "modelVersion": version}}))
        z.writestr("meta.json", json.dumps(meta))


def test_the_vocabulary_is_the_served_versions_own(tmp_path, fake_tagger):
    store = tmp_path / "model_store"
    store.mkdir()
    _fake_archive(store / "tagger-2.0.mar", "2.0", [{"id": 1, "name": "person", "isthing": 1},
                                                     {"id": 900, "name": "cat-toy", "isthing": 1}])
    (store / "tagger-2.1.mar").write_bytes(b"not a zip")
    model = served_model(store, "2.0")
    assert [lab["name"] for lab in model["labels"]] == ["person", "cat-toy"]
    assert model["source"] == "archive tagger-2.0.mar"
    assert len(served_model(store, "9.9")["labels"]) == 34
    assert "default list" in served_model(store, None)["source"]
    assert next_version("2.0", store) == "2.2"  # 2.1's file exists (broken): skipped
    assert next_version("nightly", store) == "nightly.1"
    fake_tagger.version = "2.0"
    client = create_app({"TESTING": True, "DATA_DIR": str(tmp_path / "data"), "TAGGER_CLIENT": fake_tagger,
                         "MODEL_STORE": str(store)}).test_client()
    assert [lab["name"] for lab in client.get("/annotate/api/labels").json["labels"]] == ["person", "cat-toy"]
    upload(client, IMAGES[0], "a")
    assert client.put("/annotate/api/photos/a/labels", json={"labels": ["cat-toy"]}).status_code == 200
    assert client.put("/annotate/api/photos/a/labels", json={"labels": ["sea"]}).status_code == 400
    export = client.get("/annotate/export.json").json
    assert [c["name"] for c in export["categories"]] == ["person", "cat-toy"]
    assert export["annotations"][0]["category_id"] == 900


def test_the_model_api_gives_each_labels_policies_and_the_page_follows_the_one_it_names(tmp_path, fake_tagger):
    """GET /annotate/api/model: per label and policy its threshold and the out-of-fold precision and recall expected
    there; the page's suggestions follow the policy it names (complete teaches best), and a save records it."""
    store = tmp_path / "model_store"
    store.mkdir()
    labels = [{"id": 155, "name": "sea", "isthing": 0}, {"id": 9, "name": "boat", "isthing": 1},
              {"id": 119, "name": "fog", "isthing": 0}]
    policies = {"precise": {"thresholds": [0.6, 0.7, None], "precision": [0.8, 0.9, None], "recall": [0.4, 0.5, None]},
                "balanced": {"thresholds": [0.3, 0.4, 0.2], "precision": [0.6, 0.8, 0.1], "recall": [0.7, 0.7, 0.2]},
                "complete": {"thresholds": [0.1, 0.2, 0.05], "precision": [0.3, 0.5, 0.05], "recall": [0.8, 0.9, 0.8]}}
    _fake_archive(store / "tagger-3.0.mar", "3.0", labels, tag_policy="precise", policies=policies)
    fake_tagger.version = "3.0"
    fake_tagger.predict = lambda data: {"tags": ["sea"], "tag_policy": "precise", "model_version": "3.0",
                                        "scores": {"sea": 0.9, "boat": 0.5, "fog": 0.3},
                                        "policy_tags": {"precise": ["sea"], "balanced": ["sea", "boat", "fog"],
                                                        "complete": ["sea", "boat", "fog"]}}
    client = create_app({"TESTING": True, "DATA_DIR": str(tmp_path / "data"), "TAGGER_CLIENT": fake_tagger,
                         "MODEL_STORE": str(store)}).test_client()
    model = client.get("/annotate/api/model").json
    assert model["tag_policy"] == "precise"
    assert model["policies"] == ["precise", "balanced", "complete"]
    fog = model["labels"][2]
    assert fog["threshold"] is None
    assert fog["policies"]["precise"] == {"threshold": None, "precision": None, "recall": None}
    assert model["labels"][0]["policies"]["balanced"] == {"threshold": 0.3, "precision": 0.6, "recall": 0.7}
    upload(client, IMAGES[0], "a")
    client.get("/imginfo?id_name=a")  # its answer cached
    shown = {p: client.get(f"/annotate/api/photos?policy={p}").json["photos"][0]["suggested_tags"]
             for p in ("precise", "complete")}
    assert shown == {"precise": ["sea"], "complete": ["sea", "boat", "fog"]}
    saved = client.put("/annotate/api/photos/a/labels", json={"labels": ["sea"], "policy": "complete"}).json
    assert saved["suggested"] == {"model_version": "3.0", "tags": ["sea", "boat", "fog"], "tag_policy": "complete"}
    assert saved["label_detail"]["boat"]["source"] == "person"  # a complete suggestion rejected: taught


def test_jobs_run_one_at_a_time_and_report_errors(client, app, photos):
    r = client.post("/annotate/api/jobs/train", json={"recipe": "sgd", "epochs": 1, "samples": False})
    assert r.status_code == 202
    job_id = r.json["job"]["id"]
    busy = client.post("/annotate/api/jobs/train", json={"recipe": "sgd", "epochs": 1, "samples": False})
    assert busy.status_code == 409
    assert "still running" in busy.json["error"]

    job = wait_until(lambda: (j := client.get(f"/annotate/api/jobs/{job_id}").json)["state"] not in
                     ("queued", "running") and j, timeout=60, interval=0.5, what="the job to end")
    assert job["state"] == "failed"
    assert "label and save at least 3" in job["error"]
    assert "== export" in job["log"]
    for body in ({"recipe": "adam"}, {"epochs": 0}, {"epochs": True}, {"samples": "yes"}, []):
        assert client.post("/annotate/api/jobs/train", json=body).status_code == 400
    assert client.post("/annotate/api/jobs/deploy", json={"train_job": job_id}).status_code == 409  # it failed
    assert client.post("/annotate/api/jobs/deploy", json={"train_job": "nope"}).status_code == 404
    assert client.post("/annotate/api/jobs/deploy", json={}).status_code == 400
    assert client.get("/annotate/api/jobs/nope").status_code == 404
    assert client.get("/annotate/api/jobs").json["latest"]["id"] == job_id


@pytest.mark.slow
def test_a_retrain_past_its_time_limit_is_stopped_with_its_training_run(tmp_path, fake_tagger):
    app = create_app({"TESTING": True, "DATA_DIR": str(tmp_path / "data"), "TAGGER_CLIENT": fake_tagger,
                      "JOB_TIMEOUT": 4})
    client = app.test_client()
    for i, image in enumerate(IMAGES[:4]):
        upload(client, image, f"p{i}")
        assert client.put(f"/annotate/api/photos/p{i}/labels", json={"labels": ["sea"]}).status_code == 200
    job = client.post("/annotate/api/jobs/train", json={"recipe": "sgd", "epochs": 200, "samples": True}).json["job"]
    done = wait_until(lambda: (j := client.get(f"/annotate/api/jobs/{job['id']}").json)["state"] not in
                      ("queued", "running") and j, timeout=120, what="the job to stop")
    assert done["state"] == "failed", done
    assert "took longer than 4 s" in done["error"], done
    assert "== training" in done["log"]  # stopped while training: the training run went with it

    def training_runs():
        return [p for p in psutil.process_iter(["cmdline"]) if job["id"] in " ".join(p.info["cmdline"] or [])]
    wait_until(lambda: not alive(job["pid"]) and not training_runs(), what="the job runner and its training run")
    cancel = client.post(f"/annotate/api/jobs/{job['id']}/cancel")
    assert cancel.status_code == 409
    assert client.post("/annotate/api/jobs/nope/cancel").status_code == 404
    app.extensions["exif"].close()


def test_a_deploy_while_the_model_server_is_down_is_503_with_retry_after(client, app, fake_tagger, tmp_path):
    job_dir = DataDir(app.config["DATA_DIR"]).jobs / "20261207-000000-abcdef"
    job_dir.mkdir(parents=True)
    (job_dir / "job.json").write_text(json.dumps({
        "id": job_dir.name, "kind": "train", "state": "succeeded", "step": "done", "created": "2026-12-07T00:00:00Z",
        "options": {}, "config": {}, "pid": None, "result": {"checkpoint": str(tmp_path / "best.pt")}}))
    fake_tagger.error = TaggerError("model server is not reachable (make serve starts it)")
    r = client.post("/annotate/api/jobs/deploy", json={"train_job": job_dir.name})
    assert r.status_code == 503
    assert int(r.headers["Retry-After"]) > 0
    assert "make serve" in r.json["error"]
    assert client.get("/annotate/api/jobs").json["latest"]["id"] == job_dir.name  # no deploy job was started


def test_a_store_from_before_label_provenance_opens_and_exports(tmp_path):
    (tmp_path / "images").mkdir()
    db = sqlite3.connect(tmp_path / "photos.db")
    db.execute("CREATE TABLE photos (id_name TEXT PRIMARY KEY, file TEXT NOT NULL, sha256 TEXT NOT NULL, bytes INTEGER"
               " NOT NULL, format TEXT, width INTEGER, height INTEGER, exif TEXT NOT NULL, labels TEXT, uploaded_at"
               " TEXT NOT NULL, labelled_at TEXT)")
    db.execute("INSERT INTO photos VALUES ('old', 'images/x.jpg', 'ab', 1, 'JPEG', 4, 3, '{}', '[\"sea\"]', 't', 't')")
    db.commit()
    db.close()

    export = build_export(PhotoStore(tmp_path).list(), load_labels())
    assert export["images"][0]["unknown_category_ids"] == []  # its save judged every checkbox shown
    assert len(export["annotations"]) == 1


def test_a_job_on_another_replica_blocks_jobs_here_until_it_ends(tmp_path, fake_tagger, database_url, monkeypatch):
    """On PostgreSQL one retrain or deploy runs in the whole cluster: its runner holds an advisory lock for its
    life, which a replica on another machine (its own data folder, so not its flock) sees."""
    with gateway_app({"TESTING": True, "DATA_DIR": str(tmp_path / "here"), "TAGGER_CLIENT": fake_tagger,
                      "DATABASE_URL": database_url}) as app:
        client = app.test_client()
        other = hold_job_lock(database_url)  # the job of another replica, running
        try:
            r = client.post("/annotate/api/jobs/train", json={"recipe": "sgd", "epochs": 1, "samples": False})
            assert r.status_code == 409
            assert "another gateway replica" in r.json["error"]
            monkeypatch.setenv("DATABASE_URL", database_url)  # a runner that started anyway (a race) stops at once
            with pytest.raises(job_runner.JobError, match="another gateway replica"):
                job_runner._cluster_lock()
        finally:
            release_job_lock(other)  # that job ended: the lock is free at once, for any replica
        r = client.post("/annotate/api/jobs/train", json={"recipe": "sgd", "epochs": 1, "samples": False})
        assert r.status_code == 202
        job = wait_until(lambda: (j := client.get(f"/annotate/api/jobs/{r.json['job']['id']}").json)["state"] not in
                         ("queued", "running") and j, timeout=60, interval=0.5, what="the job to end")
        assert job["state"] == "failed"
        assert "label and save at least 3" in job["error"]  # it ran: the lock was free
        # and the runner gave the lock back, right after writing the final state the wait above saw
        wait_until(lambda: not app.extensions["store"].job_running_elsewhere(), what="the cluster's job lock released")


def test_labels_land_only_on_the_bytes_the_person_saw(client, app):
    """Re-uploaded between viewing and saving: the save names the bytes shown (sha256) and is refused with both
    hashes, so the old labels never land on the new photo; the photo shown now takes them."""
    upload(client, IMAGES[0], "p")
    shown = client.get("/annotate/api/photo", query_string={"id_name": "p"}).json["sha256"]
    upload(client, IMAGES[1], "p")  # replaced meanwhile (another tab, another person, make tag)
    stored = client.get("/annotate/api/photo", query_string={"id_name": "p"}).json["sha256"]
    r = client.put("/annotate/api/photos/p/labels", json={"labels": ["sea"], "sha256": shown})
    assert r.status_code == 409
    assert r.json["shown_sha256"] == shown
    assert r.json["stored_sha256"] == stored
    assert "replaced since it was shown" in r.json["error"]
    assert client.get("/annotate/api/photo", query_string={"id_name": "p"}).json["labels"] is None
    assert client.put("/annotate/api/photos/p/labels", json={"labels": ["sea"], "sha256": stored}).status_code == 200
    assert client.put("/annotate/api/photos/p/labels", json={"labels": [], "sha256": "x" * 64}).status_code == 400
