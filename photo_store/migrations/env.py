"""Alembic's entry for the photo store: run by ``photo_store.migrate.upgrade`` with the connection it opened
(under the store's migration lock), or by the ``alembic`` command line with ``-x url=...``:

    .venv/bin/alembic -c photo_store/migrations/alembic.ini -x url=sqlite:///var/photos.db current
"""
from alembic import context
from sqlalchemy import create_engine

connection = context.config.attributes.get("connection")
if connection is None:  # the command line: a URL of its own
    url = context.get_x_argument(as_dictionary=True).get("url") or context.config.get_main_option("sqlalchemy.url")
    with create_engine(url).connect() as connection:
        context.configure(connection=connection, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
else:
    context.configure(connection=connection, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
