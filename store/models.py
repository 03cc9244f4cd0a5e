"""The database tables, as SQLAlchemy 2 typed declarative models.

Tables: ``sources``, ``raw_photometry``, ``lightcurves``, ``properties``, ``detections`` and
``failures``. Rows refer to a source by its catalog ``name`` (``ON DELETE CASCADE``), so the writer
can insert a source and its products in one batch without reading ids back.

Conventions
-----------
- Every timestamp is timezone-aware UTC (:class:`UTCDateTime`; SQLite stores it naive, in UTC).
- JSON columns are ``JSON`` on SQLite and ``JSONB`` on PostgreSQL; the engine made by
  :func:`aretriever.store.db.create_engine` stores NaN and infinities in them as ``null``.
- Relationships are ``lazy="raise"``: an async session cannot load them implicitly, so touching an
  unloaded one fails loudly instead of issuing hidden IO. Load them in the query
  (``select(Source).options(selectinload(Source.lightcurves))``). Deleting a source relies on the
  database's ``ON DELETE CASCADE`` (``passive_deletes=True``).
- :class:`RawPhotometry` and :class:`Lightcurve` point to a table in an HDF5 file
  (``filename`` relative to DATA_ROOT, ``filekey``) and load it lazily through ``data``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, deferred, mapped_column, relationship

from aretriever.errors import StoreError
from aretriever.store.plotters import plotter

from .datafiles import DataFileMixin

if TYPE_CHECKING:
    from matplotlib.axes import Axes


class RawStatus(StrEnum):
    """What an archive gave for a source."""

    OK = "ok"  # rows on disk
    EMPTY = "empty"  # the archive answered with an empty table (a file with 0 rows)
    NO_DATA = "no_data"  # nothing asked or nothing to store (no file)


class Stage(StrEnum):
    """Where a source failed."""

    CATALOG = "catalog"
    SKIP = "skip"
    FETCH = "fetch"
    PARSE = "parse"
    REDUCE = "reduce"
    WRITE = "write"


class WorkState(StrEnum):
    """Where a ``work_items`` row is: pending -> claimed (under a lease) -> done."""

    PENDING = "pending"
    CLAIMED = "claimed"
    DONE = "done"


NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")
NullableJSONType = sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
# BIGINT ids on PostgreSQL; SQLite only autoincrements an INTEGER primary key
IdType = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def utcnow() -> datetime:
    """Now, timezone-aware UTC."""
    return datetime.now(UTC)


#: execution option carrying the time of a whole write batch: every default timestamp of the
#: batch and every ``updated_at`` an upsert stamps get this one value, so they never disagree
NOW_OPTION = "aretriever_now"


def _now(context: Any) -> datetime:
    now = context.execution_options.get(NOW_OPTION) if context is not None else None
    return now if isinstance(now, datetime) else utcnow()


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend (naive input is taken as UTC)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    """Declarative base of every aretriever table."""

    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


def _created() -> Mapped[datetime]:
    return mapped_column(UTCDateTime(), default=_now, server_default=sa.func.now())


def _updated() -> Mapped[datetime]:
    return mapped_column(UTCDateTime(), default=_now, onupdate=_now, server_default=sa.func.now())


def _source_fk() -> Mapped[str]:
    return mapped_column(sa.String, sa.ForeignKey("sources.name", ondelete="CASCADE"))


_CHILDREN: dict[str, Any] = {
    "lazy": "raise",
    "cascade": "all, delete-orphan",
    "passive_deletes": True,
}


class Source(Base):
    """A catalog source; ``name`` is the catalog name exactly as given."""

    __tablename__ = "sources"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    name: Mapped[str] = mapped_column(sa.String, unique=True)
    ra_deg: Mapped[float] = mapped_column(sa.Double)
    dec_deg: Mapped[float] = mapped_column(sa.Double)
    mag: Mapped[float | None] = mapped_column(sa.Double)
    pmra_mas_yr: Mapped[float | None] = mapped_column(sa.Double)
    pmdec_mas_yr: Mapped[float | None] = mapped_column(sa.Double)
    catalog: Mapped[str | None] = mapped_column(sa.String)
    cat_index: Mapped[int | None] = mapped_column(sa.BigInteger)
    extra: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()

    raw_photometry: Mapped[list[RawPhotometry]] = relationship(back_populates="source", **_CHILDREN)
    lightcurves: Mapped[list[Lightcurve]] = relationship(back_populates="source", **_CHILDREN)
    properties: Mapped[list[Properties]] = relationship(back_populates="source", **_CHILDREN)
    detections: Mapped[list[Detection]] = relationship(back_populates="source", **_CHILDREN)

    def __repr__(self) -> str:
        return f"Source({self.name!r}, ra={self.ra_deg}, dec={self.dec_deg})"


class RawPhotometry(DataFileMixin, Base):
    """What one observatory gave for one source (a file for "ok"/"empty", none for "no_data")."""

    __tablename__ = "raw_photometry"
    __table_args__ = (sa.UniqueConstraint("source_name", "observatory", name="uq_raw_photometry_key"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    source_name: Mapped[str] = _source_fk()
    observatory: Mapped[str] = mapped_column(sa.String)
    status: Mapped[str] = mapped_column(sa.String)
    url: Mapped[str | None] = mapped_column(sa.Text)
    meta: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    fetched_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=_now)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()

    source: Mapped[Source] = relationship(back_populates="raw_photometry", lazy="raise")
    lightcurves: Mapped[list[Lightcurve]] = relationship(back_populates="raw", **_CHILDREN)

    def plot(self, ax: Axes | None = None) -> Axes:
        """Plot the raw photometry: magnitude against MJD, one colour per filter (``filtercode``,
        ``filter`` or none); reads ``data`` if needed."""
        ax = plotter("raw")(self, self.data, ax=ax)
        if ax is None:
            raise StoreError(f"store: {self!r} has no rows to plot")
        return ax

    def __repr__(self) -> str:
        return f"RawPhotometry({self.source_name!r}, {self.observatory!r}, {self.status!r})"


class Lightcurve(DataFileMixin, Base):
    """One reduced lightcurve (a filter/season) of a source, in a project's product folder."""

    __tablename__ = "lightcurves"
    __table_args__ = (
        sa.UniqueConstraint(
            "source_name",
            "observatory",
            "project",
            "cfg_hash",
            "series_number",
            "simulation_number",
            name="uq_lightcurves_key",
        ),
        sa.Index("ix_lightcurves_project_cfg_hash", "project", "cfg_hash"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    source_name: Mapped[str] = _source_fk()
    observatory: Mapped[str] = mapped_column(sa.String)
    project: Mapped[str] = mapped_column(sa.String)
    cfg_hash: Mapped[str] = mapped_column(sa.String, default="", server_default="")
    series_number: Mapped[int] = mapped_column(sa.Integer)
    series_total: Mapped[int] = mapped_column(sa.Integer)
    simulation_number: Mapped[int] = mapped_column(sa.Integer, default=0, server_default="0")
    raw_id: Mapped[int | None] = mapped_column(
        IdType, sa.ForeignKey("raw_photometry.id", ondelete="CASCADE"), index=True
    )
    filter: Mapped[str | None] = mapped_column(sa.String)
    time_start_mjd: Mapped[float | None] = mapped_column(sa.Double)
    time_end_mjd: Mapped[float | None] = mapped_column(sa.Double)
    meta: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    mag_mean: Mapped[float | None] = mapped_column(sa.Double)
    mag_rms: Mapped[float | None] = mapped_column(sa.Double)
    flux_mean: Mapped[float | None] = mapped_column(sa.Double)
    flux_rms: Mapped[float | None] = mapped_column(sa.Double)
    flux_err_mean: Mapped[float | None] = mapped_column(sa.Double)
    robust_mean: Mapped[float | None] = mapped_column(sa.Double)
    robust_rms: Mapped[float | None] = mapped_column(sa.Double)
    num_good: Mapped[int | None] = mapped_column(sa.Integer)
    snr: Mapped[float | None] = mapped_column(sa.Double)
    dsnr_max: Mapped[float | None] = mapped_column(sa.Double)
    dsnr_min: Mapped[float | None] = mapped_column(sa.Double)
    dmag_max: Mapped[float | None] = mapped_column(sa.Double)
    dmag_min: Mapped[float | None] = mapped_column(sa.Double)
    exptime_s: Mapped[float | None] = mapped_column(sa.Double)
    frame_rate_hz: Mapped[float | None] = mapped_column(sa.Double)
    uniform_sampling: Mapped[bool | None] = mapped_column(sa.Boolean)
    created_at: Mapped[datetime] = _created()

    source: Mapped[Source] = relationship(back_populates="lightcurves", lazy="raise")
    raw: Mapped[RawPhotometry | None] = relationship(back_populates="lightcurves", lazy="raise")
    # read-only: detections are written as rows (their source_name is also the source's key)
    detections: Mapped[list[Detection]] = relationship(
        back_populates="lightcurve", lazy="raise", viewonly=True
    )

    def plot(
        self,
        ax: Axes | None = None,
        *,
        detections: Sequence[Mapping[str, Any] | Detection] = (),
        label: str | None = None,
    ) -> Axes:
        """Plot this lightcurve: magnitude vs MJD by filter, its robust band, ``detections`` marked.

        Reads ``data`` from disk if needed; drawn by the registered plotter (:mod:`.plotters`).
        """
        drawn: Axes = plotter("lightcurve")(self, self.data, detections=detections, ax=ax, label=label)
        return drawn

    def __repr__(self) -> str:
        return (
            f"Lightcurve({self.source_name!r}, {self.observatory!r}, {self.project!r}, "
            f"{self.series_number}/{self.series_total})"
        )


class Properties(Base):
    """Summary of a source's analysis by one observatory in one project version.

    Its presence marks the source as analysed: a later run with the same project and config hash
    does not analyse it again.
    """

    __tablename__ = "properties"
    __table_args__ = (
        sa.UniqueConstraint("source_name", "observatory", "project", "cfg_hash", name="uq_properties_key"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    source_name: Mapped[str] = _source_fk()
    # per lane: each observatory's lightcurves are analysed when that lane has them
    observatory: Mapped[str] = mapped_column(sa.String, default="", server_default="")
    project: Mapped[str] = mapped_column(sa.String)
    cfg_hash: Mapped[str] = mapped_column(sa.String, default="", server_default="")
    has_data: Mapped[bool] = mapped_column(sa.Boolean, default=False, server_default=sa.false())
    num_lightcurves: Mapped[int] = mapped_column(sa.Integer, default=0, server_default="0")
    num_points: Mapped[int] = mapped_column(sa.Integer, default=0, server_default="0")
    best_snr: Mapped[float | None] = mapped_column(sa.Double)
    variability: Mapped[float | None] = mapped_column(sa.Double)
    meta: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = _created()

    source: Mapped[Source] = relationship(back_populates="properties", lazy="raise")


LIGHTCURVE_KEY = ("source_name", "observatory", "project", "cfg_hash", "series_number", "simulation_number")


class Detection(Base):
    """An event found (or injected and recovered) in a lightcurve.

    It refers to its lightcurve by the lightcurve's natural key (a composite foreign key), so
    the writer inserts both in one batch without reading ids back, and replacing a lightcurve
    removes its detections (``ON DELETE CASCADE``). ``rows`` are positions in that lightcurve.
    """

    __tablename__ = "detections"
    __table_args__ = (
        sa.ForeignKeyConstraint(
            list(LIGHTCURVE_KEY),
            [f"lightcurves.{column}" for column in LIGHTCURVE_KEY],
            name="fk_detections_lightcurve_key",
            ondelete="CASCADE",
        ),
        sa.Index("ix_detections_project_cfg_hash", "project", "cfg_hash"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    source_name: Mapped[str] = mapped_column(
        sa.String, sa.ForeignKey("sources.name", ondelete="CASCADE"), index=True
    )
    series_number: Mapped[int] = mapped_column(sa.Integer)
    simulation_number: Mapped[int] = mapped_column(sa.Integer, default=0, server_default="0")
    observatory: Mapped[str] = mapped_column(sa.String)
    project: Mapped[str] = mapped_column(sa.String)
    cfg_hash: Mapped[str] = mapped_column(sa.String, default="", server_default="")
    time_start_mjd: Mapped[float | None] = mapped_column(sa.Double)
    time_end_mjd: Mapped[float | None] = mapped_column(sa.Double)
    time_peak_mjd: Mapped[float | None] = mapped_column(sa.Double)
    snr: Mapped[float | None] = mapped_column(sa.Double)
    peak_mag: Mapped[float | None] = mapped_column(sa.Double)
    dmag: Mapped[float | None] = mapped_column(sa.Double)
    quality: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    rows: Mapped[list[Any]] = mapped_column(JSONType, default=list)
    simulated: Mapped[bool] = mapped_column(sa.Boolean, default=False, server_default=sa.false())
    sim_pars: Mapped[dict[str, Any] | None] = mapped_column(NullableJSONType)
    created_at: Mapped[datetime] = _created()

    source: Mapped[Source] = relationship(back_populates="detections", lazy="raise")
    lightcurve: Mapped[Lightcurve] = relationship(back_populates="detections", lazy="raise", viewonly=True)


class Failure(Base):
    """A source that failed at some stage, with its reason (no foreign key: bad catalog rows)."""

    __tablename__ = "failures"
    __table_args__ = (sa.UniqueConstraint("source_name", "observatory", "stage", name="uq_failures_key"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    source_name: Mapped[str] = mapped_column(sa.String)
    observatory: Mapped[str] = mapped_column(sa.String, default="", server_default="")
    stage: Mapped[str] = mapped_column(sa.String)
    reason: Mapped[str] = mapped_column(sa.String)
    attempts: Mapped[int] = mapped_column(sa.Integer, default=1, server_default="1")
    last_error: Mapped[str] = mapped_column(sa.Text, default="", server_default="")
    first_at: Mapped[datetime] = _created()
    last_at: Mapped[datetime] = _updated()
    resolved: Mapped[bool] = mapped_column(sa.Boolean, default=False, server_default=sa.false())


#: the column stamped by every upsert (see :class:`aretriever.store.writers.Upsert`)
UPDATED_COLUMNS = {"updated_at", "last_at"}


class WorkItem(Base):
    """One catalog source in the work queue shared by several workers (PostgreSQL only).

    ``state`` goes ``pending`` -> ``claimed`` (by ``worker`` until ``lease_until``, renewed by
    its heartbeat) -> ``done`` (written after the source's rows). A claim whose lease lapsed is
    claimed again by another worker: its worker died.
    """

    __tablename__ = "work_items"
    __table_args__ = (
        sa.UniqueConstraint("catalog", "source_name", name="uq_work_items_key"),
        sa.Index("ix_work_items_state", "catalog", "state"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    catalog: Mapped[str] = mapped_column(sa.String)
    source_name: Mapped[str] = mapped_column(sa.String)
    target: Mapped[dict[str, Any]] = mapped_column(JSONType)
    state: Mapped[str] = mapped_column(
        sa.String, default=WorkState.PENDING.value, server_default=WorkState.PENDING.value
    )
    worker: Mapped[str | None] = mapped_column(sa.String)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    claims: Mapped[int] = mapped_column(sa.Integer, default=0, server_default="0")
    updated_at: Mapped[datetime] = _updated()


# The seed's queries filter on ``RawPhotometry.source_id == source.id``; rows here refer to their
# source by name, so ``source_id`` is the source's id looked up in SQL (deferred: loaded on access
# in synchronous sessions, usable in any WHERE clause).
RawPhotometry.source_id = deferred(
    sa.select(Source.id).where(Source.name == RawPhotometry.source_name).scalar_subquery()
)
Lightcurve.source_id = deferred(
    sa.select(Source.id).where(Source.name == Lightcurve.source_name).scalar_subquery()
)
