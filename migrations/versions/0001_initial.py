"""Initial schema: encoders, banks, embeddings, directions.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "encoders",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False, unique=True),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("subfolder", sa.String(200)),
        sa.Column("revision", sa.String(100)),
        sa.Column("architecture", sa.String(100), nullable=False),
        sa.Column("hidden_size", sa.Integer, nullable=False),
        sa.Column("max_length", sa.Integer, nullable=False),
        sa.Column("pad_id", sa.Integer),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "banks",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("concept", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("generator", sa.String(50), nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("sentences", sa.JSON, nullable=False),
        sa.Column("n_sentences", sa.Integer, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("note", sa.Text),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("concept", "version", name="uq_banks_concept_version"),
        sa.UniqueConstraint("concept", "sha256", name="uq_banks_concept_sha256"),
    )
    op.create_index("ix_banks_concept", "banks", ["concept"])
    op.create_table(
        "embeddings",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("bank_id", sa.Integer, sa.ForeignKey("banks.id", ondelete="RESTRICT"), nullable=False),
        sa.Column("encoder_id", sa.Integer, sa.ForeignKey("encoders.id", ondelete="RESTRICT"), nullable=False),
        sa.Column("mean", sa.LargeBinary, nullable=False),
        sa.Column("key", sa.LargeBinary, nullable=False),
        sa.Column("key_kind", sa.String(30), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("bank_id", "encoder_id", name="uq_embeddings_bank_encoder"),
    )
    op.create_table(
        "directions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("encoder_id", sa.Integer, sa.ForeignKey("encoders.id", ondelete="RESTRICT"), nullable=False),
        sa.Column("source_id", sa.Integer, sa.ForeignKey("embeddings.id", ondelete="RESTRICT")),
        sa.Column("target_id", sa.Integer, sa.ForeignKey("embeddings.id", ondelete="RESTRICT")),
        sa.Column("scale", sa.Float, nullable=False),
        sa.Column("components", sa.JSON),
        sa.Column("vector", sa.LargeBinary),
        sa.Column("key", sa.LargeBinary, nullable=False),
        sa.Column("content_sha256", sa.String(64), nullable=False),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("note", sa.Text),
        sa.Column("deprecated", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("name", "version", name="uq_directions_name_version"),
        sa.UniqueConstraint("name", "content_sha256", name="uq_directions_name_content"),
    )
    op.create_index("ix_directions_name", "directions", ["name"])


def downgrade() -> None:
    op.drop_index("ix_directions_name", table_name="directions")
    op.drop_table("directions")
    op.drop_table("embeddings")
    op.drop_index("ix_banks_concept", table_name="banks")
    op.drop_table("banks")
    op.drop_table("encoders")
