"""The tag index: which photos carry a tag, looked up by index instead of read from every photo's JSON.

``label_tags`` holds a row per label a person gave a photo (``photos.labels``); ``prediction_tags`` a row per tag a
cached prediction makes, per tag policy (``policy_tags``) and under ``*`` the tags it answered (``tags``). Both are
kept by triggers on ``photos`` and ``predictions``, so every path that writes those rows (an upload, a save, the
trash and its restore, a transfer, a restore from backup) keeps them right; rows already there are indexed here.
``prediction_margins`` caches how unsure a prediction is under a policy's thresholds (the annotation page's
"uncertain first"): computed by the gateway, which knows the thresholds; a prediction written again drops its own.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-08
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TEXT = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")

# The rows a photo's labels and a prediction's answer index, one SELECT per dialect (NEW: the row written).
SQLITE_LABELS = "SELECT NEW.id_name, l.value FROM json_each(NEW.labels) l WHERE NEW.labels IS NOT NULL"
SQLITE_PREDICTION = ("SELECT NEW.sha256, NEW.model_version, p.key, t.value"
                     " FROM json_each(NEW.answer, '$.policy_tags') p, json_each(p.value) t"
                     " UNION SELECT NEW.sha256, NEW.model_version, '*', t.value FROM json_each(NEW.answer, '$.tags') t")
SQLITE_TRIGGERS = [
    f"CREATE TRIGGER label_tags_insert AFTER INSERT ON photos BEGIN INSERT OR IGNORE INTO label_tags (id_name, tag)"
    f" {SQLITE_LABELS}; END",
    "CREATE TRIGGER label_tags_update AFTER UPDATE OF labels ON photos BEGIN DELETE FROM label_tags WHERE id_name ="
    f" OLD.id_name; INSERT OR IGNORE INTO label_tags (id_name, tag) {SQLITE_LABELS}; END",
    "CREATE TRIGGER label_tags_delete AFTER DELETE ON photos BEGIN DELETE FROM label_tags WHERE id_name = OLD.id_name;"
    " END",
    "CREATE TRIGGER prediction_tags_insert AFTER INSERT ON predictions BEGIN INSERT OR IGNORE INTO prediction_tags"
    f" (sha256, model_version, policy, tag) {SQLITE_PREDICTION}; END",
    "CREATE TRIGGER prediction_tags_update AFTER UPDATE OF answer ON predictions BEGIN DELETE FROM prediction_tags"
    " WHERE sha256 = OLD.sha256 AND model_version = OLD.model_version; DELETE FROM prediction_margins"
    " WHERE sha256 = OLD.sha256 AND model_version = OLD.model_version; INSERT OR IGNORE INTO prediction_tags"
    f" (sha256, model_version, policy, tag) {SQLITE_PREDICTION}; END",
    "CREATE TRIGGER prediction_tags_delete AFTER DELETE ON predictions BEGIN DELETE FROM prediction_tags"
    " WHERE sha256 = OLD.sha256 AND model_version = OLD.model_version; DELETE FROM prediction_margins"
    " WHERE sha256 = OLD.sha256 AND model_version = OLD.model_version; END",
]
POSTGRES_FUNCTIONS = [
    """CREATE FUNCTION label_tags_sync() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    DELETE FROM label_tags WHERE id_name = OLD.id_name;
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.labels IS NOT NULL THEN
    INSERT INTO label_tags (id_name, tag) SELECT NEW.id_name, l FROM jsonb_array_elements_text(NEW.labels::jsonb) l
    ON CONFLICT DO NOTHING;
  END IF;
  RETURN NULL;
END $$""",
    """CREATE FUNCTION prediction_tags_sync() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    DELETE FROM prediction_tags WHERE sha256 = OLD.sha256 AND model_version = OLD.model_version;
    DELETE FROM prediction_margins WHERE sha256 = OLD.sha256 AND model_version = OLD.model_version;
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    INSERT INTO prediction_tags (sha256, model_version, policy, tag)
    SELECT NEW.sha256, NEW.model_version, p.key, t
      FROM jsonb_each(COALESCE(NEW.answer::jsonb -> 'policy_tags', '{}')) p, jsonb_array_elements_text(p.value) t
    UNION SELECT NEW.sha256, NEW.model_version, '*', t
      FROM jsonb_array_elements_text(COALESCE(NEW.answer::jsonb -> 'tags', '[]')) t
    ON CONFLICT DO NOTHING;
  END IF;
  RETURN NULL;
END $$""",
    "CREATE TRIGGER label_tags_sync AFTER INSERT OR DELETE OR UPDATE OF labels ON photos FOR EACH ROW"
    " EXECUTE FUNCTION label_tags_sync()",
    "CREATE TRIGGER prediction_tags_sync AFTER INSERT OR DELETE OR UPDATE OF answer ON predictions FOR EACH ROW"
    " EXECUTE FUNCTION prediction_tags_sync()",
]


def upgrade() -> None:
    op.create_table("label_tags", sa.Column("tag", TEXT, primary_key=True),
                    sa.Column("id_name", TEXT, primary_key=True))
    op.create_index("label_tags_id_name", "label_tags", ["id_name"])
    op.create_table("prediction_tags", sa.Column("model_version", TEXT, primary_key=True),
                    sa.Column("policy", TEXT, primary_key=True), sa.Column("tag", TEXT, primary_key=True),
                    sa.Column("sha256", TEXT, primary_key=True))
    op.create_index("prediction_tags_sha256", "prediction_tags", ["sha256", "model_version"])
    unlabelled = sa.text("labels IS NULL")  # the photos a prediction's tags count for, found from its sha256
    op.create_index("photos_unlabelled_sha256", "photos", ["sha256", "id_name"], sqlite_where=unlabelled,
                    postgresql_where=unlabelled)
    op.create_table("prediction_margins", sa.Column("model_version", TEXT, primary_key=True),
                    sa.Column("policy", TEXT, primary_key=True), sa.Column("sha256", TEXT, primary_key=True),
                    sa.Column("margin", sa.Float))
    op.create_index("prediction_margins_order", "prediction_margins", ["model_version", "policy", "margin"])
    postgres = op.get_bind().dialect.name == "postgresql"
    for statement in POSTGRES_FUNCTIONS if postgres else SQLITE_TRIGGERS:
        op.execute(statement)
    # the rows already stored: the triggers' own work, done once (an UPDATE that sets a column to itself)
    op.execute("UPDATE photos SET labels = labels WHERE labels IS NOT NULL")
    op.execute("UPDATE predictions SET answer = answer")


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        op.execute("DROP TRIGGER label_tags_sync ON photos")
        op.execute("DROP TRIGGER prediction_tags_sync ON predictions")
        op.execute("DROP FUNCTION label_tags_sync()")
        op.execute("DROP FUNCTION prediction_tags_sync()")
    else:
        for name in ("label_tags_insert", "label_tags_update", "label_tags_delete", "prediction_tags_insert",
                     "prediction_tags_update", "prediction_tags_delete"):
            op.execute(f"DROP TRIGGER {name}")
    op.drop_index("photos_unlabelled_sha256", "photos")
    op.drop_table("prediction_margins")
    op.drop_table("prediction_tags")
    op.drop_table("label_tags")
