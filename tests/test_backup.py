"""make backup / make restore on both backends: a consistent copy taken while uploads go on, restored into an empty
data folder (and database) with its rows and every file's SHA-256 verified; damaged or misplaced restores refused."""
from __future__ import annotations

import hashlib
import subprocess
import sys
import threading

import psycopg
import pytest

from photo_store import open_store
from photo_store.backup import BackupError, backup, read_manifest, restore
from serving.postgres import ROLE
from tests.conftest import REPO, _url_of


def photo(i: int) -> bytes:
    return b"\xff\xd8" + hashlib.sha256(str(i).encode()).digest() * 40 + b"\xff\xd9"


def _fill(store) -> None:
    store.put("kept", photo(0), exif={"gps": None}, fmt="JPEG")
    store.put("kept", photo(1), exif={}, fmt="JPEG")  # photo(0) goes to the history
    store.set_labels("kept", ["sea"])
    store.put("trashed", photo(2), exif={}, fmt="JPEG")
    store.delete("trashed")
    store.save_prediction(hashlib.sha256(photo(1)).hexdigest(), "1.0", {"predict_tags": ["sea"]})
    store.add_label("dog", synonyms=["puppy"], kind="object", evidence={"source": "detector"}, by="ann")


def _backup_while_uploading(store, folder):
    stop, stored = threading.Event(), []

    def uploads():
        i = 100
        while not stop.is_set():
            store.put(f"live-{i}", photo(i), exif={}, fmt="JPEG")
            stored.append(i)
            i += 1
    t = threading.Thread(target=uploads)
    t.start()
    try:
        manifest = backup(store, folder)
    finally:
        stop.set()
        t.join(timeout=60)
    return manifest, stored


def _check_restored(store, manifest, token):
    assert store.get("kept")["labels"] == ["sea"]
    assert store.read_image(store.get("kept")) == photo(1)
    assert store.read_image(store.history("kept")[0]) == photo(0)
    assert store.token_grant(token)["name"] == "backup-test"
    assert store.cached_prediction(hashlib.sha256(photo(1)).hexdigest(), "1.0") == {"predict_tags": ["sea"]}
    trashed, = [e for e in store.trash() if e["id_name"] == "trashed"]
    assert store.restore(trashed["trash_id"])["sha256"] == hashlib.sha256(photo(2)).hexdigest()
    assert manifest["counts"]["photos"] >= 1
    assert manifest["counts"]["trash"] == 1


def test_a_sqlite_backup_taken_while_uploading_restores_whole_through_make(tmp_path):
    var = tmp_path / "var"
    store = open_store(var)
    _fill(store)
    token = store.create_token("backup-test", "read")["token"]
    manifest, stored = _backup_while_uploading(store, tmp_path / "backup")
    assert stored, "uploads went on during the backup"
    assert manifest["backend"] == "sqlite"
    assert (tmp_path / "backup/photos.db").stat().st_mode & 0o777 == 0o600
    assert manifest["counts"]["photos"] == len([r for r in manifest["files"]]) - 2  # kept's old + trashed's file

    run = [sys.executable, "-m", "serving", "restore", str(tmp_path / "backup"), "--var", str(tmp_path / "new")]
    done = subprocess.run(run, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "verified" in done.stdout
    _check_restored(open_store(tmp_path / "new"), manifest, token)

    again = subprocess.run(run, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert again.returncode == 1
    assert "already holds a store" in again.stderr  # never over a store

    done = subprocess.run([sys.executable, "-m", "serving", "backup", str(tmp_path / "backup"), "--var", str(var)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "not empty" in done.stderr


def test_a_damaged_backup_is_refused_by_its_restore(tmp_path):
    store = open_store(tmp_path / "var")
    _fill(store)
    manifest = backup(store, tmp_path / "backup")
    rel = next(iter(manifest["files"]))
    (tmp_path / "backup" / rel).write_bytes(b"not the photo")
    with pytest.raises(BackupError, match="damaged"):
        restore(tmp_path / "backup", tmp_path / "new")
    with pytest.raises(BackupError, match="not a backup"):
        read_manifest(tmp_path)


@pytest.mark.stack
def test_a_postgresql_backup_restores_into_an_empty_database(tmp_path, postgres, database_url):
    store = open_store(tmp_path / "var", database_url, photo_dir=tmp_path / "photos")
    _fill(store)
    token = store.create_token("backup-test", "read")["token"]
    manifest, stored = _backup_while_uploading(store, tmp_path / "backup")
    store.close()
    assert stored
    assert manifest["backend"] == "postgresql"
    assert (tmp_path / "backup/photos.dump").is_file()
    with psycopg.connect(postgres.admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "restored" OWNER {ROLE}')
    url = _url_of(postgres, "restored")
    with pytest.raises(BackupError, match="give DATABASE_URL"):
        restore(tmp_path / "backup", tmp_path / "new")
    done = restore(tmp_path / "backup", tmp_path / "new", database_url=url, photo_dir=tmp_path / "new-photos")
    assert done["counts"] == manifest["counts"]
    restored = open_store(tmp_path / "new", url, photo_dir=tmp_path / "new-photos")
    try:
        _check_restored(restored, manifest, token)
    finally:
        restored.close()
