"""Add the meta table with the registry's generation counter.

The generation grows with every change that affects search (a direction added, deprecated, imported),
so a FAISS index file can tell whether it is stale. Existing databases start at the number of directions
they hold, so any index built before this revision is seen as stale and rebuilt.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    meta = op.create_table(
        "meta",
        sa.Column("key", sa.String(50), primary_key=True),
        sa.Column("value", sa.Integer, nullable=False),
    )
    count = op.get_bind().execute(sa.text("SELECT COUNT(*) FROM directions")).scalar_one()
    op.bulk_insert(meta, [{"key": "generation", "value": int(count) + 1}])


def downgrade() -> None:
    op.drop_table("meta")
