"""Schema migrations of the photo store (Alembic, ``photo_store/migrations/``), the same for both backends.

    upgrade("sqlite:////srv/var/photos.db")                     # what opening a store does, at start
    upgrade("postgresql+psycopg://tagger@127.0.0.1:5433/tagger")

A new schema change is a new file in ``migrations/versions/`` (``alembic -c photo_store/migrations/alembic.ini
revision -m "..."``). Opening a store at the newest revision costs one query: Alembic runs only when it is behind.
"""
from __future__ import annotations

from functools import cache
from pathlib import Path

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
PG_MIGRATION_LOCK = 0x7461676765720001  # pg_advisory_lock key: one replica migrates, the others wait


@cache
def head() -> str:
    """The newest revision in ``migrations/versions``."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(MIGRATIONS)).get_current_head()


class SchemaTooNew(RuntimeError):
    """The database was migrated by newer code than this: opening it would misread it."""


def check_known(revision: str | None, where: str) -> None:
    """Raise ``SchemaTooNew`` (one line for the operator) when ``revision`` is not one of ``migrations/versions``."""
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    if revision is None:
        return
    try:
        known = ScriptDirectory(str(MIGRATIONS)).get_revision(revision) is not None
    except CommandError:
        known = False
    if not known:
        raise SchemaTooNew(f"{where} has schema revision {revision!r}, newer than this code knows (newest "
                           f"{head()!r}): run the version of the tagger that wrote it, or restore a backup "
                           "(make restore BACKUP=DIR)")


def _config(connection):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def upgrade(url: str, where: str = "the photo store") -> None:
    """Bring the database at ``url`` (a SQLAlchemy URL) to the newest revision. On PostgreSQL under an advisory
    lock, so replicas starting at once migrate one after the other; a SQLite caller holds its own file lock.
    A database at a revision this code does not know (written by newer code) raises ``SchemaTooNew``."""
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine, pool, text

    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            postgres = connection.dialect.name == "postgresql"
            if postgres:
                connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": PG_MIGRATION_LOCK})
                connection.commit()
            try:
                check_known(MigrationContext.configure(connection).get_current_revision(), where)
                command.upgrade(_config(connection), "head")
                connection.commit()
            finally:
                if postgres:
                    connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": PG_MIGRATION_LOCK})
                    connection.commit()
    finally:
        engine.dispose()


def current(url: str) -> str | None:
    """The revision the database at ``url`` is at (None: never migrated)."""
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine, pool

    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()
