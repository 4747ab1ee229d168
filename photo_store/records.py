"""The photo record and what every part of the store shares: its columns, the errors, where a file lives.

    content_file(sha, "JPEG")     # "images/ab/ab12....jpg": photo files are named by their content
    decode_record(row)            # a row as a dict, its JSON columns decoded
"""
from __future__ import annotations

import fcntl
import json
from contextlib import contextmanager
from pathlib import Path

from tagger.image import file_extension

# The photo record's columns (the migrations in photo_store/migrations/versions define the tables).
MAX_ID_NAME = 256  # characters in an id_name (the gateway refuses longer ones; the photo library truncates)
RECORD = ("file", "sha256", "bytes", "format", "width", "height", "exif", "labels", "uploaded_at", "labelled_at",
          "label_detail", "suggested")
JSON_FIELDS = ("exif", "labels", "label_detail", "suggested")
# every table of the schema: what a backup counts
TABLES = ("photos", "history", "predictions", "tokens", "sessions", "vocabulary", "vocabulary_words", "trash",
          "trash_records", "label_tags", "prediction_tags", "prediction_margins")


class Conflict(Exception):
    """An upload with ``if_absent`` found a photo under its ``id_name`` (answered 409)."""


class StalePhoto(Exception):
    """Labels saved for bytes other than those stored under the id_name now (answered 409 with both hashes)."""

    def __init__(self, id_name: str, shown: str, stored: str):
        super().__init__(f"{id_name!r} was replaced since it was shown (shown {shown}, stored now {stored}): look at "
                         "the new photo and label it again")
        self.shown, self.stored = shown, stored


class StoreUnavailable(Exception):
    """The database does not answer now (restarting, unreachable): nothing was stored; retry (answered 503)."""


@contextmanager
def erase_lock(photo_dir: Path, *, shared: bool):
    """Held shared by a backup while it copies files, exclusively while photo files are erased (emptying the
    trash): a backup never misses a file its database copy names."""
    path = Path(photo_dir) / "images" / ".erase.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield


def content_file(sha: str, fmt: str | None) -> str:
    """Where the bytes with this SHA-256 live, relative to the photo folder."""
    return f"images/{sha[:2]}/{sha}{file_extension(fmt)}"


def decode_record(row) -> dict:
    record = dict(row)
    for key in JSON_FIELDS:
        if key in record:
            record[key] = json.loads(record[key]) if record[key] else None
    return record
