"""PostgreSQL for the cluster (``make serve-cluster``) and the tests: initdb into a folder, loopback only, stopped
by PID.

    pg = PostgresRun(DataDir("var").postgres, port=5433)
    pg.start()          # initdb on first use (a generated password, scram-sha-256), then pg_ctl start -w
    pg.url              # postgresql://tagger@127.0.0.1:5433/tagger  (no password in it)
    pg.passfile         # var/run/postgres/pgpass (mode 600):  PGPASSFILE=var/run/postgres/pgpass psql "$url"
    pg.stop()

initdb refuses to run as root, so as root the server runs as the unprivileged ``postgres`` user (Debian's
package makes it), which then owns ``data/`` and ``socket/``; every folder above them must let it pass (mode
o+x). The password stays in ``pgpass``, never in a URL, a command line or a log.
"""
from __future__ import annotations

import os
import pwd
import secrets
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from photo_store.postgres import bin_dir  # the one place that finds PostgreSQL's programs
from tagger.net import POSTGRES_PORT

SERVER_USER = "postgres"  # who runs the server when we are root
ROLE = "tagger"           # the gateway's role (no superuser, creates no database or role) and its database
ADMIN = "tagger_admin"    # the superuser initdb makes: provisions the role and database, nothing else uses it


@dataclass(frozen=True)
class PostgresRun:
    root: Path
    port: int = POSTGRES_PORT

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root).resolve())

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "socket"

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    @property
    def passfile(self) -> Path:
        return self.root / "pgpass"

    @property
    def admin_passfile(self) -> Path:
        return self.root / "admin.pgpass"

    @property
    def admin_url(self) -> str:
        """The superuser's connection to the ``postgres`` database (provisioning and tests' databases only)."""
        return f"postgresql://{ADMIN}@127.0.0.1:{self.port}/postgres?passfile={self.admin_passfile}"

    @property
    def url(self) -> str:
        return f"postgresql://{ROLE}@127.0.0.1:{self.port}/{ROLE}"

    @property
    def connect_url(self) -> str:
        """``url`` naming the password file, for this process's own clients (libpq reads it)."""
        return f"{self.url}?passfile={self.passfile}"

    # ---- processes
    def _as_server(self) -> dict:
        if os.getuid() != 0:
            return {}
        return {"user": SERVER_USER, "group": pwd.getpwnam(SERVER_USER).pw_gid, "extra_groups": []}

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(bin_dir() / args[0]), *args[1:]], capture_output=True, text=True, check=False,
                              stdin=subprocess.DEVNULL, cwd="/", **self._as_server())

    def _checked(self, *args: str) -> subprocess.CompletedProcess:
        done = self._run(*args)
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {(done.stderr or done.stdout).strip()[-600:]}"
                               f"; see {self.log}")
        return done

    def _own(self, path: Path, mode: int) -> None:
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(mode)
        if os.getuid() == 0:
            user = pwd.getpwnam(SERVER_USER)
            os.chown(path, user.pw_uid, user.pw_gid)

    def _check_reachable(self) -> None:
        if os.getuid() != 0:
            return
        for parent in [self.root, *self.root.parents]:
            if not parent.stat().st_mode & 0o001:
                raise RuntimeError(f"the {SERVER_USER} user cannot pass through {parent} (mode "
                                   f"{parent.stat().st_mode & 0o777:o}); put the database folder elsewhere or "
                                   f"chmod o+x {parent}")

    def initialized(self) -> bool:
        return (self.data / "PG_VERSION").is_file() and (self.admin_passfile.is_file() or self.passfile.is_file())

    def init(self) -> None:
        """initdb with a generated password (scram-sha-256 on every connection), listening on 127.0.0.1 only."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o711)
        self._check_reachable()
        self._own(self.data, 0o700)
        self._own(self.socket_dir, 0o700)
        password = secrets.token_urlsafe(24)  # the superuser's; the gateway's role gets its own (_provision)
        pwfile = self.socket_dir / "initdb-password"  # readable by the server user only, removed below
        pwfile.write_text(password + "\n")
        if os.getuid() == 0:
            user = pwd.getpwnam(SERVER_USER)
            os.chown(pwfile, user.pw_uid, user.pw_gid)
        pwfile.chmod(0o600)
        try:
            self._checked("initdb", "-D", str(self.data), "-U", ADMIN, f"--pwfile={pwfile}", "--auth=scram-sha-256",
                          "--encoding=UTF8", "--locale=C", "--no-instructions")
        finally:
            pwfile.unlink(missing_ok=True)
        settings = {"listen_addresses": "'127.0.0.1'", "port": str(self.port),
                    "unix_socket_directories": f"'{self.socket_dir}'", "max_connections": "200",
                    "fsync": "on", "synchronous_commit": "on"}
        with open(self.data / "postgresql.auto.conf", "a") as conf:  # owned by the server user; we are root or it
            conf.writelines(f"{k} = {v}\n" for k, v in settings.items())
        _write_passfile(self.admin_passfile, self.port, ADMIN, password)

    def pid(self) -> int | None:
        """The postmaster's PID while it runs (its postmaster.pid names a live process)."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            os.kill(pid, 0)
        except (OSError, ValueError, IndexError, PermissionError):
            return None
        return pid

    def start(self, *, timeout: float = 60) -> int:
        """initdb when new, start unless running, create the database; returns the postmaster's PID."""
        if not self.initialized():
            self.init()
        if self.pid() is None:
            self.log.touch()
            if os.getuid() == 0:
                user = pwd.getpwnam(SERVER_USER)
                os.chown(self.log, user.pw_uid, user.pw_gid)
            self._checked("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", str(int(timeout)),
                          "-o", f"-p {self.port}", "start")
        self._provision()
        return self.pid()

    def _provision(self) -> None:
        """The gateway's role (login only: no superuser, no CREATEDB or CREATEROLE) with a password of its own,
        owning its database. A folder initialised before, whose only role was the superuser ``tagger``, gets the
        separate superuser and its ``tagger`` demoted."""
        import psycopg

        if not self.admin_passfile.is_file():  # made by an earlier version: tagger is initdb's superuser
            password = secrets.token_urlsafe(24)
            with psycopg.connect(host="127.0.0.1", port=self.port, user=ROLE, dbname="postgres",
                                 passfile=str(self.passfile), autocommit=True, connect_timeout=10) as db:
                db.execute(f"CREATE ROLE {ADMIN} SUPERUSER LOGIN PASSWORD {_literal(password)}")
            _write_passfile(self.admin_passfile, self.port, ADMIN, password)
        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=10) as db:
            row = db.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (ROLE,)).fetchone()
            if row is None or not self.passfile.is_file():
                password = secrets.token_urlsafe(24)
                verb = "CREATE" if row is None else "ALTER"
                db.execute(f"{verb} ROLE {ROLE} LOGIN PASSWORD {_literal(password)}")
                _write_passfile(self.passfile, self.port, ROLE, password)
            db.execute(f"ALTER ROLE {ROLE} NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS")
            if db.execute("SELECT 1 FROM pg_database WHERE datname = %s", (ROLE,)).fetchone() is None:
                db.execute(f'CREATE DATABASE "{ROLE}" OWNER {ROLE}')

    def restart_immediate(self) -> None:
        """Crash-restart: ``pg_ctl restart -m immediate`` (no checkpoint; recovery replays the WAL)."""
        self._checked("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-m", "immediate",
                      "-o", f"-p {self.port}", "restart")

    def stop(self, *, timeout: float = 30) -> bool:
        """Stop the server (fast shutdown, then SIGKILL if it lingers); True if it was running."""
        pid = self.pid()
        if pid is None:
            return False
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", str(int(timeout)), "stop")
        deadline = time.monotonic() + 5
        while self.pid() is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.pid() is not None:
            os.kill(pid, signal.SIGKILL)
        return True


def _literal(text: str) -> str:
    """A SQL string literal of a generated password (URL-safe characters only: no quote to escape)."""
    if not text.replace("-", "").replace("_", "").isalnum():
        raise ValueError("a password for a SQL literal holds URL-safe characters only")
    return f"'{text}'"


def _write_passfile(path: Path, port: int, role: str, password: str) -> None:
    """libpq's password file for ``role`` (0600: libpq ignores a file others can read)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"127.0.0.1:{port}:*:{role}:{password}\n")
