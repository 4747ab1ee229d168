"""Every error the gateway answers is JSON ``{"error": ...}`` with a status that says what to do; never an HTML page
or a traceback.

    install(app)     # in create_app, last

An HTTP error keeps its status (and headers such as ``Allow`` on a 405). Storage errors are classified by their
code, never by their message (``storage_problem``): a full disk is 507, a read-only store or one whose files are
missing 503 with ``Retry-After``; an unreachable database 503. Anything else is logged and answered 500.
"""
from __future__ import annotations

import errno
import logging
import sqlite3

from flask import Flask
from werkzeug.exceptions import HTTPException

from annotation_ui.blueprint import error  # the one JSON error answer of the service
from photo_store import StoreUnavailable

logger = logging.getLogger("gateway")

FULL, READ_ONLY, MISSING = "full", "read-only", "missing"
_ERRNO = {errno.ENOSPC: FULL, errno.EDQUOT: FULL, errno.EFBIG: FULL,
          errno.EROFS: READ_ONLY, errno.EACCES: READ_ONLY, errno.EPERM: READ_ONLY,
          errno.ENOENT: MISSING, errno.ENOTDIR: MISSING}
# SQLite's result codes (sqlite3.Error.sqlite_errorcode; extended codes keep the primary one in their low byte)
_SQLITE = {13: FULL,        # SQLITE_FULL
           8: READ_ONLY,    # SQLITE_READONLY
           23: READ_ONLY,   # SQLITE_AUTH
           14: MISSING}     # SQLITE_CANTOPEN
_ANSWERS = {
    FULL: (507, "the photo store is full: nothing was stored; free disk space under the data directory and retry",
           None),
    READ_ONLY: (503, "the photo store is not writable (a read-only disk or wrong permissions): nothing was stored; "
                     "retry once the operator has fixed it", "30"),
    MISSING: (503, "a file of the photo store is missing (its data directory, or a stored photo's file): nothing "
                   "was stored; the operator should check TAGGER_DATA_DIR, or restore a backup (make restore)", "30"),
}


def storage_problem(exc: BaseException) -> str | None:
    """``full``, ``read-only`` or ``missing`` for an OSError or SQLite error with such a code, else None."""
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        return _SQLITE.get(code & 0xFF) if isinstance(code, int) else None
    if isinstance(exc, OSError):
        return _ERRNO.get(exc.errno)
    return None


def _json(status: int, message: str, retry_after: str | None = None):
    return error(status, message, **({"Retry-After": retry_after} if retry_after else {}))


def install(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        response = _json(exc.code, exc.description)
        for name, value in exc.get_headers():  # e.g. Allow on a 405, as RFC 9110 asks
            if name.lower() != "content-type":
                response.headers[name] = value
        return response

    @app.errorhandler(StoreUnavailable)
    def store_unavailable(exc: StoreUnavailable):
        """The database is restarting or unreachable: nothing was stored; the client retries (never a 500)."""
        logger.error("%s", exc)
        return _json(503, "the photo database does not answer now: nothing was stored; retry shortly", "5")

    @app.errorhandler(OSError)
    @app.errorhandler(sqlite3.Error)
    def storage_error(exc: Exception):
        """What was acknowledged before is untouched; this request was not stored, and can be sent again."""
        problem = storage_problem(exc)
        if problem is None:
            return internal_error(exc)
        logger.error("storage error (%s): %s", problem, exc)
        return _json(*_ANSWERS[problem])

    @app.errorhandler(Exception)
    def internal_error(exc: Exception):
        logger.exception("unhandled error")
        return _json(500, "internal error; the gateway log has the details")
