"""The trash: a deleted photo (with its earlier versions) is kept, restorable, until the trash is emptied or its
entry is older than the gateway's TRASH_DAYS. ``trash`` has one row per deletion; ``trash_records`` the rows it
took from ``photos`` (``replaced_at`` NULL) and ``history``, column for column, so a restore is two INSERT ...
SELECTs. Their files stay where they are while a trash row names them.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TEXT = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")
RECORD = [("file", TEXT, False), ("sha256", TEXT, False), ("bytes", sa.BigInteger, False), ("format", TEXT, True),
          ("width", sa.Integer, True), ("height", sa.Integer, True), ("exif", TEXT, False), ("labels", TEXT, True),
          ("uploaded_at", TEXT, False), ("labelled_at", TEXT, True), ("label_detail", TEXT, True),
          ("suggested", TEXT, True)]


def upgrade() -> None:
    op.create_table(
        "trash",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id_name", TEXT, nullable=False),
        sa.Column("deleted_at", TEXT, nullable=False))
    op.create_index("trash_deleted_at", "trash", ["deleted_at"])
    op.create_table(
        "trash_records",
        sa.Column("trash_id", sa.Integer, sa.ForeignKey("trash.id"), nullable=False),
        sa.Column("id_name", TEXT, nullable=False),
        *[sa.Column(name, kind, nullable=nullable) for name, kind, nullable in RECORD],
        sa.Column("replaced_at", TEXT))  # NULL: the photo as it was when deleted; else an earlier version
    op.create_index("trash_records_trash_id", "trash_records", ["trash_id"])
    op.create_index("trash_records_sha256", "trash_records", ["sha256"])  # whether a trashed row holds a file


def downgrade() -> None:
    op.drop_table("trash_records")
    op.drop_table("trash")
