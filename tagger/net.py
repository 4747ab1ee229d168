"""Addresses and host names: whether one is this machine's loopback (the gateway asks no token of it; the
cluster's proxy bound to it is reachable from here only), and which host names a service answers to.

    is_loopback("127.0.0.1"), is_loopback("::ffff:127.0.0.1"), is_loopback("localhost")   # all True
    host_name("Photos.Example:7777"), host_name("[::1]:7777")                             # "photos.example", "::1"
    host_allowed("localhost:7777", ()), host_allowed("evil.example:7777", ())             # True, False
    parse_hosts("nas.local, 192.168.1.5")                                                 # ("nas.local", ...)

A web page can rebind its own name to 127.0.0.1 (DNS rebinding): the browser then sends ``Host: evil.example``
to a loopback service, with the page's origin. So a service that trusts loopback answers only to the host names
it knows: loopback names, and those it was told (``TAGGER_HOSTS``).
"""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable

ANY_HOST = "*"  # in TAGGER_HOSTS: every host name (a proxy in front checks them), for GATEWAY_AUTH=required only

# The addresses the services listen on by default: the one place each is written down.
LOOPBACK = "127.0.0.1"
GATEWAY_PORT = 7777          # make serve's gateway; make serve-cluster's nginx in front of the replicas
FIRST_REPLICA_PORT = 7781    # make serve-cluster's gateway replicas: 7781, 7782, ...
TS_INFERENCE_PORT, TS_MANAGEMENT_PORT, TS_METRICS_PORT = 8080, 8081, 8082  # TorchServe (config.properties)
TS_GRPC_INFERENCE_PORT, TS_GRPC_MANAGEMENT_PORT = 7070, 7071
POSTGRES_PORT = 5433         # make serve-cluster's PostgreSQL, beside a system one on 5432


def local_url(port: int) -> str:
    """``http://127.0.0.1:PORT``."""
    return f"http://{LOOPBACK}:{port}"


def is_loopback(address: str) -> bool:
    """True for a loopback IPv4 or IPv6 address (an IPv4-mapped one too, brackets allowed) and ``localhost``."""
    address = address.strip().strip("[]").lower().rstrip(".")
    if address == "localhost" or address.endswith(".localhost"):  # RFC 6761: never leaves the machine
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return ip.is_loopback or bool(getattr(ip, "ipv4_mapped", None) and ip.ipv4_mapped.is_loopback)


def is_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address.strip().strip("[]"))
    except ValueError:
        return False
    return True


def host_name(host: str) -> str:
    """The name of an HTTP ``Host`` value, port and brackets removed, lower case, without a trailing dot."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host[1:]
    if host.count(":") == 1:  # name:port (a bare IPv6 address has several colons)
        host = host.split(":", 1)[0]
    return host.rstrip(".")


def parse_hosts(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """The host names of a setting: a comma- or space-separated string, or a list; each as ``host_name`` gives it."""
    if value is None:
        return ()
    items = value.replace(",", " ").split() if isinstance(value, str) else [str(v) for v in value]
    return tuple(dict.fromkeys(ANY_HOST if v.strip() == ANY_HOST else host_name(v) for v in items if v.strip()))


def host_allowed(host: str | None, allowed: Iterable[str]) -> bool:
    """Whether a request's ``Host`` names this service: a loopback name, one of ``allowed``, or anything when
    ``allowed`` holds ``*``. A missing or empty Host is refused (HTTP/1.1 requires one)."""
    if not host or not host.strip():
        return False
    name = host_name(host)
    allowed = set(allowed)
    return ANY_HOST in allowed or is_loopback(name) or name in allowed
