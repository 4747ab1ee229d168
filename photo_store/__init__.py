"""The photo store: photos, their labels, history and cached predictions in one data folder.

    store = PhotoStore("var")
    store.put("tuscany", jpeg_bytes, exif={...})     # durable before it returns
    store.get("tuscany")["sha256"]

Used by the gateway (the HTTP API), the annotation page and its export; one interface, so a second backend can
stand beside the SQLite one.
"""
from photo_store.sqlite import Conflict, PhotoStore

__all__ = ["Conflict", "PhotoStore"]
