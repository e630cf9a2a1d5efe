"""Token-aligned directions (issue #36, docs/algorithm.md §13): a bank's mean hidden state at its
concept word's own token positions, beside the positional mean [1, 77, D].

- ``embeddings.token_mean``: safetensors [D] float32 — in each bank sentence that contains the concept word, the
  mean hidden state over the word's tokens; then the mean over those sentences. NULL for embeddings made before
  this revision (or imported without one) and for banks none of whose sentences contain the word.
- ``embeddings.token_word``: the word whose tokens were averaged (the bank's concept, as tokenized).
- ``embeddings.token_count``: how many of the bank's sentences contain it.

A pair direction's Δ_token = scale · (target token_mean − source token_mean), materialized on read like Δ.
The three columns are filled once: an older embedding gains them when a build re-encodes its bank
(``store.models.FILL_ONCE_COLUMNS``); no other change is allowed.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-08
"""
import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("embeddings") as batch:
        batch.add_column(sa.Column("token_mean", sa.LargeBinary))
        batch.add_column(sa.Column("token_word", sa.String(200)))
        batch.add_column(sa.Column("token_count", sa.Integer))


def downgrade() -> None:
    with op.batch_alter_table("embeddings") as batch:
        batch.drop_column("token_count")
        batch.drop_column("token_word")
        batch.drop_column("token_mean")
