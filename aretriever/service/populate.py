"""Rebuild ``sources`` and ``raw_photometry`` rows from raw files (``python -m aretriever.populate``).

After the database is lost (or a new one is pointed at an old DATA_ROOT), every raw file
``DATA_ROOT/<OBS>/RA<nnn>/<OBS>_photometry_<name>.h5`` still says what it holds: the attributes
written beside each table (:func:`aretriever.engine.pipeline.raw_attrs`) name the source, its position,
the URL and the time of the fetch. ``populate`` walks those files and writes one ``sources`` row and
one ``raw_photometry`` row per table, so the next backfill makes no archive request for them.
Lightcurve rows are not rebuilt: the next backfill reduces the raw files on disk again.

Only raw files are read: observatory folders named after a registered adapter, their ``RA<nnn>``
folders, ``<OBS>_photometry_*.h5`` files. Hidden temporary files of a write in progress,
``DATA_ROOT/.scratch`` and project folders (reduced products) are never opened. A file that cannot
be read is logged with its path and listed in the summary; the walk goes on.

When a row already exists, the file is the truth, but a good row is never made worse:

- ``sources``: a name the catalog has gets the catalog's values (as a fetch would write them); a
  name it lacks (or every name, without a catalog) gets a row from the file's attributes
  (``catalog`` NULL, no proper motion) only if it has none, so catalog values are never lost.
- ``raw_photometry``: a stored row is kept when its own data are intact (its file on disk with the
  recorded size, or ``no_data`` without a file) and it was fetched no earlier than this file; this
  covers a row that already points to this very file. Otherwise the file's row replaces it. Of two
  files for one source and observatory, the later fetch wins.

``no_data`` rows have no file and cannot be rebuilt: the next backfill asks the archive again for
those sources. Do not run ``populate`` while a backfill writes to the same DATA_ROOT.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio

from aretriever import adapters
from aretriever.catalogs.core import SearchableCatalog
from aretriever.errors import ConfigError, StoreError
from aretriever.settings import Config
from aretriever.store import paths, queries, rows
from aretriever.store.db import create_engine, session_factory
from aretriever.store.locations import data_root_of, db_url_of
from aretriever.store.models import RawStatus
from aretriever.store.queries import Sessions
from aretriever.store.queries import StoredRaw as StoredRaw  # its home before store/queries
from aretriever.store.schema import migrate
from aretriever.store.writers import RowWriter

from .populate_files import (
    Batch,
    CatalogMatcher,
    Found,
    Row,
    observatory_folders,
    ra_folders,
    raw_files,
    read_batch,
)

log = logging.getLogger("aretriever.cli.populate")

# files read per worker-thread call and per database round: big enough that the thread hop and
# the query for stored rows are paid rarely, small enough that a batch's rows commit often
FILES_PER_BATCH = 256


@dataclass(slots=True)
class PopulateSummary:
    """What :func:`populate` found and wrote.

    ``files`` and ``keys`` count the raw files and tables read; ``sources`` the distinct source
    names found; ``raw_rows`` the ``raw_photometry`` rows written, ``kept`` those left as stored
    (already as good as the file's); ``unreadable`` lists (path relative to DATA_ROOT, reason);
    ``not_in_catalog`` counts the names the catalog did not have.
    """

    files: int = 0
    keys: int = 0
    sources: int = 0
    raw_rows: int = 0
    kept: int = 0
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    not_in_catalog: int = 0
    failed_row_writes: int = 0
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        """True when every file was read and every row written."""
        return not self.unreadable and not self.failed_row_writes

    def as_dict(self) -> dict[str, Any]:
        """A JSON-able form (``--summary-json``)."""
        return {**asdict(self), "elapsed_s": round(self.elapsed_s, 3), "ok": self.ok}

    def format(self) -> str:
        """A plain-text report for the terminal."""
        lines = [
            f"populate: {self.files} raw files, {self.keys} tables, {self.sources} sources",
            f"  raw_photometry rows written: {self.raw_rows}, kept as stored: {self.kept}",
        ]
        if self.not_in_catalog:
            lines.append(f"  names not in the catalog (named from the files): {self.not_in_catalog}")
        if self.unreadable:
            lines.append(f"  unreadable: {len(self.unreadable)}")
            lines.extend(f"    {path}: {reason}" for path, reason in self.unreadable)
        if self.failed_row_writes:
            lines.append(f"  database writes that failed (see the log): {self.failed_row_writes}")
        lines.append(f"  in {self.elapsed_s:.1f} s")
        return "\n".join(lines)


# -------------------------------------------------------------------------- rows already stored


def stored_is_intact(root: Path, stored: StoredRaw) -> bool:
    """True if a stored row's own data hold: its file with the recorded size, or no_data (blocking)."""
    if stored.filename is None:
        return stored.status == RawStatus.NO_DATA
    try:
        size = paths.resolve(root, stored.filename).stat().st_size
    except (OSError, StoreError):
        return False
    return stored.nbytes is None or size == stored.nbytes


def keep_stored(stored: StoredRaw | None, raw: Row, intact: bool) -> bool:
    """Whether a stored row is at least as good as the row made from a file (then it is kept)."""
    if stored is None or not intact:
        return False
    if stored.filename == raw["filename"] and stored.nbytes == raw["nbytes"]:
        return True  # already points to this very file
    fetched_at: datetime = raw["fetched_at"]
    return stored.fetched_at is not None and stored.fetched_at >= fetched_at


def _latest(found: Sequence[Found]) -> list[Found]:
    """One entry per (source, observatory): the latest fetch (two files can hold the same source)."""
    best: dict[tuple[str, str], Found] = {}
    for item in found:
        other = best.get(item.key)
        if other is None or item.raw["fetched_at"] > other.raw["fetched_at"]:
            best[item.key] = item
    return list(best.values())


@dataclass(slots=True)
class _Run:
    root: Path
    sessions: Sessions
    rows: RowWriter
    summary: PopulateSummary
    names: set[str] = field(default_factory=set)
    missing: set[str] = field(default_factory=set)

    async def store(self, batch: Batch, with_catalog: bool) -> None:
        s = self.summary
        s.files, s.keys = s.files + batch.files, s.keys + batch.keys
        s.unreadable.extend(batch.problems)
        found = _latest(batch.found)
        if not found:
            return
        self.names.update(f.key[0] for f in found)
        if with_catalog:
            self.missing.update(f.key[0] for f in found if not f.matched)
        stored = await queries.stored_raw_all_observatories(self.sessions, sorted({f.key[0] for f in found}))
        # the query is by name (one round trip for all observatories): keep the pairs found here
        stored = {key: stored[key] for key in {f.key for f in found} & stored.keys()}
        # a stat per stored file: off the event loop, as the walk's own file IO
        intact = await anyio.to_thread.run_sync(self._intact, stored)
        write = [f for f in found if not keep_stored(stored.get(f.key), f.raw, f.key in intact)]
        s.kept += len(found) - len(write)
        await self._put(found, write)

    def _intact(self, stored: dict[tuple[str, str], StoredRaw]) -> set[tuple[str, str]]:
        return {key for key, row in stored.items() if stored_is_intact(self.root, row)}

    async def _put(self, found: Sequence[Found], write: Sequence[Found]) -> None:
        matched = {f.source["name"]: f.source for f in found if f.matched}
        named = {f.source["name"]: f.source for f in found if not f.matched}
        if matched:  # the catalog's values, as a fetch writes them
            await self.rows.put(rows.upsert_sources(list(matched.values())))
        if named:  # from the file: only where there is no row (never over catalog values)
            await self.rows.put(rows.upsert_sources(list(named.values()), overwrite=False))
        if write:
            await self.rows.put(rows.upsert_raw([f.raw for f in write]))
            self.summary.raw_rows += len(write)
        # the next batch reads stored rows: these must be committed by then
        await self.rows.flush()


# -------------------------------------------------------------------------- the walk


def _lanes(observatories: Sequence[str] | None) -> list[str]:
    known = adapters.available()
    lanes = [o.strip().lower() for o in observatories] if observatories else known
    unknown = sorted(set(lanes) - set(known))
    if unknown:
        raise ConfigError(f"config: unknown observatory {unknown[0]!r}; available: {', '.join(known)}")
    return lanes


async def _batches(root: Path, lanes: Sequence[str], matcher: CatalogMatcher | None) -> AsyncGenerator[Batch]:
    for lane, folder in await anyio.to_thread.run_sync(observatory_folders, root, lanes):
        for ra_dir in await anyio.to_thread.run_sync(ra_folders, folder):
            files = await anyio.to_thread.run_sync(raw_files, ra_dir)
            log.info("populate: %s: %d raw files", ra_dir, len(files))
            for lo in range(0, len(files), FILES_PER_BATCH):
                chunk = files[lo : lo + FILES_PER_BATCH]
                yield await anyio.to_thread.run_sync(read_batch, root, lane, chunk, matcher)


async def _walk(run: _Run, lanes: Sequence[str], matcher: CatalogMatcher | None) -> None:
    # aclosing: a failed store closes the generator here, not at garbage collection on another task
    async with contextlib.aclosing(_batches(run.root, lanes, matcher)) as batches:
        async for batch in batches:
            await run.store(batch, matcher is not None)


async def populate(
    cfg: Config,
    catalog: SearchableCatalog | None = None,
    *,
    observatories: Sequence[str] | None = None,
) -> PopulateSummary:
    """Rebuild ``sources`` and ``raw_photometry`` rows from the raw files under DATA_ROOT.

    Parameters
    ----------
    cfg
        The resolved configuration: DATA_ROOT and the database come from ``cfg.store`` (as for the
        engine), the catalog's column map from ``cfg.catalog.columns``.
    catalog
        Names found in the files are looked up here for the ``sources`` rows (position, magnitude,
        proper motion, row number); without it, or for a name it lacks, the file's attributes are used.
    observatories
        Lanes whose folders to walk (default: every registered adapter).

    Returns
    -------
    PopulateSummary
        Counts, and the files that could not be read (they do not stop the walk).

    Raises
    ------
    ConfigError
        An unknown observatory, or DATA_ROOT is not a folder.
    CatalogError
        The catalog cannot be read.
    StoreError
        The database cannot be reached or migrated.
    """
    t0 = time.perf_counter()
    lanes = _lanes(observatories)
    root = data_root_of(cfg.store)
    if not await anyio.to_thread.run_sync(root.is_dir):
        raise ConfigError(f"config: store.data_root: DATA_ROOT {root} is not a folder")
    matcher = CatalogMatcher(catalog, cfg.catalog.columns) if catalog is not None else None
    if matcher is not None:
        await anyio.to_thread.run_sync(matcher.prime)
    summary = PopulateSummary()
    db = create_engine(db_url_of(cfg.store), statement_timeout_s=cfg.store.statement_timeout_s)
    try:
        await migrate(db)
        writer = RowWriter(
            session_factory(db), batch_rows=cfg.store.db_batch_rows, batch_ms=cfg.store.db_batch_ms
        )
        async with writer as rows:
            run = _Run(root, session_factory(db), rows, summary)
            await _walk(run, lanes, matcher)
        summary.failed_row_writes = rows.failed_ops  # read after the final flush
        summary.sources, summary.not_in_catalog = len(run.names), len(run.missing)
    finally:
        await db.dispose()
    summary.elapsed_s = time.perf_counter() - t0
    return summary
