"""Catalogs: where the sources come from, streamed in chunks.

A catalog yields pandas chunks; :func:`chunk_to_targets` turns a chunk into engine
:class:`~aretriever.adapters.base.Target` objects and names the rows it cannot use.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from aretriever.adapters.base import Target
from aretriever.errors import CatalogError
from aretriever.settings import CatalogConfig, ColumnMap


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


@dataclass(slots=True)
class GeneratedCatalog:
    """``size`` random sources, reproducible from ``seed``, all visible to ZTF (dec > -30).

    They have no magnitudes: a random magnitude would make every reducer's magnitude check reject
    the (real, recorded) photometry the fake archive replays for them.
    """

    size: int
    seed: int = 42
    chunk_rows: int = 5000
    name: str = "test"

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
class FileCatalog:
    """A local CSV, Parquet, FITS or HDF5 file."""

    path: Path
    chunk_rows: int = 5000

    @property
    def name(self) -> str:
        return self.path.name

    def __len__(self) -> int:
        return sum(len(chunk) for chunk in self.iter_chunks())

    def iter_chunks(self, start: int = 0, stop: int | None = None) -> Iterator[pd.DataFrame]:
        reader = _READERS.get(self.path.suffix.lower())
        if reader is None:
            raise CatalogError(
                f"catalog: {self.path}: unknown file type {self.path.suffix!r} "
                f"(known: {', '.join(sorted(_READERS))})"
            )
        offset = 0
        for chunk in reader(self.path, self.chunk_rows):
            chunk.index = pd.RangeIndex(offset, offset + len(chunk))
            offset += len(chunk)
            lo, hi = (
                max(start, chunk.index[0] if len(chunk) else 0),
                offset if stop is None else min(stop, offset),
            )
            if hi > lo:
                yield chunk.loc[lo : hi - 1]
            if stop is not None and offset >= stop:
                return


def _read_csv(path: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    yield from pd.read_csv(path, chunksize=chunk_rows)


def _read_parquet(path: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    import pyarrow.parquet as pq

    for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows):
        yield batch.to_pandas()


def _read_fits(path: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    from astropy.table import Table

    table = Table.read(path, memmap=True)
    for lo in range(0, len(table), chunk_rows):
        yield table[lo : lo + chunk_rows].to_pandas()


def _read_hdf5(path: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    import h5py

    from aretriever.store.hdf5 import records_to_frame

    with h5py.File(path, "r") as f:
        keys = [k for k in f if isinstance(f[k], h5py.Dataset)]
        if not keys:
            raise CatalogError(f"catalog: {path}: no table dataset in the file")
        dataset = f[keys[0]]
        for lo in range(0, dataset.shape[0], chunk_rows):
            yield records_to_frame(dataset[lo : lo + chunk_rows])


_READERS = {
    ".csv": _read_csv,
    ".parquet": _read_parquet,
    ".fits": _read_fits,
    ".fit": _read_fits,
    ".h5": _read_hdf5,
    ".hdf5": _read_hdf5,
}


def open_catalog(spec: str | None, cfg: CatalogConfig) -> Catalog:
    """The catalog named by ``spec`` (a file path or a catalog name), else by the config."""
    spec = spec or cfg.path or cfg.default
    if spec is None:
        raise CatalogError("catalog: none given (use --catalog FILE or --catalog test)")
    if spec.lower() == "test":
        return GeneratedCatalog(cfg.test_size, cfg.test_seed, cfg.chunk_rows)
    path = Path(spec).expanduser()
    if path.exists():
        return FileCatalog(path, cfg.chunk_rows)
    raise CatalogError(f"catalog: {spec!r} is neither a file nor a known catalog name (known: test)")


def _required(chunk: pd.DataFrame, name: str) -> pd.Series:
    if name not in chunk.columns:
        raise CatalogError(
            f"catalog: column {name!r} not found; the catalog has {list(chunk.columns)} "
            "(map columns with catalog.columns.*)"
        )
    return chunk[name]


def _optional(chunk: pd.DataFrame, name: str | None) -> pd.Series | None:
    return chunk[name] if name is not None and name in chunk.columns else None


def _float_or_none(value: object) -> float | None:
    number = float(value)  # type: ignore[arg-type]
    return None if math.isnan(number) else number


def _coordinate_problem(ra: float, dec: float) -> str | None:
    if math.isnan(ra) or math.isnan(dec):
        return f"bad coordinates: ra={ra}, dec={dec} (NaN)"
    if not -90.0 <= dec <= 90.0:
        return f"bad coordinates: dec={dec} outside [-90, 90]"
    if not 0.0 <= ra < 360.0:
        return f"bad coordinates: ra={ra} outside [0, 360)"
    return None


def chunk_to_targets(chunk: pd.DataFrame, columns: ColumnMap) -> tuple[list[Target], list[BadRow]]:
    """Targets from a catalog chunk, and the rows that cannot be used (with the reason)."""
    names = _required(chunk, columns.name)
    ra = pd.to_numeric(_required(chunk, columns.ra), errors="coerce")
    dec = pd.to_numeric(_required(chunk, columns.dec), errors="coerce")
    extras = {key: _optional(chunk, getattr(columns, key)) for key in ("mag", "pmra", "pmdec")}
    targets: list[Target] = []
    bad: list[BadRow] = []
    for pos, index in enumerate(chunk.index):
        name = str(names.iloc[pos]).strip()
        problem = (
            "empty name" if not name or name == "nan" else _coordinate_problem(ra.iloc[pos], dec.iloc[pos])
        )
        if problem:
            bad.append(BadRow(int(index), name or f"row {index}", problem))
            continue
        values = {key: None if col is None else _float_or_none(col.iloc[pos]) for key, col in extras.items()}
        targets.append(
            Target(
                name=name,
                ra_deg=float(ra.iloc[pos]),
                dec_deg=float(dec.iloc[pos]),
                mag=values["mag"],
                pmra_mas_yr=values["pmra"] or 0.0,
                pmdec_mas_yr=values["pmdec"] or 0.0,
                index=int(index),
            )
        )
    return targets, bad
