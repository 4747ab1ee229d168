"""The photo store: photos, their labels, history and cached predictions; one interface, two backends.

    store = open_store("var")                                    # SQLite in var/photos.db, files in var/images
    store = open_store("var", "postgresql://tagger@db:5432/tagger", photo_dir="/mnt/photos")   # a cluster's
    store.put("tuscany", jpeg_bytes, exif={...})                 # durable before it returns
    store.get("tuscany")["sha256"]

Used by the gateway (the HTTP API), the annotation page and its export. The schema is migrated at start by
Alembic (``photo_store/migrations``), the same revisions for both backends.
"""
from __future__ import annotations

from pathlib import Path

from photo_store.base import SqlStore
from photo_store.postgres import PostgresStore, redact
from photo_store.records import Conflict, StalePhoto, StoreUnavailable
from photo_store.sqlite import PhotoStore, SQLiteStore
from photo_store.vocabulary import LabelTaken

__all__ = ["Conflict", "LabelTaken", "StalePhoto", "PhotoStore", "SQLiteStore", "SqlStore", "StoreUnavailable",
           "open_store"]


def open_store(data_dir: str | Path, database_url: str | None = None, *,
               photo_dir: str | Path | None = None, timeout: float = 3.0) -> SqlStore:
    """The store a ``DATABASE_URL`` names: empty (or ``sqlite:``) for the embedded default, SQLite in the data
    folder; ``postgresql://USER@HOST:PORT/DB`` for PostgreSQL. Photo files go under ``photo_dir``
    (default: the data folder); ``timeout``: seconds to wait for a PostgreSQL connection before the request
    is answered 503. A URL of another kind is a ``ValueError`` that says which are known."""
    url = (database_url or "").strip()
    if not url or url == "sqlite:" or url == "sqlite://":
        return SQLiteStore(data_dir, photo_dir=photo_dir)
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresStore(url, photo_dir=photo_dir or data_dir, connect_timeout=timeout)

    raise ValueError(f"DATABASE_URL {redact(url)!r} is neither empty (SQLite in the data folder) nor "
                     "postgresql://USER@HOST:PORT/DB")
