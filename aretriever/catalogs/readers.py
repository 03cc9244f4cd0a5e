"""Catalog file readers: CSV, Parquet, FITS, HDF5, each yielding chunks of rows.

A reader yields ``(row number of the chunk's first row, chunk)``, starting at or before the
first row asked for, and reads the name column as text (:mod:`aretriever.catalogs.names`).
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import pandas as pd

from aretriever.catalogs.names import csv_text_options
from aretriever.errors import CatalogError

if TYPE_CHECKING:
    pass


# A reader yields (row number of the chunk's first row, chunk), starting at or before ``start``.
# ``name_column`` is read as exact text where the format would infer a type (catalog_names.py).


_Chunks = Generator[tuple[int, pd.DataFrame]]


class Reader(Protocol):
    def __call__(self, path: Path, chunk_rows: int, start: int, name_column: str) -> _Chunks: ...


def _read_csv(path: Path, chunk_rows: int, start: int, name_column: str) -> _Chunks:
    offset = start
    skip = range(1, start + 1) if start else None  # keep the header line
    # Names as written ("0012", "NA", "nan" are names); the other columns keep pandas' missing words.
    options = csv_text_options(pd.read_csv(path, nrows=0).columns, (name_column,))
    with pd.read_csv(path, chunksize=chunk_rows, skiprows=skip, **options) as chunks:
        for chunk in chunks:
            yield offset, chunk
            offset += len(chunk)


def _read_parquet(path: Path, chunk_rows: int, start: int, name_column: str) -> _Chunks:
    import pyarrow.parquet as pq

    source = pq.ParquetFile(path)
    offset, first = 0, 0
    sizes = [source.metadata.row_group(i).num_rows for i in range(source.num_row_groups)]
    while first < len(sizes) and offset + sizes[first] <= start:  # skip whole row groups
        offset += sizes[first]
        first += 1
    groups = list(range(first, len(sizes)))
    if not groups:
        return
    for batch in source.iter_batches(batch_size=chunk_rows, row_groups=groups):
        # integers with nulls stay exact Python ints (pandas would make them floats: Gaia ids > 2**53)
        yield offset, batch.to_pandas(integer_object_nulls=True)
        offset += batch.num_rows


def _read_fits(path: Path, chunk_rows: int, start: int, name_column: str) -> _Chunks:
    from astropy.table import Table

    table = Table.read(path, memmap=True)
    for lo in range(start, len(table), chunk_rows):
        yield lo, _fits_frame(table[lo : lo + chunk_rows].to_pandas())


def _fits_frame(frame: pd.DataFrame) -> pd.DataFrame:
    return _decoded(frame, strip=True)  # FITS pads text with trailing blanks


def _decoded(frame: pd.DataFrame, *, strip: bool) -> pd.DataFrame:
    """Byte-string columns (FITS, HDF5 tables) as text."""
    for column in frame.columns:
        if frame[column].dtype == object and len(frame) and isinstance(frame[column].iloc[0], bytes):
            texts = [v.decode("utf-8", "backslashreplace") for v in frame[column]]
            frame[column] = [t.rstrip() for t in texts] if strip else texts
    return frame


def _read_hdf5(path: Path, chunk_rows: int, start: int, name_column: str) -> _Chunks:
    import h5py

    with h5py.File(path, "r") as f:
        keys = [k for k in f if isinstance(f[k], h5py.Dataset)]
        if not keys:
            raise CatalogError(f"catalog: {path}: no table dataset in the file")
        dataset = f[keys[0]]
        for lo in range(start, dataset.shape[0], chunk_rows):
            yield lo, _decoded(pd.DataFrame(dataset[lo : lo + chunk_rows]), strip=False)


READERS: dict[str, Reader] = {
    ".csv": _read_csv,
    ".parquet": _read_parquet,
    ".fits": _read_fits,
    ".fit": _read_fits,
    ".h5": _read_hdf5,
    ".hdf5": _read_hdf5,
}


def count_rows(path: Path, reader: Reader) -> int:
    """Rows in the file, from its metadata where the format has it."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return int(pq.read_metadata(path).num_rows)
    if suffix in {".fits", ".fit"}:
        from astropy.io import fits

        with fits.open(path, memmap=True) as hdus:
            return int(hdus[1].header["NAXIS2"])
    return sum(len(chunk) for _, chunk in reader(path, 100_000, 0, ""))
