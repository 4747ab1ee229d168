"""TLS beyond loopback (make serve-cluster LISTEN=... TLS_CERT=... TLS_KEY=...): nginx terminates TLS with a
self-signed pair in front of a real gateway; plain HTTP is redirected; the session cookie is Secure; listening
beyond loopback without TLS warns."""
from __future__ import annotations

import subprocess

import pytest
import requests

from photo_store import open_store
from serving.cluster import Cluster
from serving.nginx import NginxRun
from serving.stack import Stack, start_gateway, stop_gateway
from serving.torchserve import Ports, free_ports

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    root = tmp_path_factory.mktemp("tls")
    cert, key = root / "cert.pem", root / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    p = free_ports(7)
    stack = Stack(var_dir=root / "var", ports=Ports(*p[:5]), gateway_port=p[5], gateway_workers=1)
    start_gateway(stack)
    proxy = NginxRun(root / "nginx", listen=p[6], upstreams=(p[5],), tls_cert=cert, tls_key=key)
    try:
        proxy.start()
        yield proxy, stack, cert
    finally:
        proxy.stop()
        stop_gateway(stack)


def test_https_answers_and_plain_http_is_redirected(tls):
    proxy, _, cert = tls
    assert proxy.url.startswith("https://")
    r = requests.get(f"{proxy.url}/healthz", verify=str(cert), timeout=30)
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}
    assert "max-age" in r.headers["Strict-Transport-Security"]
    plain = requests.get(f"http://127.0.0.1:{proxy.listen}/annotate/?x=1", allow_redirects=False, timeout=30)
    assert plain.status_code == 301
    assert plain.headers["Location"] == f"https://127.0.0.1:{proxy.listen}/annotate/?x=1"
    with pytest.raises(requests.exceptions.SSLError):  # the client checks the certificate it was given
        requests.get(f"{proxy.url}/healthz", timeout=30)


def test_the_session_cookie_is_secure_over_tls(tls):
    proxy, stack, cert = tls
    token = open_store(stack.var_dir).create_token("tls-test", "read")["token"]
    r = requests.post(f"{proxy.url}/session", json={"token": token}, verify=str(cert), timeout=30)
    assert r.status_code == 200
    cookie = r.headers["Set-Cookie"]
    assert "tagger_session=" in cookie
    assert "Secure" in cookie
    assert "HttpOnly" in cookie


def test_listening_beyond_loopback_without_tls_warns(tmp_path, tls):
    _, _, cert = tls
    assert Cluster(var_dir=tmp_path, proxy_host="0.0.0.0").plain_beyond_loopback
    assert not Cluster(var_dir=tmp_path, proxy_host="127.0.0.1").plain_beyond_loopback
    with_tls = Cluster(var_dir=tmp_path, proxy_host="0.0.0.0", tls_cert=str(cert), tls_key=str(cert))
    assert not with_tls.plain_beyond_loopback
    assert Cluster(var_dir=tmp_path, proxy_host="0.0.0.0", tls_cert="", tls_key="").plain_beyond_loopback
    with pytest.raises(ValueError, match="both TLS_CERT and TLS_KEY"):
        NginxRun(tmp_path, tls_cert=cert)
