"""Alembic environment and revisions of the p2pz registry schema (shipped inside the wheel)."""
