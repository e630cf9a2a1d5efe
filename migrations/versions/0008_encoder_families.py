"""Encoder families: SDXL's pair of text encoders as one encoder record (issue #22, algorithm §12).

- ``encoders.family``: ``sd`` (one CLIP text encoder: SD 1.x / 2.x, or a plain transformers encoder) or ``sdxl``
  (CLIP ViT-L ``text_encoder`` + OpenCLIP bigG ``text_encoder_2``). Existing rows are ``sd``.
- ``encoders.parts``: for a pair, each part's facts ([{"subfolder", "fingerprint", "architecture", "hidden_size"}]);
  the row's own ``fingerprint`` is the combined one. NULL for a single encoder.
- ``encoders.key_size``: the width of the search key when it is not ``hidden_size`` — for SDXL the pooled
  embedding of ``text_encoder_2`` (1280), which is also Δ_pooled's width. NULL: the key is [hidden_size].

Downgrading a registry that holds SDXL encoders is refused (their directions would be unreadable at 0007);
export them first (``p2pz export``).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""
import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("encoders") as batch:
        batch.add_column(sa.Column("family", sa.String(20), nullable=False, server_default="sd"))
        batch.add_column(sa.Column("parts", sa.JSON))
        batch.add_column(sa.Column("key_size", sa.Integer))


def downgrade() -> None:
    count = op.get_bind().execute(sa.text("SELECT COUNT(*) FROM encoders WHERE family <> 'sd'")).scalar()
    if count:
        raise RuntimeError(f"this registry holds {count} SDXL encoder(s): revision 0007 cannot represent them; "
                           "export their directions (p2pz export) and remove them before downgrading")
    with op.batch_alter_table("encoders") as batch:
        batch.drop_column("key_size")
        batch.drop_column("parts")
        batch.drop_column("family")
