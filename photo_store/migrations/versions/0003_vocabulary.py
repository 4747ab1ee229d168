"""The vocabulary people add to: labels beyond the served model's (name, synonyms, kind, evidence, who and when,
retired or not), and every name and synonym in use, unique case-insensitively.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TEXT = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "vocabulary",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", TEXT, nullable=False),
        sa.Column("synonyms", TEXT, nullable=False),       # JSON list
        sa.Column("kind", TEXT, nullable=False),           # "object" or "scene"
        sa.Column("detector_class", TEXT),                 # the COCO object named explicitly, if any
        sa.Column("imagenet", TEXT),                       # JSON list of WordNet ids named explicitly, if any
        sa.Column("evidence", TEXT, nullable=False),       # JSON: {"source", "detector", "imagenet"} when added
        sa.Column("served", sa.Integer, nullable=False),   # 1: a served model's label (a row records its retirement)
        sa.Column("added_by", TEXT, nullable=False),
        sa.Column("added_at", TEXT, nullable=False),
        sa.Column("retired_at", TEXT),
        sa.Column("retired_by", TEXT))
    op.create_table(
        "vocabulary_words",                                # every name and synonym, casefolded: one label each
        sa.Column("word", TEXT, primary_key=True),
        sa.Column("label_id", sa.Integer, sa.ForeignKey("vocabulary.id"), nullable=False))
    op.create_index("vocabulary_words_label", "vocabulary_words", ["label_id"])


def downgrade() -> None:
    op.drop_table("vocabulary_words")
    op.drop_table("vocabulary")
