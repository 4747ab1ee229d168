"""EXIF read in parser processes, each parse bounded in time from its own start.

    >>> read_exif(open("DSCN0010.jpg", "rb").read())      # the fields of tagger.exif.parse_exif, never raises
    >>> parsers = ExifParsers(timeout=3.0)                  # a server's own set (the gateway makes one per app)
    >>> parsers.read(data); parsers.close()

Hostile EXIF never hangs a server, nor costs anyone else their EXIF: each parse in flight has a process of its own
(``python -m tagger.exif``, a fresh interpreter that inherits no socket or lock of the server), idle ones are kept
for the next parse, and a parse that overruns ``timeout``, counted from the moment its bytes were handed over (never
time spent waiting for a process), kills that one process only. The answer is then ``EMPTY`` with ``unread`` saying
why, so whoever stored it can parse again later (``needs_reparse``). A parser dies with the process that started
it (Linux's parent-death signal, and the end of its stdin), so a SIGKILLed server leaves none behind. A JPEG
sends only its first 256 KB: the EXIF segment precedes the image data.
"""
from __future__ import annotations

import json
import logging
import os
import select
import struct
import subprocess
import sys
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor

from tagger import REPO
from tagger.exif import EMPTY

logger = logging.getLogger(__name__)

JPEG_EXIF_BYTES = 256 * 1024
DEFAULT_TIMEOUT = 3.0
#: Parses of one photo before its EXIF counts as unreadable (each later ``/imginfo`` tries again until then).
MAX_ATTEMPTS = 3
START_TIMEOUT = 60.0  # a parser process's start (an interpreter and exifread), on a machine as busy as it gets


class ParserFailed(Exception):
    """The parser process overran its time, died or answered nonsense (it is killed)."""


class ParserGone(ParserFailed):
    """The parser process had ended before it was handed the bytes (nothing was parsed)."""


class _Parser:
    """One parser process, spoken to with length-prefixed frames over its stdin and stdout."""

    def __init__(self, parse: str | None):
        args = [sys.executable, "-m", "tagger.exif", str(os.getpid())] + ([parse] if parse else [])
        self.proc = subprocess.Popen(args, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env={**os.environ, "PYTHONPATH": str(REPO)})

    def alive(self) -> bool:
        return self.proc.poll() is None

    def parse(self, data: bytes, timeout: float) -> dict:
        try:
            self.proc.stdin.write(struct.pack(">I", len(data)) + data)
            self.proc.stdin.flush()
        except OSError as exc:
            raise ParserGone(f"the EXIF parser process is gone ({exc})") from None
        deadline = time.monotonic() + timeout
        size = struct.unpack(">I", self._read(4, deadline, timeout))[0]
        try:
            return json.loads(self._read(size, deadline, timeout))
        except ValueError:
            raise ParserFailed("the EXIF parser answered something that is not JSON") from None

    def _read(self, n: int, deadline: float, timeout: float) -> bytes:
        out = bytearray()
        fd = self.proc.stdout.fileno()
        while len(out) < n:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise ParserFailed(f"EXIF parsing took longer than {timeout:g} s (a crafted file?); stopped")
            chunk = os.read(fd, n - len(out))
            if not chunk:
                raise ParserFailed("the EXIF parser process died while parsing")
            out += chunk
        return bytes(out)

    def kill(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        self.proc.kill()
        self.proc.wait()


class ExifParsers:
    """Parser processes for one server: as many as parses in flight, ``keep_idle`` kept warm between them.

    ``parse`` ("module:function") replaces ``tagger.exif.parse_exif`` in the processes (tests: a parse that hangs).
    """

    def __init__(self, *, timeout: float = DEFAULT_TIMEOUT, keep_idle: int = 2, parse: str | None = None):
        self.timeout, self.keep_idle, self.parse = timeout, keep_idle, parse
        self._idle: list[_Parser] = []
        self._busy: set[_Parser] = set()
        self._lock = threading.Lock()
        # Linux sends the parent-death signal when the *thread* that started a process ends: parsers are started
        # from this one thread, which lives as long as the process, never from a request's thread.
        self._starter = ThreadPoolExecutor(1, thread_name_prefix="exif-parser-start")
        # Idle parsers end with this object (garbage collected, or at exit), busy ones when their parse does.
        self._finalizer = weakref.finalize(self, _stop, self._idle, self._lock, self._starter)

    def read(self, data: bytes) -> dict:
        """EXIF fields of the image bytes ``data``; ``EMPTY`` with ``unread`` (the reason) when the parse overran
        or its process died. Never raises, never waits past ``timeout`` once the parse began."""
        if data[:2] == b"\xff\xd8":
            data = data[:JPEG_EXIF_BYTES]
        for attempt in range(2):  # an idle parser found dead when handed the bytes is replaced once
            try:
                parser = self._take()
            except OSError as exc:
                logger.error("cannot start an EXIF parser process: %s", exc)
                return {**EMPTY, "unread": f"no EXIF parser process could start ({exc})"}
            try:
                answer = parser.parse(data, self.timeout)
            except ParserGone as exc:
                self._drop(parser)
                if attempt == 0:
                    continue
                logger.warning("%s", exc)
                return {**EMPTY, "unread": str(exc)}
            except ParserFailed as exc:
                logger.warning("%s", exc)
                self._drop(parser)
                return {**EMPTY, "unread": str(exc)}
            self._give_back(parser)
            return answer
        raise AssertionError("unreachable")

    def processes(self) -> list[int]:
        """PIDs of the parser processes alive now (idle and busy)."""
        with self._lock:
            return [p.proc.pid for p in [*self._idle, *self._busy] if p.alive()]

    def _take(self) -> _Parser:
        with self._lock:
            while self._idle:
                parser = self._idle.pop()
                if parser.alive():
                    self._busy.add(parser)
                    return parser
                parser.kill()  # died idle (its parent thread ended, or someone killed it): reap it
        parser = self._starter.submit(_Parser, self.parse).result()  # outside the lock: starting one takes a while
        with self._lock:
            self._busy.add(parser)
        return parser

    def _give_back(self, parser: _Parser) -> None:
        with self._lock:
            self._busy.discard(parser)
            if len(self._idle) < self.keep_idle and self._finalizer.alive:
                self._idle.append(parser)
                return
        parser.kill()

    def _drop(self, parser: _Parser) -> None:
        with self._lock:
            self._busy.discard(parser)
        parser.kill()

    def close(self) -> None:
        """Stop the idle processes (busy ones stop when their parse ends)."""
        self._finalizer()


def _stop(idle: list[_Parser], lock: threading.Lock, starter: ThreadPoolExecutor) -> None:
    with lock:
        stopping = idle[:]
        idle.clear()
    for parser in stopping:
        parser.kill()
    starter.shutdown(wait=False)


def needs_reparse(exif: dict) -> bool:
    """True for EXIF a parser could not read yet (overran or died) and that has attempts left."""
    return bool(exif.get("unread")) and exif.get("attempts", 1) < MAX_ATTEMPTS


def reparsed(previous: dict, fresh: dict) -> dict:
    """What to store after parsing again: ``fresh``, or with the attempt counted when it could not be read."""
    return {**fresh, "attempts": previous.get("attempts", 1) + 1} if fresh.get("unread") else fresh


_DEFAULT: ExifParsers | None = None
_DEFAULT_LOCK = threading.Lock()


def default_parsers() -> ExifParsers:
    """The process-wide ``ExifParsers`` (for tools and tests; the gateway makes its own)."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = ExifParsers()
        return _DEFAULT


def read_exif(data: bytes, *, timeout: float | None = None) -> dict:
    """EXIF fields of the image bytes ``data`` through the process-wide parsers (``ExifParsers.read``)."""
    parsers = default_parsers()
    if timeout is None or timeout == parsers.timeout:
        return parsers.read(data)
    once = ExifParsers(timeout=timeout, keep_idle=0)
    try:
        return once.read(data)
    finally:
        once.close()
