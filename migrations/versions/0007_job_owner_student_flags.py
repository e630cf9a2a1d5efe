"""Job ownership and a reversible flag on students.

- ``jobs.owner`` and ``jobs.heartbeat_at``: the server running a job writes its id and refreshes the heartbeat
  while the job runs, so a second server started on the same registry fails only jobs whose owner has gone
  quiet (a heartbeat older than the lease), never a live server's work (issue #19, item 3).
- ``students.deprecated``: a student can be withdrawn and brought back (``p2pz student deprecate`` /
  ``undeprecate``); the record itself stays immutable, as directions' ``deprecated`` flag does.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""
import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("owner", sa.String(64)))
        batch.add_column(sa.Column("heartbeat_at", sa.DateTime))
    with op.batch_alter_table("students") as batch:
        batch.add_column(sa.Column("deprecated", sa.Boolean, nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("students") as batch:
        batch.drop_column("deprecated")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("heartbeat_at")
        batch.drop_column("owner")
