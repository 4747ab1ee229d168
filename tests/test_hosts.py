"""DNS rebinding: the gateway answers only to loopback names and TAGGER_HOSTS, counts a request as local only when
its Host is a loopback name and it arrived on a loopback address, and keeps its pages out of other sites' frames.
(nginx's side is in test_cluster.)"""
import io

import pytest

from gateway import create_app
from tagger.net import host_allowed, host_name, parse_hosts
from tests.helpers import PHOTO, upload

EVIL = {"Host": "evil.example:7777", "Origin": "http://evil.example:7777"}


@pytest.mark.parametrize("host, name", [("Photos.Example:7777", "photos.example"), ("[::1]:7777", "::1"),
                                        ("::1", "::1"), ("127.0.0.1", "127.0.0.1"), ("localhost.:80", "localhost")])
def test_host_names_are_read_without_port_case_or_brackets(host, name):
    assert host_name(host) == name


def test_which_host_names_are_answered():
    assert host_allowed("localhost:7777", ())
    assert host_allowed("127.0.0.1:7777", ())
    assert host_allowed("[::1]", ())
    assert host_allowed("app.localhost:7777", ())  # RFC 6761: resolved on this machine only
    assert not host_allowed("evil.example:7777", ())
    assert not host_allowed("", ())
    assert not host_allowed(None, ())
    assert not host_allowed("127.0.0.1.evil.example", ())
    assert host_allowed("NAS.local:7777", parse_hosts("nas.local, 192.168.1.5"))
    assert host_allowed("anything:1", ("*",))


def test_a_rebinding_page_can_neither_read_nor_delete_nor_deploy(client):
    """Host and Origin both evil.example from a loopback peer: the same-origin check alone passed it, and auto mode
    asked no token. Now every route but the health checks answers 421 and nothing changes."""
    assert upload(client).status_code == 200
    for method, path in (("GET", "/photos"), ("GET", "/imginfo?id_name=tuscany"), ("DELETE", "/photos/tuscany"),
                         ("GET", "/annotate/export.json"), ("POST", "/annotate/api/jobs/deploy"),
                         ("GET", "/annotate/api/original?id_name=tuscany")):
        answer = client.open(path, method=method, headers=EVIL, json={"train_job": "x"} if method == "POST" else None)
        assert answer.status_code == 421, (method, path, answer.status_code)
        assert "host name 'evil.example:7777'" in answer.json["error"]
        assert "TAGGER_HOSTS" in answer.json["error"]
    r = client.post("/imgup", data={"file": (io.BytesIO(PHOTO), "p.jpg"), "id_name": "planted"},
                    content_type="multipart/form-data", headers=EVIL)
    assert r.status_code == 421
    assert client.get("/imginfo?id_name=tuscany").status_code == 200  # still there
    assert client.get("/imginfo?id_name=planted").status_code == 404
    assert client.get("/healthz", headers=EVIL).status_code == 200  # probes send the pod's address


def test_a_configured_name_is_answered_but_is_not_local(tmp_path, fake_tagger):
    """A cluster's LAN name is answered, and in auto mode it still needs a token: only loopback names are local."""
    app = create_app({"TESTING": True, "DATA_DIR": str(tmp_path), "TAGGER_CLIENT": fake_tagger,
                      "HOSTS": "nas.local 192.168.1.5"})
    client = app.test_client()
    assert client.get("/photos", headers={"Host": "nas.local:7777"}).status_code == 401
    assert client.get("/photos", headers={"Host": "192.168.1.5:7777"}).status_code == 401
    assert client.get("/photos", headers={"Host": "localhost:7777"}).status_code == 200
    token = app.extensions["store"].create_token("lan", "read")["token"]
    assert client.get("/photos", headers={"Host": "nas.local", "Authorization": f"Bearer {token}"}).status_code == 200


def test_a_gateway_listening_beyond_loopback_asks_every_request_for_a_token(client):
    """gunicorn --bind 0.0.0.0: SERVER_NAME is the listening address; a loopback peer is not enough then."""
    assert client.get("/photos", environ_overrides={"SERVER_NAME": "0.0.0.0"}).status_code == 401
    assert client.get("/photos", environ_overrides={"SERVER_NAME": "192.168.1.5"}).status_code == 401
    assert client.get("/photos", environ_overrides={"SERVER_NAME": "127.0.0.1"}).status_code == 200


def test_any_host_name_only_with_tokens_required(tmp_path, fake_tagger):
    with pytest.raises(ValueError, match="GATEWAY_AUTH=required"):
        create_app({"TESTING": True, "DATA_DIR": str(tmp_path), "TAGGER_CLIENT": fake_tagger, "HOSTS": "*"})
    app = create_app({"TESTING": True, "DATA_DIR": str(tmp_path), "TAGGER_CLIENT": fake_tagger, "HOSTS": "*",
                      "GATEWAY_AUTH": "required"})
    assert app.test_client().get("/photos", headers={"Host": "whatever.example"}).status_code == 401


def test_no_page_of_the_gateway_can_be_framed(client):
    for path in ("/annotate/", "/photos", "/healthz"):
        answer = client.get(path)
        assert answer.headers["X-Frame-Options"] == "DENY", path
        assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"], path
    upload(client)
    original = client.get("/annotate/api/original?id_name=tuscany")
    original.close()
    assert original.headers["Content-Security-Policy"] == "default-src 'none'; sandbox; frame-ancestors 'none'"
