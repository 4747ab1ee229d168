"""Where a request's time goes, in the W3C ``Server-Timing`` response header (browsers' dev tools show it; the
gateway benchmark sums it into BENCHMARKS.md):

    Server-Timing: form;dur=1.9, header;dur=0.2, decode;dur=2.7, exif;dur=1.1, store;dur=6.3, total;dur=12.8

    with timed("decode"):      # inside a request: adds one entry (milliseconds)
        decode_image(data, min_side=64)
"""
from __future__ import annotations

import time
from contextlib import contextmanager

from flask import Flask, g, has_request_context


def record(name: str, ms: float) -> None:
    """Add one entry to this request's header (outside a request: nothing)."""
    if has_request_context():
        g.setdefault("server_timing", []).append((name, ms))


@contextmanager
def timed(name: str):
    t = time.perf_counter()
    try:
        yield
    finally:
        record(name, (time.perf_counter() - t) * 1000)


def install(app: Flask) -> None:
    @app.before_request
    def _start():
        g.server_timing_start = time.perf_counter()

    @app.after_request
    def _header(response):
        entries = g.get("server_timing", [])
        start = g.get("server_timing_start")
        if start is not None:
            entries = [*entries, ("total", (time.perf_counter() - start) * 1000)]
        if entries:
            response.headers["Server-Timing"] = ", ".join(f"{name};dur={ms:.2f}" for name, ms in entries)
        return response
