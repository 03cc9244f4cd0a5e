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
import math
import os
import re
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import h5py

from aretriever import adapters
from aretriever.catalogs.core import SearchableCatalog, chunk_to_targets
from aretriever.catalogs.index import Lookups
from aretriever.errors import CatalogError, ConfigError, StoreError
from aretriever.settings import ColumnMap, Config
from aretriever.store import paths, queries, rows
from aretriever.store.db import create_engine, session_factory
from aretriever.store.hdf5 import read_attrs
from aretriever.store.locations import data_root_of, db_url_of
from aretriever.store.models import RawStatus
from aretriever.store.queries import Sessions
from aretriever.store.queries import StoredRaw as StoredRaw  # its home before store/queries
from aretriever.store.schema import migrate
from aretriever.store.writers import RowWriter

log = logging.getLogger("aretriever.cli.populate")

FILES_PER_BATCH = 256
_RA_FOLDER = re.compile(r"RA\d{3}")

Row = dict[str, Any]


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


# -------------------------------------------------------------------------- reading files


@dataclass(frozen=True, slots=True)
class Table:
    """One table of a raw file: its key, its number of rows and the attributes beside it."""

    key: str
    num_rows: int
    attrs: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RawFile:
    """A raw file as found on disk (``relpath`` relative to DATA_ROOT, POSIX)."""

    relpath: str
    observatory: str
    nbytes: int
    mtime: datetime
    tables: tuple[Table, ...]


def _table(h5: h5py.File, key: str) -> Table:
    dataset = h5[key]
    if not isinstance(dataset, h5py.Dataset) or dataset.ndim != 1:
        raise StoreError(f"key {key!r} is not a table")
    return Table(key, int(dataset.shape[0]), read_attrs(dataset))


class UnreadableFile(StoreError):
    """A raw file cannot be read."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"store: cannot read {path}: {reason}")
        self.path = path
        self.reason = reason


def read_raw_file(root: Path, path: Path, observatory: str) -> RawFile:
    """Read the tables' sizes and attributes of a raw file (not their data); blocking.

    Raises
    ------
    UnreadableFile
        If the file cannot be opened, holds no table, or a table or its attributes cannot be read.
    """
    try:
        stat = path.stat()
        with h5py.File(path, "r") as h5:
            tables = tuple(_table(h5, key) for key in sorted(h5))
    except Exception as exc:  # h5py raises OSError, KeyError, RuntimeError...; attributes JSON errors
        raise UnreadableFile(path, str(exc)) from exc
    if not tables:
        raise UnreadableFile(path, "no table in the file")
    mtime = datetime.fromtimestamp(stat.st_mtime, UTC)
    return RawFile(path.relative_to(root).as_posix(), observatory, stat.st_size, mtime, tables)


def observatory_folders(root: Path, lanes: Sequence[str]) -> list[tuple[str, Path]]:
    """(lane, folder) for every folder of ``root`` named like a lane's raw folder (``ZTF``)."""
    wanted = {paths.safe_name(lane.upper()): lane for lane in lanes}
    with os.scandir(root) as entries:
        found = [(wanted[e.name], Path(e.path)) for e in entries if e.name in wanted and e.is_dir()]
    return sorted(found)


def ra_folders(folder: Path) -> list[Path]:
    """The ``RA<nnn>`` folders of an observatory folder, sorted."""
    with os.scandir(folder) as entries:
        return sorted(Path(e.path) for e in entries if _RA_FOLDER.fullmatch(e.name) and e.is_dir())


def is_raw_name(name: str, folder: str) -> bool:
    """True for ``<OBS>_photometry_<name>.h5``; false for hidden (temporary) files.

    A name ending in ``_reduced.h5`` is raw too (source ``X_reduced``): no product folder can be an
    observatory folder (:mod:`aretriever.store.product_folders`).
    """
    return name.startswith(f"{folder}_photometry_") and name.endswith(".h5")


def raw_files(ra_folder: Path) -> list[Path]:
    """The raw files of an RA folder, sorted."""
    folder = ra_folder.parent.name
    with os.scandir(ra_folder) as entries:
        return sorted(Path(e.path) for e in entries if is_raw_name(e.name, folder) and e.is_file())


# -------------------------------------------------------------------------- files to rows


class CatalogMatcher:
    """Finds a file's source in a catalog (blocking: the first look-up may read the whole catalog)."""

    def __init__(self, catalog: SearchableCatalog, columns: ColumnMap) -> None:
        self.catalog = catalog
        self.columns = columns

    def prime(self) -> None:
        """Build the catalog's look-up now, so a bad catalog fails before the walk."""
        if isinstance(self.catalog, Lookups):
            self.catalog.lookup()

    def source_row(self, name: str) -> Row | None:
        """The ``sources`` row the catalog gives ``name``, or None if it has no usable row."""
        try:
            row = self.catalog.get_row(name)
        except CatalogError:
            return None
        targets, bad = chunk_to_targets(row.to_frame().T, self.columns)
        if bad:
            log.warning("populate: catalog row of %s unusable (%s); named from the file", name, bad[0].reason)
            return None
        return rows.source_row(targets[0], self.catalog.name)


def _finite(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def source_name(file: RawFile, table: Table) -> str:
    """The source a table belongs to, checked against its key and folder.

    Raises
    ------
    StoreError
        If the attributes do not name a source, or disagree with the key or the folder.
    """
    name = table.attrs.get("source_name")
    if not isinstance(name, str) or not name:
        raise StoreError(f"key {table.key!r} has no source_name attribute")
    if table.key != paths.raw_key(name):
        raise StoreError(f"key {table.key!r} does not match its source_name {name!r}")
    observatory = str(table.attrs.get("observatory", file.observatory)).lower()
    if observatory != file.observatory:
        raise StoreError(
            f"key {table.key!r} says observatory {observatory!r}, in the {file.observatory} folder"
        )
    return name


def attrs_source_row(name: str, attrs: dict[str, Any]) -> Row:
    """The ``sources`` row from a table's attributes (no catalog, no proper motion)."""
    ra, dec = _finite(attrs.get("ra_deg")), _finite(attrs.get("dec_deg"))
    if ra is None or dec is None:
        raise StoreError(f"no usable ra_deg/dec_deg attributes for {name!r}")
    return rows.bare_source_row(name, ra, dec, _finite(attrs.get("mag")))


def raw_row(file: RawFile, table: Table, name: str) -> Row:
    """The ``raw_photometry`` row of a table (``fetched_at`` from its attributes, else the mtime)."""
    attrs = table.attrs
    fetched_at = _time(attrs.get("fetched_at"))
    meta: Row = {"populated": True, "archive": attrs.get("archive") or {}}
    if fetched_at is None:
        meta["fetched_at_from"] = "file mtime"
    url = attrs.get("url")
    return rows.raw_row(
        name,
        file.observatory,
        file.relpath,
        num_rows=table.num_rows,
        nbytes=file.nbytes,
        url=url if isinstance(url, str) else None,
        meta=meta,
        fetched_at=fetched_at or file.mtime,
        filekey=table.key,
    )


@dataclass(frozen=True, slots=True)
class Found:
    """The rows made from one table; ``matched``: the source row came from the catalog."""

    source: Row
    raw: Row
    matched: bool

    @property
    def key(self) -> tuple[str, str]:
        return self.raw["source_name"], self.raw["observatory"]


def found_rows(file: RawFile, table: Table, matcher: CatalogMatcher | None) -> Found:
    """The rows of one table; raises :class:`StoreError` with the reason it cannot be used."""
    name = source_name(file, table)
    source = matcher.source_row(name) if matcher is not None else None
    return Found(
        source or attrs_source_row(name, table.attrs), raw_row(file, table, name), source is not None
    )


@dataclass(slots=True)
class Batch:
    """What a batch of files gave: rows, and the files or tables that could not be used."""

    found: list[Found] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)
    files: int = 0
    keys: int = 0

    def problem(self, root: Path, path: Path, reason: str) -> None:
        log.warning("populate: %s: %s", path, reason)
        self.problems.append((path.relative_to(root).as_posix(), reason))

    def add_file(self, file: RawFile, path: Path, root: Path, matcher: CatalogMatcher | None) -> None:
        self.files += 1
        for table in file.tables:
            self.keys += 1
            try:
                self.found.append(found_rows(file, table, matcher))
            except StoreError as exc:
                self.problem(root, path, str(exc))


def read_batch(root: Path, lane: str, files: Sequence[Path], matcher: CatalogMatcher | None) -> Batch:
    """Read a batch of raw files of one lane (blocking: run it in a worker thread)."""
    batch = Batch()
    for path in files:
        try:
            raw = read_raw_file(root, path, lane)
        except UnreadableFile as exc:
            batch.problem(root, path, exc.reason)
            continue
        batch.add_file(raw, path, root, matcher)
    return batch


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
        stored = {key: stored[key] for key in {f.key for f in found} & stored.keys()}
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
