"""Request bodies read once, after authentication, only where a route takes one, up to its size limit, at a minimum
rate and within a deadline: a slow or unwanted body gets its 4xx, never a held thread.

    install(app)      # in create_app, after auth (a refused request's body is never read)

``BODIES`` names every route that takes a body and how large it may be: the upload takes a photo
(``MAX_CONTENT_LENGTH``), the others a small JSON or form body (``BODY_SMALL_LIMIT``, 64 KiB). A body sent to any
other route, or to no route at all (404, 405), is refused without reading a byte of it (413, or the route's own
404/405), and the socket's reading side is shut so that the server does not drain it either.

A body must arrive at ``BODY_MIN_RATE`` bytes/s on average after a grace of ``BODY_GRACE`` seconds, and whole
within ``BODY_DEADLINE`` seconds (defaults 16 KB/s after 10 s, 300 s: a 30 MB photo over a 1 Mbit/s phone link
passes; a client sending one byte a second is cut after about 14 s). A watchdog (one thread per process, for every
body being read) shuts the socket's reading side when a client falls behind, which wakes the blocked read; the
client then gets a JSON 408. The body read is handed on to Flask (``wsgi.input``) as an in-memory stream.
"""
from __future__ import annotations

import io
import os
import socket
import threading
import time

import flask
from flask import Flask, request

from annotation_ui.blueprint import error  # the one JSON error answer of the service
from gateway.server_timing import record as record_timing

CHUNK = 64 * 1024
PHOTO, SMALL = "photo", "small"
_READ = "tagger.body_read"  # environ key: the body was read whole
BODIES = {  # endpoint -> the body it takes; every other route takes none
    "api.imgup": PHOTO,
    "api.imginfo": SMALL,  # a form POST naming the photo
    "auth.sign_in": SMALL,
    "annotation_ui.add_label": SMALL,
    "annotation_ui.save_labels": SMALL,
    "annotation_ui.start_train": SMALL,
    "annotation_ui.start_deploy": SMALL,
    "annotation_ui.cancel_job": None,  # POSTs that take no body
    "api.restore_photo": None,
}


class _Watchdog:
    """One body being read; ``_Monitor`` checks its rate."""

    def __init__(self, sock, grace: float, rate: float, deadline: float):
        self.sock, self.grace, self.rate, self.deadline = sock, grace, rate, deadline
        self.received, self.start, self.fired = 0, time.monotonic(), False
        _MONITOR.add(self)

    def allowed(self) -> float:  # seconds allowed for what has arrived plus the chunk being read
        return min(self.deadline, self.grace + (self.received + CHUNK) / self.rate)

    def too_slow(self) -> str:
        if self.allowed() >= self.deadline:
            return f"the request body did not arrive within {self.deadline:g} s; send a smaller photo or use a " \
                   "faster connection"
        return f"the request body arrived too slowly; send it at a normal speed (at least {self.rate / 1024:.0f} KB/s)"

    def check(self, now: float) -> bool:
        """Shut the socket's reading side if the client fell behind; True once fired."""
        if now - self.start > self.allowed():
            self.fired = True
            try:
                self.sock.shutdown(socket.SHUT_RD)  # the blocked read returns; the 408 can still be written
            except OSError:
                pass
        return self.fired

    def stop(self) -> None:
        _MONITOR.discard(self)


class _Monitor:
    """One thread per process watches every body being read (no thread started per request)."""

    def __init__(self, period: float = 0.25):
        self.period = period
        self._lock = threading.Lock()
        self._active: set[_Watchdog] = set()
        self._pid: int | None = None  # the thread is (re)started in the process that reads, after a fork

    def add(self, dog: _Watchdog) -> None:
        with self._lock:
            self._active.add(dog)
            if self._pid != os.getpid():
                self._pid = os.getpid()
                threading.Thread(target=self._run, daemon=True, name="body-watchdog").start()

    def discard(self, dog: _Watchdog) -> None:
        with self._lock:
            self._active.discard(dog)

    def _run(self) -> None:
        while True:
            time.sleep(self.period)
            now = time.monotonic()
            with self._lock:
                for dog in list(self._active):
                    try:
                        if dog.check(now):
                            self._active.discard(dog)
                    except Exception:  # noqa: BLE001 - the one watchdog thread must outlive any socket
                        self._active.discard(dog)


_MONITOR = _Monitor()


class Request(flask.Request):
    """Form files are kept in memory: the body is in memory already (read below, within the size limit), so the
    temporary file werkzeug writes a large part to would only be written and read back."""

    def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
        return io.BytesIO()


def install(app: Flask) -> None:
    app.request_class = Request
    app.config.setdefault("BODY_GRACE", 10.0)
    app.config.setdefault("BODY_MIN_RATE", 16 * 1024)
    app.config.setdefault("BODY_DEADLINE", 300.0)
    app.config.setdefault("BODY_SMALL_LIMIT", 64 * 1024)

    @app.before_request
    def _read_body():
        env = request.environ
        length = request.content_length
        chunked = "chunked" in env.get("HTTP_TRANSFER_ENCODING", "").lower()
        if not length and not chunked:
            return None
        sock = env.get("gunicorn.socket")
        takes = BODIES.get(request.endpoint) if request.routing_exception is None else None
        if takes is None:  # no route, or one that takes no body: not a byte of it is read (see _unread_body)
            if request.routing_exception is not None:
                return None  # its own 404 or 405
            return _close(error(413, f"{request.method} {request.path} takes no request body; send none"))
        limit = int(app.config["MAX_CONTENT_LENGTH"] if takes == PHOTO else app.config["BODY_SMALL_LIMIT"])
        what = "send a smaller photo" if takes == PHOTO else "this route takes a small JSON or form body"
        if limit and length and length > limit:
            return _close(error(413, f"request body is {length} bytes; the limit is {limit}: {what}"))
        dog = _Watchdog(sock, float(app.config["BODY_GRACE"]), float(app.config["BODY_MIN_RATE"]),
                        float(app.config["BODY_DEADLINE"])) if sock else None
        stream, parts, total, started = env["wsgi.input"], [], 0, time.perf_counter()
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
                    return _close(error(408, dog.too_slow()))
                if not chunk:
                    break
                parts.append(chunk)
                total += len(chunk)
                if dog is not None:
                    dog.received = total
                if limit and total > limit:
                    return _close(error(413, f"request body exceeds {limit} bytes; {what}"))
        finally:
            if dog is not None:
                dog.stop()
        if length is not None and total < length:
            return _close(error(400, f"the body ended after {total} of the {length} bytes Content-Length "
                                     "announced; send it again"))
        env["wsgi.input"] = io.BytesIO(b"".join(parts))
        env[_READ] = True
        record_timing("body", (time.perf_counter() - started) * 1000)
        env["wsgi.input_terminated"] = True
        if length is None:
            env["CONTENT_LENGTH"] = str(total)
        return None

    @app.before_request
    def _limit_form_parts():
        """Refuse a multipart form with more parts than FORM_PARTS before it is parsed."""
        if request.mimetype != "multipart/form-data":
            return None
        boundary = request.mimetype_params.get("boundary")
        if not boundary:
            return error(400, "multipart body without a boundary: let your HTTP client build the form "
                              "(curl -F file=@photo.jpg -F id_name=NAME)")
        data = request.get_data(cache=True)  # already read, within the limit, by gateway.body
        parts = data.count(b"--" + boundary.encode("latin-1")) - 1
        if parts > int(app.config["FORM_PARTS"]):
            return error(400, f"the form has {parts} parts; send at most {app.config['FORM_PARTS']} "
                              "(file, id_name, if_absent)")
        return None

    @app.after_request
    def _unread_body(response):
        """A body this request did not read whole (refused by the host, origin or token check, a route that takes
        none, too large, too slow) is never read: not by a handler, and not drained by the server either."""
        env = request.environ
        if not env.get(_READ) and (request.content_length or "chunked" in env.get("HTTP_TRANSFER_ENCODING", "")
                                   .lower()):
            _shut_reading(env.get("gunicorn.socket"))
        return response


def _shut_reading(sock) -> None:
    """Shut the socket's reading side: what is left of the body is never read (gunicorn would otherwise drain it
    before the connection's next request); the answer can still be written."""
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RD)
        except OSError:
            pass


def _close(response):
    response.headers["Connection"] = "close"  # what is left of the body is not read
    return response
