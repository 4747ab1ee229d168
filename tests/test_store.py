"""The photo store on both backends (SQLite, PostgreSQL): concurrency across processes and threads, content-
addressed files, migrations. The gateway's and the annotation page's tests run on both backends as well."""
from __future__ import annotations

import hashlib
import multiprocessing
import sqlite3
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import create_engine, text

from photo_store import Conflict, StoreUnavailable, open_store
from photo_store.migrate import SchemaTooNew, current, head
from photo_store.postgres import PostgresStore, sqlalchemy_url
from photo_store.transfer import main, transfer, verify
from serving.torchserve import free_ports
from tagger.exif_parsers import ExifParsers

PROCESSES, THREADS = 2, 4  # 8 threads across two processes, each process with its own store (as two replicas)


def photo(i: int) -> bytes:
    return b"\xff\xd8 photo %d " % i + bytes(range(256)) * (1 + i % 3)


def _worker(args):
    """One process: THREADS threads doing ``job`` on the same ids; returns what each call answered."""
    data_dir, url, job, base = args
    store = open_store(data_dir, url)

    def call(t):
        out = []
        for step in range(12):
            i = base + t * 100 + step
            try:
                if job == "mixed":
                    name = f"shared-{step % 3}"
                    kind = (t + step) % 4
                    if kind == 0:
                        store.delete(name)
                        out.append(("delete", name))
                    elif kind == 1:
                        store.set_labels(name, ["sea"])
                        out.append(("label", name))
                    else:
                        store.put(name, photo(step % 5), exif={}, fmt="JPEG")  # a few contents, often the same
                        out.append(("put", name))
                elif job == "if_absent":
                    out.append(store.put("new", photo(i), exif={}, fmt="JPEG", if_absent=True)["status"])
                elif job == "replace":
                    out.append((store.put("same", photo(i), exif={}, fmt="JPEG")["status"], i))
            except Conflict:
                out.append("conflict")
        return out

    with ThreadPoolExecutor(THREADS) as pool:
        results = [r for rs in pool.map(call, range(THREADS)) for r in rs]
    store.close()
    return results


def run_everywhere(data_dir, url, job):
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter each: nothing shared but the database
    with ctx.Pool(PROCESSES) as pool:
        return [r for rs in pool.map(_worker, [(str(data_dir), url, job, p * 10_000) for p in range(PROCESSES)])
                for r in rs]


def every_row_has_its_file(store):
    rows = store.list(limit=10_000) + [h for r in store.list(limit=10_000) for h in store.history(r["id_name"])]
    for r in rows:
        data = store.read_image(r)
        assert hashlib.sha256(data).hexdigest() == r["sha256"]
        assert r["file"].endswith(f"{r['sha256']}.jpg")
    return rows


@pytest.fixture
def store(tmp_path, store_url):
    s = open_store(tmp_path, store_url)
    yield s
    s.close()


def test_uploads_labels_and_deletes_of_the_same_ids_at_once_keep_every_record_whole(store, tmp_path, store_url):
    done = run_everywhere(tmp_path, store_url, "mixed")
    assert len(done) == PROCESSES * THREADS * 12
    assert all(isinstance(d, tuple) for d in done)  # no call failed
    every_row_has_its_file(store)
    held = {r["file"] for r in store.list(limit=10_000)}
    held |= {h["file"] for r in store.list(limit=10_000) for h in store.history(r["id_name"])}
    on_disk = {p.relative_to(store.root).as_posix() for p in (store.root / "images").rglob("*") if p.is_file()}
    assert held <= on_disk  # a delete never took a file an upload beside it still needed


def test_two_replicas_racing_for_a_new_id_name_with_if_absent_store_one(store, tmp_path, store_url):
    done = run_everywhere(tmp_path, store_url, "if_absent")
    assert done.count("stored") == 1
    assert done.count("conflict") == len(done) - 1
    assert store.history("new") == []
    assert len(store.list()) == 1


def test_replacing_uploads_from_two_replicas_keep_an_exact_history(store, tmp_path, store_url):
    done = run_everywhere(tmp_path, store_url, "replace")
    sent = {hashlib.sha256(photo(i)).hexdigest() for _, i in done}
    assert {s for s, _ in done} == {"stored"}
    assert len(sent) == len(done)
    history = store.history("same")
    assert len(history) == len(done) - 1  # each upload replaced exactly the one before it
    assert {h["sha256"] for h in history} | {store.get("same")["sha256"]} == sent
    every_row_has_its_file(store)


def test_the_same_bytes_under_two_names_share_one_file_until_both_are_deleted(store):
    a = store.put("a", photo(1), exif={}, fmt="JPEG")
    b = store.put("b", photo(1), exif={}, fmt="JPEG")
    assert a["file"] == b["file"] == f"images/{a['sha256'][:2]}/{a['sha256']}.jpg"
    assert store.delete("a")
    assert store.read_image(b) == photo(1)
    assert store.empty_trash() == 1
    assert store.read_image(b) == photo(1)
    assert store.delete("b")
    assert store.image_path(b).exists()  # in the trash
    assert store.empty_trash() == 1
    assert not store.image_path(b).exists()


def test_a_store_made_before_migrations_is_brought_to_the_newest_schema_in_place(tmp_path):
    """A var/photos.db from before Alembic (created by the old CREATE TABLE IF NOT EXISTS, without the later
    columns) keeps its rows and gains the columns and indexes."""
    (tmp_path / "images").mkdir()
    (tmp_path / "images/old.jpg").write_bytes(photo(0))
    db = sqlite3.connect(tmp_path / "photos.db")
    db.executescript("""
        CREATE TABLE photos (id_name TEXT PRIMARY KEY, file TEXT NOT NULL, sha256 TEXT NOT NULL,
            bytes INTEGER NOT NULL, format TEXT, width INTEGER, height INTEGER, exif TEXT NOT NULL, labels TEXT,
            uploaded_at TEXT NOT NULL);
        CREATE TABLE predictions (sha256 TEXT NOT NULL, model_version TEXT NOT NULL, answer TEXT NOT NULL,
            created_at TEXT NOT NULL, PRIMARY KEY (sha256, model_version));""")
    db.execute("INSERT INTO photos VALUES ('old', 'images/old.jpg', ?, 10, 'JPEG', 1, 1, '{}', '[\"sea\"]',"
               " '2026-01-01T00:00:00.000000Z')", (hashlib.sha256(photo(0)).hexdigest(),))
    db.commit()
    db.close()
    store = open_store(tmp_path)
    assert current(f"sqlite:///{tmp_path / 'photos.db'}") == head()
    with sqlite3.connect(tmp_path / f"photos.db.before-{head()}") as snapshot:  # taken before migrating
        assert snapshot.execute("SELECT id_name, labels FROM photos").fetchall() == [("old", '["sea"]')]
        assert not snapshot.execute("SELECT 1 FROM sqlite_master WHERE name = 'history'").fetchone()
    old = store.get("old")
    assert old["labels"] == ["sea"]
    assert old["label_detail"] is None
    assert store.read_image(old) == photo(0)
    store.put("old", photo(1), exif={}, fmt="JPEG")  # the history table it never had
    assert [h["file"] for h in store.history("old")] == ["images/old.jpg"]


def test_a_store_written_by_newer_code_refuses_to_open_with_one_line(tmp_path, store_url):
    store = open_store(tmp_path, store_url)
    store.put("kept", photo(0), exif={}, fmt="JPEG")
    store.close()
    url = sqlalchemy_url(store_url) if store_url else f"sqlite:///{tmp_path}/photos.db"
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    with pytest.raises(SchemaTooNew) as caught:
        open_store(tmp_path, store_url)
    message = str(caught.value)
    assert "\n" not in message
    assert "'0099'" in message
    assert "newer than this code" in message
    with engine.begin() as connection:  # untouched: the code that wrote it opens it again
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0099"
        connection.execute(text(f"UPDATE alembic_version SET version_num = '{head()}'"))
    engine.dispose()
    with open_store(tmp_path, store_url) as again:
        assert again.get("kept")["bytes"] == len(photo(0))


def test_the_sqlite_file_is_readable_by_its_owner_only(tmp_path):
    (tmp_path / "photos.db").touch(mode=0o644)  # a store made before: tightened at open
    open_store(tmp_path).put("a", photo(0), exif={}, fmt="JPEG")
    db = sqlite3.connect(tmp_path / "photos.db")  # while open, its WAL files exist: SQLite gives them its mode
    try:
        assert db.execute("SELECT count(*) FROM photos").fetchone() == (1,)
        for name in ("photos.db", "photos.db-wal", "photos.db-shm"):
            assert (tmp_path / name).stat().st_mode & 0o777 == 0o600, name
    finally:
        db.close()


def test_a_database_url_of_an_unknown_kind_or_an_unreachable_server_is_one_clear_line(tmp_path):
    with pytest.raises(ValueError, match="neither empty .* nor postgresql://"):
        open_store(tmp_path, "mysql://someone:secret@db/photos")
    port = free_ports(1)[0]
    with pytest.raises(StoreUnavailable) as caught:
        open_store(tmp_path, f"postgresql://tagger:secret@127.0.0.1:{port}/tagger")
    message = str(caught.value)
    assert "\n" not in message
    assert "secret" not in message
    assert f"127.0.0.1:{port}" in message


def test_migrate_store_copies_sqlite_into_postgresql_resumably_and_verifies_it(tmp_path, database_url):
    """make migrate-store: photos, history, labels and cached predictions; a run killed half way is run again and
    finishes; counts and every file's sha256 are checked; the CLI says so in its exit status."""
    src = open_store(tmp_path)
    for i in range(7):
        src.put(f"p{i}", photo(i), exif={"datetime": f"2026:01:0{i + 1} 10:00:00"}, fmt="JPEG", width=4, height=3)
        src.save_prediction(hashlib.sha256(photo(i)).hexdigest(), "1.0", {"tags": ["sea"], "model_version": "1.0"})
    src.put("p0", photo(20), exif={}, fmt="JPEG")  # p0's first photo moves to the history
    src.set_labels("p1", ["sea", "boat"], detail={"sea": {"value": 1, "source": "person"}})
    token, gone = src.create_token("laptop", "write")["token"], src.create_token("old", "read")["token"]
    src.revoke_tokens("old")
    dst = PostgresStore(database_url, photo_dir=src.root)

    class Killed(Exception):
        pass

    def die_after_the_first_batch(line):
        if "so far" in line:
            raise Killed(line)
    with pytest.raises(Killed):
        transfer(src, dst, batch=3, say=die_after_the_first_batch)
    assert verify(src, dst)  # half done: the counts differ, and say so
    transfer(src, dst, batch=3, say=lambda _: None)
    assert verify(src, dst) == []
    for name in [f"p{i}" for i in range(7)]:
        a, b = src.get(name), dst.get(name)
        assert a == b, name  # every field, labels and EXIF included
        assert dst.history(name) == src.history(name)
    assert dst.cached_prediction(src.get("p3")["sha256"], "1.0") == {"tags": ["sea"], "model_version": "1.0"}
    assert dst.token_grant(token)["name"] == "laptop"
    assert dst.token_grant(gone) is None  # tokens, revoked ones too
    assert dst.tokens() == src.tokens()
    assert main(["--data-dir", str(tmp_path), "--to", database_url]) == 0  # again: nothing to add, verified
    dst.image_path(dst.get("p2")).write_bytes(b"not the photo")
    assert main(["--data-dir", str(tmp_path), "--to", database_url]) == 1  # a file that no longer matches
    dst.close()


def test_an_exif_parser_started_while_a_photo_file_is_locked_does_not_keep_the_lock(tmp_path):
    """The gateway starts EXIF parsers at any moment; a lock file's descriptor one inherited would hold the flock
    after the upload that took it, and stall every later upload of that file (the hostile tests found it)."""
    store = open_store(tmp_path)
    sha = hashlib.sha256(b"x").hexdigest()
    parsers = ExifParsers()
    with store._connect() as db, store._file_lock(db, sha):
        assert parsers.read(b"\xff\xd8\xff\xd9")["gps"] is None  # a parser started now, while the lock is held
    took = subprocess.run([sys.executable, "-c", "import sys; from photo_store import open_store; "
                           "s = open_store(sys.argv[1]); cm = s._file_lock(None, sys.argv[2]); cm.__enter__(); "
                           "print('taken')", str(tmp_path), sha], capture_output=True, text=True, timeout=20)
    assert took.stdout.strip() == "taken", took.stderr
    assert parsers.processes()  # the parser lives on, idle
    parsers.close()


@pytest.mark.stack
def test_the_gateways_postgresql_role_is_no_superuser(postgres, database_url):
    """What the gateway connects as can read and write its own tables only: no superuser (COPY ... PROGRAM, reading
    server files), no CREATEDB or CREATEROLE; its password file is its own, 0600."""
    import psycopg

    with psycopg.connect(postgres.connect_url) as db:
        row = db.execute("SELECT current_user, rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls"
                         " FROM pg_roles WHERE rolname = current_user").fetchone()
        assert row == ("tagger", False, False, False, False, False)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            db.execute("COPY (SELECT 1) TO PROGRAM 'true'")
    assert postgres.passfile.stat().st_mode & 0o777 == 0o600
    assert ":tagger_admin:" not in postgres.passfile.read_text()
    with open_store(postgres.root, database_url) as store:
        store.put("a", photo(0), exif={}, fmt="JPEG")  # and it works
