"""What ``populate`` reads: raw files under DATA_ROOT, and the rows each of their tables gives.

Blocking file IO only (h5py, ``os.scandir``): :mod:`aretriever.service.populate` runs these in
worker threads and owns the database side. Only raw files are opened: observatory folders named
after a lane, their ``RA<nnn>`` folders, ``<OBS>_photometry_*.h5`` files; hidden temporary files of
a write in progress never match (see :func:`is_raw_name`).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import h5py

from aretriever.catalogs.core import SearchableCatalog, chunk_to_targets
from aretriever.catalogs.index import Lookups
from aretriever.errors import CatalogError, StoreError
from aretriever.numbers import finite_or_none
from aretriever.settings import ColumnMap
from aretriever.store import paths, rows
from aretriever.store.hdf5 import read_attrs

# the same logger as the run's: one "populate" stream in the log, whichever module speaks
log = logging.getLogger("aretriever.cli.populate")

_RA_FOLDER = re.compile(r"RA\d{3}")

Row = dict[str, Any]


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
    return sorted(found)  # a fixed walk order: the same files land in the same batches each run


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


def _time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    # fetch times are written in UTC; a naive one must not compare as local time with stored rows
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def source_name(file: RawFile, table: Table) -> str:
    """The source a table belongs to, checked against its key and folder.

    Raises
    ------
    StoreError
        If the attributes do not name a source, or disagree with the key or the folder.
    """
    # the key is derived from the name (paths.raw_key): a mismatch means a file edited or copied
    # by hand, and its row would point at a table that is not this source's
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
    ra, dec = finite_or_none(attrs.get("ra_deg")), finite_or_none(attrs.get("dec_deg"))
    if ra is None or dec is None:
        raise StoreError(f"no usable ra_deg/dec_deg attributes for {name!r}")
    return rows.bare_source_row(name, ra, dec, finite_or_none(attrs.get("mag")))


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
