"""Cross-site request protection for every state-changing request (POST, PUT, PATCH, DELETE).

Browsers say where a request comes from: ``Sec-Fetch-Site`` (``same-origin``, ``cross-site``, ...) and ``Origin``.
A request a browser sends from another site is refused with 403, so a page elsewhere cannot upload, label,
retrain or deploy through a user's browser. Clients that are not browsers (curl, the original service's clients)
send neither header and are unaffected.

    install(app)     # in create_app
"""
from __future__ import annotations

from urllib.parse import urlsplit

from flask import Flask, jsonify, request

SAFE = frozenset({"GET", "HEAD", "OPTIONS"})


def cross_site(method: str, host: str, origin: str | None, fetch_site: str | None) -> bool:
    """True when a browser sent this state-changing request from another origin."""
    if method in SAFE:
        return False
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return True
    if origin is not None:
        if origin == "null":
            return True
        return urlsplit(origin).netloc.lower() != host.lower()
    return False


def install(app: Flask) -> None:
    @app.before_request
    def _same_origin_only():
        if cross_site(request.method, request.host, request.headers.get("Origin"),
                      request.headers.get("Sec-Fetch-Site")):
            return jsonify(error="cross-site request refused: open the page from this server "
                                 f"({request.host_url}annotate/) or call the API without a browser"), 403
        return None

    @app.after_request
    def _no_sniffing(response):
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response
