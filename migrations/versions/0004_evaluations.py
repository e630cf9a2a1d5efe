"""Evaluations: image-metric scores of direction versions (``p2pz eval``).

One row per direction version × metric × run. Rows are only ever added; a direction's latest scores are those of
its most recent run. Deleting a direction is not possible (directions are immutable), so the foreign key
restricts.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "evaluations",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("direction_id", sa.Integer, sa.ForeignKey("directions.id", ondelete="RESTRICT"), nullable=False),
        sa.Column("metric", sa.String(50), nullable=False),
        sa.Column("value", sa.Float, nullable=False),
        sa.Column("n_images", sa.Integer, nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("run_id", "direction_id", "metric", name="uq_evaluations_run_direction_metric"),
    )
    op.create_index("ix_evaluations_direction_metric", "evaluations", ["direction_id", "metric"])
    op.create_index("ix_evaluations_run_id", "evaluations", ["run_id"])


def downgrade() -> None:
    op.drop_index("ix_evaluations_run_id", table_name="evaluations")
    op.drop_index("ix_evaluations_direction_metric", table_name="evaluations")
    op.drop_table("evaluations")
