"""Every read (and the project's delete) the service runs, as named functions: SQL lives in store/.

Callers outside ``store/`` hand in a session factory (or a session they opened for several reads)
and get plain values or loaded models back; they never build a statement. The bulk writes go
through :class:`~aretriever.store.writers.RowWriter`; the work queue's statements are in
:mod:`aretriever.store.workqueue`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session as OrmSession
from sqlalchemy.orm import selectinload

from aretriever.errors import StoreError

from .models import Detection, Failure, Lightcurve, Properties, RawPhotometry, Source
from .rows import MADE_WITH

#: a session factory, as callers outside store/ name it (they need not import SQLAlchemy)
Sessions: TypeAlias = async_sessionmaker[AsyncSession]
ProductModel = type[Detection] | type[Properties] | type[Lightcurve]


@dataclass(frozen=True, slots=True)
class StoredRaw:
    """What the database says about a source's raw data."""

    status: str
    filename: str | None
    nbytes: int | None
    fetched_at: datetime | None = None


# ---------------------------------------------------------------------------------- skip check


async def stored_raw(session: AsyncSession, observatory: str, names: Sequence[str]) -> dict[str, StoredRaw]:
    """The raw rows of ``names`` from ``observatory``, by source name."""
    r = RawPhotometry
    query = sa.select(r.source_name, r.status, r.filename, r.nbytes, r.fetched_at).where(
        r.observatory == observatory, r.source_name.in_(list(names))
    )
    return {name: StoredRaw(s, fn, nb, at) for name, s, fn, nb, at in await session.execute(query)}


async def stored_raw_all_observatories(
    sessions: Sessions, names: Sequence[str]
) -> dict[tuple[str, str], StoredRaw]:
    """The raw rows of ``names`` from every observatory, by (source name, observatory)."""
    r = RawPhotometry
    query = sa.select(r.source_name, r.observatory, r.status, r.filename, r.nbytes, r.fetched_at).where(
        r.source_name.in_(list(names))
    )
    async with sessions() as session:
        result = await session.execute(query)
        return {(n, o): StoredRaw(s, f, b, t) for n, o, s, f, b, t in result}


async def stored_lightcurves(
    session: AsyncSession, observatory: str, names: Sequence[str], project: str, cfg_hash: str
) -> dict[str, tuple[str | None, int | None]]:
    """(filename, nbytes) of each source's real lightcurves for the project and config hash."""
    lc = Lightcurve
    query = sa.select(lc.source_name, lc.filename, lc.nbytes).where(
        lc.observatory == observatory,
        lc.project == project,
        lc.cfg_hash == cfg_hash,
        lc.simulation_number == 0,
        lc.source_name.in_(list(names)),
    )
    return {name: (fn, nb) for name, fn, nb in await session.execute(query)}


async def analysed(
    session: AsyncSession, observatory: str, names: Sequence[str], project: str, cfg_hash: str
) -> dict[str, int]:
    """How many lightcurves each analysed source's ``properties`` row counts."""
    p = Properties
    query = sa.select(p.source_name, p.num_lightcurves).where(
        p.observatory == observatory,
        p.project == project,
        p.cfg_hash == cfg_hash,
        p.source_name.in_(list(names)),
    )
    return {name: n for name, n in await session.execute(query)}


def _made_with(
    analysed: bool,
) -> tuple[type[Properties] | type[Lightcurve], sa.ColumnElement[str], list[sa.ColumnElement[bool]]]:
    """The table whose rows say what a source's products were made with, and their stamp.

    With analysis the ``properties`` row, written last, is the record; without, the real lightcurves.
    """
    if analysed:
        return Properties, Properties.meta[MADE_WITH].as_string(), []
    return Lightcurve, Lightcurve.meta[MADE_WITH].as_string(), [Lightcurve.simulation_number == 0]


async def made_with(
    session: AsyncSession,
    observatory: str,
    names: Sequence[str],
    project: str,
    cfg_hash: str,
    *,
    analysed: bool,
) -> dict[str, frozenset[str | None]]:
    """The products hashes each source's stored products were made with (None: not recorded)."""
    model, stamp, extra = _made_with(analysed)
    query = (
        sa.select(model.source_name, stamp)
        .where(
            model.observatory == observatory,
            *_mine(model, project, cfg_hash),
            *extra,
            model.source_name.in_(list(names)),
        )
        .distinct()
    )
    stamps: dict[str, set[str | None]] = {}
    for name, value in await session.execute(query):
        stamps.setdefault(name, set()).add(value)
    return {name: frozenset(values) for name, values in stamps.items()}


@dataclass(frozen=True, slots=True)
class Outdated:
    """How many sources have products made with another hash than ``current``, and those hashes."""

    sources: int
    hashes: list[str | None]


async def outdated(
    sessions: Sessions, observatory: str, project: str, cfg_hash: str, current: str, *, analysed: bool
) -> Outdated:
    """The sources whose products of ``observatory`` were made with another hash (or none recorded)."""
    model, stamp, extra = _made_with(analysed)
    where = [model.observatory == observatory, *_mine(model, project, cfg_hash), *extra]
    where.append(stamp.is_distinct_from(current))
    count = sa.select(sa.func.count(sa.distinct(model.source_name))).where(*where)
    # a few are enough to name in a log line; more than one only after a change mid-way through
    hashes = sa.select(stamp).where(*where).distinct().limit(3)
    async with sessions() as session:
        n = await session.scalar(count)
        return Outdated(int(n or 0), list(await session.scalars(hashes)) if n else [])


async def open_failures(
    session: AsyncSession, observatory: str, names: Sequence[str]
) -> tuple[dict[str, frozenset[str]], dict[str, datetime]]:
    """Unresolved failure stages per source, and each source's latest failure time."""
    query = sa.select(Failure.source_name, Failure.stage, Failure.last_at).where(
        Failure.observatory == observatory, Failure.resolved.is_(False), Failure.source_name.in_(list(names))
    )
    stages: dict[str, set[str]] = {}
    latest: dict[str, datetime] = {}
    for name, stage, last_at in await session.execute(query):
        stages.setdefault(name, set()).add(stage)
        latest[name] = max(latest.get(name, last_at), last_at)
    return {name: frozenset(s) for name, s in stages.items()}, latest


# ------------------------------------------------------------------------------------ projects


def _mine(model: ProductModel, project: str, cfg_hash: str) -> list[sa.ColumnElement[bool]]:
    return [model.project == project, model.cfg_hash == cfg_hash]


async def injections(sessions: Sessions, project: str, cfg_hash: str) -> list[dict[str, Any]]:
    """Every injected event recorded in the project's ``properties`` rows."""
    query = sa.select(Properties.meta).where(*_mine(Properties, project, cfg_hash))
    async with sessions() as session, session.begin():
        metas = list(await session.scalars(query))
    return [i for meta in metas for i in (meta or {}).get("injections", [])]


async def delete_products(sessions: Sessions, project: str, cfg_hash: str) -> dict[str, int]:
    """Delete the project's detections, properties and lightcurves rows; the count per table."""
    counts: dict[str, int] = {}
    async with sessions() as session, session.begin():
        # children first, one transaction: a failure leaves every table as it was
        for model in (Detection, Properties, Lightcurve):
            result = await session.execute(sa.delete(model).where(*_mine(model, project, cfg_hash)))
            counts[model.__tablename__] = int(getattr(result, "rowcount", 0) or 0)
    return counts


# -------------------------------------------------------------------------------- sources, plots

_ALL_PRODUCTS = (
    selectinload(Source.raw_photometry),
    selectinload(Source.lightcurves),
    selectinload(Source.detections),
    selectinload(Source.properties),
)


async def source_with_products(sessions: Sessions, name: str) -> Source | None:
    """The source's row with its raw data, lightcurves, detections and properties loaded."""
    query = sa.select(Source).where(Source.name == name).options(*_ALL_PRODUCTS)
    async with sessions() as session:
        return await session.scalar(query)


def sources_with_data(session: OrmSession, names: Sequence[str]) -> dict[str, Source]:
    """The Sources of ``names`` (synchronous session) with raw data and lightcurves loaded."""
    query = (
        sa.select(Source)
        .where(Source.name.in_(list(names)))
        .options(selectinload(Source.raw_photometry), selectinload(Source.lightcurves))
    )
    return {s.name: s for s in session.scalars(query)}


async def source(session: AsyncSession, name: str) -> Source | None:
    """The source's row alone (None: no source of that name)."""
    return await session.scalar(sa.select(Source).where(Source.name == name))


async def real_lightcurves(
    session: AsyncSession, name: str, project: str | None, observatory: str | None
) -> list[Lightcurve]:
    """The source's real lightcurves (``simulation_number`` 0), optionally of one project/observatory."""
    query = sa.select(Lightcurve).where(Lightcurve.source_name == name, Lightcurve.simulation_number == 0)
    if project is not None:
        query = query.where(Lightcurve.project == project)
    if observatory is not None:
        query = query.where(Lightcurve.observatory == observatory)
    query = query.order_by(Lightcurve.observatory, Lightcurve.time_start_mjd, Lightcurve.series_number)
    return list(await session.scalars(query))


async def detections_of(session: AsyncSession, lcs: Sequence[Lightcurve]) -> list[Detection]:
    """The detections (any simulation number) of the product set and observatories of ``lcs``."""
    first = lcs[0]
    query = (
        sa.select(Detection)
        .where(
            Detection.source_name == first.source_name,
            Detection.project == first.project,
            Detection.cfg_hash == first.cfg_hash,
            Detection.observatory.in_(sorted({lc.observatory for lc in lcs})),
        )
        .order_by(Detection.observatory, Detection.series_number, Detection.time_peak_mjd)
    )
    return list(await session.scalars(query))


async def lightcurve_projects(session: AsyncSession, name: str) -> list[str]:
    """The projects holding lightcurves of the source, sorted."""
    query = sa.select(Lightcurve.project).where(Lightcurve.source_name == name).distinct()
    return sorted(await session.scalars(query))


async def source_exists(session: AsyncSession, name: str) -> bool:
    return await session.scalar(sa.select(Source.name).where(Source.name == name)) is not None


# -------------------------------------------------------------------------------------- health


async def check_database(sessions: Sessions) -> None:
    """Run ``SELECT 1`` on a pooled session (the health check).

    Raises
    ------
    StoreError
        The database did not answer; the message carries the driver's reason.
    """
    try:
        async with sessions() as session:
            await session.execute(sa.text("SELECT 1"))
    except (sa.exc.SQLAlchemyError, OSError) as exc:
        raise StoreError(f"store: the database does not answer: {exc}") from exc
