"""Move direction search keys to their own table.

A key is a 3 KB blob (D = 768); kept inline it made every listing read ~30 MB for 10k directions. The listing
columns now stay small, and the key is read only when a direction is searched with or exported.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "direction_keys",
        sa.Column("direction_id", sa.Integer, sa.ForeignKey("directions.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("key", sa.LargeBinary, nullable=False),
    )
    op.execute("INSERT INTO direction_keys (direction_id, key) SELECT id, key FROM directions")
    with op.batch_alter_table("directions") as batch:
        batch.drop_column("key")


def downgrade() -> None:
    with op.batch_alter_table("directions") as batch:
        batch.add_column(sa.Column("key", sa.LargeBinary, nullable=True))
    op.execute("UPDATE directions SET key = (SELECT k.key FROM direction_keys k WHERE k.direction_id = directions.id)")
    with op.batch_alter_table("directions") as batch:
        batch.alter_column("key", existing_type=sa.LargeBinary, nullable=False)
    op.drop_table("direction_keys")
