"""Access control (gateway/auth.py): the 401/403 matrix for every route and scope, when a token is asked for,
tokens kept hashed, the page's session cookie, and make token / make revoke. On both store backends."""
import hashlib
import io
import json
import re
import subprocess
import sys

import pytest

from gateway import create_app
from gateway.auth import needed_scope
from photo_store import open_store
from tests.conftest import REPO
from tests.helpers import PHOTO, gateway_app

# Every route of the app and what it needs: a new route fails this test until it is placed here.
MATRIX = {
    ("static", "GET"): None, ("annotation_ui.static", "GET"): None, ("annotation_ui.page", "GET"): None,
    ("api.healthz", "GET"): None, ("api.readyz", "GET"): None, ("api.openapi", "GET"): None,
    ("auth.session_view", "GET"): None, ("auth.sign_in", "POST"): None, ("auth.sign_out", "DELETE"): None,
    ("api.imginfo", "GET"): "read", ("api.imginfo", "POST"): "read", ("api.photos", "GET"): "read",
    ("annotation_ui.labels", "GET"): "read", ("annotation_ui.model", "GET"): "read",
    ("annotation_ui.photos", "GET"): "read", ("annotation_ui.photo", "GET"): "read",
    ("annotation_ui.progress_view", "GET"): "read", ("annotation_ui.thumb", "GET"): "read",
    ("annotation_ui.view", "GET"): "read", ("annotation_ui.original", "GET"): "read",
    ("annotation_ui.export", "GET"): "read", ("annotation_ui.jobs_list", "GET"): "read",
    ("annotation_ui.job_view", "GET"): "read",
    ("api.imgup", "POST"): "write", ("api.delete_photo", "DELETE"): "write",
    ("annotation_ui.save_labels", "PUT"): "write", ("annotation_ui.clear_labels", "DELETE"): "write",
    ("annotation_ui.start_train", "POST"): "write", ("annotation_ui.start_deploy", "POST"): "write",
    ("annotation_ui.add_label", "POST"): "write", ("annotation_ui.retire_label", "DELETE"): "write",
    ("annotation_ui.cancel_job", "POST"): "write", ("api.list_trash", "GET"): "read",
    ("api.restore_photo", "POST"): "write",
}
# Values for a route's arguments, and a body each view refuses or does cheaply once let through (no job starts).
ARGS = {"id_name": "bus", "job_id": "no-such-job", "filename": "annotate.css", "name": "no-such-label",
        "trash_id": "99999"}
BODIES = {"annotation_ui.start_train": {"json": {"recipe": "no-such-recipe"}},
          "annotation_ui.start_deploy": {"json": {"train_job": "no-such-job"}},
          "annotation_ui.save_labels": {"json": {"labels": ["bus"]}},
          "annotation_ui.add_label": {"json": {"name": "a|b"}},
          "api.imginfo": {"data": {"id_name": "bus"}}, "auth.sign_in": {"json": {"token": "tg_00000000_x"}}}
QUERY = {"api.imginfo": "?id_name=bus", "annotation_ui.photo": "?id_name=bus", "annotation_ui.thumb": "?id_name=bus",
         "annotation_ui.view": "?id_name=bus", "annotation_ui.original": "?id_name=bus"}


def routes(app):
    for rule in app.url_map.iter_rules():
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", lambda m: ARGS[m.group(1)], rule.rule)
            if rule.endpoint == "static":
                continue  # Flask's own static folder: the app has none
            yield rule.endpoint, method, path + QUERY.get(rule.endpoint, "")


def call(client, endpoint, method, path, headers=None, **environ):
    kwargs = dict(BODIES.get(endpoint, {}))
    if "data" in kwargs:
        kwargs["content_type"] = "application/x-www-form-urlencoded"
    if endpoint == "api.imgup":
        kwargs = {"data": {"file": (io.BytesIO(PHOTO), "p.jpg"), "id_name": "new"},
                  "content_type": "multipart/form-data"}
    answer = client.open(path, method=method, headers=headers or {}, environ_base=environ, **kwargs)
    answer.get_data()  # read whole (a static file's is streamed), then its file closed
    answer.close()
    return answer


@pytest.fixture
def secured(tmp_path, fake_tagger, store_url):
    with gateway_app({"TESTING": True, "DATA_DIR": str(tmp_path / "data"), "TAGGER_CLIENT": fake_tagger,
                      "DATABASE_URL": store_url, "GATEWAY_AUTH": "required"}) as app:
        store = app.extensions["store"]
        app.test_client().post("/imgup", data={"file": (io.BytesIO(PHOTO), "p.jpg"), "id_name": "bus"},
                               content_type="multipart/form-data",
                               headers={"Authorization": "Bearer " + store.create_token("setup", "write")["token"]})
        yield app


def test_every_route_is_placed_in_the_matrix(secured):
    found = {(e, m): needed_scope(e, m) for e, m, _ in routes(secured)}
    assert found == {k: v for k, v in MATRIX.items() if k[0] != "static"}


def test_401_and_403_for_every_route_and_scope(secured):
    store, client = secured.extensions["store"], secured.test_client()
    read, write = store.create_token("viewer", "read")["token"], store.create_token("editor", "write")["token"]
    revoked = store.create_token("gone", "write")["token"]
    store.revoke_tokens("gone")
    cases = 0
    for endpoint, method, path in routes(secured):
        need = MATRIX[(endpoint, method)]
        anonymous = call(client, endpoint, method, path)
        for header in ({"Authorization": "Bearer " + revoked}, {"Authorization": "Bearer tg_12345678_not-a-token"},
                       {"Authorization": "Basic dXNlcjpwdw=="}, {"Authorization": "Bearer"}):
            answer = call(client, endpoint, method, path, header)
            if need is not None:
                assert answer.status_code == 401, (endpoint, method, header, answer.json)
                assert answer.headers["WWW-Authenticate"].startswith('Bearer realm="tagger", error=')
                assert answer.json["error"]
                assert revoked not in answer.get_data(as_text=True)
        as_reader = call(client, endpoint, method, path, {"Authorization": "Bearer " + read})
        as_writer = call(client, endpoint, method, path, {"Authorization": "Bearer " + write})
        if need is None:  # the same answer with or without a token: the view's own (sign-in's 401 included)
            assert anonymous.status_code == as_writer.status_code == as_reader.status_code, (endpoint, method)
            assert anonymous.status_code < 500
            assert anonymous.status_code != 401 or endpoint == "auth.sign_in"
            continue
        assert anonymous.status_code == 401
        assert anonymous.headers["WWW-Authenticate"] == 'Bearer realm="tagger"'
        assert "make token" in anonymous.json["error"]
        assert as_writer.status_code not in (401, 403), (endpoint, method, as_writer.json)
        if need == "read":
            assert as_reader.status_code not in (401, 403), (endpoint, method, as_reader.json)
        else:
            assert as_reader.status_code == 403, (endpoint, method)
            assert "insufficient_scope" in as_reader.headers["WWW-Authenticate"]
            assert "read scope" in as_reader.json["error"]
            assert "needs a write token" in as_reader.json["error"]
        cases += 1
    assert cases == sum(1 for v in MATRIX.values() if v)
    # what the writer sent took effect (its upload is stored, its delete of "bus" done); the reader's did not
    assert store.get("new") is not None
    assert store.get("bus") is None


def test_a_token_is_asked_of_other_machines_only_by_default(app):
    """GATEWAY_AUTH=auto: loopback peers (and a proxy's loopback clients) need none; anyone else does."""
    client = app.test_client()
    assert client.get("/photos").status_code == 200
    assert client.get("/photos", environ_base={"REMOTE_ADDR": "::1"}).status_code == 200
    assert client.get("/photos", headers={"X-Real-IP": "127.0.0.1"}).status_code == 200  # nginx on loopback
    for environ, headers in (({"REMOTE_ADDR": "192.168.1.20"}, {}), ({}, {"X-Real-IP": "203.0.113.9"}),
                             ({}, {"X-Forwarded-For": "127.0.0.1, 198.51.100.4"}), ({}, {"X-Real-IP": "garbage"}),
                             ({"REMOTE_ADDR": "::ffff:10.0.0.3"}, {})):
        answer = client.get("/photos", environ_base=environ, headers=headers)
        assert answer.status_code == 401, (environ, headers)
    token = app.extensions["store"].create_token("far", "read")["token"]
    assert client.get("/photos", environ_base={"REMOTE_ADDR": "192.168.1.20"},
                      headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert client.get("/session", environ_base={"REMOTE_ADDR": "192.168.1.20"}).json == {"auth": "required",
                                                                                          "signed_in": False}
    assert client.get("/session").json == {"auth": "off", "signed_in": False}


def test_an_unknown_gateway_auth_setting_is_refused_at_start(tmp_path, fake_tagger):
    with pytest.raises(ValueError, match="GATEWAY_AUTH='maybe': use auto"):
        create_app({"TESTING": True, "DATA_DIR": str(tmp_path), "TAGGER_CLIENT": fake_tagger,
                    "GATEWAY_AUTH": "maybe"})


def test_tokens_are_kept_only_as_their_sha256(secured, backend):
    store = secured.extensions["store"]
    made = store.create_token("laptop", "write")
    assert made["token"].startswith(f"tg_{made['id']}_")
    assert len(made["token"]) > 40
    with store._connect() as db:
        rows = [dict(r) for r in store._rows(db, "SELECT * FROM tokens WHERE id = ?", (made["id"],))]
    assert rows[0]["hash"] == hashlib.sha256(made["token"].encode()).hexdigest()
    assert made["token"] not in json.dumps(rows)
    if backend == "sqlite":  # nor anywhere in the database file or its write-ahead log
        for f in (store.root).glob("photos.db*"):
            assert made["token"].encode() not in f.read_bytes()
    assert all("hash" not in t for t in store.tokens())
    with pytest.raises(ValueError, match="scope 'admin'"):
        store.create_token("x", "admin")


def test_the_page_signs_in_with_a_token_and_keeps_a_strict_httponly_cookie(secured):
    store, client = secured.extensions["store"], secured.test_client()
    token = store.create_token("labeller", "write")["token"]
    assert client.get("/annotate/").status_code == 200  # the page itself, which then asks to sign in
    assert client.get("/session").json == {"auth": "required", "signed_in": False}
    assert client.get("/annotate/api/labels").status_code == 401
    assert client.post("/session", json={"token": "tg_nope"}).status_code == 401
    assert client.post("/session", data="not json", content_type="application/json").status_code == 400
    assert client.post("/session", json=["a list"]).status_code == 400
    cross = client.post("/session", json={"token": token}, headers={"Origin": "https://evil.example",
                                                                     "Sec-Fetch-Site": "cross-site"})
    assert cross.status_code == 403
    answer = client.post("/session", json={"token": token})
    assert answer.status_code == 200
    assert answer.json == {"auth": "required", "signed_in": True, "name": "labeller", "scope": "write"}
    cookie = answer.headers["Set-Cookie"]
    value = cookie.split(";")[0].split("=", 1)[1]
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert "Path=/" in cookie
    assert token not in cookie
    assert client.get("/annotate/api/labels").status_code == 200
    assert client.put("/annotate/api/photos/bus/labels", json={"labels": ["bus", "road"]}).status_code == 200
    # the cookie carries no scope of its own: a read token's session cannot write
    reader = secured.test_client()
    reader.post("/session", json={"token": store.create_token("looker", "read")["token"]})
    assert reader.get("/annotate/api/photos").status_code == 200
    assert reader.put("/annotate/api/photos/bus/labels", json={"labels": []}).status_code == 403
    # a browser on another site gets nothing done with the cookie either (the same-origin check stays)
    assert client.put("/annotate/api/photos/bus/labels", json={"labels": []},
                      headers={"Origin": "https://evil.example"}).status_code == 403
    out = client.delete("/session")
    assert out.status_code == 200
    assert "tagger_session=;" in out.headers["Set-Cookie"]
    replay = secured.test_client()
    replay.set_cookie("tagger_session", value)
    assert replay.get("/annotate/api/labels").status_code == 401  # signed out: the old cookie is dead


def test_revoking_a_token_ends_its_sessions_at_once(secured):
    store, client = secured.extensions["store"], secured.test_client()
    token = store.create_token("tablet", "read")["token"]
    client.post("/session", json={"token": token})
    assert client.get("/photos").status_code == 200
    assert [t["name"] for t in store.revoke_tokens("tablet")] == ["tablet"]
    assert client.get("/photos").status_code == 401
    assert client.get("/photos", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert store.revoke_tokens("tablet") == []


def test_make_token_revoke_and_tokens(tmp_path):
    """The command lines behind make token / make revoke / make tokens, on the store in --var."""
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "serving", *args, "--var", str(tmp_path)], cwd=REPO,
                              capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "DATABASE_URL": ""})

    made = cli("token", "--name", "phone", "--scope", "read")
    assert made.returncode == 0, made.stderr
    token = made.stdout.split()[0]
    assert token.startswith("tg_")
    assert "only copy" in made.stdout

    store = open_store(tmp_path)
    assert store.token_grant(token)["scope"] == "read"
    listing = cli("tokens")
    assert "phone" in listing.stdout
    assert token not in listing.stdout
    assert " live " in listing.stdout
    bad = cli("token", "--name", "phone")
    assert bad.returncode == 2
    assert "SCOPE=read|write" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert cli("revoke").returncode == 2
    gone = cli("revoke", "--name", "phone")
    assert gone.returncode == 0
    assert "revoked" in gone.stdout
    assert store.token_grant(token) is None
    again = cli("revoke", "--name", "phone")
    assert again.returncode == 1
    assert "no live token" in again.stderr
