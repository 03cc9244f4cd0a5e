"""Initial schema: sources, raw_photometry, lightcurves, properties, detections, failures.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

Written by hand from ``alembic autogenerate`` output; self-contained on purpose (a migration is a
snapshot and must not change when the models do).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
NULLABLE_JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
TIMESTAMP = sa.DateTime(timezone=True)


def _id(table: str) -> list[sa.SchemaItem]:
    return [sa.Column("id", ID, nullable=False), sa.PrimaryKeyConstraint("id", name=f"pk_{table}")]


def _timestamp(name: str, *, server_default: bool = True) -> sa.Column[object]:
    default = sa.func.now() if server_default else None
    return sa.Column(name, TIMESTAMP, server_default=default, nullable=False)


def _source_name(table: str) -> list[sa.SchemaItem]:
    return [
        sa.Column("source_name", sa.String(), nullable=False),
        sa.ForeignKeyConstraint(
            ["source_name"],
            ["sources.name"],
            name=f"fk_{table}_source_name_sources",
            ondelete="CASCADE",
        ),
    ]


def _file_columns() -> list[sa.SchemaItem]:
    return [
        sa.Column("filename", sa.String(), nullable=True),
        sa.Column("filekey", sa.String(), nullable=True),
        sa.Column("num_rows", sa.Integer(), nullable=False),
        sa.Column("nbytes", sa.BigInteger(), nullable=False),
    ]


def _doubles(*names: str) -> list[sa.SchemaItem]:
    return [sa.Column(name, sa.Double(), nullable=True) for name in names]


def _create_sources() -> None:
    op.create_table(
        "sources",
        *_id("sources"),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("ra_deg", sa.Double(), nullable=False),
        sa.Column("dec_deg", sa.Double(), nullable=False),
        *_doubles("mag", "pmra_mas_yr", "pmdec_mas_yr"),
        sa.Column("catalog", sa.String(), nullable=True),
        sa.Column("cat_index", sa.BigInteger(), nullable=True),
        sa.Column("extra", JSON, nullable=False),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.UniqueConstraint("name", name="uq_sources_name"),
    )


def _create_raw_photometry() -> None:
    op.create_table(
        "raw_photometry",
        *_id("raw_photometry"),
        *_source_name("raw_photometry"),
        sa.Column("observatory", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        *_file_columns(),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("meta", JSON, nullable=False),
        _timestamp("fetched_at", server_default=False),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.UniqueConstraint("source_name", "observatory", name="uq_raw_photometry_key"),
    )


def _create_lightcurves() -> None:
    op.create_table(
        "lightcurves",
        *_id("lightcurves"),
        *_source_name("lightcurves"),
        sa.Column("observatory", sa.String(), nullable=False),
        sa.Column("project", sa.String(), nullable=False),
        sa.Column("cfg_hash", sa.String(), server_default="", nullable=False),
        sa.Column("series_number", sa.Integer(), nullable=False),
        sa.Column("series_total", sa.Integer(), nullable=False),
        sa.Column("simulation_number", sa.Integer(), server_default="0", nullable=False),
        sa.Column("raw_id", ID, nullable=True),
        *_file_columns(),
        sa.Column("filter", sa.String(), nullable=True),
        *_doubles("time_start_mjd", "time_end_mjd"),
        sa.Column("meta", JSON, nullable=False),
        *_doubles("mag_mean", "mag_rms", "flux_mean", "flux_rms", "flux_err_mean"),
        *_doubles("robust_mean", "robust_rms"),
        sa.Column("num_good", sa.Integer(), nullable=True),
        *_doubles("snr", "dsnr_max", "dsnr_min", "dmag_max", "dmag_min"),
        *_doubles("exptime_s", "frame_rate_hz"),
        sa.Column("uniform_sampling", sa.Boolean(), nullable=True),
        _timestamp("created_at"),
        sa.ForeignKeyConstraint(
            ["raw_id"],
            ["raw_photometry.id"],
            name="fk_lightcurves_raw_id_raw_photometry",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint(
            "source_name",
            "observatory",
            "project",
            "cfg_hash",
            "series_number",
            "simulation_number",
            name="uq_lightcurves_key",
        ),
    )
    op.create_index("ix_lightcurves_project_cfg_hash", "lightcurves", ["project", "cfg_hash"])
    op.create_index("ix_lightcurves_raw_id", "lightcurves", ["raw_id"])


def _create_properties() -> None:
    op.create_table(
        "properties",
        *_id("properties"),
        *_source_name("properties"),
        sa.Column("project", sa.String(), nullable=False),
        sa.Column("cfg_hash", sa.String(), server_default="", nullable=False),
        sa.Column("has_data", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("num_lightcurves", sa.Integer(), server_default="0", nullable=False),
        sa.Column("num_points", sa.Integer(), server_default="0", nullable=False),
        *_doubles("best_snr", "variability"),
        sa.Column("meta", JSON, nullable=False),
        _timestamp("created_at"),
        sa.UniqueConstraint("source_name", "project", "cfg_hash", name="uq_properties_key"),
    )


def _create_detections() -> None:
    op.create_table(
        "detections",
        *_id("detections"),
        *_source_name("detections"),
        sa.Column("lightcurve_id", ID, nullable=True),
        sa.Column("observatory", sa.String(), nullable=False),
        sa.Column("project", sa.String(), nullable=False),
        sa.Column("cfg_hash", sa.String(), server_default="", nullable=False),
        *_doubles("time_start_mjd", "time_end_mjd", "time_peak_mjd"),
        *_doubles("snr", "peak_mag", "dmag"),
        sa.Column("quality", JSON, nullable=False),
        sa.Column("rows", JSON, nullable=False),
        sa.Column("simulated", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("sim_pars", NULLABLE_JSON, nullable=True),
        _timestamp("created_at"),
        sa.ForeignKeyConstraint(
            ["lightcurve_id"],
            ["lightcurves.id"],
            name="fk_detections_lightcurve_id_lightcurves",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_detections_lightcurve_id", "detections", ["lightcurve_id"])
    op.create_index("ix_detections_source_name", "detections", ["source_name"])


def _create_failures() -> None:
    op.create_table(
        "failures",
        *_id("failures"),
        sa.Column("source_name", sa.String(), nullable=False),
        sa.Column("observatory", sa.String(), server_default="", nullable=False),
        sa.Column("stage", sa.String(), nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="1", nullable=False),
        sa.Column("last_error", sa.Text(), server_default="", nullable=False),
        _timestamp("first_at"),
        _timestamp("last_at"),
        sa.Column("resolved", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.UniqueConstraint("source_name", "observatory", "stage", name="uq_failures_key"),
    )


def upgrade() -> None:
    """Create every table."""
    _create_sources()
    _create_raw_photometry()
    _create_lightcurves()
    _create_properties()
    _create_detections()
    _create_failures()


def downgrade() -> None:
    """Drop every table (children first)."""
    for table in ("failures", "detections", "properties", "lightcurves", "raw_photometry"):
        op.drop_table(table)
    op.drop_table("sources")
