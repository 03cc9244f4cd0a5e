"""Detections refer to their lightcurve by its natural key; properties are kept per observatory.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28

The writer inserts a source's lightcurves and detections in one batch without reading ids back;
a composite foreign key on the lightcurve's unique key lets it, and keeps ``ON DELETE CASCADE``.
Each lane analyses its own lightcurves, so properties gain ``observatory`` in their unique key.
No data moves: no release ever wrote detections or properties with 0001.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEY = ["source_name", "observatory", "project", "cfg_hash", "series_number", "simulation_number"]
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.drop_index("ix_detections_lightcurve_id", table_name="detections")
    # batch mode: SQLite rebuilds the table to change its constraints
    with op.batch_alter_table("detections", recreate="auto") as batch:
        batch.drop_constraint("fk_detections_lightcurve_id_lightcurves", type_="foreignkey")
        batch.drop_column("lightcurve_id")
        batch.add_column(sa.Column("series_number", sa.Integer(), nullable=False))
        batch.add_column(sa.Column("simulation_number", sa.Integer(), server_default="0", nullable=False))
        batch.create_foreign_key("fk_detections_lightcurve_key", "lightcurves", KEY, KEY, ondelete="CASCADE")
    op.create_index("ix_detections_project_cfg_hash", "detections", ["project", "cfg_hash"])
    with op.batch_alter_table("properties", recreate="auto") as batch:
        batch.add_column(sa.Column("observatory", sa.String(), server_default="", nullable=False))
        batch.drop_constraint("uq_properties_key", type_="unique")
        batch.create_unique_constraint(
            "uq_properties_key", ["source_name", "observatory", "project", "cfg_hash"]
        )


def downgrade() -> None:
    with op.batch_alter_table("properties", recreate="auto") as batch:
        batch.drop_constraint("uq_properties_key", type_="unique")
        batch.drop_column("observatory")
        batch.create_unique_constraint("uq_properties_key", ["source_name", "project", "cfg_hash"])
    op.drop_index("ix_detections_project_cfg_hash", table_name="detections")
    with op.batch_alter_table("detections", recreate="auto") as batch:
        batch.drop_constraint("fk_detections_lightcurve_key", type_="foreignkey")
        batch.drop_column("simulation_number")
        batch.drop_column("series_number")
        batch.add_column(sa.Column("lightcurve_id", ID, nullable=True))
        batch.create_foreign_key(
            "fk_detections_lightcurve_id_lightcurves",
            "lightcurves",
            ["lightcurve_id"],
            ["id"],
            ondelete="CASCADE",
        )
    op.create_index("ix_detections_lightcurve_id", "detections", ["lightcurve_id"])
