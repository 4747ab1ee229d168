"""Which host names the gateway answers to (DNS rebinding), and the headers that keep its pages out of frames.

    install(app)     # in create_app, first: a request naming another host is answered 421 before anything runs

A web page the operator visits can rebind its own name to 127.0.0.1; the browser then sends it to the gateway
with ``Host: evil.example:7777`` and ``Origin: http://evil.example:7777`` (so the same-origin check passes), from a
loopback peer (so ``GATEWAY_AUTH=auto`` asks no token). Answering only to loopback names and to the names in
``TAGGER_HOSTS`` (``HOSTS``: a cluster's LAN name or address; ``*`` when a proxy in front checks them) closes that.
``/healthz`` and ``/readyz`` answer any name: Kubernetes probes send the pod's address, and they disclose nothing.
"""
from __future__ import annotations

from flask import Flask, jsonify, request

from tagger.net import ANY_HOST, host_allowed, parse_hosts

ANY_NAME = frozenset({"api.healthz", "api.readyz"})


def install(app: Flask) -> None:
    allowed = parse_hosts(app.config.get("HOSTS"))
    app.config["HOSTS"] = allowed
    if ANY_HOST in allowed and str(app.config.get("GATEWAY_AUTH", "auto")).strip().lower() != "required":
        raise ValueError("TAGGER_HOSTS='*' answers every host name, which only a gateway that asks every request "
                         "for a token may do: set GATEWAY_AUTH=required too, or list the names")

    @app.before_request
    def _known_host():
        if request.endpoint in ANY_NAME or host_allowed(request.host, allowed):
            return None
        names = ", ".join(("localhost", "127.0.0.1", *allowed))
        response = jsonify(error=f"this gateway does not answer to the host name {request.host!r}: it answers to "
                                 f"{names}; add the name you use to TAGGER_HOSTS (make serve-cluster HOSTS=...)")
        response.status_code = 421  # RFC 9110 Misdirected Request
        return response

    @app.after_request
    def _no_framing(response):
        response.headers.setdefault("X-Frame-Options", "DENY")
        if "Content-Security-Policy" in response.headers:
            if "frame-ancestors" not in response.headers["Content-Security-Policy"]:
                response.headers["Content-Security-Policy"] += "; frame-ancestors 'none'"
        else:
            response.headers["Content-Security-Policy"] = "frame-ancestors 'none'"
        return response
