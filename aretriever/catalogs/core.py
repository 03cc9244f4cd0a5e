"""Catalogs: where the sources come from, streamed in chunks.

A catalog yields pandas chunks; :func:`chunk_to_targets` turns a chunk into engine
:class:`~aretriever.adapters.base.Target` objects and names the rows it cannot use.

:func:`open_catalog` knows three kinds of catalog:

- ``test``: N random sources (:class:`GeneratedCatalog`);
- a local CSV, FITS, Parquet or HDF5 file with a configurable column map (:class:`FileCatalog`);
- named remote catalogs, downloaded once and cached (:mod:`aretriever.catalogs.remote`): ``wd``
  (aliases ``WD``, ``white_dwarfs``), the Gentile Fusillo et al. (2021) Gaia EDR3 white dwarfs,
  and ``gaia:<ADQL>``, a Gaia archive TAP query (:mod:`aretriever.catalogs.tap`).

Every catalog also answers ``get_row(index_or_name)`` and ``get_nearest_row(ra, dec, radius)``
(:class:`~aretriever.catalogs.index.Lookups`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from aretriever.adapters.base import Target
from aretriever.catalogs.index import CatalogLookup, Lookups, propagate_frame
from aretriever.catalogs.names import name_problem, name_text, numeric_cells
from aretriever.catalogs.readers import READERS, Reader, count_rows
from aretriever.errors import CatalogError
from aretriever.settings import CatalogConfig, ColumnMap

if TYPE_CHECKING:
    from aretriever.catalogs.cache import RemoteOptions


@dataclass(frozen=True, slots=True)
class BadRow:
    """A catalog row the engine cannot use, and why."""

    index: int
    name: str
    reason: str


class Catalog(Protocol):
    """A source of catalog rows, read a chunk at a time."""

    @property
    def name(self) -> str: ...

    def __len__(self) -> int: ...

    def iter_chunks(self, start: int = 0, stop: int | None = None) -> Iterator[pd.DataFrame]:
        """Rows ``start`` to ``stop`` (exclusive) as frames, with the row number as index."""
        ...


@runtime_checkable
class SearchableCatalog(Catalog, Protocol):
    """A catalog that also finds rows by number, by name and by position (every built-in one)."""

    def get_row(self, index_or_name: int | str) -> pd.Series: ...

    def get_nearest_row(self, ra: float, dec: float, radius_arcsec: float) -> pd.Series | None: ...


@dataclass(frozen=True, slots=True)
class EpochShift:
    """Move positions by proper motion from the catalog's epoch to an observation epoch."""

    from_yr: float
    to_yr: float


@dataclass(slots=True)
class GeneratedCatalog(Lookups):
    """``size`` random sources, reproducible from ``seed``, all visible to ZTF (dec > -30).

    They have no magnitudes: a random magnitude would make every reducer's magnitude check reject
    the (real, recorded) photometry the fake archive replays for them.
    """

    size: int
    seed: int = 42
    chunk_rows: int = 5000
    name: str = "test"
    columns: ColumnMap = field(default_factory=ColumnMap)
    _lookup: CatalogLookup | None = field(default=None, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return self.size

    def iter_chunks(self, start: int = 0, stop: int | None = None) -> Iterator[pd.DataFrame]:
        frame = self._generate()
        stop = self.size if stop is None else min(stop, self.size)
        for lo in range(start, stop, self.chunk_rows):
            yield frame.iloc[lo : min(lo + self.chunk_rows, stop)]

    def _generate(self) -> pd.DataFrame:
        rng = np.random.default_rng(self.seed)
        ra = rng.uniform(0.0, 360.0, self.size)
        dec = np.degrees(np.arcsin(rng.uniform(math.sin(math.radians(-29.0)), 1.0, self.size)))
        width = max(6, len(str(self.size)))
        return pd.DataFrame(
            {
                "name": [f"TEST{i:0{width}d}" for i in range(self.size)],
                "ra": ra,
                "dec": dec,
                "pmra": rng.normal(0.0, 20.0, self.size),
                "pmdec": rng.normal(0.0, 20.0, self.size),
            }
        )


@dataclass(slots=True)
class FileCatalog(Lookups):
    """A local CSV, Parquet, FITS or HDF5 file.

    Parameters
    ----------
    path : Path
        The file; its suffix picks the reader.
    chunk_rows : int
        Rows per chunk handed to the engine.
    label : str
        The catalog's name (default: the file name).
    columns : ColumnMap
        Which columns of the chunks (after ``rename``) hold name, ra, dec, mag and proper motion.
    rename : mapping, optional
        File column -> chunk column, for catalogs whose file keeps the archive's column names.
    epoch : EpochShift, optional
        Move positions by proper motion to an observation epoch while streaming.
    """

    path: Path
    chunk_rows: int = 5000
    label: str = ""
    columns: ColumnMap = field(default_factory=ColumnMap)
    rename: Mapping[str, str] | None = None
    epoch: EpochShift | None = None
    _lookup: CatalogLookup | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.label or self.path.name

    def __len__(self) -> int:
        try:
            return count_rows(self.path, self._reader())
        except CatalogError:
            raise
        except Exception as exc:  # as in iter_chunks
            raise self._unreadable(exc) from exc

    def iter_chunks(self, start: int = 0, stop: int | None = None) -> Iterator[pd.DataFrame]:
        for chunk in self._file_chunks(start, stop):
            yield self._shape(chunk)

    def iter_names(self, start: int = 0, stop: int | None = None) -> Iterator[pd.Series]:
        """The name column of rows ``start`` to ``stop``, as read (no renaming, no epoch shift)."""
        column = self._file_name_column()
        for chunk in self._file_chunks(start, stop):
            if column in chunk.columns:
                yield chunk[column]

    def _file_chunks(self, start: int, stop: int | None) -> Iterator[pd.DataFrame]:
        try:
            yield from self._read_chunks(start, stop)
        except CatalogError:
            raise
        except Exception as exc:  # the readers' (pandas, astropy, h5py) own errors: the file is bad
            raise self._unreadable(exc) from exc

    def _read_chunks(self, start: int, stop: int | None) -> Iterator[pd.DataFrame]:
        reader = self._reader()
        if stop is not None and stop <= start:
            return
        chunks = reader(self.path, self.chunk_rows, max(0, start), self._file_name_column())
        with contextlib.closing(chunks):
            for offset, chunk in chunks:
                chunk.index = pd.RangeIndex(offset, offset + len(chunk))
                end = offset + len(chunk) if stop is None else min(stop, offset + len(chunk))
                if end > max(start, offset):
                    yield chunk.loc[max(start, offset) : end - 1]
                if stop is not None and offset + len(chunk) >= stop:
                    return

    def _unreadable(self, exc: Exception) -> CatalogError:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]  # astropy's run to pages
        return CatalogError(f"catalog: cannot read {self.path}: {reason}")

    def _file_name_column(self) -> str:
        """The file's column that becomes the name column (the file keeps the archive's names)."""
        for raw, renamed in (self.rename or {}).items():
            if renamed == self.columns.name:
                return raw
        return self.columns.name

    def _reader(self) -> Reader:
        reader = READERS.get(self.path.suffix.lower())
        if reader is None:
            raise CatalogError(
                f"catalog: {self.path}: unknown file type {self.path.suffix!r} "
                f"(known: {', '.join(sorted(READERS))})"
            )
        return reader

    def _shape(self, chunk: pd.DataFrame) -> pd.DataFrame:
        if self.rename:
            chunk = chunk.rename(columns=dict(self.rename))
        if self.epoch is not None:
            chunk = propagate_frame(chunk, self.columns, self.epoch.from_yr, self.epoch.to_yr)
        return chunk


# -------------------------------------------------------------------------- opening


def open_catalog(
    spec: str | None, cfg: CatalogConfig, *, options: RemoteOptions | None = None
) -> SearchableCatalog:
    """The catalog named by ``spec`` (a file path or a catalog name), else by the config.

    Named remote catalogs (``wd``, ``gaia:<ADQL>``) are downloaded on first use and read from the
    cache afterwards; from inside a running event loop prefer
    :func:`aretriever.catalogs.remote.open_catalog_async`, which does not block the loop.

    Parameters
    ----------
    spec : str or None
        ``test``, ``wd`` (``WD``, ``white_dwarfs``), ``gaia:<ADQL query>``, or a file path.
    cfg : CatalogConfig
        Column map, chunk size, test catalog size.
    options : RemoteOptions, optional
        Cache folder, archive URLs and limits for remote catalogs (default: from ``cfg`` and
        ``$ARETRIEVER_CATALOGS``).
    """
    spec, local = resolve_spec(spec, cfg)
    if local is not None:
        return local
    from aretriever.catalogs.remote import open_remote

    return open_remote(spec, cfg, options)


def resolve_spec(spec: str | None, cfg: CatalogConfig) -> tuple[str, SearchableCatalog | None]:
    """The catalog spec to use (the argument, else the config) and the local catalog it names."""
    spec = spec or cfg.path or cfg.default
    if spec is None:
        raise CatalogError("catalog: none given (use --catalog FILE, --catalog wd or --catalog test)")
    return spec, open_local(spec, cfg)


def open_local(spec: str, cfg: CatalogConfig) -> SearchableCatalog | None:
    """The ``test`` catalog or a local file; None when ``spec`` names neither."""
    if spec.lower() == "test":
        return GeneratedCatalog(cfg.test_size, cfg.test_seed, cfg.chunk_rows)
    path = Path(spec).expanduser()
    if path.exists():
        return FileCatalog(path, cfg.chunk_rows, columns=cfg.columns)
    return None


# -------------------------------------------------------------------------- rows to targets


def _required(chunk: pd.DataFrame, name: str) -> pd.Series:
    if name not in chunk.columns:
        raise CatalogError(
            f"catalog: column {name!r} not found; the catalog has {list(chunk.columns)} "
            "(map columns with catalog.columns.*)"
        )
    return chunk[name]


def _optional(chunk: pd.DataFrame, name: str | None) -> pd.Series | None:
    return chunk[name] if name is not None and name in chunk.columns else None


def _coordinate_problem(ra: float, dec: float) -> str | None:
    if math.isnan(ra) or math.isnan(dec):
        return f"bad coordinates: ra={ra}, dec={dec} (NaN)"
    if not -90.0 <= dec <= 90.0:
        return f"bad coordinates: dec={dec} outside [-90, 90]"
    if not 0.0 <= ra < 360.0:
        return f"bad coordinates: ra={ra} outside [0, 360)"
    return None


_Cells = tuple[np.ndarray, dict[int, str]]  # floats (NaN: missing), and problems by position


def _coordinates(columns: ColumnMap) -> tuple[tuple[str, str], ...]:
    return (("ra", columns.ra), ("dec", columns.dec))


def _numeric_columns(chunk: pd.DataFrame, columns: ColumnMap) -> dict[str, _Cells]:
    """ra and dec (required), and mag, pmra, pmdec when the chunk has them, by role."""
    out = {role: numeric_cells(_required(chunk, column), column) for role, column in _coordinates(columns)}
    for role in ("mag", "pmra", "pmdec"):
        found = _optional(chunk, getattr(columns, role))
        if found is not None:
            out[role] = numeric_cells(found, getattr(columns, role))
    return out


def _row_problem(index: int, raw: object, name: str, pos: int, cells: dict[str, _Cells]) -> str | None:
    """Why row ``index`` cannot be used: its name, then cells that are not numbers, then coordinates."""
    problem = name_problem(raw, name)
    if problem:
        return problem
    bad = [found[1][pos] for found in cells.values() if pos in found[1]]
    if bad:
        return f"row {index}: " + "; ".join(bad)
    return _coordinate_problem(cells["ra"][0][pos], cells["dec"][0][pos])


def _number(cells: _Cells | None, pos: int) -> float | None:
    if cells is None:
        return None
    value = float(cells[0][pos])
    return None if math.isnan(value) else value


def chunk_to_targets(chunk: pd.DataFrame, columns: ColumnMap) -> tuple[list[Target], list[BadRow]]:
    """Targets from a catalog chunk, and the rows that cannot be used (with the reason).

    Names are exact text (:mod:`aretriever.catalogs.names`); a row with no name, a cell of a numeric
    column that is not a number (named with its row and column), or impossible coordinates is a
    :class:`BadRow`, and the other rows go on.
    """
    names = _required(chunk, columns.name)
    cells = _numeric_columns(chunk, columns)
    targets: list[Target] = []
    bad: list[BadRow] = []
    for pos, index in enumerate(chunk.index):
        raw = names.iloc[pos]
        name = name_text(raw)
        problem = _row_problem(int(index), raw, name, pos, cells)
        if problem:
            bad.append(BadRow(int(index), name or f"row {index}", problem))
            continue
        targets.append(
            Target(
                name=name,
                ra_deg=float(cells["ra"][0][pos]),
                dec_deg=float(cells["dec"][0][pos]),
                mag=_number(cells.get("mag"), pos),
                pmra_mas_yr=_number(cells.get("pmra"), pos) or 0.0,
                pmdec_mas_yr=_number(cells.get("pmdec"), pos) or 0.0,
                index=int(index),
            )
        )
    return targets, bad
