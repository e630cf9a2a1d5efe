"""Identity across registries (issue #23, docs/architecture.md "Sharing"): where a direction came from.

- ``directions.origin``: JSON, NULL for a direction made here. For one that arrived by ``p2pz pull`` or
  ``p2pz import``: ``{"source": "hf://owner/repo" | "https://host" | "file.p2pz", "revision": commit or null,
  "version": its version there, "upstream": the origin it carried there (or null)}`` — no credentials, ever.
- an index on ``directions.content_sha256``: a direction is addressed by its content hash across registries
  (``sha256:<hex>`` refs), and that lookup must not scan the table.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""
import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("directions") as batch:
        batch.add_column(sa.Column("origin", sa.JSON))
    op.create_index("ix_directions_content_sha256", "directions", ["content_sha256"])


def downgrade() -> None:
    op.drop_index("ix_directions_content_sha256", table_name="directions")
    with op.batch_alter_table("directions") as batch:
        batch.drop_column("origin")
