"""Students: real-time networks distilled from a direction version (``p2pz distill train``).

Versioned per direction version (1, 2, …), immutable: the generator's weights as safetensors bytes with their
sha256, its configuration, the dataset it was trained on (sha256), the training parameters and held-out metrics.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "students",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("direction_id", sa.Integer, sa.ForeignKey("directions.id", ondelete="RESTRICT"), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("weights", sa.LargeBinary, nullable=False),
        sa.Column("weights_sha256", sa.String(64), nullable=False),
        sa.Column("dataset_sha256", sa.String(64), nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("direction_id", "version", name="uq_students_direction_version"),
        sa.UniqueConstraint("direction_id", "weights_sha256", name="uq_students_direction_weights"),
    )


def downgrade() -> None:
    op.drop_table("students")
