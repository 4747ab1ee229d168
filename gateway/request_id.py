"""A request id for every request: the client's ``X-Request-ID`` when it is sane, else a new one; echoed in the
response's ``X-Request-ID`` (and so in gunicorn's access log) and attached to the gateway's own log records."""
from __future__ import annotations

import logging
import re
import uuid

from flask import Flask, g, has_request_context, request

_SANE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = g.get("request_id", "-") if has_request_context() else "-"
        return True


def install(app: Flask) -> None:
    @app.before_request
    def _assign():
        given = request.headers.get("X-Request-ID", "")
        g.request_id = given if _SANE.match(given) else uuid.uuid4().hex

    @app.after_request
    def _echo(response):
        response.headers["X-Request-ID"] = g.get("request_id") or uuid.uuid4().hex
        return response

    app.logger.addFilter(_RequestIdFilter())
