"""Request bodies read once, up to the size limit, at a minimum rate: a slow client gets 408, not a held thread.

    install(app)      # in create_app, before any handler reads the body

A body must arrive at ``BODY_MIN_RATE`` bytes/s on average after a grace of ``BODY_GRACE`` seconds (defaults 16 KB/s
after 10 s: a 40 MB photo over a 1 Mbit/s phone link passes; a client sending one byte a second is cut after about
14 s). A watchdog shuts the socket's reading side when a client falls behind, which wakes the blocked read; the
client then gets a JSON 408. The body read is handed on to Flask (``wsgi.input``) as an in-memory stream.
"""
from __future__ import annotations

import io
import socket
import threading
import time

from flask import Flask, jsonify, request

CHUNK = 64 * 1024


class _Watchdog:
    def __init__(self, sock, grace: float, rate: float):
        self.sock, self.grace, self.rate = sock, grace, rate
        self.received, self.start, self.fired = 0, time.monotonic(), False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="body-watchdog")
        self._thread.start()

    def allowed(self) -> float:  # seconds allowed for what has arrived plus the chunk being read
        return self.grace + (self.received + CHUNK) / self.rate

    def _run(self) -> None:
        while not self._done.wait(0.25):
            if time.monotonic() - self.start > self.allowed():
                self.fired = True
                try:
                    self.sock.shutdown(socket.SHUT_RD)  # the blocked read returns; the 408 can still be written
                except OSError:
                    pass
                return

    def stop(self) -> None:
        self._done.set()


def install(app: Flask) -> None:
    app.config.setdefault("BODY_GRACE", 10.0)
    app.config.setdefault("BODY_MIN_RATE", 16 * 1024)

    @app.before_request
    def _read_body():
        env = request.environ
        length = request.content_length
        chunked = "chunked" in env.get("HTTP_TRANSFER_ENCODING", "").lower()
        if request.method in ("GET", "HEAD", "OPTIONS") or (not length and not chunked):
            return None
        limit = app.config["MAX_CONTENT_LENGTH"]
        if limit and length and length > limit:
            return _close(jsonify(error=f"request body is {length} bytes; the limit is {limit}: send a smaller "
                                        "photo"), 413)
        sock = env.get("gunicorn.socket")
        dog = _Watchdog(sock, float(app.config["BODY_GRACE"]), float(app.config["BODY_MIN_RATE"])) if sock else None
        stream, parts, total = env["wsgi.input"], [], 0
        try:
            while True:
                want = CHUNK if length is None else min(CHUNK, length - total)
                if want <= 0:
                    break
                try:
                    chunk = stream.read(want)
                except (OSError, ValueError):  # the socket was shut by the watchdog, or the client went away
                    chunk = b""
                if dog is not None and dog.fired:
                    return _close(jsonify(error="the request body arrived too slowly; send it at a normal speed "
                                                "(at least 16 KB/s)"), 408)
                if not chunk:
                    break
                parts.append(chunk)
                total += len(chunk)
                if dog is not None:
                    dog.received = total
                if limit and total > limit:
                    return _close(jsonify(error=f"request body exceeds {limit} bytes; send a smaller photo"), 413)
        finally:
            if dog is not None:
                dog.stop()
        if length is not None and total < length:
            return _close(jsonify(error=f"the body ended after {total} of the {length} bytes Content-Length "
                                        "announced; send it again"), 400)
        env["wsgi.input"] = io.BytesIO(b"".join(parts))
        env["wsgi.input_terminated"] = True
        if length is None:
            env["CONTENT_LENGTH"] = str(total)
        return None


def _close(response, status: int):
    response.status_code = status
    response.headers["Connection"] = "close"  # what is left of the body is not read
    return response
