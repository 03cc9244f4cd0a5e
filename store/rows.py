"""One builder per row kind: the rows (and the write operation) each table gets.

The pipeline, populate, the observatory objects and the bench build their rows here, so a table's
columns, its conflict key and what an upsert overwrites are said once. Builders are pure: they
take plain values (or anything shaped like a catalog target) and return dicts or
:class:`~aretriever.store.ops.Upsert`/:class:`~aretriever.store.ops.Replace` operations for the
row writer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from . import paths
from .models import (
    Detection,
    Failure,
    Lightcurve,
    Properties,
    RawPhotometry,
    RawStatus,
    Source,
    Stage,
    WorkItem,
    WorkState,
)
from .ops import Replace, Upsert

Row = dict[str, Any]

#: what a catalog upsert of ``sources`` overwrites (everything but the key)
SOURCE_COLUMNS = ("ra_deg", "dec_deg", "mag", "pmra_mas_yr", "pmdec_mas_yr", "catalog", "cat_index")
RAW_KEY = ("source_name", "observatory")
FAILURE_KEY = ("source_name", "observatory", "stage")
PRODUCT_KEY = ("source_name", "observatory", "project", "cfg_hash")
LIGHTCURVE_KEY = (*PRODUCT_KEY, "series_number", "simulation_number")
WORK_KEY = ("catalog", "source_name")


class SourceLike(Protocol):
    """What a source row is made of (a catalog :class:`~aretriever.adapters.base.Target`)."""

    @property
    def name(self) -> str: ...
    @property
    def ra_deg(self) -> float: ...
    @property
    def dec_deg(self) -> float: ...
    @property
    def mag(self) -> float | None: ...
    @property
    def pmra_mas_yr(self) -> float: ...
    @property
    def pmdec_mas_yr(self) -> float: ...
    @property
    def index(self) -> int | None: ...


def _now() -> datetime:
    return datetime.now(UTC)


# ------------------------------------------------------------------------------------- sources


def source_row(target: SourceLike, catalog: str) -> Row:
    """The ``sources`` row of a catalog target."""
    return {
        "name": target.name,
        "ra_deg": target.ra_deg,
        "dec_deg": target.dec_deg,
        "mag": target.mag,
        "pmra_mas_yr": target.pmra_mas_yr,
        "pmdec_mas_yr": target.pmdec_mas_yr,
        "catalog": catalog,
        "cat_index": target.index,
    }


def bare_source_row(name: str, ra_deg: float, dec_deg: float, mag: float | None) -> Row:
    """A ``sources`` row known only from a file (no catalog, no proper motion)."""
    return {
        "name": name,
        "ra_deg": ra_deg,
        "dec_deg": dec_deg,
        "mag": mag,
        "pmra_mas_yr": None,
        "pmdec_mas_yr": None,
        "catalog": None,
        "cat_index": None,
    }


def upsert_sources(rows: Sequence[Row], *, overwrite: bool = True) -> Upsert:
    """Catalog values overwrite (``overwrite``); values read from a file only fill a missing row."""
    return Upsert(Source, list(rows), ("name",), SOURCE_COLUMNS if overwrite else ())


# ---------------------------------------------------------------------------------------- raw


def raw_status(stored: bool, num_rows: int) -> RawStatus:
    """``no_data`` without a file, ``empty`` for a file with no rows, else ``ok``."""
    if not stored:
        return RawStatus.NO_DATA
    return RawStatus.OK if num_rows else RawStatus.EMPTY


def raw_row(
    name: str,
    observatory: str,
    relpath: str | None,
    *,
    num_rows: int = 0,
    nbytes: int = 0,
    url: str | None = None,
    meta: Mapping[str, Any] | None = None,
    fetched_at: datetime | None = None,
    filekey: str | None = None,
) -> Row:
    """The ``raw_photometry`` row; ``relpath`` None: nothing stored (``no_data``)."""
    return {
        "source_name": name,
        "observatory": observatory,
        # plain str: the bulk writer hands values to the driver as they are
        "status": raw_status(relpath is not None, num_rows).value,
        "filename": relpath,
        "filekey": (filekey or paths.raw_key(name)) if relpath else None,
        "num_rows": num_rows,
        "nbytes": nbytes,
        "url": url,
        "meta": dict(meta or {}),
        "fetched_at": fetched_at or _now(),
    }


def upsert_raw(rows: Sequence[Row]) -> Upsert:
    return Upsert(RawPhotometry, list(rows), RAW_KEY)


# -------------------------------------------------------------------------------- lightcurves


#: ``meta`` key of lightcurve and properties rows: the products hash they were made with, so an
#: unversioned project (``cfg_hash`` '') knows, source by source, what to re-analyse
MADE_WITH: Final = "made_with"


def _stamped(meta: Mapping[str, Any] | None, made_with: str | None) -> dict[str, Any]:
    return {**(meta or {}), MADE_WITH: made_with} if made_with else dict(meta or {})


def product_key(name: str, observatory: str, project: str, cfg_hash: str) -> Row:
    """What identifies a source's products of one project version in one observatory."""
    return {"source_name": name, "observatory": observatory, "project": project, "cfg_hash": cfg_hash}


def lightcurve_rows(
    key: Mapping[str, Any], relpath: str, nbytes: int, tables: Sequence[Any], made_with: str | None = None
) -> list[Row]:
    """One ``lightcurves`` row per reduced table (``num_rows``, ``filter``, ``meta``, ``stats``, times)."""
    total = len(tables)
    return [
        {
            **key,
            "series_number": number,
            "series_total": total,
            "simulation_number": 0,
            "filename": relpath,
            "filekey": paths.reduction_key(str(key["source_name"]), number, total),
            "num_rows": lc.num_rows,
            "nbytes": nbytes,
            "filter": lc.filter,
            "time_start_mjd": lc.time_start_mjd,
            "time_end_mjd": lc.time_end_mjd,
            "meta": _stamped(lc.meta, made_with),
            **lc.stats,
        }
        for number, lc in enumerate(tables, start=1)
    ]


def replace_lightcurves(key: Mapping[str, Any], rows: Sequence[Row]) -> Replace:
    """Replace the real lightcurves of ``key`` (their detections go too: ON DELETE CASCADE)."""
    return Replace(Lightcurve, {**key, "simulation_number": 0}, list(rows))


def upsert_lightcurves(rows: Sequence[Row]) -> Upsert:
    return Upsert(Lightcurve, list(rows), LIGHTCURVE_KEY)


# -------------------------------------------------------------------------- detections, properties


def detection_rows(
    key: Mapping[str, Any], events_per_series: Iterable[Iterable[Mapping[str, Any]]]
) -> list[Row]:
    """One ``detections`` row per event, numbered by the lightcurve (series) it was found in."""
    return [
        {**key, "series_number": number, "simulation_number": 0, **event}
        for number, events in enumerate(events_per_series, start=1)
        for event in events
    ]


def replace_detections(key: Mapping[str, Any], rows: Sequence[Row]) -> Replace:
    return Replace(Detection, dict(key), list(rows))


def properties_row(
    key: Mapping[str, Any], properties: Mapping[str, Any] | None, made_with: str | None = None
) -> Row:
    """The ``properties`` row that marks a source analysed for a project version."""
    row = {**key, **(properties or {})}
    return {**row, "meta": _stamped(row.get("meta"), made_with)} if made_with else row


def upsert_properties(
    key: Mapping[str, Any], properties: Mapping[str, Any] | None, made_with: str | None = None
) -> Upsert:
    return Upsert(Properties, [properties_row(key, properties, made_with)], tuple(key))


# ------------------------------------------------------------------------------------ failures


def failure_row(
    name: str, observatory: str, stage: str, reason: str, *, attempts: int = 1, last_error: str = ""
) -> Row:
    """An open ``failures`` row (first and last seen now); ``stage`` is a :class:`Stage`."""
    now = _now()
    return {
        "source_name": name,
        "observatory": observatory,
        "stage": str(stage),
        "reason": reason,
        "attempts": attempts,
        "last_error": last_error,
        "first_at": now,
        "last_at": now,
        "resolved": False,
    }


def record_failure(row: Row) -> Upsert:
    """A failure again overwrites the reason, attempts, error and time (``first_at`` stays)."""
    return Upsert(Failure, [row], FAILURE_KEY, ("reason", "attempts", "last_error", "last_at", "resolved"))


def resolve_failures(name: str, observatory: str, stages: Iterable[str]) -> Upsert:
    """Mark these failure stages of a source resolved (it went through)."""
    rows = [
        {**failure_row(name, observatory, stage, "resolved", attempts=0), "resolved": True}
        for stage in sorted(stages)
    ]
    return Upsert(Failure, rows, FAILURE_KEY, ("resolved", "last_at"))


def catalog_failure(name: str, reason: str, error: str) -> Upsert:
    """A bad catalog row (no observatory): its timestamps are the table's defaults."""
    row = {
        "source_name": name,
        "observatory": "",
        "stage": Stage.CATALOG.value,
        "reason": reason,
        "attempts": 1,
        "last_error": error,
        "resolved": False,
    }
    return Upsert(Failure, [row], FAILURE_KEY, ("reason", "last_error", "resolved"))


# ---------------------------------------------------------------------------------- work queue


def work_done(catalog: str, name: str, target: Mapping[str, Any], worker: str) -> Upsert:
    """Mark a work item done (through the row writer, after the source's own rows)."""
    row = {
        "catalog": catalog,
        "source_name": name,
        "target": dict(target),
        "state": WorkState.DONE.value,
        "worker": worker,
        "lease_until": None,
    }
    return Upsert(WorkItem, [row], WORK_KEY, ("state", "worker", "lease_until"))
