"""The photo store's first schema: photos, the history of replaced ones, cached predictions.

A SQLite store made before migrations (its tables, maybe without the later columns) is brought to this schema
in place: missing tables are created, missing columns added (nullable), nothing dropped.

Revision ID: 0001
Revises:
Create Date: 2026-12-03
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Text sorts by code point on both backends (PostgreSQL's default collation may be a language's): the paging
# cursor (uploaded_at, id_name) and every listing's order are then the same whichever backend stores them.
TEXT = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")


def record_columns():
    return [sa.Column("file", TEXT, nullable=False), sa.Column("sha256", TEXT, nullable=False),
            sa.Column("bytes", sa.BigInteger, nullable=False), sa.Column("format", TEXT),
            sa.Column("width", sa.Integer), sa.Column("height", sa.Integer),
            sa.Column("exif", TEXT, nullable=False), sa.Column("labels", TEXT),
            sa.Column("uploaded_at", TEXT, nullable=False), sa.Column("labelled_at", TEXT),
            sa.Column("label_detail", TEXT), sa.Column("suggested", TEXT)]


def tables():
    return {
        "photos": [sa.Column("id_name", TEXT, primary_key=True), *record_columns()],
        "history": [sa.Column("id_name", TEXT, nullable=False), *record_columns(),
                    sa.Column("replaced_at", TEXT, nullable=False)],
        "predictions": [sa.Column("sha256", TEXT, primary_key=True), sa.Column("model_version", TEXT, primary_key=True),
                        sa.Column("answer", TEXT, nullable=False), sa.Column("created_at", TEXT, nullable=False)],
    }


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    have = set(inspector.get_table_names())
    for name, columns in tables().items():
        if name not in have:
            op.create_table(name, *columns)
            continue
        present = {c["name"] for c in inspector.get_columns(name)}
        for column in columns:
            if column.name not in present:
                column.nullable = True  # rows from before the column have no value
                op.add_column(name, column)
    indexes = {"history_id_name": ("history", ["id_name"]),
               "photos_sha256": ("photos", ["sha256"]),  # delete asks whether another record holds the file
               "history_sha256": ("history", ["sha256"]),
               "photos_order": ("photos", ["uploaded_at", "id_name"])}  # the newest-first listings and cursor
    for index, (table, columns) in indexes.items():
        if table not in have or index not in {i["name"] for i in inspector.get_indexes(table)}:
            op.create_index(index, table, columns)


def downgrade() -> None:
    for name in ("predictions", "history", "photos"):
        op.drop_table(name)
