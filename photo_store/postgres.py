"""The cluster backend: PostgreSQL (psycopg 3, a connection pool per process), files in a shared photo folder.

    store = PostgresStore("postgresql://tagger@127.0.0.1:5433/tagger", photo_dir="/mnt/photos")

Several gateway replicas on several machines share one database and one photo folder (a NAS or NFS mount). What
one machine's locks did, PostgreSQL's do: an upload or delete of one ``id_name`` holds a transaction-level
advisory lock on it (so of two replicas racing for a new ``id_name`` with ``if_absent``, one wins and the other
gets ``Conflict``, and the history of re-uploads stays exact); a photo file's lock is a session-level advisory lock
on its SHA-256. The password comes from libpq's password file (``PGPASSFILE`` or ``?passfile=`` in the URL),
never from the URL itself. A database that does not answer raises ``StoreUnavailable`` (the gateway's 503).
"""
from __future__ import annotations

import os
import subprocess
import threading
from contextlib import contextmanager
from pathlib import Path

from photo_store.base import SqlStore
from photo_store.migrate import SchemaTooNew, upgrade
from photo_store.records import StoreUnavailable

ID_LOCKS, FILE_LOCKS, PREDICTING = 1, 2, 3  # seeds of hashtextextended: kinds of advisory lock never share a key
JOBS_LOCK = 0x7461676765720002  # held by the one retrain / deploy job running in the whole cluster


def sqlalchemy_url(url: str) -> str:
    """The SQLAlchemy spelling of a libpq URL (psycopg 3 as the driver)."""
    scheme, _, rest = url.partition("://")
    return f"postgresql+psycopg://{rest}"


def bin_dir() -> Path:
    """The newest installed PostgreSQL's programs (Debian: /usr/lib/postgresql/<major>/bin)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name))
    if not found:
        raise RuntimeError("PostgreSQL is not installed: make install-postgres (or apt-get install postgresql-15)")
    return found[-1].parent


def pg_tool(name: str, *args: str) -> None:
    """Run ``pg_dump`` or ``pg_restore``; a failure is a RuntimeError with its last words (no password in them)."""
    done = subprocess.run([str(bin_dir() / name), *args], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed ({done.returncode}): {(done.stderr or done.stdout).strip()[-600:]}")


class PostgresStore(SqlStore):
    backend = "postgresql"

    def __init__(self, url: str, *, photo_dir: str | Path, pool_size: int = 8, connect_timeout: float = 3.0):
        import psycopg

        super().__init__(photo_dir)
        self.url, self.pool_size, self.connect_timeout = url, pool_size, connect_timeout
        self._pool, self._pool_pid, self._pool_lock = None, None, threading.Lock()
        try:
            upgrade(sqlalchemy_url(url), f"the PostgreSQL store at {redact(url)}")
        except SchemaTooNew:
            raise
        except Exception as exc:  # noqa: BLE001 - one line for the operator, whatever the driver raised
            raise StoreUnavailable(f"cannot open the PostgreSQL store at {redact(url)}: {one_line(exc)}") from exc
        self._errors = (psycopg.OperationalError, psycopg.InterfaceError)

    def _get_pool(self):
        from psycopg.rows import dict_row
        from psycopg_pool import ConnectionPool

        with self._pool_lock:
            if self._pool is None or self._pool_pid != os.getpid():  # made in the process that uses it (post-fork)
                self._pool = ConnectionPool(
                    self.url, min_size=1, max_size=self.pool_size, open=True, timeout=self.connect_timeout,
                    check=ConnectionPool.check_connection, reconnect_timeout=0,
                    kwargs={"autocommit": True, "row_factory": dict_row,
                            "connect_timeout": max(1, round(self.connect_timeout))},
                    name="photo-store")
                self._pool_pid = os.getpid()
            return self._pool

    def dump(self, out_dir: Path) -> dict:
        """A consistent copy of the database in ``out_dir``: ``pg_dump`` (custom format, no owners: it restores
        into any empty database) reads the snapshot this transaction exports, and the row counts and files are
        read in the same one. Returns ``{"database": file name, "counts": ..., "files": {(file, sha256)}}``."""
        with self._connect() as db, db.transaction():
            db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            snapshot = db.execute("SELECT pg_export_snapshot() AS s").fetchone()["s"]
            pg_tool("pg_dump", "--format=custom", "--no-owner", "--no-privileges", f"--snapshot={snapshot}",
                    "--file", str(Path(out_dir) / "photos.dump"), self.url)
            counts, files = self._inventory(db)
        return {"database": "photos.dump", "counts": counts, "files": files}

    def close(self) -> None:
        with self._pool_lock:
            if self._pool is not None and self._pool_pid == os.getpid():
                self._pool.close()
            self._pool = None

    @contextmanager
    def _connect(self):
        try:
            with self._get_pool().connection() as db:
                yield db
        except self._errors as exc:
            raise StoreUnavailable(f"the photo database does not answer: {one_line(exc)}") from exc

    def _sql(self, query: str) -> str:
        return query.replace("?", "%s")

    def _unique_violation(self, exc: BaseException) -> bool:
        import psycopg

        return isinstance(exc, psycopg.errors.UniqueViolation)

    @contextmanager
    def _write(self, db, id_name: str):
        with db.transaction():
            db.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, %s))", (id_name, ID_LOCKS))
            yield

    @contextmanager
    def _file_lock(self, db, sha: str):
        db.execute("SELECT pg_advisory_lock(hashtextextended(%s, %s))", (sha, FILE_LOCKS))
        try:
            yield
        finally:
            try:
                db.execute("SELECT pg_advisory_unlock(hashtextextended(%s, %s))", (sha, FILE_LOCKS))
            except self._errors:
                pass  # the connection is gone, and its session's locks with it

    # ---- the prediction being computed, across replicas (what a flock file in run/prefetch is on one machine)
    @contextmanager
    def predicting(self, sha: str):
        """Held while this process asks TorchServe for ``sha``'s tags; yields False if another holds it."""
        with self._connect() as db:
            got = db.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, %s)) AS got",
                             (sha, PREDICTING)).fetchone()["got"]
            try:
                yield got
            finally:
                if got:
                    try:
                        db.execute("SELECT pg_advisory_unlock(hashtextextended(%s, %s))", (sha, PREDICTING))
                    except self._errors:
                        pass

    def wait_predicted(self, sha: str, wait: float) -> None:
        """Return once no replica is asking TorchServe for ``sha`` (or after ``wait`` seconds)."""
        import psycopg

        with self._connect() as db:
            try:
                with db.transaction():  # lock_timeout for this wait only
                    db.execute("SELECT set_config('lock_timeout', %s, true)", (f"{int(wait * 1000)}ms",))
                    db.execute("SELECT pg_advisory_xact_lock_shared(hashtextextended(%s, %s))", (sha, PREDICTING))
            except psycopg.errors.LockNotAvailable:
                pass

    def job_running_elsewhere(self) -> bool:
        """Whether a job runner on any replica holds the cluster's job lock now."""
        with self._connect() as db:
            got = db.execute("SELECT pg_try_advisory_lock(%s) AS got", (JOBS_LOCK,)).fetchone()["got"]
            if got:
                db.execute("SELECT pg_advisory_unlock(%s)", (JOBS_LOCK,))
        return not got


def hold_job_lock(url: str):
    """The cluster's job lock for this process's life (a job runner's), on a connection of its own; None when
    another replica's job holds it. The lock goes with the connection: when the process ends, however it ends."""
    import psycopg

    db = psycopg.connect(url, autocommit=True, connect_timeout=10)
    if db.execute("SELECT pg_try_advisory_lock(%s)", (JOBS_LOCK,)).fetchone()[0]:
        return db
    db.close()
    return None


def release_job_lock(db) -> None:
    """Give the lock ``hold_job_lock`` returned back now: unlocked before the connection closes, so the next job,
    on any replica, may start at once (a closed connection's locks go only once its server process has ended)."""
    import psycopg

    try:
        db.execute("SELECT pg_advisory_unlock(%s)", (JOBS_LOCK,))
    except psycopg.Error:
        pass  # the connection is gone, and its lock with it
    finally:
        db.close()


def redact(url: str) -> str:
    """``url`` without a password in it, for messages."""
    scheme, sep, rest = url.partition("://")
    cred, at, host = rest.rpartition("@")
    if at and ":" in cred:
        cred = cred.split(":", 1)[0] + ":***"
    return f"{scheme}{sep}{cred}{at}{host}"


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] or type(exc).__name__
