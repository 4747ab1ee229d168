"""API tokens (only their SHA-256 is kept) and the annotation page's sign-in sessions.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TEXT = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "tokens",
        sa.Column("id", TEXT, primary_key=True),           # public: in the token's text and in make revoke
        sa.Column("name", TEXT, nullable=False),           # who or what holds it
        sa.Column("scope", TEXT, nullable=False),          # "read" or "write" (write includes read)
        sa.Column("hash", TEXT, nullable=False, unique=True),  # SHA-256 of the whole token; the token is not kept
        sa.Column("created_at", TEXT, nullable=False),
        sa.Column("revoked_at", TEXT))
    op.create_table(
        "sessions",
        sa.Column("hash", TEXT, primary_key=True),         # SHA-256 of the cookie's value
        sa.Column("token_id", TEXT, sa.ForeignKey("tokens.id"), nullable=False),
        sa.Column("created_at", TEXT, nullable=False),
        sa.Column("expires_at", TEXT, nullable=False))
    op.create_index("sessions_token_id", "sessions", ["token_id"])


def downgrade() -> None:
    op.drop_table("sessions")
    op.drop_table("tokens")
